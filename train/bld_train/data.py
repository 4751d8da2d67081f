"""Training data: the built-in digits set and folders of images.

Every dataset yields `(image, label)` with `image` a float32 tensor (channels, S, S) in [-1, 1]
and `label` an int64 class index. `make_dataset` picks one from a `DataConfig`.

- digits: scikit-learn's 1797 real 8x8 handwritten digits (bundled with scikit-learn, so nothing
  is downloaded), upscaled with Pillow's bilinear filter. A fixed, class-stratified holdout split
  is kept out of training for evaluation.
- a folder: every image below it, converted, resized (shorter side) and center-cropped by
  bld_runtime.images.fit, the same function `bld encode --fit` uses, so a file gives the same
  pixels here and in the runtime. Labels come from the first-level subfolders (sorted names)
  when every image lives in one, else all are class 0.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from bld_runtime.errors import BldError
from bld_runtime.images import fit
from bld_train.config import AutoencoderConfig, DataConfig

IMAGE_EXTENSIONS = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
}
HOLDOUT_SEED = 0  # fixed: the holdout split must never change between runs or machines


class DataError(BldError):
    """A dataset that cannot be built: missing folder, no usable images, bad split."""


def to_tensor(image: Image.Image) -> torch.Tensor:
    """Pillow image (L or RGB) -> float32 (channels, H, W) in [-1, 1] (x = u8 / 127.5 - 1)."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0)


class TensorImageDataset(Dataset):
    """Images and labels held in memory as tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def _digits_holdout_mask(labels: np.ndarray, holdout: int) -> np.ndarray:
    """Boolean mask of a seeded, class-stratified holdout of `holdout` images."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    _, held = train_test_split(index, test_size=holdout, stratify=labels, random_state=HOLDOUT_SEED)
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


def digits_dataset(
    image_size: int, split: str = "train", holdout: int = 297
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits upscaled to `image_size`: (images (N, 1, S, S) in [-1, 1], labels (N,)).

    `split` is "train" or "holdout"; the holdout is `holdout` images, stratified by class and
    fixed by a constant seed, and never overlaps the train split.
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "holdout"):
        raise DataError(f"unknown split {split!r}; choose 'train' or 'holdout'")
    digits = load_digits()
    pixels, labels = digits.images, digits.target.astype(np.int64)  # pixels are 0..16
    if not 0 <= holdout < len(labels) - 10:
        raise DataError(f"digits holdout must be between 0 and {len(labels) - 11}, got {holdout}")
    if holdout == 0:
        held = np.zeros(len(labels), dtype=bool)
    else:
        held = _digits_holdout_mask(labels, holdout)
    keep = held if split == "holdout" else ~held
    if not keep.any():
        raise DataError("the digits holdout split is empty (holdout = 0)")
    images = []
    for image in pixels[keep]:
        u8 = Image.fromarray(np.rint(image * (255.0 / 16.0)).astype(np.uint8))
        images.append(to_tensor(u8.resize((image_size, image_size), Image.Resampling.BILINEAR)))
    return torch.stack(images), torch.from_numpy(labels[keep])


class ImageFolderDataset(Dataset):
    """All images below `root` (recursively), resized and center-cropped to image_size.

    Files that Pillow cannot open are listed in one warning and skipped. A file that opens but
    fails to decode later (a truncated JPEG, say) is reported and replaced by the next image, so
    a long run does not stop on one bad file.
    """

    def __init__(self, root: str | os.PathLike, image_size: int, channels: int = 3):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {str(root)!r} does not exist")
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels}")
        self.root, self.image_size, self.channels = root, image_size, channels
        candidates = sorted(
            p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        files, corrupt = [], []
        for path in candidates:
            try:
                with Image.open(path) as image:
                    image.verify()
                files.append(path)
            except Exception:  # noqa: BLE001 - Pillow raises many types for bad files
                corrupt.append(path)
        if corrupt:
            shown = ", ".join(str(p.relative_to(root)) for p in corrupt[:20])
            more = f" and {len(corrupt) - 20} more" if len(corrupt) > 20 else ""
            warnings.warn(
                f"skipping {len(corrupt)} unreadable image(s) in {root}: {shown}{more}",
                stacklevel=2,
            )
        if not files:
            raise DataError(f"no readable images found in {str(root)!r}")
        self.files = files
        relative = [p.relative_to(root).parts for p in files]
        if all(len(parts) > 1 for parts in relative):
            self.classes = sorted({parts[0] for parts in relative})
            index = {name: i for i, name in enumerate(self.classes)}
            self.labels = torch.tensor([index[parts[0]] for parts in relative], dtype=torch.int64)
        else:
            self.classes = []
            self.labels = torch.zeros(len(files), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return max(1, len(self.classes))

    def load(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            return to_tensor(fit(image, self.image_size, self.channels))

    def __getitem__(self, index: int):
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            try:
                return self.load(i), self.labels[i]
            except Exception as error:  # noqa: BLE001 - any decoder failure
                warnings.warn(f"skipping unreadable image {self.files[i]}: {error}", stacklevel=2)
        raise DataError(f"no image in {self.root} could be decoded")


class SubsetDataset(Dataset):
    def __init__(self, dataset: ImageFolderDataset, indices: torch.Tensor):
        self.dataset, self.indices = dataset, indices
        self.labels = dataset.labels[indices]
        self.num_classes = dataset.num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]


def make_dataset(data_cfg: DataConfig, ae_cfg: AutoencoderConfig, split: str = "train") -> Dataset:
    """The dataset a run trains ("train") or evaluates ("holdout") on."""
    if split not in ("train", "holdout"):
        raise DataError(f"unknown split {split!r}; choose 'train' or 'holdout'")
    if data_cfg.source == "digits":
        if ae_cfg.in_channels != 1:
            raise DataError(
                f"digits are grayscale; the autoencoder expects {ae_cfg.in_channels} channels"
            )
        return TensorImageDataset(*digits_dataset(ae_cfg.image_size, split, data_cfg.holdout))
    if not data_cfg.source:
        raise DataError("this preset has no built-in data; pass a folder of images (--data PATH)")
    folder = ImageFolderDataset(data_cfg.source, ae_cfg.image_size, ae_cfg.in_channels)
    if data_cfg.holdout <= 0:
        if split == "holdout":
            raise DataError("the holdout split is empty (holdout = 0)")
        return folder
    if data_cfg.holdout >= len(folder):
        raise DataError(
            f"holdout ({data_cfg.holdout}) must be smaller than the number of "
            f"images ({len(folder)})"
        )
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    held, kept = order[: data_cfg.holdout].sort().values, order[data_cfg.holdout :].sort().values
    return SubsetDataset(folder, held if split == "holdout" else kept)


def batch_stream(dataset, batches, start: int, end: int, device, workers: int):
    """(images, labels) for steps start..end-1 (batches: a distributed.StepBatches), on
    `device`."""
    if isinstance(dataset, TensorImageDataset):  # in memory: index directly, no loader needed
        for step in range(start, end):
            index = batches.indices(step)
            yield (
                dataset.images[index].to(device, non_blocking=True),
                dataset.labels[index].to(device, non_blocking=True),
            )
        return
    loader = DataLoader(
        dataset,
        batch_sampler=batches.batches(start, end),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


__all__ = [
    "DataError",
    "TensorImageDataset",
    "ImageFolderDataset",
    "digits_dataset",
    "make_dataset",
    "to_tensor",
    "batch_stream",
]
