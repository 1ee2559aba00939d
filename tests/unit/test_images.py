import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from support.images import png_bytes, random_rgb

from producer.core.errors import ImageError
from worker.nst import images


def test_empty_bytes() -> None:
    with pytest.raises(ImageError, match="empty file"):
        images.decode(b"", name="in.png")


def test_not_an_image() -> None:
    with pytest.raises(ImageError, match="not an image"):
        images.decode(b"%PDF-1.4 definitely not a picture" * 10)


def test_truncated_jpeg() -> None:
    data = png_bytes(random_rgb(64, 64), fmt="JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt JPEG"):
        images.decode(data[: len(data) // 2], name="cut.jpg")


def test_corrupt_png_data() -> None:
    data = bytearray(png_bytes(random_rgb(64, 64)))
    start = data.index(b"IDAT") + 8
    data[start : start + 40] = bytes(40)  # zero out compressed pixels
    with pytest.raises(ImageError, match="cut.png: (truncated or corrupt|corrupt)"):
        images.decode(bytes(data), name="cut.png")


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR to claim another size (a decompression bomb's header)."""
    i = png.index(b"IHDR")
    ihdr = bytearray(png[i : i + 17])
    ihdr[4:12] = struct.pack(">II", width, height)
    return png[:i] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + png[i + 21 :]


def test_decompression_bomb_refused_from_the_header() -> None:
    bomb = _with_ihdr_size(png_bytes(np.zeros((16, 16), np.uint8)), 60_000, 60_000)
    assert len(bomb) < 1000
    with pytest.raises(ImageError, match="3600000000 pixels exceeds the limit of 50000000"):
        images.decode(bomb, name="bomb.png")


def test_configurable_pixel_limit() -> None:
    data = png_bytes(random_rgb(64, 64))
    with pytest.raises(ImageError, match="exceeds the limit of 1000"):
        images.decode(data, images.ImageLimits(max_pixels=1000))


def test_one_pixel_image_is_too_small() -> None:
    with pytest.raises(ImageError, match="1x1 is too small"):
        images.decode(png_bytes(np.zeros((1, 1, 3), np.uint8)))


def test_extreme_aspect_ratio() -> None:
    with pytest.raises(ImageError, match="aspect ratio"):
        images.decode(png_bytes(np.zeros((10, 400, 3), np.uint8)))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "1", "I;16", "P"])
def test_modes_become_rgb(mode: str) -> None:
    img = Image.fromarray(random_rgb(32, 32)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = images.decode(buf.getvalue())
    assert out.mode == "RGB" and out.size == (32, 32)


def test_palette_with_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0)
    arr = np.asarray(images.decode(buf.getvalue()))
    assert (arr == 255).all()  # fully transparent black -> white background


def test_cmyk_jpeg() -> None:
    buf = io.BytesIO()
    Image.fromarray(random_rgb(32, 32)).convert("CMYK").save(buf, format="JPEG")
    assert images.decode(buf.getvalue()).mode == "RGB"


def test_16_bit_png_is_scaled_not_clipped() -> None:
    grey16 = np.full((32, 32), 32768, np.uint16)  # mid grey in 16 bits
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, format="PNG")
    arr = np.asarray(images.decode(buf.getvalue()))
    assert arr.shape == (32, 32, 3)
    assert abs(int(arr[0, 0, 0]) - 128) <= 1


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    arr = np.asarray(images.decode(buf.getvalue()))
    assert arr[0, 0, 0] > 200 and arr[0, 0, 2] < 50


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :16] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif, quality=95)
    out = np.asarray(images.decode(buf.getvalue()))
    assert out.shape == (32, 16, 3)  # portrait now
    assert out[2, 8].mean() > 200 and out[-3, 8].mean() < 50  # white half is on top


def test_resize_longest_side_and_exact() -> None:
    img = Image.fromarray(random_rgb(30, 60))
    assert images.resize(img, 40).size == (40, 20)
    assert images.resize(img, (24, 16)).size == (16, 24)
    assert images.resize_to_area(img, 450).size == (30, 15)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_round_trip(fmt: str) -> None:
    arr = random_rgb(24, 40)
    data = images.encode(arr, fmt)
    back = images.load(data)
    assert back.shape == arr.shape
    if fmt == "png":
        assert (back == arr).all()


def test_unknown_output_format() -> None:
    with pytest.raises(ImageError, match="png, jpeg or webp"):
        images.format_for("out.gif")
