"""Sample images the project makes itself, for the quickstart and the demo (no files shipped).

The content image is a small landscape (sky gradient, sun, two hill ridges, a lake); the style
image is a swirling, strongly coloured brush-stroke pattern. Both are deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def content_image(width: int = 384, height: int = 288) -> Image.Image:
    """A simple landscape: sky gradient, sun, hills and a lake with a reflection."""
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 210]) + y * np.array([250, 200, 150])
    img = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = height // 8
    draw.ellipse((width * 0.7 - r, height * 0.25 - r, width * 0.7 + r, height * 0.25 + r), fill=(255, 235, 120))
    xs = np.arange(width)
    for base, amp, freq, colour in ((0.55, 0.08, 2.0, (60, 90, 60)), (0.65, 0.06, 3.5, (40, 120, 50))):
        ridge = height * (base + amp * np.sin(xs / width * freq * np.pi + base * 7))
        draw.polygon([(0, height), *zip(xs.tolist(), ridge.tolist()), (width, height)], fill=colour)
    lake_top = int(height * 0.78)
    draw.rectangle((0, lake_top, width, height), fill=(50, 90, 140))
    for i in range(6):
        yy = lake_top + 4 + i * (height - lake_top) // 6
        draw.line((width * 0.55, yy, width * 0.85, yy), fill=(200, 190, 120), width=2)
    return img.filter(ImageFilter.SMOOTH)


def style_image(width: int = 320, height: int = 320, seed: int = 7) -> Image.Image:
    """Swirling, saturated brush strokes on a dark ground."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), (20, 30, 70))
    draw = ImageDraw.Draw(img)
    palette = [(250, 210, 60), (40, 90, 200), (230, 90, 40), (120, 200, 230), (250, 250, 220)]
    cx, cy = width / 2, height / 2
    for _ in range(900):
        radius = rng.uniform(5, max(width, height) * 0.7)
        angle = rng.uniform(0, 2 * np.pi)
        sweep = rng.uniform(0.2, 0.6)
        colour = palette[rng.integers(len(palette))]
        ts = np.linspace(angle, angle + sweep, 8)
        wobble = 1 + 0.15 * np.sin(ts * 5)
        pts = [(cx + radius * w * np.cos(t), cy + radius * w * np.sin(t)) for t, w in zip(ts, wobble)]
        draw.line(pts, fill=colour, width=int(rng.integers(2, 6)))
    return img


def write(directory: str | Path) -> tuple[Path, Path]:
    """Write ``content.png`` and ``style.png`` into ``directory``; return their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    content, style = out / "content.png", out / "style.png"
    content_image().save(content)
    style_image().save(style)
    return content, style
