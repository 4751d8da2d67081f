"""paper256 is the official 256px recipe (docs/DEVIATIONS.md), and its pieces work.

The official numbers below are derived from the authors' code, ZeWang95/BinaryLatentDiffusion:
- the prior is models/transformer.py's TransformerBD with models/transformer_utils.py's Block
  (pre-norm attention + GELU MLP, qkv with bias, LayerScale gamma_1/gamma_2 initialised to 1.0)
  and AdaTkn_Time (Linear, SiLU, Linear on sin-cos features of t * 4000 / steps); sizes from
  hparams/defaults/sampler_defaults.py (bert_n_layers 24, bert_n_emb 768, bert_n_head 12,
  block_size 256) and the README's commands (codebook_size 64: 64 bits per token), ImageNet's
  class token an nn.Embedding(1000, 768);
- the autoencoder is models/binaryae.py's Encoder + BinaryQuantizer + Generator with
  hparams/defaults/binarygan_default.py's 256px settings (nf 128, ch_mult 1 1 2 2 4, res_blocks
  2, attn_resolutions 16, emb_dim 256, gen_mul 1) and --norm_first, counted without the
  parameters its forward never uses (ResBlock.conv_out where in == out channels, the
  Generator's logsigma head).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bld_train import checkpoint as ckpt
from bld_train.autoencoder import BinaryAutoencoder
from bld_train.config import ConfigError, PriorConfig, PriorTrainConfig, preset
from bld_train.denoiser import Denoiser, timestep_features
from bld_train.diffaug import diff_augment, parse_policy, translation
from bld_train.loop import EMA, lr_at
from bld_train.losses import adaptive_gan_weight

OFFICIAL_LAYERS, OFFICIAL_WIDTH, OFFICIAL_HEADS = 24, 768, 12
OFFICIAL_TOKENS, OFFICIAL_BITS, OFFICIAL_CLASSES = 256, 64, 1000


def official_prior_parameters(
    layers=OFFICIAL_LAYERS,
    w=OFFICIAL_WIDTH,
    tokens=OFFICIAL_TOKENS,
    bits=OFFICIAL_BITS,
    classes=OFFICIAL_CLASSES,
) -> int:
    """Parameters of upstream's class-conditional TransformerBD, module by module."""
    linear = lambda i, o: i * o + o  # noqa: E731 - nn.Linear with bias
    block = (
        2 * 2 * w  # ln1, ln2
        + linear(w, 3 * w)  # Attention.qkv
        + linear(w, w)  # Attention.proj
        + (linear(w, 4 * w) + linear(4 * w, w))  # mlp
        + 2 * w  # gamma_1, gamma_2
    )
    return (
        bits * w  # tok_emb (bits @ weight, no bias)
        + tokens * w  # pos_emb (nn.Parameter)
        + 2 * linear(w, w)  # AdaTkn_Time: l0, linear
        + classes * w  # cls_embedding
        + layers * block
        + 2 * w  # ln_f
        + linear(w, bits)  # head
    )


OFFICIAL_ENCODER_PARAMETERS = 29_314_624  # Encoder + BinaryQuantizer.proj
OFFICIAL_DECODER_PARAMETERS = 33_739_651  # BinaryQuantizer.embed + Generator


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper256_prior_is_the_official_transformer():
    cfg = preset("paper256").prior
    model = Denoiser(cfg)
    assert (cfg.latent_size**2, cfg.bits) == (OFFICIAL_TOKENS, OFFICIAL_BITS)
    assert (cfg.depth, cfg.width, cfg.heads) == (OFFICIAL_LAYERS, OFFICIAL_WIDTH, OFFICIAL_HEADS)
    assert len(model.blocks) == OFFICIAL_LAYERS
    for block in model.blocks:
        assert block.attn.heads == OFFICIAL_HEADS and block.attn.qkv.in_features == OFFICIAL_WIDTH
        for gamma in (block.gamma_1, block.gamma_2):  # LayerScale, upstream's init 1.0
            assert isinstance(gamma, torch.nn.Parameter) and gamma.requires_grad
            assert gamma.shape == (OFFICIAL_WIDTH,) and torch.all(gamma == 1.0)
        assert not torch.any(block.attn.qkv.bias)  # upstream zeroes the qkv bias
    params = dict(model.named_parameters())
    assert "pos" in params and params["pos"].shape == (1, OFFICIAL_TOKENS, OFFICIAL_WIDTH)
    # ... initialised with the 2-D sin-cos table, learnable.
    assert params["pos"].requires_grad
    assert cfg.time_features == "rescaled" and cfg.init == "torch"
    # Upstream's count plus one row: the null class token (a deliberate difference).
    assert count(model) == official_prior_parameters() + OFFICIAL_WIDTH == 172_392_256


