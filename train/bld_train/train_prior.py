"""Train the Bernoulli diffusion prior on the autoencoder's binary latents.

Where the clean bits z_0 come from is PriorTrainConfig.codes:
- "fixed": the training images are encoded once with the trained autoencoder (EMA weights,
  deterministic bits p > 0.5) into RUN/prior/latents.safetensors, packed 8 bits per byte in the
  contract's flat order; the file is reused while the autoencoder weights stay the same.
- "stochastic" (upstream's train_sampler_online.py): every step encodes its batch of images and
  samples the bits from the encoder's probabilities, as the autoencoder's Bernoulli quantizer
  does in training; so the prior learns the distribution of codes the decoder was trained on,
  and sees a new draw of every image's code each epoch.
Then a plain loop trains the denoiser on those bits (see bld_train.diffusion for the loss).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bld_runtime.bits import pack_bits, unpack_bits
from bld_train import checkpoint as ckpt
from bld_train import config as C
from bld_train import distributed as D
from bld_train.data import batch_stream, make_dataset
from bld_train.denoiser import Denoiser
from bld_train.diffusion import BernoulliDiffusion
from bld_train.loop import EMA, Log, Precision, adamw, lr_at, optimizer_step, resume_from, set_lr

STAGE = "prior"
BETAS = (0.9, 0.95)
ENCODE_BATCH = 64


def unpack_batch(packed: torch.Tensor, latent_shape: tuple[int, int]) -> torch.Tensor:
    """Packed rows (N, bytes) -> float 0./1. bits (N, L, C), via the runtime's unpacker."""
    return torch.from_numpy(unpack_bits(packed.numpy(), latent_shape)).float()


@torch.no_grad()
def encode_dataset(
    run_dir, data_cfg: C.DataConfig, device: torch.device, workers: int = 4, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed bits (N, bytes) uint8, labels (N,)) of the training split, in dataset order."""
    autoencoder = ckpt.load_autoencoder(run_dir, device)
    dataset = make_dataset(data_cfg, autoencoder.cfg, "train")
    loader = DataLoader(
        dataset,
        batch_size=ENCODE_BATCH,
        shuffle=False,
        num_workers=0 if hasattr(dataset, "images") else workers,
    )
    packed, labels = [], []
    for images, y in tqdm(
        loader, desc="encoding latents", disable=not progress, dynamic_ncols=True
    ):
        probs = autoencoder.encode_probs(images.to(device))
        packed.append(torch.from_numpy(pack_bits((probs > 0.5).cpu().numpy())))
        labels.append(y)
    return torch.cat(packed), torch.cat(labels).long()


def latents(run_dir, data_cfg: C.DataConfig, info: D.DistInfo, workers: int, progress: bool):
    """The encoded training set, made by rank 0 once per autoencoder version, read by all."""
    from safetensors.torch import load_file

    path = ckpt.stage_dir(run_dir, STAGE) / ckpt.LATENTS
    ae_hash = ckpt.file_sha256(ckpt.stage_dir(run_dir, "autoencoder") / ckpt.MODEL)
    wanted = {
        "autoencoder_sha256": ae_hash,
        "data": data_cfg.source,
        "holdout": str(data_cfg.holdout),
    }
    if info.is_main and _metadata(path) != wanted:
        packed, labels = encode_dataset(run_dir, data_cfg, info.device, workers, progress)
        ckpt.save_safetensors(path, {"bits_packed": packed, "labels": labels}, wanted)
    D.barrier()
    tensors = load_file(str(path))
    return tensors["bits_packed"], tensors["labels"], ae_hash


def _metadata(path: Path) -> dict | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def resolve_configs(
    run_dir,
    preset: C.Preset | str | None,
    *,
    resume: bool,
    steps: int | None = None,
    seed: int | None = None,
):
    """(preset name, PriorConfig, PriorTrainConfig, DataConfig) to train the prior with."""
    ae = ckpt.read_stage_config(run_dir, "autoencoder")
    ae_cfg: C.AutoencoderConfig = ae["model"]
    if resume:
        saved = ckpt.config_to_resume(run_dir, STAGE, preset, seed)
        name, prior_cfg, train_cfg = saved["preset"], saved["model"], saved["train"]
    else:
        ckpt.require_fresh(run_dir, STAGE)
        p = preset if isinstance(preset, C.Preset) else C.preset(preset or ae["preset"])
        name, prior_cfg, train_cfg = p.name, p.prior, p.prior_train
        if seed is not None:
            train_cfg = dataclasses.replace(train_cfg, seed=seed)
    if (prior_cfg.latent_size, prior_cfg.bits) != (ae_cfg.latent_size, ae_cfg.bits):
        raise C.ConfigError(
            f"preset {name!r} has a {prior_cfg.latent_size}x{prior_cfg.latent_size}x"
            f"{prior_cfg.bits} prior but the autoencoder's latents are "
            f"{ae_cfg.latent_size}x{ae_cfg.latent_size}x{ae_cfg.bits}"
        )
    if steps is not None:
        train_cfg = dataclasses.replace(train_cfg, steps=steps)
    if train_cfg.steps < 1:
        raise C.ConfigError(f"steps must be at least 1, got {train_cfg.steps}")
    return name, prior_cfg, train_cfg, ae["data"]


def train_prior(
    run_dir,
    preset: C.Preset | str | None = None,
    *,
    resume: bool = False,
    steps: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    amp: bool = True,
    workers: int = 4,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Train (or resume) RUN/prior on the latents of RUN/autoencoder; returns its directory.

    The preset defaults to the one the autoencoder was trained with. on_step(step) is called
    after every optimizer step (from 1), after any checkpoint of that step has been written.
    """
    info = D.setup(device)
    try:
        with ckpt.stage_lock(run_dir, STAGE) if info.is_main else contextlib.nullcontext():
            return _train(
                run_dir, preset, resume, steps, seed, info, amp, workers, progress, on_step
            )
    finally:
        D.cleanup()


