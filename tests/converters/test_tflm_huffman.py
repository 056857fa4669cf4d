"""HUFFMAN (DECODE type 1): upstream vectors byte for byte, and the stock TFLM runtime decodes exactly."""

from __future__ import annotations

import numpy as np
import pytest
from tflm_models import constant_output_model, decode_model, decoded_on_tflm, run_tflm, same_bytes

from converters import ConverterError
from converters.huffman import canonical_codes, code_lengths, huffman_bits
from converters.tflm import huffman_tables
from converters.tflm.encoding import Encoded

# The upstream unit test (tflite-micro kernels/decode_state_huffman_test.cc): a 16-symbol
# non-canonical code, k0 = 3, 64 symbols, 252 code bits in a 32-byte stream.
UPSTREAM_CODE = {
    "m": "000", "a": "001", "j": "010", "o": "0110", "h": "0111", "d": "1000", "i": "10010",
    "f": "10011", "c": "1010", "g": "101100", "l": "101101", "k": "10111", "e": "1100",
    "b": "1101", "p": "1110", "n": "1111",
}
UPSTREAM_TEXT = "nmmacnanefdacopjomeckifookhbdbdmjjdmjgojfecpbiibmanbbjbnlgjafejp"
UPSTREAM_STREAM = bytes.fromhex("f00d79fc9c1a6e4c32af29b35df6360250158ca795db29683fbab7edb119e2e0")
UPSTREAM_TABLE16 = [
    0x986D, 0x9861, 0x986A, 0x0005, 0x0806, 0x0809, 0x000E, 0x000F, 0x886F, 0x8868, 0x8864, 0x8864,
    0x9069, 0x9066, 0x8863, 0x8863, 0x0002, 0x906B, 0x8867, 0x886C, 0x8865, 0x8862, 0x8870, 0x886E,
]


def _upstream_code():
    lengths = np.zeros(256, dtype=np.int64)
    codes = np.zeros(256, dtype=np.int64)
    for ch, word in UPSTREAM_CODE.items():
        lengths[ord(ch)] = len(word)
        codes[ord(ch)] = int(word, 2)
    symbols = np.array([ord(c) for c in UPSTREAM_TEXT])
    return symbols, lengths, codes


@pytest.mark.parametrize("entry_bits", [16, 32])
def test_reproduces_upstream_vectors_byte_for_byte(entry_bits):
    symbols, lengths, codes = _upstream_code()
    stream, ancillary, details = huffman_tables.build(symbols, lengths, codes, root_bits=3, entry_bits=entry_bits)
    assert stream == UPSTREAM_STREAM
    assert details["code_bits"] == 252
    assert ancillary[:6] == bytes([1, 1, 0, 0, 1, (2 << 4) | (1 if entry_bits == 32 else 0)])
    assert ancillary[6:16] == bytes(10)
    dtype = "<u2" if entry_bits == 16 else "<u4"
    table = np.frombuffer(ancillary[16:], dtype=dtype).tolist()
    if entry_bits == 16:
        assert table == UPSTREAM_TABLE16
    else:  # same layout: S moves to bit 31, N to bits 30..27
        assert table == [((e & 0x8000) << 16) | (((e >> 11) & 0xF) << 27) | (e & 0x7FF) for e in UPSTREAM_TABLE16]
    # ...and the stock runtime decodes the upstream vectors into the upstream text.
    expected = np.frombuffer(UPSTREAM_TEXT.encode(), dtype=np.int8)
    enc = Encoded("huffman", stream, ancillary, 64, float("nan"), len(ancillary), {})
    assert same_bytes(decoded_on_tflm(expected, enc), expected)
    if entry_bits == 32:
        expected16 = expected.astype(np.int16)
        assert same_bytes(decoded_on_tflm(expected16, enc), expected16)


def _laplace_int8(shape, scale, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(0, scale, size=shape)), -128, 127).astype(np.int8)


@pytest.mark.parametrize("entry_bits", [16, 32])
def test_int8_decodes_exactly_on_tflm(entry_bits):
    w = _laplace_int8((32, 64), 10)
    enc = huffman_tables.encode(w, table_entry_bits=entry_bits)
    assert enc.details["table_entry_bits"] == entry_bits
    assert enc.ancillary[5] & 1 == (1 if entry_bits == 32 else 0)
    assert same_bytes(decoded_on_tflm(w, enc), w)
    assert same_bytes(huffman_tables.decode(enc, w.shape, w.dtype), w)
    # Optimal code: the stream carries exactly the optimal Huffman code bits.
    freqs = np.bincount(w.reshape(-1).view(np.uint8), minlength=256)
    assert enc.details["code_bits"] == huffman_bits(freqs)
    assert enc.entropy_bound_bytes * 8 <= enc.details["code_bits"]


def test_int16_with_32_bit_tables():
    rng = np.random.default_rng(1)
    w = np.round(rng.normal(0, 900, size=(24, 20))).astype(np.int16)
    w[0, 0], w[0, 1] = -32768, 32767
    enc = huffman_tables.encode(w)
    assert enc.details["table_entry_bits"] == 32
    assert same_bytes(decoded_on_tflm(w, enc), w)
    with pytest.raises(ConverterError, match="table_entry_bits for int16"):
        huffman_tables.encode(w, table_entry_bits=16)


def test_single_distinct_value():
    w = np.full((7, 5), -3, dtype=np.int8)
    enc = huffman_tables.encode(w)
    assert enc.details["code_bits"] == w.size and enc.details["distinct"] == 1
    assert same_bytes(decoded_on_tflm(w, enc), w)


