"""Regional styles on real photos, and what masks cost: unmasked blend vs a split, side by side.

One content photo, two paintings from ../shared (ImageNet weights): the two styles blended
everywhere (no masks), then each on its half (a left/right split with a soft seam, the masks
summing to 1), the same options otherwise. Prints each run's seconds per evaluation, final loss
and the ratio; ``--out`` gets one strip: content, the first style's mask, the blend, the split.

Usage::

    python benchmarks/regions.py --size 256 --iterations 100 --out docs/regions
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import inputs
import numpy as np

from producer.core.params import Params
from worker.nst import images, masks, quiet


def split(height: int, width: int, seam: float = 0.1) -> np.ndarray:
    """White on the left, black on the right, a linear seam ``seam`` of the width wide."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)
    ramp = np.clip((0.5 + seam / 2 - x) / seam, 0.0, 1.0)
    return np.tile(ramp, (height, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--content", default="tubingen.jpg")
    parser.add_argument("--styles", nargs=2, default=["starry_night.jpg", "the_scream.jpg"])
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--out", default=None, help="write the strip (regions.png) here")
    args = parser.parse_args()
    quiet.tensorflow()
    from worker.nst.engine import Engine

    engine = Engine(weights=inputs.weights())
    content, first = inputs.pair(args.content, args.styles[0])
    _, second = inputs.pair(args.content, args.styles[1])
    params = Params(size=args.size, iterations=args.iterations, precision=args.precision, **inputs.INVARIANT)
    mask = split(*content.shape[:2])
    runs = {
        "blend (no masks)": engine.transfer(content, [first, second], params),
        "split (two masks)": engine.transfer(content, [first, second], params, style_masks=[mask, 1.0 - mask]),
    }
    print(f"{args.size}px, {args.iterations} iterations, {engine.precision(params)}, weights {inputs.weights()}")
    per_eval = {}
    for name, result in runs.items():
        per_eval[name] = result.seconds / result.evaluations
        print(f"{name:20} {per_eval[name]:.3f} s/evaluation  loss {result.loss:.6g}  ({result.seconds:.1f} s)")
    blend, regional = per_eval.values()
    print(f"masks cost {regional / blend:.2f}x an unmasked evaluation")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        small = np.asarray(images.resize(images.Image.fromarray(content), args.size))
        shown = np.repeat((masks.resize(mask, small.shape[:2]) * 255).astype(np.uint8)[..., None], 3, axis=2)
        strip = np.concatenate([small, shown, *(r.image for r in runs.values())], axis=1)
        # 256 colours (a palette PNG): a third of the size, for the docs
        images.Image.fromarray(strip).quantize(256, dither=images.Image.Dither.NONE).save(
            out / "regions.png", optimize=True
        )


if __name__ == "__main__":
    main()
