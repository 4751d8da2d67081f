"""bld_export: graphs, bundle, validation and the bld-export CLI, on the tiny trained run.

One export (fp32 + fp16 graphs) is shared by the session (`tiny_bundle` in conftest.py); tests
that modify a bundle copy it first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx.reference import ReferenceEvaluator

from bld_export import cli
from bld_export.errors import ExportError, ValidationError
from bld_export.flops import graph_flops
from bld_export.graphs import BATCH, Dims, Models, declare
from bld_export.validate import check_graph, onnxruntime_session
from bld_runtime import contract
from bld_runtime.files import sha256_file
from bld_runtime.manifest import load_bundle

FP32_GRAPHS = ("encoder", "decoder", "step", "step_guided")
FP16_GRAPHS = ("decoder_fp16", "step_fp16", "step_guided_fp16")

# Every op the exported graphs may contain: plain ops that TensorRT's ONNX parser accepts.
# Attention must appear as MatMul + Softmax, never as a fused or contrib-domain op.
ALLOWED_OPS = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Erf",
    "Sigmoid",
    "Sin",
    "Cos",
    "Clip",
    "Where",
    "Greater",
    "Equal",
    "MatMul",
    "Gemm",
    "Conv",
    "Softmax",
    "LayerNormalization",
    "InstanceNormalization",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherND",
    "Expand",
    "Resize",
    "Shape",
    "Cast",
    "Constant",
    "ConstantOfShape",
    "Identity",
    "Range",
}


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def models(tiny_run):
    return Models.load(tiny_run)


@pytest.fixture(scope="module")
def decls(bundle):
    return {d.name: d for d in declare(Dims.from_manifest(bundle.manifest), fp16=True)}


def run_cli(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    return result.exit_code, result.output


def copy_bundle(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


# --- the bundle --------------------------------------------------------------------------------


def test_manifest_describes_every_graph(bundle, models):
    m = bundle.manifest
    ae, prior = models.autoencoder.cfg, models.prior_cfg
    assert set(m.graphs) == set(FP32_GRAPHS + FP16_GRAPHS)
    assert (m.image.height, m.image.channels) == (ae.image_size, ae.in_channels)
    assert (m.latent.height, m.latent.bits) == (ae.latent_size, ae.bits)
    assert m.classes.count == prior.num_classes == m.classes.null_class
    expected = contract.sampling_timesteps(prior.train_steps, prior.sampling_steps).tolist()
    assert list(m.schedule.timesteps) == expected
    for spec in m.graphs.values():
        assert spec.opset == 17 and spec.flops > 0
        assert spec.sha256 == sha256_file(bundle.directory / spec.file)
        assert all(t.shape[0] == BATCH for t in spec.inputs + spec.outputs)
        assert all(t.dtype in ("float32", "int64") for t in spec.inputs + spec.outputs)
        model = onnx.load(str(bundle.directory / spec.file))
        assert model.opset_import[0].version == 17
        assert [i.name for i in model.graph.input] == [t.name for t in spec.inputs]


def test_flops_match_the_transformer_arithmetic(bundle, models):
    cfg = models.prior_cfg
    n, w, L = cfg.latent_size**2 + 2, cfg.width, cfg.latent_size**2
    hidden = int(w * cfg.mlp_ratio)
    block = 2 * n * w * (3 * w) + 2 * n * w * w + 2 * 2 * n * w * hidden + 2 * 2 * n * n * w
    denoiser = cfg.depth * block + 2 * L * cfg.bits * w + 2 * 2 * w * w + 2 * L * w * cfg.bits
    assert bundle.manifest.graphs["step"].flops == denoiser
    assert bundle.manifest.graphs["step_guided"].flops == 2 * denoiser
    assert graph_flops(str(bundle.graph_path("step_fp16"))) == denoiser


def test_ops_are_on_the_allow_list(bundle):
    for name in bundle.manifest.graphs:
        model = onnx.load(str(bundle.graph_path(name)))
        ops = {n.op_type for n in model.graph.node}
        assert all(n.domain in ("", "ai.onnx") for n in model.graph.node), name
        assert ops <= ALLOWED_OPS, f"{name}: {sorted(ops - ALLOWED_OPS)}"
        if name.startswith("step"):
            assert {"MatMul", "Softmax"} <= ops  # attention, written out


def step_feeds(decl, K: int, classes: int, batch: int = 64, seed: int = 0) -> dict:
    """64 random bit states over every step, real and null classes, guidance 0 and 1.5."""
    rng = np.random.default_rng(seed)
    feeds = {
        "bits": rng.integers(0, 2, (batch,) + decl.inputs[0].shape[1:]).astype(np.float32),
        "step": (np.arange(batch) % K).astype(np.int64),
        "class_label": rng.integers(0, classes + 1, batch).astype(np.int64),
        "temperature": rng.uniform(0.5, 2.0, batch).astype(np.float32),
    }
    feeds["class_label"][::5] = classes
    if decl.kind == "step_guided":
        feeds["guidance"] = np.where(np.arange(batch) % 2, 1.5, 0.0).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", ["step", "step_guided"])
def test_step_graph_matches_pytorch_and_the_contract(bundle, models, decls, name):
    m = bundle.manifest
    decl = decls[name]
    feeds = step_feeds(decl, len(m.schedule.timesteps), m.classes.count)
    probs = onnxruntime_session(bundle.graph_path(name)).run(None, feeds)[0]
    with torch.no_grad():
        torch_probs = decl.build(models)(*(torch.from_numpy(feeds[k]) for k in decl.input_names))
    assert probs.shape == feeds["bits"].shape
    assert np.abs(probs - torch_probs.numpy()).max() <= 1e-5

    # The graph is the contract's step: denoiser logits -> mix -> p0 -> posterior (or p0).
    tables = contract.step_tables(
        m.schedule.name, m.schedule.train_steps, len(m.schedule.timesteps)
    )
    with torch.no_grad():

        def logits(labels):
            t = torch.from_numpy(tables.t_model[feeds["step"]])
            return models.denoiser(
                torch.from_numpy(feeds["bits"]), t, torch.from_numpy(labels)
            ).numpy()

        l_cond = logits(feeds["class_label"])
        l_null = logits(np.full_like(feeds["class_label"], m.classes.null_class))
    for row in range(len(probs)):
        if name == "step":
            mixed = contract.mix_logits(l_cond[row], feeds["temperature"][row])
        else:
            mixed = contract.mix_logits(
                l_cond[row], feeds["temperature"][row], feeds["guidance"][row], l_null[row]
            )
        expected = contract.step_probability(feeds["bits"][row], mixed, tables, feeds["step"][row])
        assert np.abs(probs[row] - expected).max() <= 1e-5, row


def test_reference_evaluator_agrees_with_onnxruntime(bundle, decls):
    rng = np.random.default_rng(1)
    for name in FP32_GRAPHS:
        feeds = decls[name].random_inputs(4, rng)
        path = str(bundle.graph_path(name))
        ours = onnxruntime_session(bundle.graph_path(name)).run(None, feeds)[0]
        reference = ReferenceEvaluator(path).run(None, feeds)[0]
        assert np.abs(ours - reference).max() <= 1e-5, name


def test_batch_axis_is_dynamic(bundle, decls):
    rng = np.random.default_rng(2)
    for name in FP32_GRAPHS:
        session = onnxruntime_session(bundle.graph_path(name))
        for batch in (1, 3):
            out = session.run(None, decls[name].random_inputs(batch, rng))[0]
            assert out.shape == decls[name].outputs[0].concrete(batch)


def test_fp16_graphs_run_their_body_in_fp16(bundle, decls):
    rng = np.random.default_rng(3)
    for name in FP16_GRAPHS:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(bundle.graph_path(name))))
        types = {
            v.name: v.type.tensor_type.elem_type
            for v in list(model.graph.value_info) + list(model.graph.input)
        }
        types.update({t.name: t.data_type for t in model.graph.initializer})
        matmuls = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
        assert matmuls and all(types[n.input[0]] == onnx.TensorProto.FLOAT16 for n in matmuls)
        if name.startswith("step"):  # the flip sigmoid and the posterior stay in fp32
            last_sigmoid = [n for n in model.graph.node if n.op_type == "Sigmoid"][-1]
            assert types[last_sigmoid.input[0]] == onnx.TensorProto.FLOAT
        else:  # GroupNorm sums a whole feature map per group: fp32
            norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
            assert norms and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norms)
        # Close to the fp32 graph (the tiny model's logits are small; trained ones are larger).
        feeds = decls[name].random_inputs(4, rng)
        half = onnxruntime_session(bundle.graph_path(name)).run(None, feeds)[0]
        full = onnxruntime_session(bundle.graph_path(name.removesuffix("_fp16"))).run(None, feeds)[
            0
        ]
        assert half.dtype == np.float32 and np.abs(half - full).max() < 0.05, name


def test_shape_profiles_span_one_to_max_batch(decls):
    profile = decls["step_guided"].shape_profile(max_batch=64, opt_batch=16)
    assert set(profile) == set(decls["step_guided"].input_names)
    low, opt, high = profile["bits"]
    assert (low[0], opt[0], high[0]) == (1, 16, 64) and low[1:] == high[1:]


# --- validation fails loudly -------------------------------------------------------------------


def test_op_outside_the_allow_list_fails_validation(bundle, decls, tmp_path):
    model = onnx.load(str(bundle.graph_path("step")))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    softmax.op_type = "Hardmax"  # same signature, valid ONNX, not something we export
    onnx.save(model, tmp_path / "step.onnx")
    with pytest.raises(ValidationError, match=r"op Hardmax .* not on the list"):
        check_graph(tmp_path / "step.onnx", decls["step"], opset=17)


def test_changed_weights_fail_verify_against_the_run(tiny_bundle, tiny_run, tmp_path):
    directory = copy_bundle(tiny_bundle, tmp_path)
    path = directory / "step.onnx"
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = onnx.numpy_helper.to_array(init) * 1.5
    init.CopyFrom(onnx.numpy_helper.from_array(weights.astype(np.float32), init.name))
    onnx.save(model, str(path))
    manifest = json.loads((directory / "bld.json").read_text())
    manifest["graphs"]["step"]["sha256"] = sha256_file(path)
    (directory / "bld.json").write_text(json.dumps(manifest))

    code, output = run_cli("verify", directory, "--run", tiny_run)
    assert code == 1 and "Traceback" not in output
    assert "error: step: output 'probs' differs between onnxruntime and torch" in output
    assert "max abs error" in output and "max rel error" in output


# --- integrity errors through the CLI ------------------------------------------------------------


def tamper_byte(directory: Path) -> None:
    path = directory / "step_guided.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def delete_file(directory: Path) -> None:
    (directory / "decoder.onnx").unlink()


def edit_manifest(change):
    def edit(directory: Path) -> None:
        data = json.loads((directory / "bld.json").read_text())
        change(data)
        (directory / "bld.json").write_text(json.dumps(data))

    return edit


BREAKAGES = {
    "tampered byte": (tamper_byte, "does not match the manifest: sha256 expected"),
    "deleted file": (delete_file, "graph file 'decoder.onnx' (graphs.decoder) is missing"),
    "unknown key": (
        edit_manifest(lambda d: d["graphs"]["step"]["inputs"][0].update(foo=1)),
        "graphs.step.inputs[0]: unknown key 'foo'",
    ),
    "path outside": (
        edit_manifest(lambda d: d["graphs"]["encoder"].update(file="../encoder.onnx")),
        "uses '..' to leave the bundle directory",
    ),
}


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_broken_bundles_fail_with_distinct_errors(tiny_bundle, tmp_path, command):
    messages = set()
    for i, (name, (breakage, expected)) in enumerate(BREAKAGES.items()):
        directory = Path(shutil.copytree(tiny_bundle, tmp_path / f"bundle{i}"))
        breakage(directory)
        code, output = run_cli(command, directory)
        assert code == 1, name
        assert output.startswith("error: ") and "Traceback" not in output, output
        assert expected in output, (name, output)
        messages.add(output.strip())
    assert len(messages) == len(BREAKAGES)


def test_verify_and_inspect_accept_the_bundle(tiny_bundle):
    code, output = run_cli("verify", tiny_bundle)
    assert code == 0 and "comparisons passed" in output
    assert "reference vs onnxruntime" in output and "max abs" in output
    code, output = run_cli("inspect", tiny_bundle)
    assert code == 0 and "step_guided_fp16" in output and "FLOPs per step" in output
    assert "[batch, 64, 8]" in output


# --- export arguments ----------------------------------------------------------------------------


def test_opset_below_17_is_rejected(tiny_run, tmp_path):
    from bld_export.export import export_bundle

    with pytest.raises(ExportError, match="opset must be between 17 and"):
        export_bundle(tiny_run, tmp_path / "out", opset=16)
    code, output = run_cli("onnx", tiny_run, "-o", tmp_path / "out", "--opset", "13")
    assert code == 1 and output.startswith("error: opset must be between 17")
    assert not (tmp_path / "out").exists()


def test_non_empty_output_is_refused_unless_forced(tiny_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, output = run_cli("onnx", tiny_run, "-o", out)
    assert code == 1 and "is not empty; pass --force" in output
    code, output = run_cli("onnx", tiny_run, "-o", out, "--force")  # not a bundle: still kept
    assert code == 1 and "holds no bld.json" in output
    assert (out / "notes.txt").read_text() == "keep me"


def test_failed_export_leaves_nothing_behind(tiny_run, tmp_path, monkeypatch):
    from bld_export import export as export_module

    real = export_module.export_graph

    def fail_on_decoder(decl, *args):  # after the encoder was written to the temporary dir
        if decl.name == "decoder":
            raise ExportError("decoder: simulated exporter failure")
        return real(decl, *args)

    monkeypatch.setattr(export_module, "export_graph", fail_on_decoder)
    with pytest.raises(ExportError, match="simulated"):
        export_module.export_bundle(tiny_run, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]  # the (released) lock file
