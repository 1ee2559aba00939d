"""Schedules against their single-scale references, side by side in one run.

For each schedule asked (``params.schedule``: draft, standard, high), the same transfer
(tubingen + starry_night from ../shared, ImageNet weights; random images and weights without
them) at one output size and precision, the engine's default objective otherwise: the schedule,
and the single scale of its reference iterations (50, 200, 500) at the output size. Both losses
are the same objective at the output size (a schedule's last level is the output size), so they
compare directly. Printed for each: the final loss and wall time of both, their ratios, and
whether the schedule meets the issue's bar (loss ≤ reference, time ≤ 60% of it).

One single-scale run serves every reference: L-BFGS's iterates do not depend on how many
iterations it is allowed, so a 500-iteration run's loss and elapsed time at iteration 50 are a
50-iteration run's. Every image shape is traced once before anything is timed (a warm worker's
steady state). ``--images DIR`` writes each result and, per schedule, a two-image strip
(reference | schedule; 256 px wide each, 256-colour PNG).

Usage::

    python benchmarks/schedules.py --size 256 --precision float32 --schedules draft standard high
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
from producer.core.schedules import SCHEDULES
from worker.nst import quiet

#: The issue's bar: a schedule's time at most this fraction of its reference's.
TIME_BAR = 0.60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="output size (longest side), px")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=list(SCHEDULES))
    parser.add_argument("--content", default="tubingen.jpg")
    parser.add_argument("--style", default="starry_night.jpg")
    parser.add_argument("--images", default=None, help="write the results here")
    args = parser.parse_args()
    quiet.tensorflow()
    from worker.nst.engine import Engine

    weights = inputs.weights()
    content, style = inputs.pair(args.content, args.style)
    engine = Engine(weights=weights)
    base = Params(size=args.size, precision=args.precision)
    schedules = [SCHEDULES[name] for name in args.schedules]
    longest = max(s.reference for s in schedules)

    # Trace every shape first: the output size, and each schedule's levels (the same sizes as
    # ``scales`` with as many levels).
    engine.transfer(content, [style], base.replace(iterations=1))
    for s in schedules:
        engine.transfer(content, [style], base.replace(scales=s.levels, iterations=1, scale_iterations=1))

    load = os.getloadavg()[0]
    print(
        f"content {args.content} {content.shape[1]}x{content.shape[0]}, style {args.style}, output {args.size} px, "
        f"{args.precision}, weights {Path(weights).name}, load average {load:.2f}"
    )
    snapshots: dict[int, np.ndarray] = {}
    started = time.perf_counter()
    reference = engine.transfer(
        content,
        [style],
        base.replace(iterations=longest),
        on_snapshot=lambda n, image: snapshots.__setitem__(n, image),
        snapshot_every=10,
    )
    print(f"single scale, {longest} iterations: {time.perf_counter() - started:.1f} s ({reference.stopped})")
    at = {p.iteration: p for p in reference.history}
    rows = []
    for s in schedules:
        params = base.replace(schedule=s.name)
        plan = engine.plan(content.shape[:2], params)
        started = time.perf_counter()
        result = engine.transfer(content, [style], params)
        wall = time.perf_counter() - started
        ref = at.get(s.reference) or reference.history[-1]  # it converged first: its last iteration
        ran = [sum(1 for p in result.history if p.level == lv.index + 1) for lv in plan]
        rows.append((s, plan, ran, result, wall, ref))
        if args.images:
            out = Path(args.images)
            out.mkdir(parents=True, exist_ok=True)
            ref_image = snapshots.get(ref.iteration, reference.image)
            _png(ref_image, out / f"single-{s.reference}-{args.size}.png")
            _png(result.image, out / f"{s.name}-{args.size}.png")
            strip = np.concatenate([_thumb(ref_image), _thumb(result.image)], axis=1)
            _png(strip, out / f"strip-{s.name}-{args.size}.png")

    print(
        f"{'schedule':9} {'levels':30} {'iterations run':16} {'loss':>11} {'wall s':>7} │ "
        f"{'reference':>9} {'loss':>11} {'wall s':>7} │ {'loss ×':>7} {'time ×':>7}  bar"
    )
    for s, plan, ran, result, wall, ref in rows:
        sizes = " → ".join(f"{lv.width}x{lv.height}" for lv in plan)
        loss_ratio, time_ratio = result.loss / ref.loss, wall / ref.elapsed_s
        ok = "met" if loss_ratio <= 1 and time_ratio <= TIME_BAR else "MISSED"
        print(
            f"{s.name:9} {sizes:30} {'+'.join(map(str, ran)):16} {result.loss:11.5g} {wall:7.1f} │ "
            f"{str(ref.iteration) + ' it':>9} {ref.loss:11.5g} {ref.elapsed_s:7.1f} │ "
            f"{loss_ratio:7.3f} {time_ratio:7.3f}  {ok}"
        )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def _thumb(image: np.ndarray, width: int = 256) -> np.ndarray:
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((width, round(width * h / w)), Image.Resampling.LANCZOS))


def _png(image: np.ndarray, path: Path) -> None:
    """A 256-colour PNG: small enough to commit."""
    Image.fromarray(image).quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


if __name__ == "__main__":
    main()
