"""Images at the runtime's boundary: uint8 <-> float conversion, image files, fitting, grids.

The user-facing layout is uint8 NHWC (N, H, W, channels); the graphs take float32 NCHW in
[-1, 1]. The conversion is the project's convention: x = u8 / 127.5 - 1 and
u8 = clip(round((x + 1) * 127.5), 0, 255). PNGs are encoded in memory and written with
files.atomic_write (temporary file + rename), so a failed write leaves no partial file.

`fit` is the one implementation of the resize and center crop that training applies to a
folder of images (bld_train.data imports it), so that a file gives the same pixels, and so the
same bits, through training's data path and through `bld encode --fit`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from .errors import InvalidRequestError
from .files import atomic_write, open_input

_compiled_pixels: Callable[[Any, int, int, int, Any], None] | None
try:  # the one-pass conversion of decoder output (csrc/bld_image_host.h); numpy where not built
    from ._host import pixels as _compiled_pixels
except ImportError:
    _compiled_pixels = None

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

StrPath = str | os.PathLike[str]

MODES = {1: "L", 3: "RGB"}  # PNG mode per channel count
MAX_PIXELS = 64 << 20  # larger images are refused from their header, before decoding


def to_float(images_u8: npt.ArrayLike) -> NDArray[np.float32]:
    """uint8 in [0, 255] -> float32 in [-1, 1], same layout.

    Args:
        images_u8: uint8 pixels, any shape (values are cast to uint8).

    Returns:
        float32 u8 / 127.5 - 1, the same shape.
    """
    return np.asarray(images_u8, np.uint8).astype(np.float32) / np.float32(127.5) - np.float32(1)


def from_float(x: npt.ArrayLike) -> NDArray[np.uint8]:
    """float in [-1, 1] -> uint8, rounding half to even and clipping, same layout.

    Args:
        x: Floats, any shape (computed in float32).

    Returns:
        uint8 clip(round((x + 1) * 127.5), 0, 255), the same shape.
    """
    scaled: NDArray[np.float32] = np.array(x, np.float32)  # a copy, 0-d for a scalar
    scaled += np.float32(1)  # in place from here: one temporary for the whole conversion
    scaled *= np.float32(127.5)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def from_decoder(x: NDArray[np.float32]) -> NDArray[np.uint8]:
    """The decoder's output as the user's images: `from_float(nchw_to_nhwc(x))`, in one
    compiled pass where the package built bld_runtime._host (NaN gives 0 either way).

    Args:
        x: float32 (N, C, H, W).

    Returns:
        uint8 (N, H, W, C).
    """
    n, channels, h, w = x.shape
    if _compiled_pixels is None or x.dtype != np.float32:
        return from_float(nchw_to_nhwc(x))
    out = np.empty((n, h, w, channels), np.uint8)
    _compiled_pixels(np.ascontiguousarray(x), n, channels, h * w, out)
    return out


def nchw_to_nhwc(x: NDArray[Any]) -> NDArray[Any]:
    """(N, C, H, W) -> (N, H, W, C), C-contiguous."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def nhwc_to_nchw(x: NDArray[Any]) -> NDArray[Any]:
    """(N, H, W, C) -> (N, C, H, W), C-contiguous."""
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


# --- files --------------------------------------------------------------------------------


def save_png(path: StrPath, image: npt.ArrayLike, durable: bool = True) -> Path:
    """Write one uint8 image (H, W, 1 or 3) as a PNG (mode L or RGB), atomically.

    durable=False skips the fsync (a killed process still never leaves a partial file), for
    outputs written by the thousand.

    Args:
        path: The file to write; missing parent folders are created.
        image: uint8 (H, W, 1) for grayscale or (H, W, 3) for RGB.
        durable: fsync the file before renaming it into place.

    Returns:
        The path written.

    Raises:
        InvalidRequestError: The array is not uint8 (H, W, 1 or 3).
        OSError: The file cannot be written.
    """
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in MODES:
        raise InvalidRequestError(
            f"an image to save must be uint8 (H, W, 1 or 3), got {array.dtype} {array.shape}"
        )
    pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)  # L or RGB
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, buffer.getvalue(), durable=durable)
    return target


