"""Large outputs: seconds per evaluation and peak memory, tiled vs whole, side by side in one run.

Each configuration runs in its own process (so its peak RSS is its own): it prepares the problem
(targets included) and times loss+gradient evaluations of the seed preset on real photos
(../shared; random images and weights without them). Sizes 512², 1024², 2048² with tiles of 512
px, and whole where the estimate fits this machine's memory. Also printed: the L-BFGS state's
own memory per size (scipy keeps 2·m + 4 float64 copies of the image; ``params.lbfgs_memory`` is
m), and how large an output each memory size allows, from the measured per-pixel costs.

Usage::

    python benchmarks/highres.py                        # 512 1024 2048, tile 512, 2 evaluations
    python benchmarks/highres.py --sizes 512 1024 --tile 256 --evaluations 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import inputs


def child(size: int, tile: int, evaluations: int, weights: str) -> None:
    """One configuration; prints a JSON line."""
    import numpy as np

    from producer.core.params import Params
    from worker.nst import quiet

    quiet.tensorflow()
    from worker.nst.engine import Engine

    content, style = inputs.pair()
    engine = Engine(weights=weights)
    started = time.perf_counter()
    problem = engine.prepare(content, [style], Params(size=(size, size), tile=tile))
    prepare_s = time.perf_counter() - started
    x = problem.x0.ravel().astype(np.float64)
    problem.evaluate(x)  # traces the functions
    started = time.perf_counter()
    for _ in range(evaluations):
        problem.evaluate(x)
    per_eval = (time.perf_counter() - started) / evaluations
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"size": size, "tile": tile, "s_per_eval": per_eval, "prepare_s": prepare_s, "peak_rss": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--evaluations", type=int, default=2)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--child", nargs=2, type=int, metavar=("SIZE", "TILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    weights = inputs.weights(args.weights)
    if args.child:
        child(args.child[0], args.child[1], args.evaluations, weights)
        return

    from producer.core.params import Params
    from worker.nst import budget, tiling

    params = Params()
    halo = tiling.halo_px(params.content_layers + params.style_layers)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(
        f"{os.cpu_count()} CPUs, {ram / 2**30:.0f} GiB RAM; seed preset; tile {args.tile} px, halo {halo} px; {weights}"
    )
    print(f"{'size':>6} {'tile':>6} {'s/eval':>9} {'peak RSS':>10} {'prepare s':>10} {'estimate':>10}")
    rows = []
    for size in args.sizes:
        for tile in (0, args.tile):
            if tile and tile >= size:
                continue
            estimate = budget.estimate_bytes(Params(size=size, tile=tile), size * size, halo=halo)
            if not tile and estimate > 0.6 * ram:
                print(
                    f"{size:>6} {'whole':>6} {'':>9} {'':>10} {'':>10} {estimate / 2**30:9.1f}G  does not fit: skipped"
                )
                continue
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(size),
                    str(tile),
                    "--evaluations",
                    str(args.evaluations),
                    "--weights",
                    weights,
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(f"{size:>6} {tile or 'whole':>6} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(
                f"{size:>6} {tile or 'whole':>6} {r['s_per_eval']:9.2f} {r['peak_rss'] / 2**30:9.2f}G "
                f"{r['prepare_s']:10.1f} {estimate / 2**30:9.2f}G",
                flush=True,
            )
    print("\nL-BFGS state (float64, 2·m + 4 copies of the image), by params.lbfgs_memory m:")
    for size in (2048, 4096, 8192):
        cells = "   ".join(
            f"m={m}: {budget.lbfgs_bytes_per_pixel(Params(lbfgs_memory=m)) * size * size / 2**30:5.1f} GiB"
            for m in (10, 5, 3)
        )
        print(f"  {size}²  {cells}")
    tiled = [r for r in rows if r["tile"]]
    if len(tiled) >= 2:
        a, b = tiled[-2], tiled[-1]
        per_pixel = (b["peak_rss"] - a["peak_rss"]) / (b["size"] ** 2 - a["size"] ** 2)
        base = a["peak_rss"] - per_pixel * a["size"] ** 2
        print(f"\ntiled evaluation: peak RSS ≈ {base / 2**30:.2f} GiB + {per_pixel:.0f} B per output pixel (measured)")
        print("largest square output a job fits in, with L-BFGS's state added (80% of the memory used):")
        for memory in (8, 16, 24, 48, 80, 141):
            cells = []
            for m in (10, 3):
                total = per_pixel + budget.lbfgs_bytes_per_pixel(Params(lbfgs_memory=m))
                free = memory * 2**30 * 0.8 - base
                cells.append(f"m={m}: {int((free / total) ** 0.5) if free > 0 else 0}²")
            print(f"  {memory:4d} GiB   " + "   ".join(cells))


if __name__ == "__main__":
    main()