def test_paper256_autoencoder_has_the_official_parameter_count():
    model = BinaryAutoencoder(preset("paper256").autoencoder)
    assert count(model.encoder) == OFFICIAL_ENCODER_PARAMETERS
    assert count(model.decoder) == OFFICIAL_DECODER_PARAMETERS
    assert model.decoder.embed.bias is None and model.encoder.net[-1].kernel_size == (1, 1)


def test_paper256_training_follows_the_official_settings():
    p = preset("paper256")
    ae, prior = p.autoencoder_train, p.prior_train
    assert (ae.code_weight, ae.disc_weight, ae.disc_weight_max) == (0.0, 1.0, 1.0)
    assert ae.perceptual_weight == 1.0 and ae.betas == (0.9, 0.999) and ae.lr_schedule == "constant"
    assert (prior.codes, prior.loss, prior.focal) == ("stochastic", "mean", 0.0)
    assert (prior.lr, prior.warmup_steps, prior.weight_decay) == (2e-4, 10000, 0.0)
    assert p.prior.train_steps == 64


def test_defaults_keep_the_models_the_demo_was_measured_with():
    """New fields default to the project's first choices: a digits checkpoint still loads."""
    model = Denoiser(preset("digits").prior)
    assert "pos" not in model.state_dict()  # a fixed, non-persistent buffer
    assert not any(name.endswith(("gamma_1", "gamma_2")) for name in model.state_dict())
    ae = BinaryAutoencoder(preset("digits").autoencoder)
    assert ae.decoder.embed.bias is not None
    assert preset("digits").prior_train.codes == "fixed"


def test_rescaled_time_features_are_upstreams_sinusoidal_pos_emb():
    T, width = 64, 16
    t = torch.arange(T)
    got = timestep_features(t, width, "rescaled", T)
    x = t.double() / T * 4000.0  # upstream SinusoidalPosEmb(num_steps=T, rescale_steps=4000)
    half = width // 2
    freqs = torch.exp(torch.arange(half).double() * -(math.log(10000) / (half - 1)))
    want = torch.cat([(x[:, None] * freqs).sin(), (x[:, None] * freqs).cos()], dim=1)
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=0)  # float32 angles < 4000
    raw = timestep_features(t, width, "raw")
    assert not torch.allclose(raw, got)


def test_torch_init_keeps_pytorch_defaults_but_upstreams_two():
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("tiny").prior, init="torch", width=64, heads=2)
    model = Denoiser(cfg)
    assert abs(model.bit_proj.weight.std().item() - 0.02) < 0.005  # upstream's tok_emb
    assert abs(model.class_emb.weight.std().item() - 1.0) < 0.2  # nn.Embedding's N(0, 1)
    assert model.head.bias.abs().max() > 0  # Linear's default bias


def test_unknown_choices_are_refused_with_the_file_and_field(tmp_path):
    with pytest.raises(ConfigError, match="time_features must be one of raw, rescaled"):
        PriorConfig(time_features="learned")
    with pytest.raises(ConfigError, match="codes must be one of fixed, stochastic"):
        PriorTrainConfig(codes="online")
    from bld_train.config import from_dict

    with pytest.raises(ConfigError, match=r"^run/prior/config.json: model: init must be one of"):
        from_dict(PriorConfig, {"init": "xavier"}, "run/prior/config.json: model")
    with pytest.raises(ConfigError, match="unknown DiffAugment policy 'blur'"):
        parse_policy("color,blur")


def test_adaptive_gan_weight_is_clamped_at_its_maximum():
    last = torch.nn.Parameter(torch.ones(3))
    rec, gan = (last * 10.0).sum(), (last * 0.1).sum()  # gradient ratio 100
    assert adaptive_gan_weight(rec, gan, last, max_weight=1.0).item() == 1.0
    assert adaptive_gan_weight(rec, gan, last, max_weight=1e4).item() == pytest.approx(100, 1e-3)


