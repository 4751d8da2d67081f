"""`bld demo`: the product path end to end, reusing every stage that is already done.

    autoencoder -> prior -> bundle -> samples -> evaluation

Each stage is reused when what it would produce exists and matches what it would be made from
(the preset's configs, the weights and bundle it depends on), resumed when its training was
interrupted (training is bit-exact on resume), and made otherwise. `fresh` starts over. The
demo ends with the figures and a table of what each stage did and how long it took.

What "matches" means, per stage:
- autoencoder / prior: config.json holds the preset's configs and the saved weights are from the
  last step (the prior's also from the current autoencoder weights);
- bundle: bld.json verifies, and `demo.json` in the run records that it was exported from the
  current weights;
- samples / evaluation: their records name the current bundle (its bld.json sha256) and the
  same request.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bld_runtime.errors import BldError
from bld_runtime.files import atomic_write, sha256_file
from bld_train import checkpoint as ckpt
from bld_train import config as C

RECORD = "demo.json"  # in the run directory: what the bundle was exported from
SAMPLES = 100
GUIDANCES = (0.0, 1.0, 3.0)


class DemoError(BldError):
    """A run directory the demo cannot continue (another preset's run, say)."""


@dataclass
class StageReport:
    stage: str
    action: str  # trained | resumed | reused | exported | sampled | evaluated
    seconds: float


def _safetensors_step(path: Path) -> int | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        step = (f.metadata() or {}).get("step")
    return int(step) if step is not None else None


def _training_status(run_dir: Path, stage: str, model_cfg, train_cfg) -> str:
    """ "done", "partial", "none", or raises DemoError for a stage of another configuration."""
    directory = ckpt.stage_dir(run_dir, stage)
    if not (directory / ckpt.CONFIG).is_file():
        return "none"
    saved = ckpt.read_stage_config(run_dir, stage)
    if saved["model"] != model_cfg or saved["train"] != train_cfg:
        raise DemoError(
            f"{directory} was trained with other settings than this preset's; "
            "start over with `make demo FRESH=1` (or choose another --run)"
        )
    if not ckpt.has_training_state(run_dir, stage):
        return "none"
    step = _safetensors_step(directory / ckpt.MODEL)
    return "done" if step == train_cfg.steps else "partial"


def _weights(run_dir: Path) -> dict[str, str]:
    return {
        stage: sha256_file(ckpt.stage_dir(run_dir, stage) / ckpt.MODEL) for stage in ckpt.STAGES
    }


def _record(run_dir: Path) -> dict:
    path = run_dir / RECORD
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _bundle_matches(bundle: Path, record: dict, weights: dict[str, str]) -> bool:
    from bld_runtime.manifest import MANIFEST_NAME, load_bundle

    if record.get("weights") != weights or not (bundle / MANIFEST_NAME).is_file():
        return False
    try:
        load_bundle(bundle).verify_files()
    except BldError:
        return False
    return record.get("bundle_sha256") == sha256_file(bundle / MANIFEST_NAME)


def run_demo(
    run_dir,
    preset_name: str = "digits",
    fresh: bool = False,
    per_class: int = 50,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run (or finish) the demo in `run_dir`; returns the evaluation report with the stages."""
    from bld_export.export import export_bundle
    from bld_runtime.manifest import MANIFEST_NAME
    from bld_train.train_autoencoder import train_autoencoder
    from bld_train.train_prior import train_prior

    run_dir = Path(run_dir)
    preset = C.preset(preset_name)
    if fresh and run_dir.exists():
        if any(run_dir.iterdir()) and not (run_dir / "autoencoder").is_dir():
            raise DemoError(f"{run_dir} does not look like a bld run; not removing it")
        shutil.rmtree(run_dir)
        echo(f"FRESH: removed {run_dir}")
    reports: list[StageReport] = []

    def timed(stage: str, action: str, work: Callable[[], object]) -> None:
        echo(f"== {stage}: {action}")
        start = time.perf_counter()
        work()
        reports.append(StageReport(stage, action, time.perf_counter() - start))

    for stage, model_cfg, train_cfg, train in (
        ("autoencoder", preset.autoencoder, preset.autoencoder_train, train_autoencoder),
        ("prior", preset.prior, preset.prior_train, train_prior),
    ):
        status = _training_status(run_dir, stage, model_cfg, train_cfg)
        if (
            stage == "prior"
            and status != "none"
            and ckpt.read_stage_config(run_dir, stage).get("autoencoder_sha256")
            != sha256_file(ckpt.stage_dir(run_dir, "autoencoder") / ckpt.MODEL)
        ):
            status = "stale"
        if status == "done":
            reports.append(StageReport(stage, "reused", 0.0))
            echo(
                f"== {stage}: reusing {ckpt.stage_dir(run_dir, stage)} (trained, "
                f"{train_cfg.steps} steps, same settings)"
            )
            continue
        if status == "stale":  # the autoencoder changed under it: retrain from scratch
            shutil.rmtree(ckpt.stage_dir(run_dir, stage))
        resume = status == "partial"
        timed(
            stage,
            "resumed" if resume else "trained",
            lambda train=train, resume=resume: train(run_dir, preset_name, resume=resume),
        )

    bundle = run_dir / "bundle"
    weights = _weights(run_dir)
    if _bundle_matches(bundle, _record(run_dir), weights):
        reports.append(StageReport("bundle", "reused", 0.0))
        echo(f"== bundle: reusing {bundle} (exported from these weights, hashes verified)")
    else:
        timed(
            "bundle", "exported", lambda: export_bundle(run_dir, bundle, force=True, progress=echo)
        )
        atomic_write(
            run_dir / RECORD,
            json.dumps(
                {"weights": weights, "bundle_sha256": sha256_file(bundle / MANIFEST_NAME)}, indent=2
            ).encode(),
        )
    bundle_sha = sha256_file(bundle / MANIFEST_NAME)

    samples = run_dir / "samples"
    if _samples_match(samples, bundle_sha):
        reports.append(StageReport("samples", "reused", 0.0))
        echo(f"== samples: reusing {samples}")
    else:
        timed("samples", "sampled", lambda: _sample(bundle, samples, bundle_sha))

    evaluation = run_dir / "eval.json"
    report = _evaluation(evaluation, bundle_sha, per_class)
    if report is not None:
        reports.append(StageReport("evaluation", "reused", 0.0))
        echo(f"== evaluation: reusing {evaluation}")
        from bld_workflows.evaluate import print_report

        print_report(report, str(run_dir), echo)
    else:
        holder: dict = {}

        def evaluate() -> None:
            from bld_workflows.evaluate import run_evaluation

            holder["report"] = run_evaluation(
                str(bundle),
                GUIDANCES,
                per_class,
                0,
                str(run_dir),
                echo,
                extra={"bundle_sha256": bundle_sha},
            )

        timed("evaluation", "evaluated", evaluate)
        report = holder["report"]
    report["stages"] = [asdict(r) for r in reports]
    _print_stages(reports, echo)
    return report


def _samples_match(samples: Path, bundle_sha: str) -> bool:
    record = samples / "samples.json"
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    return (
        data.get("status") == "complete"
        and data.get("written") == SAMPLES
        and data.get("request", {}).get("bundle_sha256") == bundle_sha
    )


def _sample(bundle: Path, samples: Path, bundle_sha: str) -> None:
    from bld_runtime.pipeline import Pipeline
    from bld_runtime.sampling import write_samples

    pipe = Pipeline.load(bundle)
    chunks = pipe.iter_generate(n=SAMPLES, seeds=0, classes="all")
    request = {
        "bundle": str(bundle),
        "bundle_sha256": bundle_sha,
        "seed": 0,
        "n": SAMPLES,
        "class": "all",
    }
    write_samples(
        pipe.manifest.latent, chunks, SAMPLES, samples, True, request, grid_cols=pipe.num_classes
    )


def _evaluation(path: Path, bundle_sha: str, per_class: int) -> dict | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        report.get("bundle_sha256") != bundle_sha
        or report.get("samples_per_class") != per_class
        or [r.get("guidance") for r in report.get("results", [])] != list(GUIDANCES)
    ):
        return None
    return report


def _print_stages(reports: list[StageReport], echo: Callable[[str], None]) -> None:
    total = sum(r.seconds for r in reports)
    echo("")
    echo(f"{'stage':<12} {'what happened':<14} {'wall time':>10}")
    for r in reports:
        echo(f"{r.stage:<12} {r.action:<14} {_clock(r.seconds):>10}")
    echo(f"{'total':<12} {'':<14} {_clock(total):>10}")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"
