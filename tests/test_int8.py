"""The int8 precision (`bld-export onnx --int8`, `--precision int8`), on the tiny model.

Export: the *_int8 step graphs are QDQ graphs that pass validation, verify, and come out byte
for byte the same from the same fp32 graphs and calibration; a quantization bug fails
validation. Sampling: --precision int8 on the cpu backend is deterministic and batch-invariant,
the C++ runtime gives the Python runtime's bits; other backends and CPUs without int8
instructions refuse it in one line. Quality and speed are the README's (the digits demo).
"""

from __future__ import annotations

import copy
import hashlib
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from bld_runtime import backends
from bld_runtime.backends import int8 as int8_cpu
from bld_runtime.errors import BackendUnavailableError, ManifestError
from bld_runtime.manifest import load_bundle
from bld_runtime.pipeline import Pipeline

CALIBRATION_IMAGES = 32  # conftest's tiny_int8_bundle; the README's export uses 256


@pytest.fixture(scope="module")
def int8_bundle(tiny_int8_bundle):
    return tiny_int8_bundle


@pytest.fixture(scope="module")
def int8_pipe(int8_bundle):
    return Pipeline.load(int8_bundle, precision="int8")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- export ---------------------------------------------------------------------------------


def test_int8_graphs_are_qdq_step_graphs_that_verify(int8_bundle):
    from bld_runtime.verify import verify_bundle

    lines: list[str] = []
    manifest = verify_bundle(int8_bundle, log=lines.append).manifest
    assert {n: g.precision for n, g in manifest.graphs.items()} == {
        "encoder": "fp32",
        "decoder": "fp32",
        "step": "fp32",
        "step_guided": "fp32",
        "step_int8": "int8",
        "step_guided_int8": "int8",
    }
    assert any(
        line.startswith("int8: encoder, decoder, step_int8, step_guided_int8") for line in lines
    )
    for name in ("step_int8", "step_guided_int8"):
        ops = {n.op_type for n in onnx.load(str(int8_bundle / f"{name}.onnx")).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear", "MatMul", "Sigmoid"} <= ops


def test_int8_graphs_dequantize_only_8_bit_tensors(int8_bundle):
    """TensorRT's parser takes DequantizeLinear of 8-bit (and FP8/4-bit) tensors only: the
    int32 bias quantize_static gives a Gemm is refused ("input has type Int32", TensorRT-RTX
    1.7), so the export turns Gemms into MatMul + Add first and the biases stay fp32."""
    for name in ("step_int8", "step_guided_int8"):
        graph = onnx.load(str(int8_bundle / f"{name}.onnx")).graph
        types = {t.name: t.data_type for t in graph.initializer}
        dequantized = [types.get(n.input[0]) for n in graph.node if n.op_type == "DequantizeLinear"]
        assert dequantized, name
        assert set(dequantized) <= {onnx.TensorProto.INT8, None}, name  # None: a Q's output
        assert "Gemm" not in {n.op_type for n in graph.node}, name


def test_quantizing_is_deterministic(int8_bundle, tmp_path):
    """The same fp32 graphs and calibration give the same bytes (the export's hashes): both
    step graphs quantized twice, their activation scales shared, as the export does."""
    from bld_export.graphs import Dims, declare
    from bld_export.quantize import (
        calibration_feeds,
        quantize_step_graph,
        share_activation_scales,
    )

    bundle = load_bundle(int8_bundle)
    m = bundle.manifest
    decls = {d.name: d for d in declare(Dims.from_manifest(m), int8=True)}
    fp32 = Pipeline.load(int8_bundle)
    for run in ("a", "b"):
        paths = {}
        for kind in ("step", "step_guided"):
            paths[kind] = tmp_path / run / f"{kind}_int8.onnx"
            paths[kind].parent.mkdir(exist_ok=True)
            feeds = calibration_feeds(fp32, kind, CALIBRATION_IMAGES)
            decl = decls[f"{kind}_int8"]
            quantize_step_graph(
                int8_bundle / f"{kind}.onnx", paths[kind], decl, feeds, 17, m.schedule
            )
        share_activation_scales(paths["step"], paths["step_guided"])
    for name in ("step_int8", "step_guided_int8"):
        assert sha256(tmp_path / "a" / f"{name}.onnx") == sha256(tmp_path / "b" / f"{name}.onnx")
        assert sha256(tmp_path / "a" / f"{name}.onnx") == m.graphs[name].sha256


def test_a_quantization_bug_fails_validation(int8_bundle, tiny_run, tmp_path):
    """Every weight scale doubled (a wrong range formula): validation against the fp32 model
    must fail, while the exported graph passes it."""
    from bld_export.errors import ValidationError
    from bld_export.graphs import Models
    from bld_export.validate import InputMaker, declarations_for, validate_graph

    m = load_bundle(int8_bundle).manifest
    decls = declarations_for(m)
    inputs = InputMaker(int8_bundle, m, decls, batch=4)
    models = Models.load(tiny_run)
    decl = decls["step_int8"]
    source = int8_bundle / "step_int8.onnx"
    validate_graph(source, decl, inputs, decl.build(models), torch_label="torch-fp32")

    model = onnx.load(str(source))
    weights = {t.name: t for t in model.graph.initializer}
    scales = {
        n.input[1]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in weights
    }
    broken = copy.deepcopy(model)
    for t in broken.graph.initializer:
        if t.name in scales:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 2, t.name))
    onnx.save(broken, str(tmp_path / "step_int8.onnx"))
    with pytest.raises(ValidationError, match="step_int8: output 'probs' differs between"):
        validate_graph(
            tmp_path / "step_int8.onnx", decl, inputs, decl.build(models), torch_label="torch-fp32"
        )


