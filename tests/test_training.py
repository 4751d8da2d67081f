"""Training: losses, loop pieces, checkpoints and loaders, bit-exact resume, torchrun, CLI."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from bld_train import checkpoint as ckpt
from bld_train.cli import train as train_cli
from bld_train.config import preset
from bld_train.distributed import StepBatches, step_seed
from bld_train.loop import EMA, lr_at
from bld_train.losses import (
    VGG16_CONVS,
    VGG16_WIDTHS,
    PerceptualLoss,
    PerceptualWeightsError,
    adaptive_gan_weight,
    code_confidence_loss,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)
from bld_train.train_prior import unpack_batch

# --- losses ----------------------------------------------------------------------------------


def test_simple_losses():
    x = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    assert reconstruction_loss(x, x + 0.25) == pytest.approx(0.25)
    assert code_confidence_loss(torch.tensor([0.0, 1.0, 0.5, 0.5])) == pytest.approx(0.125)
    assert hinge_d_loss(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])) == pytest.approx(0.5)
    assert hinge_g_loss(torch.tensor([1.0, 3.0])) == pytest.approx(-2.0)


def test_adaptive_gan_weight_balances_gradient_norms():
    last = torch.randn(4, 3, requires_grad=True)
    rec = (2.0 * last).sum()
    gan = (8.0 * last).sum()
    weight = adaptive_gan_weight(rec, gan, last)
    assert weight.item() == pytest.approx(0.25, rel=1e-3) and not weight.requires_grad
    huge = adaptive_gan_weight((last * 1e9).sum(), (last * 1e-9).sum(), last)
    assert huge.item() == pytest.approx(1e4)  # clamped


def _random_lpips_file(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    tensors, cin = {}, 3
    widths = iter([64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512])
    for i in VGG16_CONVS:
        cout = next(widths)
        tensors[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        tensors[f"features.{i}.bias"] = torch.zeros(cout)
        cin = cout
    for k, width in enumerate(VGG16_WIDTHS):
        tensors[f"lin{k}.weight"] = torch.rand(1, width, 1, 1, generator=g)
    save_file(tensors, str(path))
    return path


@pytest.mark.slow
def test_perceptual_loss_from_a_local_file(tmp_path):
    loss = PerceptualLoss(_random_lpips_file(tmp_path / "lpips.safetensors"))
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    same, different = loss(x, x), loss(x, y)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2))
    assert (different > 0).all()
    assert not any(p.requires_grad for p in loss.parameters())
    y.requires_grad_(True)
    loss(x, y).sum().backward()  # gradients reach the images, not the frozen network
    assert y.grad.abs().sum() > 0


def test_perceptual_loss_never_downloads(tmp_path):
    with pytest.raises(PerceptualWeightsError, match="not found"):
        PerceptualLoss(tmp_path / "missing.safetensors")
    with pytest.raises(PerceptualWeightsError, match="not found"):
        PerceptualLoss("")
    save_file({"lin0.weight": torch.zeros(1, 64, 1, 1)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(PerceptualWeightsError, match="missing tensor"):
        PerceptualLoss(tmp_path / "partial.safetensors")


# --- loop pieces -----------------------------------------------------------------------------


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(500, 1.0, 10, 100) == pytest.approx(0.1)


def test_ema_moves_toward_the_weights_with_a_warmup():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, step=0)  # decay = min(0.999, 1/10)
    assert torch.allclose(ema.shadow["weight"], torch.full((2, 2), 0.9))
    ema.update(model, step=10**6)  # decay = 0.999
    assert torch.allclose(ema.shadow["weight"], torch.full((2, 2), 0.9 + 0.1 * 0.001))


def test_step_batches_are_seeded_epoch_permutations_sharded_by_rank():
    size, batch = 10, 4
    one = StepBatches(size, batch, seed=3)
    stream = torch.cat([one.indices(s) for s in range(5)])  # 20 items = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10))
    assert sorted(stream[10:].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:])  # a new permutation each epoch
    assert torch.equal(StepBatches(size, batch, seed=3).indices(3), one.indices(3))  # pure
    assert not torch.equal(StepBatches(size, batch, seed=4).indices(0), one.indices(0))
    ranks = [StepBatches(size, 5, seed=3, rank=r, world_size=2) for r in range(2)]
    shards = [set(r.indices(0).tolist()) for r in ranks]
    assert shards[0].isdisjoint(shards[1]) and len(shards[0] | shards[1]) == 10
    tiny = StepBatches(3, 8, seed=0)  # batch larger than the data set
    assert len(tiny.indices(0)) == 8 and set(tiny.indices(0).tolist()) == {0, 1, 2}
    assert step_seed(0, 0, 1) != step_seed(0, 1, 1) != step_seed(1, 0, 1)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    ckpt.save_json(path, {"a": 1})

    def broken(tmp):
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt._atomic(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


# --- a trained tiny run ----------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_loads(tiny_run):
    from bld_train.autoencoder import BinaryAutoencoder
    from bld_train.denoiser import Denoiser

    p = ckpt.load_run_configs(tiny_run)
    tiny = preset("tiny")
    assert p.name == "tiny" and p.autoencoder == tiny.autoencoder and p.prior == tiny.prior
    assert p.autoencoder_train == tiny.autoencoder_train and p.data == tiny.data

    ae = ckpt.load_autoencoder(tiny_run)
    assert isinstance(ae, BinaryAutoencoder) and not ae.training
    x = torch.zeros(2, 1, 16, 16)
    assert ae.encode_probs(x).shape == (2, 64, 8)
    assert ae.decode(torch.ones(2, 64, 8)).shape == x.shape
    denoiser, cfg = ckpt.load_prior(tiny_run)
    assert isinstance(denoiser, Denoiser) and not denoiser.training and cfg == tiny.prior
    logits = denoiser(torch.ones(2, 64, 8), torch.tensor([0, 31]), torch.tensor([3, 10]))
    assert logits.shape == (2, 64, 8)

    for stage in ckpt.STAGES:  # model.safetensors holds the EMA weights of the last step
        state = ckpt.load_training_state(tiny_run, stage)
        weights = load_file(str(tiny_run / stage / "model.safetensors"))
        assert state["step"] == 20 and set(weights) == set(state["ema"])
        assert all(torch.equal(weights[k], state["ema"][k]) for k in weights)
        assert any(not torch.equal(state["model"][k], state["ema"][k]) for k in weights)


def test_prior_latents_are_the_thresholded_codes(tiny_run):
    from bld_train.data import digits_dataset

    latents = load_file(str(tiny_run / "prior" / "latents.safetensors"))
    images, labels = digits_dataset(16)
    assert torch.equal(latents["labels"], labels)
    ae = ckpt.load_autoencoder(tiny_run)
    with torch.no_grad():
        bits = (ae.encode_probs(images[:32]) > 0.5).float()
    assert torch.equal(unpack_batch(latents["bits_packed"][:32], (64, 8)), bits)


# --- bit-exact resume after SIGKILL ----------------------------------------------------------

KILL_SCRIPT = """
import os, signal, sys
from bld_train.train_autoencoder import train_autoencoder
from bld_train.train_prior import train_prior

