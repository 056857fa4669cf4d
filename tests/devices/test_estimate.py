"""The estimate target: operator counts from the flatbuffer and device profiles."""

from __future__ import annotations

import pytest
from bench_models import CONV_MACS, DENSE_MACS, packed_model, tiny_model

from devices import DeviceError
from devices.profiles import PROFILE_DIR, list_profiles, load_profile
from devices.records import FIGURE_KINDS
from devices.settings import BenchSettings
from devices.targets.estimate import count_operations, estimate, make_target, read_model


@pytest.mark.parametrize("int8", [False, True])
def test_mac_counts_equal_hand_computed_values(int8):
    conv = count_operations(tiny_model("conv", int8).read_bytes())
    assert [(o.name, o.macs) for o in conv if o.macs] == [("CONV_2D", 6 * 6 * 4 * 3 * 3), ("FULLY_CONNECTED", 1440)]
    assert sum(o.macs for o in conv) == CONV_MACS
    dense = count_operations(tiny_model("dense", int8).read_bytes())
    assert sum(o.macs for o in dense) == DENSE_MACS
    assert {o.dtype for o in dense} == {"int8" if int8 else "float32"}
    # weights read: the int8 FC weight is 2048 bytes, the float one 8192, plus the int32/float32 bias
    # when the converter keeps it (it drops an all-zero float bias)
    assert dense[0].weight_bytes - (2048 if int8 else 8192) in (0, 32 * 4)


def test_every_estimated_figure_is_labelled():
    record = make_target("cortex-m4-80mhz").run(tiny_model("conv", True), BenchSettings())[0]
    assert record.target == "estimate:cortex-m4-80mhz"
    for fig in record.figures:
        assert fig.kind in FIGURE_KINDS
        assert fig.kind == ("measured" if fig.name == "model_size" else "estimated"), fig.name
    assert record.figure("macs").value == CONV_MACS
    assert record.environment["device"]["profile"]["clock_mhz"] == 80
    assert "Horowitz" in record.environment["device"]["sources"]["energy_ops"]


def test_latency_scales_with_clock_and_energy_with_power():
    path = tiny_model("conv", True)
    slow = make_target("cortex-m4-80mhz").run(path, BenchSettings())[0]
    fast = make_target("cortex-m4-80mhz@160").run(path, BenchSettings())[0]
    assert fast.target == "estimate:cortex-m4-80mhz@160MHz"
    assert fast.figure("latency_compute").value == pytest.approx(slow.figure("latency_compute").value / 2)
    profile = load_profile("cortex-m4-80mhz")
    est = estimate(path.read_bytes(), profile)
    cycles = CONV_MACS * 1.5 + 3 * profile.op_overhead_cycles  # CONV and FC at 1.5 cycles/MAC, 3 ops
    assert est.compute_s == pytest.approx(cycles / 80e6)
    assert est.energy_j == pytest.approx(24e-3 * est.latency_s)
    via_extra = make_target("cortex-m4-80mhz").run(path, BenchSettings(extra={"clock_mhz": "40"}))[0]
    assert via_extra.figure("latency_compute").value == pytest.approx(slow.figure("latency_compute").value * 2)


def test_int8_is_estimated_faster_than_float_on_an_mcu():
    m4 = load_profile("cortex-m4-80mhz")
    assert estimate(tiny_model("conv", True).read_bytes(), m4).latency_s < \
        estimate(tiny_model("conv", False).read_bytes(), m4).latency_s


def test_packed_model_counts_decode_and_encoded_bytes():
    packed = packed_model()
    if packed is None:
        pytest.skip("converters.tflm.pack is not available")
    ops = count_operations(packed.read_bytes())
    decodes = [o for o in ops if o.name == "TFLM_DECODE"]
    assert decodes and all(o.decode_type == "PRUNE" for o in decodes)
    assert sum(o.decoded_elements for o in decodes) >= 64 * 32
    first = decodes[0]
    assert 0 < first.weight_bytes < 64 * 32  # encoded bitmap + kept values < dense int8 weight
    assert sum(o.macs for o in ops) == DENSE_MACS
    record = make_target("cortex-m4-80mhz").run(packed, BenchSettings())[0]
    assert record.figure("decoded_elements").value == sum(o.decoded_elements for o in decodes)
    dense = make_target("cortex-m4-80mhz").run(tiny_model("dense", True), BenchSettings())[0]
    assert record.figure("latency_p50").value > dense.figure("latency_p50").value  # decoding costs time
    assert record.figure("weight_bytes_read").value < dense.figure("weight_bytes_read").value


def test_every_bundled_profile_loads_and_cites_sources():
    names = list_profiles()
    assert {"cortex-m4-80mhz", "cortex-m4-168mhz", "cortex-m7-480mhz", "cortex-m33-160mhz",
            "cortex-m55-160mhz", "phone-big-core", "raspberry-pi-4"} <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.clock_mhz > 0 and p.memory_bandwidth_mb_s > 0
        assert p.cpm("CONV_2D", "int8") > 0 and p.cpm("FULLY_CONNECTED", "float32") > 0
        assert {"cycles_per_mac", "active_power_mw", "memory_bandwidth_mb_s"} <= set(p.sources), name
        record = make_target(name).run(tiny_model("conv", True), BenchSettings())[0]
        assert record.figure("energy_per_inference").value > 0