def test_a_float_weight_in_an_int8_graph_fails_the_static_check(int8_bundle, tmp_path):
    """An int8 graph whose MatMuls read fp32 weights (quantization skipped) is refused."""
    from bld_export.errors import ValidationError
    from bld_export.validate import check_graph, declarations_for

    m = load_bundle(int8_bundle).manifest
    decl = declarations_for(m)["step_int8"]
    shutil.copy(int8_bundle / "step.onnx", tmp_path / "step_int8.onnx")
    with pytest.raises(
        ValidationError, match="reads a float weight, but the graph is declared int8"
    ):
        check_graph(tmp_path / "step_int8.onnx", decl, 17)


def test_export_command_passes_int8_and_the_calibration_size(monkeypatch, tmp_path):
    """`bld-export onnx --int8 --calibration-images N` reaches export_bundle; N >= 1."""
    from bld_export import cli, export
    from bld_export.quantize import DEFAULT_CALIBRATION_IMAGES

    seen = {}
    monkeypatch.setattr(export, "export_bundle", lambda *a, **kw: seen.update(kw))
    args = ["onnx", str(tmp_path / "run"), "-o", str(tmp_path / "b")]
    result = CliRunner().invoke(cli.main, [*args, "--int8", "--calibration-images", "8"])
    assert result.exit_code == 0, result.output
    assert seen["int8"] is True and seen["calibration_images"] == 8
    CliRunner().invoke(cli.main, args)
    assert seen["int8"] is False and seen["calibration_images"] == DEFAULT_CALIBRATION_IMAGES
    result = CliRunner().invoke(cli.main, [*args, "--int8", "--calibration-images", "0"])
    assert result.exit_code == 1 and "--calibration-images" in result.output  # one line


# --- sampling -------------------------------------------------------------------------------


def test_int8_sampling_is_deterministic_and_batch_invariant(int8_pipe, int8_bundle):
    seeds = np.arange(40, 48, dtype=np.uint64)
    classes = np.array([0, 1, 2, 10, 4, 5, 10, 7])  # 10: the null class
    guidance = [0.0, 1.5] * 4
    whole = int8_pipe.generate(seeds=seeds, classes=classes, guidance=guidance)
    again = int8_pipe.generate(seeds=seeds, classes=classes, guidance=guidance)
    np.testing.assert_array_equal(whole.bits, again.bits)
    np.testing.assert_array_equal(whole.images, again.images)
    for order in (np.arange(8)[::-1], np.array([3, 0, 6, 1, 7, 2, 5, 4])):
        shuffled = int8_pipe.generate(
            seeds=seeds[order], classes=classes[order], guidance=[guidance[i] for i in order]
        )
        np.testing.assert_array_equal(shuffled.bits, whole.bits[order])
    for i in (0, 3, 5):
        alone = int8_pipe.generate(seeds=[seeds[i]], classes=[classes[i]], guidance=guidance[i])
        np.testing.assert_array_equal(alone.bits[0], whole.bits[i])
    # the int8 graphs ran, not the fp32 ones: their probabilities differ
    fp32 = Pipeline.load(int8_bundle)
    traced = [
        p.generate(seeds=seeds[:2], classes=classes[:2], trace=True) for p in (int8_pipe, fp32)
    ]
    assert int8_pipe.backend.graphs["step"].name == "step_int8"
    assert not np.array_equal(traced[0].trace.probs[0], traced[1].trace.probs[0])


