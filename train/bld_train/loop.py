"""Pieces both training loops share: EMA, learning-rate schedule, mixed precision, logging."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's weights, kept in float32.

    The decay ramps up as min(decay, (1 + step) / (10 + step)), so short runs still move the
    average away from the random initialisation. With `every` > 1 it is updated every that many
    steps (upstream: decay 0.995 every 10 steps).
    """

    def __init__(self, model: nn.Module, decay: float, every: int = 1):
        self.decay, self.every = decay, every
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """After optimizer step `step` (from 0): average in the weights every `every` steps."""
        if (step + 1) % self.every:
            return
        decay = min(self.decay, (1 + step) / (10 + step))
        current = model.state_dict()
        floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        torch._foreach_lerp_(
            [self.shadow[k] for k in floats], [current[k].float() for k in floats], 1.0 - decay
        )
        for k, v in self.shadow.items():
            if not v.is_floating_point():
                v.copy_(current[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)

    def weights_like(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The averaged weights in the model's own dtypes (what model.safetensors stores)."""
        reference = model.state_dict()
        return {k: v.to(reference[k].dtype) for k, v in self.shadow.items()}


def lr_at(
    step: int,
    base_lr: float,
    warmup: int,
    total: int,
    min_ratio: float = 0.1,
    schedule: str = "cosine",
) -> float:
    """Linear warmup, then cosine decay to min_ratio * base_lr at `total` steps ("cosine") or
    base_lr from then on ("constant", upstream's)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: torch.device,
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and conv kernels only (not biases or norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")


class Precision:
    """Autocast (bf16 where supported, else fp16 with loss scaling) only on CUDA."""

    def __init__(self, device: torch.device, enabled: bool = True):
        self.enabled = enabled and device.type == "cuda"
        self.dtype = None
        if self.enabled:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.device_type = device.type

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def optimizer_step(
    loss: torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
    before_step=None,
) -> torch.Tensor:
    """Backward, (un)scale, clip, step; returns the gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if before_step is not None:
        before_step()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), grad_clip if grad_clip > 0 else float("inf")
    )
    scaler.step(optimizer)
    scaler.update()
    return norm


class Log:
    """Appends one JSON line per logged step to log.jsonl (main process only)."""

    def __init__(self, path: Path, start_step: int, enabled: bool):
        self.path, self.enabled = Path(path), enabled
        self.last_time, self.last_step = time.perf_counter(), start_step
        if enabled and self.path.exists():
            # After a resume, drop the lines of steps that are about to be trained again.
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, values: dict[str, float]) -> dict[str, float]:
        now = time.perf_counter()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        values = {"step": step, **values, "steps_per_s": round(rate, 3)}
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(values) + "\n")
        return values


def resume_from(
    run_dir,
    stage: str,
    resume: bool,
    model: nn.Module,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    scaler,
) -> dict | None:
    """With `resume`, load the stage's training state into the model, EMA, optimizer and
    scaler and return it (the caller restores anything else it saved); else None."""
    from bld_train import checkpoint as ckpt
    from bld_train.config import ConfigError

    if not resume:
        return None
    state = ckpt.load_training_state(run_dir, stage)
    if state is None:
        raise ConfigError(
            f"nothing to resume: {ckpt.stage_dir(run_dir, stage)} has no training state"
        )
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return state


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


__all__ = ["EMA", "lr_at", "set_lr", "adamw", "Precision", "optimizer_step", "Log", "unwrap"]