def _open(
    path: StrPath,
    size: tuple[int, int] | None = None,
    mismatch: str = "",
    what: str = "image",
    fit_to: int | None = None,
) -> PILImage:
    """Decode an image file (a regular file: files.open_input). The size in its header is
    checked before any pixel is decoded: against `size` (width, height) when given (`mismatch`
    says what to do), against MAX_PIXELS, and with `fit_to` against MAX_PIXELS once fitted (a
    1 x 10^7 strip fitted to 16 x 16 is resized to 16 x 1.6 x 10^8 before its crop)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_input(path, what, InvalidRequestError) as f, Image.open(f) as img:
                if size is not None and img.size != size:
                    raise InvalidRequestError(
                        f"{what} {path} is {img.size[0]}x{img.size[1]}; it must be "
                        f"{size[0]}x{size[1]}{mismatch}"
                    )
                if img.size[0] * img.size[1] > MAX_PIXELS:
                    raise InvalidRequestError(
                        f"{what} {path} is {img.size[0]}x{img.size[1]}, more than "
                        f"{MAX_PIXELS} pixels; refusing to decode it"
                    )
                if fit_to is not None:
                    fitted = fitted_size(img.size, fit_to)
                    if fitted[0] * fitted[1] > MAX_PIXELS:
                        raise InvalidRequestError(
                            f"{what} {path} is {img.size[0]}x{img.size[1]}: fitting it to "
                            f"{fit_to}x{fit_to} resizes it to {fitted[0]}x{fitted[1]}, more "
                            f"than {MAX_PIXELS} pixels; refusing to decode it (crop it first)"
                        )
                img.load()
                return img.copy()  # close() releases the pixels of `img` itself
    except InvalidRequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidRequestError(f"{what} {path} is too large to decode safely ({e})") from None
    except UnidentifiedImageError:  # PIL names the file object it was given, not the file
        raise InvalidRequestError(
            f"cannot read {what} {path}: not an image file (its format cannot be identified)"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InvalidRequestError(f"cannot read {what} {path}: {e}") from None


def fitted_size(size: tuple[int, int], target: int) -> tuple[int, int]:
    """The (width, height) `fit` resizes an image of `size` to before its center crop.

    Args:
        size: The image's (width, height).
        target: The side of the square `fit` makes.

    Returns:
        (width, height) with the shorter side `target`, neither side below it.
    """
    width, height = size
    scale = target / min(width, height)
    return max(target, round(width * scale)), max(target, round(height * scale))


def fit(img: PILImage, size: int, channels: int) -> PILImage:
    """A Pillow image converted to the bundle's mode, its shorter side resized to `size`
    (bicubic) and center-cropped to size x size: what training does to a folder of images.

    Args:
        img: A Pillow image of any size and mode.
        size: The side of the square result.
        channels: 1 (mode L) or 3 (RGB).

    Returns:
        A new size x size image.
    """
    from PIL import Image

    img = img.convert(MODES[channels])
    new_w, new_h = fitted_size(img.size, size)
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(
    path: StrPath, height: int, width: int, channels: int, fit_size: bool = False
) -> NDArray[np.uint8]:
    """Read an image file as uint8 (H, W, channels).

    Without `fit_size` its size and mode must match exactly: a silent conversion would change
    what the encoder sees. With it, the image is converted, resized and center-cropped like
    training's data (`fit`; square images only).

    Args:
        path: An image file Pillow reads (PNG, JPEG, ...); a regular file.
        height: The bundle's image height.
        width: The bundle's image width.
        channels: 1 (mode L) or 3 (RGB).
        fit_size: Convert, resize and crop the image to the bundle's size and mode.

    Returns:
        uint8 (height, width, channels).

    Raises:
        InvalidRequestError: The file cannot be read or decoded, is too large to decode
            safely (more than MAX_PIXELS), or (without `fit_size`) has another size or mode;
            `fit_size` with a non-square bundle.
    """
    if fit_size:
        if height != width:
            raise InvalidRequestError(
                f"--fit makes square images; this bundle's are {width}x{height}"
            )
        img = fit(_open(path, fit_to=height), height, channels)
        return np.asarray(img, np.uint8).reshape(height, width, channels)
    img = _open(path, (width, height), ", the bundle's image size (--fit resizes and crops)")
    want = MODES.get(channels)
    if img.mode != want:
        raise InvalidRequestError(
            f"image {path} has mode {img.mode}; this bundle needs {want} images "
            f"({channels} channel{'s' if channels > 1 else ''})"
        )
    return np.asarray(img, np.uint8).reshape(height, width, channels)


def load_png(path: StrPath, height: int, width: int, channels: int) -> NDArray[np.uint8]:
    """load_image without fitting (the name the runtime's callers used).

    Args:
        path: An image file.
        height: The bundle's image height.
        width: The bundle's image width.
        channels: 1 or 3.

    Returns:
        uint8 (height, width, channels).

    Raises:
        InvalidRequestError: As `load_image`.
    """
    return load_image(path, height, width, channels)


def load_mask(path: StrPath, height: int, width: int) -> NDArray[np.bool_]:
    """Read an inpainting mask as bool (H, W): True (white, >= 128) where to regenerate.

    Args:
        path: A black-and-white (mode 1) or grayscale (mode L) image file.
        height: The image's height, which the mask must have.
        width: The image's width, which the mask must have.

    Returns:
        bool (height, width).

    Raises:
        InvalidRequestError: The file cannot be read, has another size, or is in color.
    """
    img = _open(path, (width, height), ", the size of the image", what="mask")
    if img.mode not in ("1", "L"):
        raise InvalidRequestError(
            f"mask {path} has mode {img.mode}; it must be a black-and-white or grayscale image"
        )
    return np.asarray(img.convert("L"), np.uint8) >= 128


def make_grid(
    images: npt.ArrayLike, rows: int | None = None, cols: int | None = None, pad: int = 2
) -> NDArray[np.uint8]:
    """Tile uint8 images (N, H, W, ch) into one (rows, cols) image with `pad` black pixels.

    Args:
        images: uint8 (N, H, W, ch), N >= 1, in row-major order.
        rows: Rows of tiles, used when `cols` is None (default: a near-square grid).
        cols: Columns of tiles; the rows follow from N.
        pad: Black pixels between tiles and around them.

    Returns:
        uint8 (rows * (H + pad) + pad, cols * (W + pad) + pad, ch).

    Raises:
        InvalidRequestError: `images` is not a non-empty 4-D array.
    """
    tiles = np.asarray(images, np.uint8)
    if tiles.ndim != 4 or len(tiles) == 0:
        raise InvalidRequestError(
            f"a grid needs images shaped (N, H, W, ch), N >= 1, got {tiles.shape}"
        )
    n, h, w, ch = tiles.shape
    if cols is None:
        cols = math.ceil(n / rows) if rows else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, ch), np.uint8)
    for i, image in enumerate(tiles):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_grid(
    path: StrPath, images: npt.ArrayLike, rows: int | None = None, cols: int | None = None
) -> Path:
    """`make_grid` saved as a PNG with `save_png`.

    Args:
        path: The PNG to write.
        images: uint8 (N, H, W, 1 or 3).
        rows: As `make_grid`.
        cols: As `make_grid`.

    Returns:
        The path written.

    Raises:
        InvalidRequestError: As `make_grid`.
        OSError: The file cannot be written.
    """
    return save_png(path, make_grid(images, rows=rows, cols=cols))
