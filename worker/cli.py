"""``stylequeue stylize`` and ``stylequeue samples``: the engine from the command line.

Only argparse and the standard library are imported at module level, so the light client can list
these commands in ``--help``; TensorFlow is imported when ``stylize`` runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from producer.errors import ImageError, InvalidJob
from producer.progressbar import ProgressBar


def _size(text: str) -> int | tuple[int, int]:
    """Parse ``512`` (longest side) or ``384x512`` (height x width)."""
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x", 1)
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (512 or HEIGHTxWIDTH)") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def add_stylize(sub: Any) -> None:
    """Register ``stylize`` on an argparse sub-parser collection."""
    p = sub.add_parser(
        "stylize",
        help="run one style transfer locally and write the image",
        description="Stylize CONTENT with one or more STYLE images and write OUT.",
    )
    p.add_argument("content", help="content image file")
    p.add_argument("styles", nargs="+", metavar="style", help="style image file(s)")
    p.add_argument("-o", "--output", required=True, help="output file (.png, .jpg or .webp)")
    p.add_argument("--size", type=_size, default=None, help="longest side, or HEIGHTxWIDTH (default 512)")
    p.add_argument("--iterations", type=int, default=None, help="L-BFGS iterations (default 100)")
    p.add_argument(
        "--weights",
        default=None,
        help="VGG19 weights: 'imagenet' or a Keras weights file (default $STYLEQUEUE_WEIGHTS or imagenet)",
    )
    p.add_argument("--weights-sha256", default=None, help="expected sha256 of the weights file")
    p.add_argument("--content-weight", type=float, default=None, help="default 0.025 (seed)")
    p.add_argument("--style-weight", type=float, default=None, help="default 1.0 (seed)")
    p.add_argument("--tv-weight", type=float, default=None, help="default 1.0 (seed)")
    p.add_argument("--tv-power", type=float, default=None, help="default 1.25 (seed)")
    p.add_argument("--content-layers", default=None, help="comma-separated VGG19 layers (default block5_conv2)")
    p.add_argument("--style-layers", default=None, help="comma-separated VGG19 layers (default block1..5_conv1)")
    p.add_argument(
        "--normalization",
        choices=["seed", "invariant"],
        default=None,
        help="loss normalization (default seed; invariant behaves the same at any size)",
    )
    p.add_argument("--style-blend", type=_floats, default=None, help="blend weights, one per style image")
    p.add_argument("--style-scale", type=float, default=None, help="style size relative to the output (1.0)")
    p.add_argument(
        "--preserve-colors",
        action="store_true",
        default=None,
        help="keep the content's colours (luminance-only transfer)",
    )
    p.add_argument("--init", default=None, help="'content' (default), 'noise', or an image file")
    p.add_argument("--seed", type=int, default=None, help="seed for the noise init")
    p.add_argument("--quality", type=int, default=92, help="JPEG/WebP quality (default 92)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_stylize)


def add_samples(sub: Any) -> None:
    """Register ``samples``."""
    p = sub.add_parser("samples", help="write a generated content.png and style.png to try the engine on")
    p.add_argument("directory", nargs="?", default=".", help="where to write them (default .)")
    p.set_defaults(run=run_samples)


def _params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in (
        "size",
        "iterations",
        "content_weight",
        "style_weight",
        "tv_weight",
        "tv_power",
        "normalization",
        "style_scale",
        "preserve_colors",
        "seed",
    ):
        value = getattr(args, name)
        if value is not None:
            data[name] = value
    for name in ("content_layers", "style_layers"):
        value = getattr(args, name)
        if value is not None:
            data[name] = [v.strip() for v in value.split(",") if v.strip()]
    if args.init is not None:
        data["init"] = args.init if args.init in ("content", "noise") else "image"
    return data


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{what} {path!r}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{what} {path!r}: is a directory") from None
    except OSError as e:
        raise ImageError(f"{what} {path!r}: cannot read ({e.strerror})") from None


def run_stylize(args: argparse.Namespace) -> int:
    """Run ``stylequeue stylize``; return the exit code."""
    from producer.params import Params
    from producer.settings import Settings
    from worker import images

    settings = Settings.from_env()
    try:
        params = Params.from_dict(_params_from_args(args))
    except InvalidJob as e:  # name the option the user typed, not the contract's field
        raise InvalidJob("--" + e.field.removeprefix("params.").replace("_", "-"), e.message) from None
    out_format = images.format_for(args.output)
    limits = images.ImageLimits(max_pixels=settings.max_pixels)
    content = images.load(_read(args.content, "content image"), limits=limits, name=args.content)
    styles = [images.load(_read(s, "style image"), limits=limits, name=s) for s in args.styles]
    init_image = None
    if params.init == "image":
        init_image = images.load(_read(args.init, "init image"), limits=limits, name=args.init)
    if args.style_blend is not None and len(args.style_blend) != len(styles):
        raise InvalidJob("--style-blend", f"needs {len(styles)} weights, one per style image")

    from worker import quiet

    quiet.tensorflow()  # imported here, not at start-up, and without its noise on the terminal
    from worker.engine import Engine

    engine = Engine(
        weights=args.weights or settings.weights, weights_sha256=args.weights_sha256 or settings.weights_sha256
    )
    bar = None if args.quiet else ProgressBar()
    started = time.perf_counter()
    try:
        result = engine.transfer(
            content, styles, params, style_blend=args.style_blend, init_image=init_image, callback=bar
        )
    finally:
        if bar is not None:
            bar.close()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_bytes(images.encode(result.image, out_format, quality=args.quality))
    h, w = result.image.shape[:2]
    print(
        f"wrote {args.output} ({w}x{h}): final loss {result.loss:.6g} "
        f"(content {result.content_loss:.4g}, style {result.style_loss:.4g}, tv {result.tv_loss:.4g}), "
        f"{result.iterations} iterations, {result.seconds_per_iteration:.3f} s/iteration, "
        f"{time.perf_counter() - started:.1f} s in all"
    )
    return 0


def run_samples(args: argparse.Namespace) -> int:
    """Run ``stylequeue samples``."""
    from worker import samples

    content, style = samples.write(args.directory)
    print(f"wrote {content} and {style}")
    return 0
