"""Train the binary autoencoder: L1 + code confidence (+ perceptual) (+ PatchGAN from disc_start,
optionally seeing DiffAugment-ed images).

A plain loop. Run it in one process, or under torchrun for data parallelism:
    python -m torch.distributed.run --nproc_per_node 2 -m bld_train.cli autoencoder ...
Every step draws its randomness from a generator reseeded by (seed, rank, step) and its batch
from a seeded per-epoch permutation, so `resume=True` continues a run bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from bld_train import checkpoint as ckpt
from bld_train import config as C
from bld_train import distributed as D
from bld_train.autoencoder import BinaryAutoencoder, NLayerDiscriminator
from bld_train.data import batch_stream, make_dataset
from bld_train.diffaug import diff_augment, parse_policy
from bld_train.loop import EMA, Log, Precision, adamw, lr_at, optimizer_step, resume_from, set_lr
from bld_train.losses import (
    PerceptualLoss,
    adaptive_gan_weight,
    check_perceptual_weights,
    code_confidence_loss,
    cycle_consistency_loss,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)

STAGE = "autoencoder"


def resolve_configs(
    run_dir,
    preset: C.Preset | str | None,
    *,
    resume: bool,
    steps: int | None = None,
    seed: int | None = None,
    data: str | None = None,
    perceptual_weights: str | None = None,
) -> tuple[str, C.AutoencoderConfig, C.AutoencoderTrainConfig, C.DataConfig]:
    """The configs to train with: the preset's for a new run, the saved ones on resume.

    perceptual_weights: a local LPIPS weights file (see bld_train.losses) for presets with a
    perceptual term, such as paper256 (upstream's weight 1.0).
    """
    if resume:
        saved = ckpt.config_to_resume(run_dir, STAGE, preset, seed)
        name, model_cfg, train_cfg, data_cfg = (
            saved["preset"],
            saved["model"],
            saved["train"],
            saved["data"],
        )
    else:
        ckpt.require_fresh(run_dir, STAGE)
        p = C.preset(preset or "digits") if not isinstance(preset, C.Preset) else preset
        name, model_cfg, train_cfg, data_cfg = p.name, p.autoencoder, p.autoencoder_train, p.data
        if seed is not None:
            train_cfg = dataclasses.replace(train_cfg, seed=seed)
    if steps is not None:
        train_cfg = dataclasses.replace(train_cfg, steps=steps)
    if perceptual_weights is not None:
        train_cfg = dataclasses.replace(train_cfg, perceptual_weights_path=str(perceptual_weights))
    parse_policy(train_cfg.diffaug)
    if train_cfg.perceptual_weight > 0:
        check_perceptual_weights(train_cfg.perceptual_weights_path)
    if data is not None and data != data_cfg.source:
        # The holdout count belongs to the preset's own data; a user's folder trains on all of it.
        data_cfg = C.DataConfig(
            source=data, holdout=C.DataConfig().holdout if data == "digits" else 0
        )
    if train_cfg.steps < 1:
        raise C.ConfigError(f"steps must be at least 1, got {train_cfg.steps}")
    return name, model_cfg, train_cfg, data_cfg


def train_autoencoder(
    run_dir,
    preset: C.Preset | str | None = None,
    *,
    resume: bool = False,
    steps: int | None = None,
    seed: int | None = None,
    data: str | None = None,
    device: str | None = None,
    amp: bool = True,
    workers: int = 4,
    progress: bool = True,
    perceptual_weights: str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Train (or resume) RUN/autoencoder; returns its directory.

    on_step(step) is called after every optimizer step (step counts from 1), after any
    checkpoint of that step has been written.
    """
    info = D.setup(device)
    try:
        with ckpt.stage_lock(run_dir, STAGE) if info.is_main else contextlib.nullcontext():
            return _train(
                run_dir,
                preset,
                resume,
                steps,
                seed,
                data,
                perceptual_weights,
                info,
                amp,
                workers,
                progress,
                on_step,
            )
    finally:
        D.cleanup()


def _train(
    run_dir,
    preset,
    resume,
    steps,
    seed,
    data,
    perceptual_weights,
    info: D.DistInfo,
    amp,
    workers,
    progress,
    on_step,
) -> Path:
    name, cfg, tcfg, dcfg = resolve_configs(
        run_dir,
        preset,
        resume=resume,
        steps=steps,
        seed=seed,
        data=data,
        perceptual_weights=perceptual_weights,
    )
    dev = info.device
    dataset = make_dataset(dcfg, cfg, "train")

    torch.manual_seed(D.step_seed(tcfg.seed, 0, -1))  # same initial weights on every rank
    model = BinaryAutoencoder(cfg).to(dev)
    use_gan = tcfg.disc_start >= 0
    disc = (
        NLayerDiscriminator(cfg.in_channels, tcfg.disc_channels, tcfg.disc_layers).to(dev)
        if use_gan
        else None
    )
    perceptual = (
        PerceptualLoss(tcfg.perceptual_weights_path).to(dev) if tcfg.perceptual_weight > 0 else None
    )

    betas = tuple(tcfg.betas)
    optimizer = adamw(model, tcfg.lr, tcfg.weight_decay, betas, dev)
    disc_optimizer = adamw(disc, tcfg.lr, 0.0, betas, dev) if use_gan else None
    precision = Precision(dev, amp)
    scaler, disc_scaler = precision.scaler(), precision.scaler()
    ema = EMA(model, tcfg.ema_decay, tcfg.ema_every)
    policy = parse_policy(tcfg.diffaug)

    def disc_view(images):  # what the discriminator sees: DiffAugment-ed when configured
        return diff_augment(images, policy) if policy else images

    state = resume_from(run_dir, STAGE, resume, model, ema, optimizer, scaler)
    start = 0
    if state is not None:
        start = int(state["step"])
        if use_gan:
            disc.load_state_dict(state["disc"])
            disc_optimizer.load_state_dict(state["disc_optimizer"])
            disc_scaler.load_state_dict(state["disc_scaler"])
        if state.get("world_size", 1) != info.world_size and info.is_main:
            tqdm.write(
                f"resuming a {state.get('world_size')}-process run with "
                f"{info.world_size} processes: data order differs from the original"
            )
    if info.is_main:
        ckpt.write_stage_config(run_dir, STAGE, name, cfg, tcfg, dcfg)

    net = DDP(model, device_ids=[dev] if dev.type == "cuda" else None) if info.enabled else model
    batches = D.StepBatches(len(dataset), tcfg.batch_size, tcfg.seed, info.rank, info.world_size)
    log = Log(ckpt.stage_dir(run_dir, STAGE) / ckpt.LOG, start, info.is_main)
    bar = tqdm(
        total=tcfg.steps,
        initial=start,
        disable=not (progress and info.is_main),
        desc=f"autoencoder ({precision.name})",
        dynamic_ncols=True,
    )
    model.train()
    if use_gan:
        disc.train()

    stream = batch_stream(dataset, batches, start, tcfg.steps, dev, workers)
    for step, (x, _) in zip(range(start, tcfg.steps), stream, strict=False):  # range bounds it
        torch.manual_seed(D.step_seed(tcfg.seed, info.rank, step))
        lr = lr_at(step, tcfg.lr, tcfg.warmup_steps, tcfg.steps, schedule=tcfg.lr_schedule)
        set_lr(optimizer, lr)
        gan_on = use_gan and step >= tcfg.disc_start

        with precision.autocast():
            recon, probs, _, cycle_pairs = net(x, cycle=0 <= tcfg.cycle_start <= step)
        rec = reconstruction_loss(x, recon.float())
        if perceptual is not None:
            with precision.autocast():
                rec = rec + tcfg.perceptual_weight * perceptual(x, recon).float().mean()
        code = code_confidence_loss(probs.float())
        loss = rec + tcfg.code_weight * code
        stats = {"rec": rec.detach(), "code": code.detach()}
        if cycle_pairs:
            cycle = sum(
                cycle_consistency_loss(reencoded.float(), target.float())
                for reencoded, target in cycle_pairs
            ) / len(cycle_pairs)
            loss = loss + tcfg.cycle_weight * cycle
            stats["cycle"] = cycle.detach()
        if gan_on:
            disc.requires_grad_(False)  # the generator step must not touch D's gradients
            with precision.autocast():
                g_loss = hinge_g_loss(disc(disc_view(recon)).float())
            weight = tcfg.disc_weight * adaptive_gan_weight(
                rec, g_loss, model.last_layer, tcfg.disc_weight_max
            )
            loss = loss + weight * g_loss
            stats |= {"g": g_loss.detach(), "gan_w": weight}
        stats["grad_norm"] = optimizer_step(loss, net, optimizer, scaler, tcfg.grad_clip)

        if gan_on:
            disc.requires_grad_(True)
            set_lr(disc_optimizer, lr)
            with precision.autocast():
                d_loss = hinge_d_loss(
                    disc(disc_view(x)).float(), disc(disc_view(recon.detach())).float()
                )
            # D is not wrapped in DDP (two forwards per backward); average its grads by hand.
            optimizer_step(
                d_loss,
                disc,
                disc_optimizer,
                disc_scaler,
                tcfg.grad_clip,
                before_step=lambda: D.average_gradients(disc, info.world_size),
            )
            stats["d"] = d_loss.detach()
        ema.update(model, step)

        done = step + 1
        if done % tcfg.log_every == 0 or done == tcfg.steps:
            values = {k: float(v) for k, v in stats.items()}
            values = D.mean_across_ranks(values, dev)
            values = log.write(done, {"lr": lr, **values})
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k != "step"})
        bar.update(1)
        if info.is_main and (done % tcfg.checkpoint_every == 0 or done == tcfg.steps):
            training_state = {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "world_size": info.world_size,
            }
            if use_gan:
                training_state |= {
                    "disc": disc.state_dict(),
                    "disc_optimizer": disc_optimizer.state_dict(),
                    "disc_scaler": disc_scaler.state_dict(),
                }
            ckpt.save_checkpoint(run_dir, STAGE, ema.weights_like(model), training_state, done)
        if on_step is not None:
            on_step(done)
    bar.close()
    D.barrier()
    return ckpt.stage_dir(run_dir, STAGE)


__all__ = ["train_autoencoder", "resolve_configs"]
