"""``stylequeue stylize`` and ``stylequeue samples``: the engine from the command line.

Only argparse and the standard library are imported at module level, so the light client can list
these commands in ``--help``; TensorFlow is imported when ``stylize`` runs. The engine's flags are
generated from :class:`producer.core.params.Params` (:mod:`producer.cli.options`), the same as
``submit``'s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from producer.cli import options
from producer.cli.progressbar import ProgressBar
from producer.core.errors import ImageError, InvalidJob


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def add_commands(sub: Any) -> None:
    """Register ``stylize`` and ``samples``."""
    p = sub.add_parser(
        "stylize",
        help="run one style transfer locally and write the image",
        description="Stylize CONTENT with one or more STYLE images and write OUT.",
    )
    p.add_argument("content", help="content image file")
    p.add_argument("styles", nargs="+", metavar="style", help="style image file(s)")
    p.add_argument("-o", "--output", required=True, help="output file (.png, .jpg or .webp)")
    p.add_argument(
        "--weights",
        default=None,
        help="VGG19 weights: 'imagenet' or a Keras weights file (default $STYLEQUEUE_WEIGHTS or imagenet)",
    )
    p.add_argument("--weights-sha256", default=None, help="expected sha256 of the weights file")
    p.add_argument("--style-blend", type=_floats, default=None, help="blend weights, one per style image")
    options.add_mask_flag(p, "a file")
    p.add_argument("--init-image", default=None, help="start from this image file (sets --init image)")
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        metavar="K",
        help="also write the image every K iterations, as OUT with the iteration in its name (out.0050.png)",
    )
    p.add_argument("--quality", type=int, default=92, help="JPEG/WebP quality (default 92)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    options.add_flags(p)
    p.set_defaults(run=run_stylize)

    p = sub.add_parser("samples", help="write a generated content.png and style.png to try the engine on")
    p.add_argument("directory", nargs="?", default=".", help="where to write them (default .)")
    p.set_defaults(run=run_samples)


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
    from producer.core.params import Params
    from producer.core.settings import Settings
    from worker.nst import images

    settings = Settings.from_env()
    given = options.params_from_args(args)
    if args.init_image is not None:
        given["init"] = "image"
    try:
        params = Params.from_dict(given)
    except InvalidJob as e:  # name the flag the user typed, not the contract's field
        raise InvalidJob(options.flag(e.field.removeprefix("params.")), e.message) from None
    out_format = images.format_for(args.output)
    limits = images.ImageLimits(max_pixels=settings.max_pixels)
    content = images.load(_read(args.content, "content image"), limits=limits, name=args.content)
    styles = [images.load(_read(s, "style image"), limits=limits, name=s) for s in args.styles]
    read: dict[Path, Any] = {}  # a file named twice is one array: the styles share its region
    mask_paths = [None if p is None else Path(p) for p in options.masks_of(args.style_mask, len(styles))]
    for path in mask_paths:
        if path is not None and path.resolve() not in read:
            data = _read(str(path), "style mask")
            read[path.resolve()] = images.load_mask(data, limits, str(path), keep_px=params.longest_px)
    style_masks = [None if p is None else read[p.resolve()] for p in mask_paths] or None
    init_image = None
    if params.init == "image":
        if args.init_image is None:
            raise InvalidJob("--init-image", "is required with --init image")
        init_image = images.load(_read(args.init_image, "init image"), limits=limits, name=args.init_image)
    if args.style_blend is not None and len(args.style_blend) != len(styles):
        raise InvalidJob("--style-blend", f"needs {len(styles)} weights, one per style image")

    from worker.nst import quiet

    quiet.tensorflow()  # imported here, not at start-up, and without its noise on the terminal
    from worker.nst.engine import Engine

    engine = Engine(
        weights=args.weights or settings.weights, weights_sha256=args.weights_sha256 or settings.weights_sha256
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)

    def snapshot(iteration: int, image: Any) -> None:
        path = out.with_name(f"{out.stem}.{iteration:04d}{out.suffix}")
        path.write_bytes(images.encode(image, out_format, quality=args.quality))

    bar = None if args.quiet else ProgressBar()
    started = time.perf_counter()
    try:
        result = engine.transfer(
            content,
            styles,
            params,
            style_blend=args.style_blend,
            style_masks=style_masks,
            init_image=init_image,
            callback=bar,
            on_snapshot=snapshot if args.save_every else None,
            snapshot_every=args.save_every,
        )
    finally:
        if bar is not None:
            bar.close()
    out.write_bytes(images.encode(result.image, out_format, quality=args.quality))
    h, w = result.image.shape[:2]
    print(
        f"wrote {args.output} ({w}x{h}): final loss {result.loss:.6g} "
        f"(content {result.content_loss:.4g}, style {result.style_loss:.4g}, tv {result.tv_loss:.4g}), "
        f"{result.iterations} iterations ({result.stopped}), {result.seconds_per_iteration:.3f} s/iteration, "
        f"{engine.precision(params)}, {time.perf_counter() - started:.1f} s in all"
    )
    return 0


def run_samples(args: argparse.Namespace) -> int:
    """Run ``stylequeue samples``."""
    from worker.cli import samples

    content, style = samples.write(args.directory)
    print(f"wrote {content} and {style}")
    return 0