def test_a_guidance_0_row_is_the_same_in_a_guided_batch(int8_pipe):
    """The guided int8 graph at guidance 0 gives the unguided int8 graph's probabilities bit
    for bit, as the fp32 graphs do (the export shares their activation scales): a row's bits
    do not depend on whether its batch holds guided rows, on a server's batches too."""
    rng = np.random.default_rng(3)
    L, C = int8_pipe.latent_shape
    bits = (rng.random((8, L, C)) < 0.5).astype(np.uint8)
    classes = np.arange(8) % int8_pipe.num_classes
    for step in (0, int8_pipe.num_steps // 2, int8_pipe.num_steps - 1):
        mixed = int8_pipe.step_probs(bits, step, classes, guidance=[0.0, 1.5] * 4)
        alone = int8_pipe.step_probs(bits[::2], step, classes[::2], guidance=0.0)
        np.testing.assert_array_equal(mixed[::2], alone)


def test_bld_sample_precision_int8(int8_bundle, tmp_path):
    from bld_runtime.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "sample",
            str(int8_bundle),
            "--precision",
            "int8",
            "-n",
            "3",
            "--seed",
            "7",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = Pipeline.load(int8_bundle, precision="int8").generate(3, seeds=7)
    from bld_runtime.bits import load_bits

    np.testing.assert_array_equal(load_bits(out / "bits.bldz"), expected.bits)


def test_a_bundle_without_int8_graphs_says_how_to_make_them(tiny_bundle):
    with pytest.raises(
        ManifestError,
        match=r"has no 'step_int8' graph, which precision 'int8' needs \(export with --int8\)",
    ):
        Pipeline.load(tiny_bundle, precision="int8")


@pytest.mark.parametrize("backend", ["cuda", "tensorrt-ep"])
def test_other_backends_refuse_int8_in_one_sentence(int8_bundle, backend):
    with pytest.raises(BackendUnavailableError) as error:
        Pipeline.load(int8_bundle, backend=backend, precision="int8")
    assert str(error.value) == (
        f"precision 'int8' runs on backends 'cpu', 'openvino' and 'tensorrt' only; backend "
        f"'{backend}' runs "
        "fp32, fp16"
    )


# --- CPUs without int8 instructions ---------------------------------------------------------

# The C++ runtime's int8_refusal (runtime/cpp/tests/test_core.cpp) holds these same sentences.
NO_VNNI = (
    "precision 'int8' needs a CPU with AVX512_VNNI, AVX_VNNI or AMX-INT8, which this one lacks "
    "(without them onnxruntime's int8 kernels may saturate and give other bits); use --precision "
    "fp32"
)


@pytest.mark.parametrize(
    ("machine", "flags", "refusal"),
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, None),
        ("x86_64", {"avx2", "avx_vnni"}, None),
        ("x86_64", {"avx512f", "amx_int8"}, None),
        ("x86_64", {"sse4_2", "avx2", "avx512f", "avx512_bf16"}, NO_VNNI),
        ("aarch64", {"fp", "asimd", "asimddp"}, None),
        (
            "aarch64",
            {"fp", "asimd"},
            "precision 'int8' needs a CPU with the dot-product instructions (asimddp or i8mm), "
            "which this one lacks (without them onnxruntime's int8 kernels may saturate and give "
            "other bits); use --precision fp32",
        ),
        (
            "x86_64",
            None,
            "precision 'int8' needs a CPU with AVX512_VNNI, AVX_VNNI or AMX-INT8, and this system "
            "does not say whether it has them (no /proc/cpuinfo); use --precision fp32",
        ),
        (
            "riscv64",
            set(),
            "precision 'int8' runs on x86-64 CPUs with VNNI or AMX-INT8 and ARM64 CPUs with "
            "dot-product instructions; this CPU is riscv64; use --precision fp32",
        ),
    ],
)
def test_int8_refusal_by_cpu(machine, flags, refusal):
    assert int8_cpu.int8_refusal(machine, flags) == refusal


def test_cpuinfo_flags_are_read_on_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp\n")
    assert int8_cpu.cpu_flags(str(x86)) == {"fpu", "avx2", "avx512_vnni"}
    assert int8_cpu.cpu_flags(str(arm)) == {"fp", "asimd", "asimddp"}
    assert int8_cpu.cpu_flags(str(tmp_path / "none")) is None


def test_a_cpu_without_vnni_refuses_int8_in_one_line(int8_bundle, tmp_path, monkeypatch):
    """The cpu backend refuses before reading a graph; bld sample prints the one line, exit 1."""
    from bld_runtime.cli import cli

    monkeypatch.setattr(int8_cpu.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(int8_cpu, "cpu_flags", lambda: {"sse4_2", "avx2", "avx512f"})
    with pytest.raises(BackendUnavailableError, match=r"^precision 'int8' needs a CPU with"):
        Pipeline.load(int8_bundle, precision="int8")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["sample", str(int8_bundle), "--precision", "int8", "-o", str(out)]
    )
    assert result.exit_code == 1
    assert result.stderr == f"error: {NO_VNNI}\n"
    assert not out.exists()
    Pipeline.load(int8_bundle)  # fp32 is unaffected
    assert backends.names()[0] == "cpu"