def test_base_profile_is_inherited():
    m4_168 = load_profile("cortex-m4-168mhz")
    m4_80 = load_profile("cortex-m4-80mhz")
    assert m4_168.cycles_per_mac == m4_80.cycles_per_mac
    assert m4_168.clock_mhz == 168 and m4_168.energy["active_power_mw"] == 132
    assert m4_168.energy["mac_pj"] == m4_80.energy["mac_pj"]


def test_user_profile_path_and_bad_names(tmp_path):
    custom = tmp_path / "board.toml"
    custom.write_text(f'base = "{PROFILE_DIR / "cortex-m4-80mhz.toml"}"\nname = "my-board"\nclock_mhz = 64\n')
    assert make_target(str(custom)).profile.clock_mhz == 64
    with pytest.raises(DeviceError, match="cortex-m4-80mhz"):
        make_target("cortex-m99")
    with pytest.raises(DeviceError, match="estimate:PROFILE"):
        make_target(None)
    with pytest.raises(DeviceError, match="PROFILE@MHZ"):
        make_target("cortex-m4-80mhz@fast")
    broken = tmp_path / "broken.toml"
    broken.write_text("clock_mhz = = 3")
    with pytest.raises(DeviceError, match="not valid TOML"):
        load_profile(str(broken))


def test_not_a_tflite_file_is_rejected(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(DeviceError, match="TFL3"):
        read_model(bad.read_bytes())


def test_corrupted_names_and_indices_are_read_or_rejected_in_one_line(rewrite_model):
    """Byte mutations of real models once stopped `bench` with a traceback here: a tensor name
    that is not UTF-8, and (by the same path) an operator pointing past the tensor list."""
    good = tiny_model("conv").read_bytes()

    def bad_name(m):
        m.subgraphs[0].tensors[0].name = b"x\xff\xfey"

    graph = read_model(rewrite_model(good, bad_name))
    assert graph.tensors[0].name.startswith("x")

    def bad_index(m):
        m.subgraphs[0].operators[0].inputs[0] = 4000

    with pytest.raises(DeviceError, match="operator 0 refers to tensor 4000"):
        read_model(rewrite_model(good, bad_index))

    def bad_opcode(m):
        m.subgraphs[0].operators[0].opcodeIndex = 77

    with pytest.raises(DeviceError, match="operator code 77"):
        read_model(rewrite_model(good, bad_opcode))

    def no_subgraphs(m):
        m.subgraphs = []

    with pytest.raises(DeviceError, match="no subgraphs"):  # was an IndexError
        read_model(rewrite_model(good, no_subgraphs))


def test_mac_count_of_ds_cnn_matches_the_mlperf_tiny_paper(tmp_path):
    """kws01 DS-CNN on 49x10 MFCCs: ~2.7 M MACs in the MLPerf Tiny paper."""
    import tensorflow as tf

    from edge_lottery.models import build_model

    model = build_model("ds_cnn", (49, 10, 1), 12, seed=0)
    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    macs = sum(o.macs for o in count_operations(flat))
    assert macs == pytest.approx(2.7e6, rel=0.03)


def test_accuracy_mode_is_refused_by_the_estimate(tmp_path):
    np = pytest.importorskip("numpy")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 8, 8, 1), np.float32), y=np.zeros(2))
    with pytest.raises(DeviceError, match="cannot measure accuracy"):
        make_target("cortex-m4-80mhz").run(tiny_model("conv"), BenchSettings(mode="accuracy",
                                                                              inputs=str(tmp_path / "d.npz")))


def test_estimate_macs_are_the_inspectors_per_operator():
    """One MAC counter: the estimate's per-operator MACs are converters.inspect's on a real conv model
    (ResNet-8: 3x3 and 1x1 convolutions, FC), and the operators the estimate's former counter got wrong
    (CONV_3D, BATCH_MATMUL with adj_x) match hand-computed values."""
    import tensorflow as tf
    import tf_keras as keras

    from converters.inspect import inspect_model
    from edge_lottery.models import build_model

    flat = tf.lite.TFLiteConverter.from_keras_model(build_model("resnet8", (8, 8, 3), 10, seed=0)).convert()
    ops = count_operations(flat)
    info = inspect_model(flat)
    assert [(o.name, o.macs) for o in ops] == [(o.name, o.macs) for o in info.ops if o.subgraph == 0]
    assert sum(o.macs for o in ops) == info.total_macs > 0
    assert estimate(flat, load_profile("cortex-m4-80mhz")).macs == info.total_macs

    x = keras.Input((6, 6, 6, 2))
    conv3d = tf.lite.TFLiteConverter.from_keras_model(keras.Model(x, keras.layers.Conv3D(4, 3)(x))).convert()
    # 4x4x4 outputs x 4 filters, each 3x3x3 x 2 input channels
    assert [o.macs for o in count_operations(conv3d) if o.name == "CONV_3D"] == [4 * 4 * 4 * 4 * 3 * 3 * 3 * 2]
    a, b = keras.Input((6, 4)), keras.Input((6, 5))
    bmm = keras.Model([a, b], tf.linalg.matmul(a, b, transpose_a=True))  # (4x6) @ (6x5)
    ops = count_operations(tf.lite.TFLiteConverter.from_keras_model(bmm).convert())
    assert [o.macs for o in ops if o.name == "BATCH_MATMUL"] == [4 * 5 * 6]
