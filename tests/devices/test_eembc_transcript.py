"""The DUT transcript parsers: exact formats, tolerated quirks, and fuzzed corruption."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.protocol import transcript as tr


def test_classify_every_reply_kind():
    kinds = {
        "m-ready": "ready", "m-lap-us-123456": "lap_us", "m-results-[0.1,0.9]": "results",
        "m-name-dut-[unspecified]": "name", "m-profile-[ULPMark for tinyML Firmware V0.0.1]": "profile",
        "m-model-[ic01]": "model", "m-load-done": "load_done", "m-init-done": "init_done",
        "m-timestamp-mode-energy": "timestamp_mode", "m-warmup-start-10": "warmup_start",
        "m-infer-done": "infer_done", "m-[Expecting 64 bytes]": "expecting", "m-buffer-00-ff": "buffer",
        "e-[Unknown command: foo]": "error", "Supplied buffer size 99999 exceeds maximum of 27648": "error",
        "[dut]: m-ready": "ready", "": "empty", "\x00\xff#?": "garbage", "help text": "text",
    }
    for text, kind in kinds.items():
        assert tr.classify(text).kind == kind, text
    assert tr.classify("e-[Unknown command: foo]").payload == "Unknown command: foo"


def test_results_trailing_comma_and_values():
    assert tr.parse_results("[0.000,0.000,]") == (0.0, 0.0)
    assert tr.parse_results("m-results-[0.125,-1.500,2e3]") == (0.125, -1.5, 2000.0)
    for bad in ("[0.1,0.2", "0.1,0.2]", "[]", "[,]", "[0.1,,0.2]", "[0.1,nan]", "[0.1,inf]", "[0.1x]"):
        with pytest.raises(tr.TranscriptError):
            tr.parse_results(bad)


def test_lap_name_expecting_buffer():
    assert tr.parse_lap_us("m-lap-us-4294967295") == 4294967295
    assert tr.parse_name("dut-[edge-lottery]") == ("dut", "edge-lottery")
    assert tr.parse_expecting(" 64 bytes]") == 64
    assert tr.parse_buffer("00-7f-80-ff") == b"\x00\x7f\x80\xff"
    for fn, bad in ((tr.parse_lap_us, "12a"), (tr.parse_lap_us, "-5"), (tr.parse_name, "dut"),
                    (tr.parse_expecting, "x bytes]"), (tr.parse_buffer, "0g-11")):
        with pytest.raises(tr.TranscriptError):
            fn(bad)


floats = st.lists(st.floats(-1000, 1000, allow_nan=False), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(floats, st.booleans())
def test_results_roundtrip(values, trailing):
    text = "[" + ",".join(f"{v:0.3f}" for v in values) + ("," if trailing else "") + "]"
    assert tr.parse_results(text) == tuple(float(f"{v:0.3f}") for v in values)


@settings(max_examples=200, deadline=None)
@given(floats, st.data())
def test_truncated_results_never_pass(values, data):
    text = "[" + ",".join(f"{v:0.3f}" for v in values) + "]"
    cut = data.draw(st.integers(0, len(text) - 1))
    with pytest.raises(tr.TranscriptError):
        tr.parse_results(text[:cut])


@settings(max_examples=300, deadline=None)
@given(floats, st.data())
def test_corrupted_results_raise_only_transcript_errors(values, data):
    text = "[" + ",".join(f"{v:0.3f}" for v in values) + "]"
    pos = data.draw(st.integers(0, len(text) - 1))
    ch = data.draw(st.characters(min_codepoint=0, max_codepoint=255))
    corrupted = text[:pos] + ch + text[pos + 1:]
    try:
        out = tr.parse_results(corrupted)
    except tr.TranscriptError:
        return
    assert all(math.isfinite(v) for v in out)
    assert abs(len(out) - len(values)) <= 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_split_and_classify_accept_any_bytes(blob):
    lines, rest = tr.split_lines(blob)
    assert len(lines) == blob.count(b"\n")
    assert rest == blob.rsplit(b"\n", 1)[-1]
    for line in lines:
        assert tr.classify(line).kind in {
            "ready", "lap_us", "results", "name", "profile", "model", "load_done", "init_done",
            "timestamp_mode", "warmup_start", "warmup_done", "infer_start", "infer_done", "buffer",
            "expecting", "error", "empty", "garbage", "text", "message"}
