"""Demo figures, measured on the runtime's own outputs: reconstruction PSNR, sample accuracy
and sample diversity on the built-in digits.

- PSNR: held-out digits -> runtime encode (the default deterministic code, p > 0.5) -> runtime
  decode, in uint8; also for the canonical code (`encode(canonical=True)`).
- Round trip: the share of bits the p > 0.5 code keeps through decode -> encode, and the share
  of held-out latents whose canonical code is a fixed point of encode(decode(.)).
- Accuracy: a scikit-learn classifier trained on the real training digits (8x8, the data's
  native resolution) labels samples conditioned on each class.
- Diversity: mean pairwise L2 distance between same-class samples at 8x8, divided by the same
  figure for real held-out digits of that class, averaged over classes (guards mode collapse).
- Beside fp32 (a precision other than fp32: `bld evaluate --precision int8`): the same samples
  (seeds, classes, guidance) from the bundle's fp32 graphs on the cpu backend; the share of
  images and of latents identical to fp32's, and the PSNR of the images against fp32's (one MSE
  over all pixels of all samples, identical images included).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from bld_runtime.errors import CodeNotSettledWarning
from bld_runtime.images import from_float, save_grid
from bld_runtime.pipeline import Pipeline


@dataclass
class GuidanceResult:
    guidance: float
    accuracy: float
    diversity: float
    # Beside fp32 (precision other than fp32 only): shares identical, pixel PSNR against fp32
    identical_images_to_fp32: float | None = None
    identical_latents_to_fp32: float | None = None
    psnr_vs_fp32_db: float | None = None


def pooled_psnr(a_u8: np.ndarray, b_u8: np.ndarray) -> float:
    """PSNR of two image sets with one MSE over all their pixels (inf when identical)."""
    mse = float(((a_u8.astype(np.float64) - b_u8.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def to_8x8(images_u8: np.ndarray) -> np.ndarray:
    """(N, H, W, 1) uint8 -> (N, 64) floats in [0, 1], box-averaged to the digits' 8x8 grid."""
    n, h, w, _ = images_u8.shape
    x = images_u8[..., 0].astype(np.float64) / 255.0
    return x.reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4)).reshape(n, 64)


def mean_pairwise_distance(x: np.ndarray) -> float:
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    n = len(x)
    return float(d.sum() / (n * (n - 1)))


