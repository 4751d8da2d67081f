"""Run directories: configs, inference weights and resumable training state, written atomically.

    RUN/autoencoder/  config.json  model.safetensors  training_state.pt  log.jsonl
    RUN/prior/        config.json  model.safetensors  training_state.pt  log.jsonl
                      latents.safetensors (the training set encoded by the autoencoder)

config.json holds the preset name and the model, training and data configs (bld_train.config
to_dict/from_dict), so a run directory alone rebuilds its models. model.safetensors holds the
EMA weights, which is what inference uses. training_state.pt holds everything `--resume`
needs (raw weights, EMA, optimizer and grad-scaler state, step); it contains only tensors and
plain Python values, so it loads with torch.load(weights_only=True). Every file is written with
bld_runtime.files.atomic_write_with (a temporary name in the same directory, then a rename),
so a killed run leaves either the old or the new file, never half of one; a training process
holds its stage's lock (`stage_lock`) and sweeps the temporaries a killed one left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from bld_runtime import files
from bld_runtime.errors import BldError, OutputError
from bld_train import config as C

FORMAT = "bld-train-run/1"
STAGES = ("autoencoder", "prior")
CONFIG, MODEL, STATE, LOG, LATENTS = (
    "config.json",
    "model.safetensors",
    "training_state.pt",
    "log.jsonl",
    "latents.safetensors",
)


class CheckpointError(BldError):
    """A run directory without the checkpoint asked for, or with files that do not load."""


# --- atomic writes ---------------------------------------------------------------------------


def _atomic(path: Path, write) -> None:
    """write(tmp) then one rename onto `path`; a failed write (a full disk) is one clear error."""
    try:
        files.atomic_write_with(path, write)
    except Exception as error:  # noqa: BLE001 - torch (RuntimeError) and safetensors
        # (SafetensorError) report a full disk in their own types
        raise CheckpointError(f"cannot write {path}: {_disk_reason(path, error)}") from None


def _disk_reason(path: Path, error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    try:
        import shutil

        if shutil.disk_usage(Path(path).parent).free < (64 << 20):
            return os.strerror(errno.ENOSPC)
    except OSError:
        pass
    return _first_line(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def save_json(path: Path, data: dict) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def save_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_torch(path: Path, obj: dict) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


file_sha256 = files.sha256_file


@contextlib.contextmanager
def stage_lock(run_dir, stage: str) -> Iterator[None]:
    """Held while a process trains one stage of a run: a second trainer of the same stage is
    refused, and the temporaries of a killed one are swept (we are the only writer)."""
    directory = stage_dir(run_dir, stage)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with files.OutputLock(directory, f"{directory} (training)"):
            files.sweep_temporaries(directory)
            yield
    except OutputError as error:
        raise CheckpointError(str(error)) from None


# --- one stage (autoencoder or prior) of a run -----------------------------------------------


def stage_dir(run_dir: str | os.PathLike, stage: str) -> Path:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return Path(run_dir) / stage


def write_stage_config(
    run_dir,
    stage: str,
    preset_name: str,
    model_cfg,
    train_cfg,
    data_cfg: C.DataConfig,
    extra: dict | None = None,
) -> None:
    data = {
        "format": FORMAT,
        "stage": stage,
        "preset": preset_name,
        "model": C.to_dict(model_cfg),
        "train": C.to_dict(train_cfg),
        "data": C.to_dict(data_cfg),
        **(extra or {}),
    }
    save_json(stage_dir(run_dir, stage) / CONFIG, data)


def read_stage_config(run_dir, stage: str) -> dict:
    """The stage's config.json with its model/train/data entries as dataclasses."""
    path = stage_dir(run_dir, stage) / CONFIG
    if not path.is_file():
        hint = (
            "train one with `bld train autoencoder --run RUN`"
            if stage == "autoencoder"
            else "train one with `bld train prior --run RUN`"
        )
        raise CheckpointError(f"no {stage} in run {str(run_dir)!r} ({path} is missing); {hint}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path} is not readable JSON: {_first_line(error)}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a {stage} config of format {FORMAT}")
    if raw.get("format") != FORMAT or raw.get("stage") != stage:
        raise CheckpointError(f"{path} is not a {stage} config of format {FORMAT}")
    model_cls = C.AutoencoderConfig if stage == "autoencoder" else C.PriorConfig
    train_cls = C.AutoencoderTrainConfig if stage == "autoencoder" else C.PriorTrainConfig
    out = dict(raw)
    for key, cls in (("model", model_cls), ("train", train_cls), ("data", C.DataConfig)):
        if not isinstance(raw.get(key), dict):
            raise CheckpointError(f"{path}: {key} must be an object")
        out[key] = C.from_dict(cls, raw[key], f"{path}: {key}")
    return out


def save_checkpoint(
    run_dir, stage: str, ema_weights: dict[str, torch.Tensor], training_state: dict, step: int
) -> None:
    """Write the inference weights (EMA) and then the resumable state of one stage."""
    directory = stage_dir(run_dir, stage)
    save_safetensors(directory / MODEL, ema_weights, {"step": str(step), "stage": stage})
    save_torch(directory / STATE, {**training_state, "step": step})


