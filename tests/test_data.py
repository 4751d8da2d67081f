"""Datasets: built-in digits (shapes, ranges, labels, holdout split) and image folders."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from bld_train.config import AutoencoderConfig, DataConfig
from bld_train.data import DataError, ImageFolderDataset, digits_dataset, make_dataset


def _image_hashes(images: torch.Tensor) -> list[str]:
    return sorted(hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images)


def test_digits_shapes_ranges_labels():
    images, labels = digits_dataset(16)
    assert images.shape == (1500, 1, 16, 16) and images.dtype == torch.float32
    assert labels.shape == (1500,) and labels.dtype == torch.int64
    assert images.min() == -1.0 and images.max() == 1.0  # background and full ink both occur
    assert sorted(labels.unique().tolist()) == list(range(10))
    # At the native 8 px the images are the real digits (0..16 ink mapped to [-1, 1]).
    from sklearn.datasets import load_digits

    first = torch.from_numpy(load_digits().images[0]).float() / 8 - 1
    again, _ = digits_dataset(8, holdout=0)
    assert torch.allclose(again[0, 0], first, atol=1 / 127.5)


def test_digits_holdout_is_disjoint_stratified_and_fixed():
    train, _ = digits_dataset(8, "train", holdout=297)
    held, held_y = digits_dataset(8, "holdout", holdout=297)
    everything, _ = digits_dataset(8, "train", holdout=0)
    assert len(held) == 297 and len(train) + len(held) == len(everything) == 1797
    # Train and holdout partition the data set (as multisets of images).
    assert _image_hashes(torch.cat([train, held])) == _image_hashes(everything)
    counts = torch.bincount(held_y, minlength=10)
    assert counts.min() >= 29 and counts.max() <= 30  # class-stratified: 297 / 10 each
    held_again, held_y_again = digits_dataset(8, "holdout", holdout=297)
    assert torch.equal(held, held_again) and torch.equal(held_y, held_y_again)


def test_digits_rejects_bad_arguments():
    with pytest.raises(DataError, match="split"):
        digits_dataset(8, "test")
    with pytest.raises(DataError, match="empty"):
        digits_dataset(8, "holdout", holdout=0)
    with pytest.raises(DataError, match="holdout"):
        digits_dataset(8, holdout=5000)


def _save(path, size, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_with_classes_skips_corrupt_files(tmp_path):
    _save(tmp_path / "cats" / "a.png", (40, 30), (255, 0, 0))
    _save(tmp_path / "cats" / "deep" / "b.jpg", (30, 40), (0, 255, 0))
    _save(tmp_path / "dogs" / "c.png", (20, 20), (0, 0, 255))
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG not really an image")
    (tmp_path / "dogs" / "notes.txt").write_text("ignored: not an image extension")
    with pytest.warns(UserWarning, match=r"1 unreadable image.*broken\.png"):
        ds = ImageFolderDataset(tmp_path, image_size=16)
    assert len(ds) == 3 and ds.classes == ["cats", "dogs"] and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 1]
    image, label = ds[2]
    assert image.shape == (3, 16, 16) and label == 1
    assert torch.allclose(image[2], torch.ones(16, 16))
    assert torch.allclose(image[0], -torch.ones(16, 16))
    with pytest.warns(UserWarning, match="broken"):
        gray = ImageFolderDataset(tmp_path, image_size=8, channels=1)
    assert gray[0][0].shape == (1, 8, 8)


def test_image_folder_flat_is_one_class_and_center_crops(tmp_path):
    # A 64x32 image: black, a white middle half, black. Resized to 32x16 and center-cropped to
    # 16x16, only the white middle remains.
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, 16:48] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    _save(tmp_path / "sub" / "other.png", (16, 16), (0, 0, 0))
    ds = ImageFolderDataset(tmp_path, image_size=16)
    assert ds.classes == [] and ds.labels.tolist() == [0, 0]
    wide = ds[ds.files.index(tmp_path / "wide.png")][0]
    assert wide.min() > 0.5 and wide.mean() > 0.95  # (bicubic rings a little at the edges)


def test_image_folder_truncated_file_is_replaced_by_the_next(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.jpg")
    _save(tmp_path / "b.png", (32, 32), (0, 0, 0))
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])  # header intact, pixels cut off
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the header check passes: no warning while scanning
        ds = ImageFolderDataset(tmp_path, image_size=8)
    assert len(ds) == 2
    with pytest.warns(UserWarning, match="a.jpg"):
        image, _ = ds[0]
    assert torch.equal(image, ds[1][0])


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing", 16)
    with pytest.raises(DataError, match="no readable images"):
        ImageFolderDataset(tmp_path, 16)


def test_make_dataset_dispatch(tmp_path):
    ae = AutoencoderConfig(image_size=16, in_channels=1)
    train = make_dataset(DataConfig(), ae, "train")
    held = make_dataset(DataConfig(), ae, "holdout")
    assert (len(train), len(held)) == (1500, 297)
    image, label = train[0]
    assert image.shape == (1, 16, 16) and label.dtype == torch.int64
    with pytest.raises(DataError, match="grayscale"):
        make_dataset(DataConfig(), AutoencoderConfig(in_channels=3), "train")
    for i in range(5):
        _save(tmp_path / f"{i}.png", (20, 20), (i * 50, 0, 0))
    rgb = AutoencoderConfig(image_size=16, in_channels=3)
    folder_train = make_dataset(DataConfig(source=str(tmp_path), holdout=2), rgb, "train")
    folder_held = make_dataset(DataConfig(source=str(tmp_path), holdout=2), rgb, "holdout")
    assert (len(folder_train), len(folder_held)) == (3, 2)
    assert set(folder_train.indices.tolist()).isdisjoint(folder_held.indices.tolist())
    with pytest.raises(DataError, match="no built-in data"):
        make_dataset(DataConfig(source=""), rgb, "train")


def test_training_and_bld_encode_fit_see_the_same_pixels_and_bits(tiny_bundle, tmp_path):
    """One torch-free resize + center crop (bld_runtime.images.fit) serves training's folders
    and `bld encode --fit`: the same file gives the same pixels, so the same bits."""
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from bld_runtime.bits import load_bits
    from bld_runtime.cli import cli
    from bld_runtime.images import load_image
    from bld_runtime.pipeline import Pipeline
    from bld_train.data import ImageFolderDataset

    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = []
    for i, (w, h, mode) in enumerate([(37, 23, "RGB"), (16, 40, "L"), (200, 201, "RGBA")]):
        pixels = rng.integers(0, 256, (h, w, len(mode)) if len(mode) > 1 else (h, w), np.uint8)
        paths.append(folder / f"{i}.png")
        Image.fromarray(pixels, mode).save(paths[-1])
    pipe = Pipeline.load(tiny_bundle)
    H, W, ch = pipe.image_shape
    dataset = ImageFolderDataset(folder, H, ch)
    assert [p.name for p in dataset.files] == [p.name for p in paths]
    training = np.stack(
        [
            np.rint((dataset.load(i).numpy().transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)
            for i in range(len(paths))
        ]
    )
    runtime = np.stack([load_image(p, H, W, ch, fit_size=True) for p in paths])
    np.testing.assert_array_equal(runtime, training)

    out = tmp_path / "codes.bldz"
    result = CliRunner().invoke(
        cli, ["encode", str(tiny_bundle), *map(str, paths), "--fit", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    latent = pipe.manifest.latent
    np.testing.assert_array_equal(
        load_bits(out, (latent.height, latent.width, latent.bits)), pipe.encode(training)
    )
