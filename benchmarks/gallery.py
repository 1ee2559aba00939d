"""Real-photo results of the engine's modes, for docs/engine.md.

Colour control, style statistics, style-layer weights: one content photo and one painting from
../shared (ImageNet weights), the same options but one, written as small PNGs and one strip per
group into ``--out`` (docs/modes by default). Prints each run's final loss and time.

Usage::

    python benchmarks/gallery.py --size 256 --iterations 100 --out docs/modes
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

GROUPS = {
    "color": [{"color": c} for c in ("none", "preserve", "luminance", "match")],
    "style_loss": [{"style_loss": s} for s in ("gram", "mean_std")],
    "style_layer_weights": [{"style_layer_weights": w} for w in ("equal", "decreasing", "gatys")],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--content", default="tubingen.jpg")
    parser.add_argument("--style", default="the_scream.jpg")
    parser.add_argument("--out", default="docs/modes")
    args = parser.parse_args()
    weights = inputs.IMAGENET
    if not weights.exists():
        raise SystemExit(f"needs the ImageNet weights at {weights} and photos in {inputs.SHARED / 'images'}")
    quiet.tensorflow()
    from worker.nst.engine import Engine

    engine = Engine(weights=str(weights))
    content, style = inputs.pair(args.content, args.style)
    base = Params(size=args.size, iterations=args.iterations, precision="float32", **inputs.INVARIANT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    small = np.asarray(images.resize(images.Image.fromarray(content), args.size))
    for group, variants in GROUPS.items():
        row = [small]
        for change in variants:
            started = time.perf_counter()
            result = engine.transfer(content, [style], base.replace(**change))
            name = f"{group}-{next(iter(change.values()))}"
            print(f"{name:32} loss {result.loss:12.6g}  {time.perf_counter() - started:6.1f} s")
            (out / f"{name}.png").write_bytes(images.encode(result.image, "png"))
            row.append(result.image)
        (out / f"{group}.png").write_bytes(images.encode(np.concatenate(row, axis=1), "png"))


if __name__ == "__main__":
    main()