def psnr(a_u8: np.ndarray, b_u8: np.ndarray) -> float:
    mse = ((a_u8.astype(np.float64) - b_u8.astype(np.float64)) ** 2).reshape(len(a_u8), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


def _real_digits(image_size: int, split: str):
    from bld_train.data import digits_dataset

    images, labels = digits_dataset(image_size, split=split)
    return from_float(images.permute(0, 2, 3, 1).numpy()), labels.numpy()


def train_classifier(train_u8: np.ndarray, labels: np.ndarray):
    from sklearn.svm import SVC

    return SVC(gamma="scale", C=10.0).fit(to_8x8(train_u8), labels)


def evaluate_bundle(
    bundle: str,
    guidances=(0.0,),
    per_class: int = 50,
    seed: int = 0,
    grid_path: str | None = None,
    backend: str = "cpu",
    precision: str = "fp32",
):
    pipe = Pipeline.load(bundle, backend=backend, precision=precision)
    fp32 = Pipeline.load(bundle) if precision != "fp32" else None  # the reference samples
    size = pipe.manifest.image.height
    num_classes = pipe.manifest.classes.count
    train_u8, train_labels = _real_digits(size, "train")
    held_u8, held_labels = _real_digits(size, "holdout")
    classifier = train_classifier(train_u8, train_labels)
    real_accuracy = float((classifier.predict(to_8x8(held_u8)) == held_labels).mean())

    # The default code (p > 0.5) and the canonical one (encode(canonical=True)).
    raw = pipe.encode(held_u8)
    recon = pipe.decode(raw)
    raw_kept = float((pipe.encode(recon) == raw).mean())
    codes, settled = pipe.settle(raw)
    canonical_recon = pipe.decode(codes)
    with warnings.catch_warnings():  # unsettled latents are counted below
        warnings.simplefilter("ignore", CodeNotSettledWarning)
        again = pipe.encode(canonical_recon, canonical=True)  # a fixed point, if settled
    fixed_latents = float((again == codes).all(axis=(1, 2)).mean())

    real_spread = [
        mean_pairwise_distance(to_8x8(held_u8[held_labels == c])) for c in range(num_classes)
    ]
    classes = np.repeat(np.arange(num_classes), per_class)
    results = []
    seeds = np.arange(len(classes), dtype=np.uint64) + np.uint64(seed)
    for g in guidances:
        out = pipe.generate(seeds=seeds, classes=classes, guidance=g)
        feats = to_8x8(out.images)
        accuracy = float((classifier.predict(feats) == classes).mean())
        ratios = [
            mean_pairwise_distance(feats[classes == c]) / real_spread[c] for c in range(num_classes)
        ]
        result = GuidanceResult(g, accuracy, float(np.mean(ratios)))
        if fp32 is not None:
            ref = fp32.generate(seeds=seeds, classes=classes, guidance=g)
            result.identical_images_to_fp32 = float(
                (out.images == ref.images).all(axis=(1, 2, 3)).mean()
            )
            result.identical_latents_to_fp32 = float((out.bits == ref.bits).all(axis=(1, 2)).mean())
            psnr_fp32 = pooled_psnr(out.images, ref.images)  # None in eval.json: all identical
            result.psnr_vs_fp32_db = psnr_fp32 if np.isfinite(psnr_fp32) else None
        results.append(result)
        if grid_path and g == guidances[0]:
            first = np.concatenate([np.flatnonzero(classes == c)[:10] for c in range(num_classes)])
            save_grid(grid_path, out.images[first], rows=num_classes)
    return {
        "psnr_db": psnr(held_u8, recon),
        "classifier_accuracy_on_real": real_accuracy,
        "psnr_canonical_code_db": psnr(held_u8, canonical_recon),
        "round_trip_bits_threshold_code": raw_kept,
        "fixed_point_latents": fixed_latents,
        "settled_latents": float(settled.mean()),
        "samples_per_class": per_class,
        "backend": backend,
        "precision": precision,
        "results": [asdict(r) for r in results],
    }


def run_evaluation(
    bundle: str,
    guidances: tuple[float, ...],
    per_class: int,
    seed: int,
    out_dir: str | None,
    echo,
    extra: dict | None = None,
    backend: str = "cpu",
    precision: str = "fp32",
) -> dict:
    """`bld evaluate`: score, write grid.png and eval.json (with `extra` keys), print."""
    from bld_runtime.files import atomic_write

    out_dir = out_dir or os.path.dirname(os.path.abspath(bundle))
    os.makedirs(out_dir, exist_ok=True)
    report = evaluate_bundle(
        bundle,
        guidances,
        per_class,
        seed,
        os.path.join(out_dir, "grid.png"),
        backend=backend,
        precision=precision,
    )
    report.update(extra or {})
    atomic_write(os.path.join(out_dir, "eval.json"), json.dumps(report, indent=2).encode())
    print_report(report, out_dir, echo)
    return report


def print_report(report: dict, out_dir: str, echo) -> None:
    first = report["results"][0]
    echo(f"reconstruction PSNR (held-out digits, p > 0.5 codes): {report['psnr_db']:.2f} dB")
    echo(
        f"decode -> encode keeps {report['round_trip_bits_threshold_code']:.2%} of the bits; "
        f"canonical codes: {report['psnr_canonical_code_db']:.2f} dB, "
        f"{report['settled_latents']:.1%} settled, {report['fixed_point_latents']:.1%} fixed "
        "points"
    )
    echo(f"sample accuracy (guidance {first['guidance']:g}): {first['accuracy']:.3f}")
    echo(f"sample diversity (guidance {first['guidance']:g}): {first['diversity']:.3f}")
    beside = first.get("identical_images_to_fp32") is not None
    echo(
        "guidance  accuracy  diversity"
        + ("  identical to fp32 (images, latents)  PSNR vs fp32" if beside else "")
    )
    for r in report["results"]:
        line = f"{r['guidance']:>8g}  {r['accuracy']:>8.3f}  {r['diversity']:>9.3f}"
        if beside:
            shown = r["psnr_vs_fp32_db"]
            line += (
                f"  {r['identical_images_to_fp32']:>17.1%} {r['identical_latents_to_fp32']:>8.1%}"
                + (f"  {shown:>9.2f} dB" if shown is not None else "  identical")
            )
        echo(line)
    echo(f"grid: {os.path.join(out_dir, 'grid.png')}")
