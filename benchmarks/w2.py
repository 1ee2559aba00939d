"""W2 against Gram on real photos: the ``style_weight`` that gives W2 Gram's balance, and the pictures.

W2² is in feature² where the Gram distance is in feature⁴; ``losses.W2_SCALE`` scales the W2
term so that one ``style_weight`` gives both about the same style-to-content balance. This
measures that scale: at the start of a run (the content image, the seed's ``init``) the norm of
the style term's gradient w.r.t. the image for ``gram`` at the preset's weight and for ``w2`` at
weight 1, for both normalizations (the seed preset, and the invariant one of
``benchmarks/gallery.py``); their ratio is the ``style_weight`` that makes W2's pull as strong as
Gram's (the preset's own weight once ``W2_SCALE`` is right), and that ratio over the preset's
weight, times the scale in use, is the scale to use. Then a transfer with each of ``gram`` and
``w2`` at the preset's weights is written into ``--out`` with the content photo, as one strip.

Usage::

    python benchmarks/w2.py --size 256 --iterations 100 --out docs/styles
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import inputs
import numpy as np

from producer.core.params import Params
from worker.nst import images, quiet

PRESETS = {
    "seed": Params(precision="float32"),
    "invariant": Params(precision="float32", **inputs.INVARIANT),
}


def small_png(rgb: np.ndarray) -> bytes:
    """PNG of an image in 256 colours (a third of the size), for the docs."""
    import io

    out = io.BytesIO()
    images.Image.fromarray(rgb).quantize(256).save(out, "PNG", optimize=True)
    return out.getvalue()


def style_pull(engine, content: np.ndarray, style: np.ndarray, params: Params) -> float:  # type: ignore[no-untyped-def]
    """‖∇ style term‖ at the run's starting image (content and tv weighed 0)."""
    problem = engine.prepare(content, [style], params.replace(content_weight=0.0, tv_weight=0.0))
    _, _, grad = problem.loss_and_grad(problem.x0)
    return float(np.linalg.norm(np.asarray(grad, np.float64)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--content", default="tubingen.jpg")
    parser.add_argument("--style", default="starry_night.jpg")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="seed", help="the preset the pictures use")
    parser.add_argument("--out", default="docs/styles")
    parser.add_argument("--losses", nargs="+", default=["gram", "w2"], help="the transfers to (re)make")
    parser.add_argument("--calibrate-only", action="store_true", help="print the weights, make no pictures")
    args = parser.parse_args()
    if not inputs.IMAGENET.exists():
        raise SystemExit(f"needs the ImageNet weights at {inputs.IMAGENET} and photos in {inputs.SHARED / 'images'}")
    quiet.tensorflow()
    from worker.nst.engine import Engine

    engine = Engine(weights=str(inputs.IMAGENET))
    content, style = inputs.pair(args.content, args.style)
    from worker.nst import losses

    for name, preset in PRESETS.items():
        base = preset.replace(size=args.size)
        gram = style_pull(engine, content, style, base)
        w2 = style_pull(engine, content, style, base.replace(style_loss="w2", style_weight=1.0))
        weight = base.style_weight * gram / w2
        print(
            f"{name:9}: |grad style| gram (style_weight {base.style_weight:g}) {gram:.4g}, w2 (style_weight 1) {w2:.4g}"
            f"  -> w2 style_weight {weight:.4g}, W2_SCALE {losses.W2_SCALE[name] * weight / base.style_weight:.3g} "
            f"(in use: {losses.W2_SCALE[name]:.3g})"
        )
    if args.calibrate_only:
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = PRESETS[args.preset].replace(size=args.size, iterations=args.iterations)
    row = [np.asarray(images.resize(images.Image.fromarray(content), args.size))]
    for name in args.losses:
        params = base.replace(style_loss=name)
        started = time.perf_counter()
        result = engine.transfer(content, [style], params)
        print(
            f"{name:5} style_weight {params.style_weight:<8g} loss {result.loss:12.6g} "
            f"(content {result.content_loss:.4g}, "
            f"style {result.style_loss:.4g}, tv {result.tv_loss:.4g})  {time.perf_counter() - started:6.1f} s"
        )
        (out / f"{args.preset}-{name}.png").write_bytes(small_png(result.image))
    row += [images.load((out / f"{args.preset}-{name}.png").read_bytes()) for name in ("gram", "w2")]
    (out / f"{args.preset}-strip.png").write_bytes(small_png(np.concatenate(row, axis=1)))


if __name__ == "__main__":
    main()
