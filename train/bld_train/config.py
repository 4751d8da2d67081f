"""Model and training configuration: typed dataclasses plus named presets.

A preset bundles everything one run needs (data, autoencoder, prior and their
training settings). Configs are saved next to every checkpoint as JSON, so a
checkpoint directory alone is enough to rebuild its model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bld_runtime.errors import BldError


class ConfigError(BldError, ValueError):
    """A preset name, config file or override that does not describe a valid run."""


def _choose(value: str, field: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{field} must be one of {', '.join(choices)}, got {value!r}")


LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class AutoencoderConfig:
    image_size: int = 32
    in_channels: int = 1
    ch: int = 32  # base width of the VQGAN-style conv stack
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)  # one entry per resolution; len-1 downsamplings
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (4,)  # feature-map sizes that get self-attention
    bits: int = 32  # bits per latent token (C in the contract)
    emb_dim: int = 64  # width the decoder maps bits to (learned linear map)
    norm_first: bool = False  # GroupNorm on the bit embedding before the decoder
    dropout: float = 0.0
    # The official BinaryAE differs from VQGAN in three places (docs/DEVIATIONS.md), the three
    # fields below. heads: "vqgan" is GroupNorm -> SiLU -> Conv at both ends; "binaryae" is
    # encoder GroupNorm -> Conv3x3 (emb_dim) -> Conv1x1 (bits), decoder GroupNorm -> Conv, no
    # SiLU (upstream's).
    heads: str = "vqgan"
    decoder_res_blocks: int = 0  # ResBlocks per decoder level; 0: num_res_blocks + 1 (VQGAN)
    embed_bias: bool = True  # bias of the bits -> emb_dim map (upstream: a codebook, none)

    def __post_init__(self):
        _choose(self.heads, "heads", ("vqgan", "binaryae"))

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class PriorConfig:
    latent_size: int = 4  # latent grid is latent_size x latent_size tokens
    bits: int = 32
    num_classes: int = 10  # the null class (for guidance) is index num_classes
    width: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    schedule: str = "linear"  # linear | cosine | sigmoid (bld_runtime.contract)
    train_steps: int = 64  # T
    sampling_steps: int = 16  # K
    # Official transformer details (docs/DEVIATIONS.md); the defaults are this project's first
    # choices, which the digits demo was measured with.
    # Position embedding: a parameter initialised with the 2-D sin-cos table (upstream), not the
    # fixed table.
    learned_pos: bool = False
    layer_scale: bool = False  # LayerScale: x + gamma * f(x) in each block (upstream)
    layer_scale_init: float = 1.0  # initial gamma (upstream: 1.0)
    time_features: str = "raw"  # raw: sin-cos of t (DiT); rescaled: of t * 4000 / T
    # normal: N(0, 0.02) weights, zero biases (GPT/DiT); torch: PyTorch's defaults, as upstream
    # leaves them.
    init: str = "normal"

    def __post_init__(self):
        _choose(self.time_features, "time_features", ("raw", "rescaled"))
        _choose(self.init, "init", ("normal", "torch"))


@dataclass(frozen=True)
class AutoencoderTrainConfig:
    steps: int = 3000
    batch_size: int = 64  # per process
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # cosine: warmup, cosine to 0.1 lr; constant: warmup, lr
    betas: tuple[float, ...] = (0.5, 0.9)  # Adam betas (VQGAN's; upstream BinaryAE: torch's)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    ema_decay: float = 0.999
    ema_every: int = 1  # update the EMA every this many steps
    code_weight: float = 0.1  # weight of the code-confidence term mean(p * (1 - p))
    cycle_weight: float = 1.0  # re-encoding a decoded image must give its bits back
    # Step at which that term starts; -1 disables it. Early on it collapses the code (constant
    # bits are consistent).
    cycle_start: int = -1
    disc_start: int = -1  # step at which the PatchGAN starts; -1 disables it
    disc_weight: float = 0.1  # GAN weight = disc_weight * min(adaptive, disc_weight_max)
    disc_weight_max: float = 1e4  # clamp of VQGAN's adaptive weight (upstream BinaryAE: 1)
    disc_channels: int = 32
    disc_layers: int = 2
    # DiffAugment policy on every discriminator input, e.g. "color,translation"; "" disables it.
    diffaug: str = ""
    perceptual_weight: float = 0.0  # needs local LPIPS weights (never downloaded)
    perceptual_weights_path: str = ""
    grad_clip: float = 1.0  # <= 0: no clipping
    log_every: int = 50
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        _choose(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        if self.ema_every < 1:
            raise ConfigError(f"ema_every must be at least 1, got {self.ema_every}")


@dataclass(frozen=True)
class PriorTrainConfig:
    steps: int = 4000
    batch_size: int = 128  # per process
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine | constant (see AutoencoderTrainConfig)
    weight_decay: float = 0.01
    warmup_steps: int = 200
    ema_decay: float = 0.999
    ema_every: int = 1
    label_drop: float = 0.1  # probability of replacing a label by the null class
    # fixed: one p > 0.5 encoding of the data, made once; stochastic: each step encodes its
    # images and samples the bits from the encoder's probabilities (upstream).
    codes: str = "fixed"
    loss: str = "weighted"  # weighted | mean (as in the reference implementation)
    focal: float = -1.0  # focal gamma; < 0 disables the focal loss
    aux: float = 0.0  # weight of the auxiliary posterior loss; 0 disables it
    grad_clip: float = 1.0  # <= 0: no clipping
    log_every: int = 50
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        _choose(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        _choose(self.loss, "loss", ("weighted", "mean"))
        _choose(self.codes, "codes", ("fixed", "stochastic"))
        if self.ema_every < 1:
            raise ConfigError(f"ema_every must be at least 1, got {self.ema_every}")


@dataclass(frozen=True)
class DataConfig:
    source: str = "digits"  # "digits" (built in, scikit-learn) or a folder of images
    holdout: int = 297  # images kept out of training for evaluation (digits)


@dataclass(frozen=True)
class Preset:
    name: str
    data: DataConfig
    autoencoder: AutoencoderConfig
    autoencoder_train: AutoencoderTrainConfig
    prior: PriorConfig
    prior_train: PriorTrainConfig


def _tiny() -> Preset:
    ae = AutoencoderConfig(
        image_size=16,
        in_channels=1,
        ch=8,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        bits=8,
        emb_dim=16,
    )
    return Preset(
        name="tiny",
        data=DataConfig(),
        autoencoder=ae,
        autoencoder_train=AutoencoderTrainConfig(
            steps=20,
            batch_size=16,
            warmup_steps=2,
            disc_start=10,
            cycle_start=10,
            disc_channels=8,
            log_every=5,
            checkpoint_every=5,
        ),
        prior=PriorConfig(
            latent_size=ae.latent_size,
            bits=ae.bits,
            width=32,
            depth=2,
            heads=2,
            train_steps=32,
            sampling_steps=16,
        ),
        prior_train=PriorTrainConfig(
            steps=20, batch_size=16, warmup_steps=2, log_every=5, checkpoint_every=5
        ),
    )


def _digits() -> Preset:
    # Sized for `make demo` within 15 minutes on the slow 2-core machines (GEMM peak ~140
    # GFLOP/s): 4x4 tokens of 32 bits per 32x32 digit. The step counts and batch sizes were
    # chosen by measurement (README, docs/DEVIATIONS.md); training is deterministic.
    ae = AutoencoderConfig(ch=16, decoder_res_blocks=1)
    return Preset(
        name="digits",
        data=DataConfig(),
        autoencoder=ae,
        autoencoder_train=AutoencoderTrainConfig(steps=800, batch_size=32, warmup_steps=50),
        prior=PriorConfig(latent_size=ae.latent_size, bits=ae.bits, width=128, depth=4, heads=4),
        prior_train=PriorTrainConfig(steps=2000, warmup_steps=100),
    )


def _paper256() -> Preset:
    # The official 256px recipe: ZeWang95/BinaryLatentDiffusion's hparams/defaults
    # (binarygan_default for the autoencoder, sampler_defaults for the prior) with its README's
    # command lines for the released BAE_C64 autoencoder and the LSUN churches prior. Batch
    # sizes are per process, as upstream's are per GPU (8 GPUs for the autoencoder, 4 for that
    # prior). Every difference that stays is in docs/DEVIATIONS.md, with its reason.
    ae = AutoencoderConfig(
        image_size=256,
        in_channels=3,
        ch=128,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16,),
        bits=64,
        emb_dim=256,
        norm_first=True,
        heads="binaryae",
        decoder_res_blocks=2,
        embed_bias=False,
    )
    return Preset(
        name="paper256",
        data=DataConfig(source="", holdout=0),
        autoencoder=ae,
        autoencoder_train=AutoencoderTrainConfig(
            steps=500000,
            batch_size=4,
            lr=1.8e-5,
            lr_schedule="constant",
            warmup_steps=0,
            betas=(0.9, 0.999),
            ema_decay=0.995,
            ema_every=10,
            code_weight=0.0,
            disc_start=30001,
            disc_weight=1.0,
            disc_weight_max=1.0,
            disc_channels=64,
            disc_layers=3,
            perceptual_weight=1.0,
            grad_clip=0.0,
        ),
        prior=PriorConfig(
            latent_size=16,
            bits=64,
            num_classes=1000,
            width=768,
            depth=24,
            heads=12,
            train_steps=64,
            sampling_steps=16,
            learned_pos=True,
            layer_scale=True,
            time_features="rescaled",
            init="torch",
        ),
        prior_train=PriorTrainConfig(
            steps=2000000,
            batch_size=64,
            lr=2e-4,
            lr_schedule="constant",
            warmup_steps=10000,
            weight_decay=0.0,
            ema_decay=0.995,
            ema_every=10,
            loss="mean",
            focal=0.0,
            grad_clip=0.0,
            codes="stochastic",
        ),
    )


PRESETS = {"tiny": _tiny, "digits": _digits, "paper256": _paper256}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from a dict, rejecting unknown keys with a path-qualified error."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    kwargs = {}
    for key, value in data.items():
        default = getattr(cls(), key) if _has_defaults(cls) else None
        kwargs[key] = tuple(value) if isinstance(default, tuple) else value
    try:
        return cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _has_defaults(cls) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


__all__ = [
    "AutoencoderConfig",
    "PriorConfig",
    "AutoencoderTrainConfig",
    "PriorTrainConfig",
    "DataConfig",
    "Preset",
    "PRESETS",
    "preset",
    "to_dict",
    "from_dict",
    "ConfigError",
]