def test_all_256_symbols():
    rng = np.random.default_rng(2)
    w = rng.permutation(np.repeat(np.arange(-128, 128), 3)).astype(np.int8).reshape(24, 32)
    enc = huffman_tables.encode(w, table_entry_bits=16)
    assert enc.details["distinct"] == 256
    assert same_bytes(decoded_on_tflm(w, enc), w)


def test_very_skewed_data_uses_one_bit_codes():
    w = np.zeros((40, 50), dtype=np.int8)
    w[3, 7], w[10, 1], w[39, 49] = 5, -128, 127
    enc = huffman_tables.encode(w)
    freqs = np.bincount(w.reshape(-1).view(np.uint8), minlength=256)
    assert code_lengths(freqs)[0] == 1
    assert enc.details["code_bits"] < w.size + 10
    assert same_bytes(decoded_on_tflm(w, enc), w)


def test_large_root_k0_15():
    w = _laplace_int8((16, 32), 20, seed=3)
    enc = huffman_tables.encode(w, root_bits=15, table_entry_bits=16)
    assert enc.details["root_bits"] == 15
    assert enc.ancillary[5] >> 4 == 14
    assert len(enc.ancillary) >= 16 + 2 * 2**15
    assert same_bytes(decoded_on_tflm(w, enc), w)


def test_deep_codes_with_large_root_stay_optimal():
    # Fibonacci counts give a 19-bit-deep optimal code: deeper than any level (<= 15 bits).
    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    values = np.repeat(np.arange(20, dtype=np.int8), fib)
    assert code_lengths(np.bincount(values)).max() == 19
    for root in (15, None):
        enc = huffman_tables.encode(values, root_bits=root, table_entry_bits=16)
        assert enc.details["length_limit"] is None
        assert enc.details["code_bits"] == enc.details["optimal_code_bits"]
        assert enc.details["levels_max"] >= 2
        assert same_bytes(decoded_on_tflm(values, enc), values)


def test_far_pointer_is_refused_by_16_bit_layout():
    # Complemented canonical codes put the deep subtree under root entry 0: with k0 = 12 its
    # pointer would jump 4096 entries, beyond the 11-bit distance field of 16-bit entries.
    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    values = np.repeat(np.arange(20), fib)
    lengths = code_lengths(np.bincount(values))
    codes = canonical_codes(lengths)
    flipped = np.where(lengths > 0, codes ^ ((1 << lengths) - 1), 0)
    with pytest.raises(huffman_tables._LayoutError):
        huffman_tables.build(values, lengths, flipped, root_bits=12, entry_bits=16)
    stream, ancillary, _ = huffman_tables.build(values, lengths, flipped, root_bits=12, entry_bits=32)
    enc = Encoded("huffman", stream, ancillary, values.size, 0.0, 0, {})
    expected = values.astype(np.int8)
    assert same_bytes(huffman_tables.decode(enc, expected.shape, np.int8), expected)
    assert same_bytes(decoded_on_tflm(expected, enc), expected)


def test_stream_length_is_the_minimum_the_decoder_reads():
    w = _laplace_int8((8, 16), 6, seed=4)
    enc = huffman_tables.encode(w)
    assert len(enc.encoded) % 4 == 0
    shorter = Encoded("huffman", enc.encoded[:-4], enc.ancillary, enc.original_bytes, 0.0, 0, {})
    with pytest.raises(ConverterError, match="stream length"):
        huffman_tables.decode(shorter, w.shape, w.dtype)


def test_negative_controls_on_the_runtime():
    w = _laplace_int8((16, 16), 8, seed=5)
    enc = huffman_tables.encode(w)
    # Flip one stream bit: still prepares, but the output differs.
    flipped = bytearray(enc.encoded)
    flipped[0] ^= 0x80
    bad = Encoded("huffman", bytes(flipped), enc.ancillary, enc.original_bytes, 0.0, 0, {})
    out = run_tflm(decode_model(w, bad, verify=False))[0]
    assert not same_bytes(out, w)
    # Type-specific version byte 4 = 2: prepare fails.
    anc = bytearray(enc.ancillary)
    anc[4] = 2
    bad = Encoded("huffman", enc.encoded, bytes(anc), enc.original_bytes, 0.0, 0, {})
    with pytest.raises(RuntimeError):
        run_tflm(decode_model(w, bad, verify=False))
    # ...and the inserter refuses it while verifying.
    with pytest.raises(ConverterError):
        decode_model(w, bad)
    # 16-bit tables with an int16 output fail at Setup.
    enc16 = huffman_tables.encode(w)
    assert enc16.details["table_entry_bits"] == 16
    w16 = w.astype(np.int16)
    from converters.tflm.insert import insert_decode

    with pytest.raises(RuntimeError):
        run_tflm(insert_decode(constant_output_model(w16), {(0, 1): enc16}, verify=False))


def test_rejects_unsupported_inputs():
    with pytest.raises(ConverterError, match=r"HUFFMAN encoding of tensor float32\[2, 2\]: dtype"):
        huffman_tables.encode(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ConverterError, match="root_bits"):
        huffman_tables.encode(np.zeros(4, dtype=np.int8), root_bits=16)
    with pytest.raises(ConverterError, match="element count"):
        huffman_tables.encode(np.zeros(0, dtype=np.int8))
