"""Coarse-to-fine vs single scale, on real photos, side by side in one run.

Runs the same transfer (tubingen + starry_night from ../shared, ImageNet weights; random images
and weights without them) at one output size with 1, 2 and 3 levels (``params.scales``), the
levels √2 apart, and once more with 2 levels a factor 2 apart (to choose the factor from
evidence). Every run has the same iterations at the output size; the coarser levels add their
own. Printed: the final loss at the output size, the wall time and the time per output-size
iteration; ``--images DIR`` writes each result and a side-by-side strip.

Usage::

    python benchmarks/scales.py --size 512 --iterations 100 --images docs/scales
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import inputs
import numpy as np
from PIL import Image

from producer.core.params import Params
from worker.nst import images, pyramid, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=100, help="iterations at the output size (and each level)")
    parser.add_argument("--normalization", default="invariant")
    parser.add_argument("--images", default=None, help="write the results here")
    args = parser.parse_args()
    quiet.tensorflow()
    from worker.nst.engine import Engine

    weights = inputs.weights()
    content, style = inputs.pair()
    engine = Engine(weights=weights)
    base = Params(
        size=args.size,
        iterations=args.iterations,
        precision="float32",
        **(inputs.INVARIANT if args.normalization == "invariant" else {"normalization": args.normalization}),
    )
    runs = [
        ("1 level", 1, pyramid.FACTOR),
        ("2 levels (√2)", 2, pyramid.FACTOR),
        ("3 levels (√2)", 3, pyramid.FACTOR),
        ("2 levels (2)", 2, 2.0),
    ]
    print(f"content {content.shape[1]}x{content.shape[0]}, output {args.size} px, {args.normalization}, {weights}")
    print(f"{'run':16} {'levels':28} {'final loss':>12} {'wall s':>8} {'s/it at size':>13}")
    results = []
    for name, scales, factor in runs:
        pyramid.FACTOR = factor
        params = base.replace(scales=scales)
        plan = engine.plan(content.shape[:2], params)
        started = time.perf_counter()
        result = engine.transfer(content, [style], params)
        wall = time.perf_counter() - started
        final = [p for p in result.history if p.level == len(plan)]
        before = [p for p in result.history if p.level < len(plan)]
        per_it = (final[-1].elapsed_s - (before[-1].elapsed_s if before else 0.0)) / len(final)
        sizes = " → ".join(f"{lv.width}x{lv.height}" for lv in plan)
        print(f"{name:16} {sizes:28} {result.loss:12.6g} {wall:8.1f} {per_it:13.3f}")
        results.append((name, result.image))
        if args.images:
            out = Path(args.images)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name.split(' (')[0].replace(' ', '-')}{'-x2' if factor == 2.0 else ''}.png").write_bytes(
                images.encode(result.image, "png")
            )
    pyramid.FACTOR = np.sqrt(2.0)
    if args.images:
        strip = np.concatenate(
            [
                np.asarray(Image.fromarray(img).resize((256, round(256 * img.shape[0] / img.shape[1]))))
                for _, img in results
            ],
            axis=1,
        )
        (Path(args.images) / "strip.png").write_bytes(images.encode(strip, "png"))


if __name__ == "__main__":
    main()
