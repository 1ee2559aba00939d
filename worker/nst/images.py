"""Image decoding, normalization, resizing and encoding with Pillow.

Everything a job feeds the engine passes through :func:`decode`: it refuses what is not a usable
image with an :class:`~producer.core.errors.ImageError` that names the problem, checks the pixel count
from the header before decoding the pixels (decompression bombs), applies EXIF orientation and
turns every mode (L, LA, P, RGBA, CMYK, 16-bit, animated) into 8-bit RGB.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from producer.core import formats
from producer.core.errors import ImageError

# Never accept half an image: a truncated file must raise, not come back grey at the bottom.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# We enforce our own configurable limit (ImageLimits.max_pixels) from the header, before decoding;
# Pillow's global one would pre-empt it with a fixed limit and a less useful message.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every decoded input.

    Attributes:
        max_pixels: Largest width×height accepted, checked from the header before decoding.
        min_side_px: Smallest accepted side of the *input* in pixels (a 1×1 image is no photo).
        max_aspect: Largest accepted ratio of long side to short side.
    """

    max_pixels: int = 50_000_000
    min_side_px: int = 8
    max_aspect: float = 20.0


def decode(data: bytes, limits: ImageLimits = ImageLimits(), name: str = "image") -> Image.Image:
    """Decode image bytes into an upright 8-bit RGB Pillow image.

    Args:
        data: The encoded file (JPEG, PNG, WebP, GIF, TIFF, BMP, ... anything Pillow reads).
        limits: Size limits to enforce.
        name: How to call the image in error messages (a path or URI).

    Returns:
        An RGB image, EXIF orientation applied, first frame of an animation.

    Raises:
        ImageError: empty, not an image, truncated/corrupt, over the pixel limit, too small or
            too elongated.
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (format not recognized, {len(data)} bytes)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{name}: corrupt image header ({e})") from None
    width, height = img.size
    _check_dimensions(name, width, height, limits)
    try:
        img.seek(0)  # first frame of an animation
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"{name}: truncated or corrupt {img.format} data ({e})") from None
    upright: Image.Image = img
    with contextlib.suppress(Exception):  # broken EXIF is no reason to refuse the pixels
        upright = ImageOps.exif_transpose(img)
    rgb = to_rgb(upright)
    _check_dimensions(name, rgb.width, rgb.height, limits)
    return rgb


def _check_dimensions(name: str, width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageError(f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}")
    if min(width, height) < limits.min_side_px:
        raise ImageError(f"{name}: {width}x{height} is too small (each side needs >= {limits.min_side_px} px)")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise ImageError(f"{name}: {width}x{height} aspect ratio exceeds {limits.max_aspect}:1")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16/32-bit grey: Pillow's convert("L") clips instead of scaling, so scale ourselves.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize(img: Image.Image, size: int | Sequence[int]) -> Image.Image:
    """Resize to a longest side (aspect kept) or to an exact ``(height, width)``.

    Args:
        img: The image.
        size: Longest side in pixels, or ``(height, width)`` in pixels.
    """
    width, height = img.size
    if isinstance(size, int):
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    else:
        new_h, new_w = int(size[0]), int(size[1])
    if (new_w, new_h) == (width, height):
        return img
    # reducing_gap makes large downscales fast (a box pre-reduction) at no visible cost.
    return img.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)


def resize_to_area(img: Image.Image, pixels: float) -> Image.Image:
    """Resize to about ``pixels`` pixels in all, keeping the aspect ratio (for style images)."""
    width, height = img.size
    scale = (pixels / (width * height)) ** 0.5
    return resize(img, (max(1, round(height * scale)), max(1, round(width * scale))))


def load(
    data: bytes, size: int | Sequence[int] | None = None, limits: ImageLimits = ImageLimits(), name: str = "image"
) -> np.ndarray:
    """Decode and optionally resize; return an ``(H, W, 3)`` uint8 array."""
    img = decode(data, limits, name)
    if size is not None:
        img = resize(img, size)
    return np.asarray(img, dtype=np.uint8)


def load_mask(
    data: bytes, limits: ImageLimits = ImageLimits(), name: str = "mask", keep_px: int | None = None
) -> np.ndarray:
    """Decode a mask: ``(H, W)`` float32 in [0, 1], white 1.

    A colour image counts by its luminance, transparency as white (as :func:`decode` composites it).
    With ``keep_px`` (the output's longest side, px), a larger mask is box-averaged by a whole
    factor as it is decoded, to no less than twice that side (what resizing to the output keeps of
    it anyway): a job holds its masks at about its output's size, not at their own.
    """
    grey = decode(data, limits, name).convert("L")
    factor = max(grey.size) // (2 * keep_px) if keep_px else 1
    if factor > 1:
        grey = grey.reduce(factor)
    return np.asarray(grey, dtype=np.float32) / 255.0


def format_for(path_or_format: str) -> str:
    """Map a file name or format name (``"out.webp"``, ``"jpeg"``) to a Pillow format name.

    Raises:
        ImageError: for a suffix that is not png, jpg/jpeg or webp.
    """
    fmt = formats.named(path_or_format) or formats.of_path(path_or_format)
    if fmt is None:
        raise ImageError(f"{path_or_format}: output format must be png, jpeg or webp")
    return fmt.pillow


def encode(pixels: np.ndarray, fmt: str = "PNG", quality: int = 92) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG, JPEG or WebP bytes.

    Args:
        pixels: The image.
        fmt: Pillow format name (``"PNG"``, ``"JPEG"``, ``"WEBP"``) or a suffix.
        quality: JPEG/WebP quality, 1-100.
    """
    fmt = format_for(fmt)
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB")
    options: dict[str, object] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {"optimize": False}
    img.save(buf, format=fmt, **options)
    return buf.getvalue()