def on_step(step):
    if step == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

train = train_autoencoder if sys.argv[1] == "autoencoder" else train_prior
train(sys.argv[2], "tiny", progress=False, on_step=on_step)
"""


def _same_tensors(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _kill_then_resume(stage, run, tiny_run, subprocess_env, python):
    env = {**subprocess_env, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = subprocess.run(
        [python, "-c", KILL_SCRIPT, stage, str(run), "13"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert ckpt.load_training_state(run, stage)["step"] == 10  # checkpoints every 5 steps

    result = CliRunner().invoke(train_cli, [stage, "--run", str(run), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    resumed = ckpt.load_training_state(run, stage)
    reference = ckpt.load_training_state(tiny_run, stage)
    assert resumed["step"] == reference["step"] == 20
    assert _same_tensors(resumed["model"], reference["model"])
    assert _same_tensors(resumed["ema"], reference["ema"])
    assert _same_tensors(
        load_file(str(run / stage / "model.safetensors")),
        load_file(str(tiny_run / stage / "model.safetensors")),
    )
    log = (run / stage / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log]
    assert steps == [5, 10, 15, 20]


@pytest.mark.slow
def test_autoencoder_resume_after_sigkill_is_bit_exact(tmp_path, tiny_run, subprocess_env, python):
    _kill_then_resume("autoencoder", tmp_path, tiny_run, subprocess_env, python)
    resumed = ckpt.load_training_state(tmp_path, "autoencoder")
    reference = ckpt.load_training_state(tiny_run, "autoencoder")
    assert _same_tensors(resumed["disc"], reference["disc"])  # the GAN starts at step 10


@pytest.mark.slow
def test_prior_resume_after_sigkill_is_bit_exact(tmp_path, tiny_run, subprocess_env, python):
    (tmp_path / "autoencoder").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_run / "autoencoder" / name, tmp_path / "autoencoder" / name)
    _kill_then_resume("prior", tmp_path, tiny_run, subprocess_env, python)


# --- torchrun --------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, subprocess_env, python):
    def torchrun(*args):
        command = [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "bld_train.cli",
            "--",
            *args,
            "--run",
            str(tmp_path),
            "--quiet",
        ]
        done = subprocess.run(
            command, env=subprocess_env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]

    torchrun("autoencoder", "--preset", "tiny", "--steps", "12")  # the GAN runs from step 10
    torchrun("prior", "--steps", "4")
    for stage, steps in (("autoencoder", 12), ("prior", 4)):
        state = ckpt.load_training_state(tmp_path, stage)
        assert state["step"] == steps and state["world_size"] == 2
        last = json.loads((tmp_path / stage / "log.jsonl").read_text().splitlines()[-1])
        assert last["step"] == steps and all(math.isfinite(v) for v in last.values())
    ckpt.load_autoencoder(tmp_path)
    ckpt.load_prior(tmp_path)
    assert "d" in json.loads((tmp_path / "autoencoder" / "log.jsonl").read_text().splitlines()[-1])


GLOO_WORKER = textwrap.dedent("""
    import glob, sys
    import torch
    from bld_train import distributed as D
    from bld_train.train_autoencoder import train_autoencoder

    info = D.setup("cpu")  # training joins this group and destroys it when done
    model = torch.nn.Linear(3, 2)  # gradients differ by rank, one is missing
    model.weight.grad = torch.full_like(model.weight, float(info.rank))
    D.average_gradients(model, info.world_size)
    assert torch.equal(model.weight.grad, torch.full_like(model.weight, 0.5))
    assert torch.equal(model.bias.grad, torch.zeros_like(model.bias))
    train_autoencoder(sys.argv[1], "tiny", steps=12, progress=False, workers=0)
    names = sorted(open(task + "/comm").read().strip() for task in glob.glob("/proc/self/task/*"))
    print(f"rank {info.rank} threads at exit: {names}")
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_process_group_is_gone_before_exit(tmp_path, subprocess_env, python):
    """No collective thread may outlive training: one that does can abort the rank at exit."""
    script = tmp_path / "worker.py"
    script.write_text(GLOO_WORKER)
    command = [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path / "run"),
    ]
    done = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # The ranks share stdout, and their lines may run together.
    reports = dict(re.findall(r"rank (\d) threads at exit: (\[[^\]]*\])", done.stdout))
    assert sorted(reports) == ["0", "1"], done.stdout
    assert not any("gloo" in names for names in reports.values()), reports