def _train(
    run_dir, preset, resume, steps, seed, info: D.DistInfo, amp, workers, progress, on_step
) -> Path:
    name, cfg, tcfg, dcfg = resolve_configs(run_dir, preset, resume=resume, steps=steps, seed=seed)
    dev = info.device
    if tcfg.codes == "fixed":
        packed, labels, ae_hash = latents(run_dir, dcfg, info, workers, progress and info.is_main)
        size, num_labels = len(labels), int(labels.max()) + 1 if len(labels) else 0
    else:
        autoencoder = ckpt.load_autoencoder(run_dir, dev).requires_grad_(False)
        ae_hash = ckpt.file_sha256(ckpt.stage_dir(run_dir, "autoencoder") / ckpt.MODEL)
        dataset = make_dataset(dcfg, autoencoder.cfg, "train")
        size, num_labels = len(dataset), dataset.num_classes
    if num_labels > cfg.num_classes:
        raise C.ConfigError(
            f"the data has {num_labels} classes but the prior has {cfg.num_classes}"
        )
    tokens = cfg.latent_size**2
    # Packed latents stay in host memory (8x smaller than bits); each batch is unpacked by the
    # runtime's unpacker, the one implementation of the contract's bit layout.

    torch.manual_seed(D.step_seed(tcfg.seed, 0, -1))  # same initial weights on every rank
    model = Denoiser(cfg).to(dev)
    diffusion = BernoulliDiffusion(cfg.schedule, cfg.train_steps).to(dev)
    optimizer = adamw(model, tcfg.lr, tcfg.weight_decay, BETAS, dev)
    precision = Precision(dev, amp)
    scaler = precision.scaler()
    ema = EMA(model, tcfg.ema_decay, tcfg.ema_every)

    state = resume_from(run_dir, STAGE, resume, model, ema, optimizer, scaler)
    start = 0
    if state is not None:
        start = int(state["step"])
        if state.get("autoencoder_sha256") != ae_hash and info.is_main:
            tqdm.write("warning: the autoencoder changed since this prior was started")
        if state.get("world_size", 1) != info.world_size and info.is_main:
            tqdm.write(
                f"resuming a {state.get('world_size')}-process run with "
                f"{info.world_size} processes: data order differs from the original"
            )
    if info.is_main:
        ckpt.write_stage_config(
            run_dir, STAGE, name, cfg, tcfg, dcfg, {"autoencoder_sha256": ae_hash}
        )

    net = DDP(model, device_ids=[dev] if dev.type == "cuda" else None) if info.enabled else model
    batches = D.StepBatches(size, tcfg.batch_size, tcfg.seed, info.rank, info.world_size)
    log = Log(ckpt.stage_dir(run_dir, STAGE) / ckpt.LOG, start, info.is_main)
    bar = tqdm(
        total=tcfg.steps,
        initial=start,
        disable=not (progress and info.is_main),
        desc=f"prior ({precision.name})",
        dynamic_ncols=True,
    )
    model.train()

    images = (
        batch_stream(dataset, batches, start, tcfg.steps, dev, workers)
        if tcfg.codes == "stochastic"
        else None
    )
    for step in range(start, tcfg.steps):
        # Fetched before seeding: a DataLoader draws its workers' base seed from torch's generator.
        batch = next(images) if images is not None else None
        torch.manual_seed(D.step_seed(tcfg.seed, info.rank, step))
        if batch is None:
            index = batches.indices(step)
            z0 = unpack_batch(packed[index], (tokens, cfg.bits)).to(dev, non_blocking=True)
            y = labels[index].to(dev, non_blocking=True)
        else:
            x, y = batch
            with torch.no_grad():  # the quantizer's training-time draw, from this step's seed
                z0 = torch.bernoulli(autoencoder.encode_probs(x))
        lr = lr_at(step, tcfg.lr, tcfg.warmup_steps, tcfg.steps, schedule=tcfg.lr_schedule)
        set_lr(optimizer, lr)
        with precision.autocast():
            loss, stats = diffusion.loss(net, z0, y, tcfg, cfg.num_classes)
        stats["grad_norm"] = optimizer_step(loss, net, optimizer, scaler, tcfg.grad_clip)
        ema.update(model, step)

        done = step + 1
        if done % tcfg.log_every == 0 or done == tcfg.steps:
            values = D.mean_across_ranks({k: float(v) for k, v in stats.items()}, dev)
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
                "autoencoder_sha256": ae_hash,
            }
            ckpt.save_checkpoint(run_dir, STAGE, ema.weights_like(model), training_state, done)
        if on_step is not None:
            on_step(done)
    bar.close()
    D.barrier()
    return ckpt.stage_dir(run_dir, STAGE)


__all__ = ["train_prior", "encode_dataset", "unpack_batch", "resolve_configs"]
