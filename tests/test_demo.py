"""`bld demo`: stages reused when done, resumed when interrupted, same figures either way."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bld_workflows.demo import run_demo

CRASH = Path(__file__).parent / "adversarial" / "crash_at.py"
FIGURES = ("psnr_db", "results", "fixed_point_latents", "round_trip_bits_threshold_code")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("demo") / "run"
    lines: list[str] = []
    report = run_demo(run, "tiny", per_class=2, echo=lines.append)
    return run, report, lines


def test_a_demo_runs_every_stage_and_reports_the_time_of_each(uninterrupted):
    run, report, lines = uninterrupted
    assert [s["action"] for s in report["stages"]] == [
        "trained",
        "trained",
        "exported",
        "sampled",
        "evaluated",
    ]
    assert lines[-7].split() == ["stage", "what", "happened", "wall", "time"]
    assert lines[-1].startswith("total")
    assert (run / "samples" / "00099.png").is_file() and (run / "eval.json").is_file()


def test_a_second_demo_reuses_everything_and_prints_the_same_figures(uninterrupted):
    run, first, _ = uninterrupted
    lines: list[str] = []
    again = run_demo(run, "tiny", per_class=2, echo=lines.append)
    assert {s["action"] for s in again["stages"]} == {"reused"}
    assert {k: again[k] for k in FIGURES} == {k: first[k] for k in FIGURES}
    assert any(line.startswith("reconstruction PSNR") for line in lines)


def test_an_altered_bundle_is_exported_again(uninterrupted, tmp_path):
    """Re-exported from the same weights it is the same bundle, so the samples and the figures
    made from it stay valid."""
    import shutil

    run, first, _ = uninterrupted
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    (copy / "bundle" / "bld.json").write_text((copy / "bundle" / "bld.json").read_text() + " ")
    again = run_demo(copy, "tiny", per_class=2, echo=lambda line: None)
    actions = {s["stage"]: s["action"] for s in again["stages"]}
    assert actions == {
        "autoencoder": "reused",
        "prior": "reused",
        "bundle": "exported",
        "samples": "reused",
        "evaluation": "reused",
    }
    assert {k: again[k] for k in FIGURES} == {k: first[k] for k in FIGURES}


def test_changed_weights_are_exported_sampled_and_scored_again(uninterrupted, tmp_path):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run, _, _ = uninterrupted
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    weights = copy / "prior" / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith("head.bias"))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, str(weights), metadata=metadata)
    again = run_demo(copy, "tiny", per_class=2, echo=lambda line: None)
    actions = {s["stage"]: s["action"] for s in again["stages"]}
    assert actions == {
        "autoencoder": "reused",
        "prior": "reused",
        "bundle": "exported",
        "samples": "sampled",
        "evaluation": "evaluated",
    }


def test_a_demo_killed_while_training_the_prior_resumes_to_the_same_figures(
    uninterrupted, tmp_path, subprocess_env
):
    _, first, _ = uninterrupted
    run = tmp_path / "run"
    # Killed just before the prior's second checkpoint of weights (steps 1-5 are saved).
    proc = subprocess.run(
        [
            sys.executable,
            str(CRASH),
            "os.replace~prior/model.safetensors",
            "2",
            "before",
            "bld_runtime.cli",
            "demo",
            "--run",
            str(run),
            "--preset",
            "tiny",
            "--per-class",
            "2",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=900,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (run / "prior" / "training_state.pt").is_file() and not (run / "bundle").exists()
    lines: list[str] = []
    again = run_demo(run, "tiny", per_class=2, echo=lines.append)
    actions = {s["stage"]: s["action"] for s in again["stages"]}
    assert actions["autoencoder"] == "reused" and actions["prior"] == "resumed"
    assert {k: again[k] for k in FIGURES} == {k: first[k] for k in FIGURES}
    assert json.loads((run / "eval.json").read_text())["psnr_db"] == first["psnr_db"]


def test_fresh_starts_over_and_other_settings_are_refused(uninterrupted, tmp_path):
    import shutil

    from bld_workflows.demo import DemoError

    run, _, _ = uninterrupted
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    with pytest.raises(DemoError, match="was trained with other settings"):
        run_demo(copy, "digits", per_class=2, echo=lambda line: None)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DemoError, match="does not look like a bld run"):
        run_demo(tmp_path / "notes", "tiny", fresh=True, echo=lambda line: None)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