# --- CLI -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_trains_and_reports_errors(tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    ok = runner.invoke(
        train_cli,
        [
            "autoencoder",
            "--preset",
            "tiny",
            "--run",
            str(run),
            "--steps",
            "2",
            "--seed",
            "5",
            "--quiet",
        ],
    )
    assert ok.exit_code == 0, ok.output
    saved = ckpt.read_stage_config(run, "autoencoder")
    assert saved["train"].steps == 2 and saved["train"].seed == 5

    def error(args, match):
        result = runner.invoke(train_cli, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ") and match in result.output
        assert "Traceback" not in result.output

    error(["autoencoder", "--preset", "tiny", "--run", str(run)], "--resume")
    error(["autoencoder", "--preset", "digits", "--run", str(run), "--resume"], "preset 'tiny'")
    error(["autoencoder", "--run", str(run), "--resume", "--seed", "6"], "seed 5")
    error(["autoencoder", "--run", str(tmp_path / "new"), "--resume"], "no autoencoder")
    error(["prior", "--run", str(tmp_path / "new")], "no autoencoder")
    error(["prior", "--run", str(run), "--resume"], "no prior")
    error(
        [
            "autoencoder",
            "--preset",
            "tiny",
            "--run",
            str(tmp_path / "x"),
            "--data",
            str(tmp_path / "nowhere"),
        ],
        "does not exist",
    )
    error(
        ["autoencoder", "--preset", "huge", "--run", str(run)],  # click's usage error too
        "Invalid value for '--preset'",
    )


def test_cli_trains_on_an_image_folder_with_loader_workers(tmp_path):
    from PIL import Image

    for i in range(6):
        folder = tmp_path / "images" / ("odd" if i % 2 else "even")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 20), (40 * i, 255 - 40 * i, 0)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    result = CliRunner().invoke(
        train_cli,
        [
            "autoencoder",
            "--preset",
            "tiny",
            "--run",
            str(run),
            "--steps",
            "2",
            "--quiet",
            "--data",
            str(tmp_path / "images"),
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    data = ckpt.read_stage_config(run, "autoencoder")["data"]
    assert data.source == str(tmp_path / "images") and data.holdout == 0
    result = CliRunner().invoke(train_cli, ["prior", "--run", str(run), "--steps", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    labels = load_file(str(run / "prior" / "latents.safetensors"))["labels"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]  # sorted files: even/0,2,4 then odd/1,3,5


def test_init_writes_a_loadable_untrained_run_once(tmp_path):
    from click.testing import CliRunner

    from bld_train.cli import train

    run = tmp_path / "run"
    result = CliRunner().invoke(train, ["init", "--preset", "tiny", "--run", str(run)])
    assert result.exit_code == 0, result.output
    ae = ckpt.load_autoencoder(run)
    denoiser, prior_cfg = ckpt.load_prior(run)
    assert prior_cfg.latent_size == ae.cfg.latent_size and denoiser.cfg == prior_cfg
    again = CliRunner().invoke(train, ["init", "--preset", "tiny", "--run", str(run)])
    assert again.exit_code == 1 and "already holds weights" in again.output