def test_constant_schedule_and_ema_every_n_steps():
    assert lr_at(4, 2e-4, 10, 100, schedule="constant") == pytest.approx(1e-4)
    assert (
        lr_at(10, 2e-4, 10, 100, schedule="constant")
        == lr_at(99, 2e-4, 10, 100, schedule="constant")
        == 2e-4
    )
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, 0.5, every=10)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    for step in range(9):  # steps 0..8: no update
        ema.update(model, step)
    assert all(torch.equal(before[k], v) for k, v in ema.state_dict().items())
    ema.update(model, 9)  # the 10th step averages
    assert not torch.equal(before["weight"], ema.state_dict()["weight"])


def test_diffaugment_is_differentiable_seeded_and_translates_with_zero_fill():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    torch.manual_seed(3)
    a = diff_augment(x, parse_policy("color,translation,cutout"))
    torch.manual_seed(3)
    b = diff_augment(x, parse_policy("color,translation,cutout"))
    assert a.shape == x.shape and torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # A vertical ramp 1..16: a middle column of each output is the ramp shifted by at most
    # 0.125 * 16 = 2 rows, zeros where it leaves the image.
    ramp = torch.arange(16.0).view(1, 1, 16, 1).expand(32, 1, 16, 16) + 1.0
    shifts = set()
    for image in translation(ramp)[:, 0]:
        shift = int(image[8, 8].item()) - 9
        assert abs(shift) <= 2
        want = torch.arange(16.0) + shift + 1.0
        want[(want < 1) | (want > 16)] = 0.0
        assert torch.equal(image[:, 8], want)
        shifts.add(shift)
    assert len(shifts) > 1


# --- the prior on stochastic codes -----------------------------------------------------------


def _tiny_with(**prior_train):
    p = preset("tiny")
    return dataclasses.replace(p, prior_train=dataclasses.replace(p.prior_train, **prior_train))


def _prior_weights(run) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "prior" / "model.safetensors"))


@pytest.mark.slow
def test_prior_on_stochastic_codes_trains_deterministically_and_resumes(
    tiny_run, tmp_path, monkeypatch
):
    """Each step's z_0 is a Bernoulli draw from that step's encoder probabilities (the first
    draw after the step's seed), and a stopped then resumed run ends where one go ends."""
    import shutil

    from bld_train import distributed as D
    from bld_train.diffusion import BernoulliDiffusion
    from bld_train.train_prior import train_prior

    runs = []
    for name in ("a", "b"):
        shutil.copytree(tiny_run / "autoencoder", tmp_path / name / "autoencoder")
        runs.append(tmp_path / name)
    stochastic = _tiny_with(codes="stochastic", steps=10)

    seen = {"probs": [], "z0": []}
    encode, loss = BinaryAutoencoder.encode_probs, BernoulliDiffusion.loss

    def spy_encode(self, x):
        seen["probs"].append(encode(self, x))
        return seen["probs"][-1]

    def spy_loss(self, denoiser, z0, *args, **kwargs):
        seen["z0"].append(z0.clone())
        return loss(self, denoiser, z0, *args, **kwargs)

    monkeypatch.setattr(BinaryAutoencoder, "encode_probs", spy_encode)
    monkeypatch.setattr(BernoulliDiffusion, "loss", spy_loss)
    train_prior(runs[0], stochastic, progress=False)
    monkeypatch.undo()
    assert len(seen["probs"]) == len(seen["z0"]) == 10
    for step, (probs, z0) in enumerate(zip(seen["probs"], seen["z0"], strict=True)):
        torch.manual_seed(D.step_seed(stochastic.prior_train.seed, 0, step))
        assert torch.equal(z0, torch.bernoulli(probs))
    assert any(
        not torch.equal(z0, (p > 0.5).float())
        for p, z0 in zip(seen["probs"], seen["z0"], strict=True)
    )
    assert not (runs[0] / "prior" / "latents.safetensors").exists()

    class Stop(Exception):
        pass

    def stop_at_5(step):
        if step == 5:  # after the checkpoint of step 5 (checkpoint_every = 5)
            raise Stop

    with pytest.raises(Stop):
        train_prior(runs[1], stochastic, progress=False, on_step=stop_at_5)
    train_prior(runs[1], resume=True, progress=False)
    a, b = _prior_weights(runs[0]), _prior_weights(runs[1])
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((runs[1] / "prior" / "config.json").read_text())
    assert config["train"]["codes"] == "stochastic"


# --- the official modules export ---------------------------------------------------------------