def config_to_resume(run_dir, stage: str, preset, seed: int | None) -> dict:
    """The stage's saved config, after checking a resume asks for neither another preset nor
    another seed (both would silently change the run)."""
    saved = read_stage_config(run_dir, stage)
    wanted = preset.name if isinstance(preset, C.Preset) else preset
    if wanted is not None and wanted != saved["preset"]:
        raise C.ConfigError(
            f"the run was started with preset {saved['preset']!r}; a resumed run cannot change it"
        )
    if seed is not None and seed != saved["train"].seed:
        raise C.ConfigError(
            f"the run was started with seed {saved['train'].seed}; a resumed run cannot change it"
        )
    return saved


def require_fresh(run_dir, stage: str) -> None:
    """A new (not resumed) stage must not overwrite a checkpoint."""
    if has_training_state(run_dir, stage):
        raise C.ConfigError(
            f"{stage_dir(run_dir, stage)} already holds a checkpoint; "
            "pass --resume to continue it or choose another --run"
        )


def init_random_run(run_dir, preset: C.Preset, seed: int = 0) -> None:
    """A run with the preset's configs and untrained weights: for export and speed checks
    of configurations too big to train here (speed does not depend on the weights)."""
    from bld_train.autoencoder import BinaryAutoencoder
    from bld_train.denoiser import Denoiser

    for stage in STAGES:
        if has_training_state(run_dir, stage) or (stage_dir(run_dir, stage) / MODEL).exists():
            raise CheckpointError(
                f"{stage_dir(run_dir, stage)} already holds weights; choose another --run"
            )
    torch.manual_seed(seed)
    stages = (
        (
            "autoencoder",
            BinaryAutoencoder(preset.autoencoder),
            preset.autoencoder,
            preset.autoencoder_train,
        ),
        ("prior", Denoiser(preset.prior), preset.prior, preset.prior_train),
    )
    for stage, model, model_cfg, train_cfg in stages:
        write_stage_config(
            run_dir,
            stage,
            preset.name,
            model_cfg,
            train_cfg,
            preset.data,
            extra={"note": f"untrained: random weights (seed {seed})"},
        )
        save_safetensors(
            stage_dir(run_dir, stage) / MODEL, model.state_dict(), {"step": "0", "stage": stage}
        )


def load_training_state(run_dir, stage: str) -> dict | None:
    path = stage_dir(run_dir, stage) / STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(
            f"{path} does not load ({_first_line(error)}); it is damaged: "
            "restart the stage without --resume"
        ) from None


def has_training_state(run_dir, stage: str) -> bool:
    return (stage_dir(run_dir, stage) / STATE).is_file()


def load_weights(run_dir, stage: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = stage_dir(run_dir, stage) / MODEL
    if not path.is_file():
        raise CheckpointError(f"no {stage} weights in run {str(run_dir)!r} ({path} is missing)")
    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors raises SafetensorError and others
        raise CheckpointError(
            f"{path} does not load ({_first_line(error)}); it is damaged: retrain the stage"
        ) from None


# --- public loaders --------------------------------------------------------------------------


def load_run_configs(run_dir) -> C.Preset:
    """The configs a run was trained with, as a Preset.

    Stages that have not been trained yet take their configs from the named preset (the prior
    is always sized to the autoencoder's latent grid and bits).
    """
    ae = read_stage_config(run_dir, "autoencoder")
    base = C.PRESETS[ae["preset"]]() if ae["preset"] in C.PRESETS else None
    ae_cfg: C.AutoencoderConfig = ae["model"]
    if (stage_dir(run_dir, "prior") / CONFIG).is_file():
        prior = read_stage_config(run_dir, "prior")
        prior_cfg, prior_train = prior["model"], prior["train"]
    else:
        prior_cfg = base.prior if base else C.PriorConfig()
        prior_cfg = replace(prior_cfg, latent_size=ae_cfg.latent_size, bits=ae_cfg.bits)
        prior_train = base.prior_train if base else C.PriorTrainConfig()
    return C.Preset(
        name=ae["preset"],
        data=ae["data"],
        autoencoder=ae_cfg,
        autoencoder_train=ae["train"],
        prior=prior_cfg,
        prior_train=prior_train,
    )


def load_autoencoder(run_dir, device: str | torch.device = "cpu"):
    """The run's BinaryAutoencoder with its EMA weights, in eval mode."""
    from bld_train.autoencoder import BinaryAutoencoder

    cfg = read_stage_config(run_dir, "autoencoder")["model"]
    model = BinaryAutoencoder(cfg)
    _load_into(model, load_weights(run_dir, "autoencoder"), run_dir, "autoencoder")
    return model.to(device).eval()


def load_prior(run_dir, device: str | torch.device = "cpu"):
    """(Denoiser with EMA weights in eval mode, its PriorConfig)."""
    from bld_train.denoiser import Denoiser

    cfg = read_stage_config(run_dir, "prior")["model"]
    model = Denoiser(cfg)
    _load_into(model, load_weights(run_dir, "prior"), run_dir, "prior")
    return model.to(device).eval(), cfg


def _load_into(model: torch.nn.Module, weights: dict, run_dir, stage: str) -> None:
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"the {stage} weights in {str(run_dir)!r} do not fit its config: {first}"
        ) from None


__all__ = [
    "CheckpointError",
    "load_autoencoder",
    "load_prior",
    "load_run_configs",
    "save_checkpoint",
    "load_training_state",
    "read_stage_config",
    "write_stage_config",
    "save_json",
    "save_safetensors",
    "save_torch",
    "file_sha256",
    "stage_dir",
    "stage_lock",
]