@pytest.mark.slow
def test_official_modules_export_and_validate(tmp_path):
    """Learnable positions, LayerScale, rescaled time, the BinaryAE heads: export_bundle checks
    ops (TENSORRT_OPS) and compares ONNX Runtime, the reference evaluator and PyTorch."""
    import onnx

    from bld_export.export import export_bundle
    from bld_export.validate import TENSORRT_OPS

    p = preset("tiny")
    p = dataclasses.replace(
        p,
        autoencoder=dataclasses.replace(
            p.autoencoder, heads="binaryae", decoder_res_blocks=2, embed_bias=False, norm_first=True
        ),
        prior=dataclasses.replace(
            p.prior, learned_pos=True, layer_scale=True, time_features="rescaled", init="torch"
        ),
    )
    ckpt.init_random_run(tmp_path / "run", p, seed=1)
    denoiser, _ = ckpt.load_prior(tmp_path / "run")
    with torch.no_grad():  # trained gammas and positions are not their initial values
        for block in denoiser.blocks:
            block.gamma_1.uniform_(0.5, 1.5)
            block.gamma_2.uniform_(0.5, 1.5)
        denoiser.pos.add_(torch.randn_like(denoiser.pos) * 0.1)
    from safetensors.torch import save_file

    save_file(
        denoiser.state_dict(),
        str(tmp_path / "run" / "prior" / "model.safetensors"),
        {"step": "0", "stage": "prior"},
    )
    manifest = export_bundle(tmp_path / "run", tmp_path / "bundle")
    assert set(manifest.graphs) == {"encoder", "decoder", "step", "step_guided"}
    for name in ("step", "step_guided", "encoder", "decoder"):
        model = onnx.load(str(tmp_path / "bundle" / f"{name}.onnx"))
        ops = {n.op_type for n in model.graph.node}
        assert ops <= TENSORRT_OPS, sorted(ops - TENSORRT_OPS)
        if name.startswith("step"):
            assert {"MatMul", "Softmax"} <= ops


def test_paper256_autoencoder_needs_a_local_lpips_file(tmp_path):
    """Upstream's perceptual weight is 1: training refuses to start without the weights (never
    downloaded) and names the --lpips option."""
    from bld_train.cli import train

    run = str(tmp_path / "run")
    for extra in ([], ["--lpips", str(tmp_path / "missing.safetensors")]):
        result = CliRunner().invoke(
            train,
            ["autoencoder", "--preset", "paper256", "--run", run, "--data", str(tmp_path), *extra],
        )
        assert result.exit_code == 1
        assert result.output.startswith("error: perceptual loss weights not found")
        assert "--lpips" in result.output


def test_init_writes_an_exportable_paper256_run_config(tmp_path):
    """`bld train init --preset paper256` still works (the export itself is benchmarks/')."""
    p = preset("paper256")
    small = dataclasses.replace(p, prior=dataclasses.replace(p.prior, depth=1))
    ckpt.init_random_run(tmp_path, small)
    denoiser, cfg = ckpt.load_prior(tmp_path)
    assert cfg.layer_scale and cfg.learned_pos and isinstance(denoiser.pos, torch.nn.Parameter)
    ae = ckpt.load_autoencoder(tmp_path)
    assert ae.cfg.heads == "binaryae"
    with torch.no_grad():
        logits = denoiser(torch.zeros(1, 256, 64), torch.tensor([63]), torch.tensor([1000]))
    assert logits.shape == (1, 256, 64) and torch.isfinite(logits).all()


def upstream_timesteps(T: int, K: int) -> list[int]:
    """Upstream's BinaryDiffusion.sample: np.linspace, truncated; every step if K == T."""
    steps = np.arange(1, T + 1)
    if K != T:
        steps = steps[np.array(np.linspace(0.0, 1.0, K) * (T - 1), int)]
    return steps[::-1].tolist()


def test_sampling_timesteps_match_upstreams_for_the_shipped_settings_only():
    from bld_runtime import contract

    for name in ("tiny", "digits", "paper256"):
        cfg = preset(name).prior
        assert contract.sampling_timesteps(
            cfg.train_steps, cfg.sampling_steps
        ).tolist() == upstream_timesteps(cfg.train_steps, cfg.sampling_steps), name
    assert contract.sampling_timesteps(64, 64).tolist() == upstream_timesteps(64, 64)
    ours, theirs = contract.sampling_timesteps(76, 16).tolist(), upstream_timesteps(76, 16)
    assert [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b] == [(56, 55)]
