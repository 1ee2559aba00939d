"""Coarse-to-fine levels (``params.scales``, ``params.schedule``): the sizes and iterations of each level.

With ``scales = N`` the optimization runs at N sizes, the last one the output size, each level
√2 smaller (half the pixels) than the next, as crowsonkb/style-transfer-pytorch does; every
level starts from the previous level's result upsampled, with the content and style targets
recomputed at its own size. The coarse levels are cheap (all of them together cost less than
the last one) and give the large, coherent strokes a single scale at a large size lacks.

A schedule (:mod:`producer.core.schedules`) gives the levels, each level's iterations and the
tolerance instead of ``scales``, ``iterations``, ``scale_iterations`` and ``tolerance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from producer.core.params import Params
from producer.core.schedules import SCHEDULES

#: Linear size ratio between two consecutive levels.
FACTOR = math.sqrt(2.0)


@dataclass(frozen=True)
class Level:
    """One level of the pyramid.

    Attributes:
        index: 0 for the coarsest.
        height: Its height in pixels.
        width: Its width in pixels.
        iterations: L-BFGS iterations at this level.
        first: Iterations of the levels before it (where its progress count starts).
        tolerance: Stop this level once its loss improved by less than this fraction over
            ``window`` iterations (0: never).
        window: Iterations the tolerance looks back over.
    """

    index: int
    height: int
    width: int
    iterations: int
    first: int
    tolerance: float = 0.0
    window: int = 10

    @property
    def last(self) -> int:
        """The iteration count once this level is done."""
        return self.first + self.iterations


def output_size(content_hw: tuple[int, int], size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of the output: ``size`` as the longest side (aspect kept) or exactly."""
    if not isinstance(size, int):
        return int(size[0]), int(size[1])
    h, w = content_hw
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def levels(final_hw: tuple[int, int], params: Params, min_side: int) -> list[Level]:
    """The levels of a transfer to ``final_hw``, coarsest first; none smaller than ``min_side``.

    Levels that would fall under ``min_side`` are dropped (a small output has fewer levels; with
    a schedule, the coarsest levels go with their iterations).
    """
    schedule = SCHEDULES.get(params.schedule)
    count = schedule.levels if schedule is not None else params.scales
    h, w = final_hw
    sizes: list[tuple[int, int]] = []
    for i in range(count):
        f = FACTOR ** (count - 1 - i)
        size = (round(h / f), round(w / f))
        if min(size) >= min_side and size not in sizes:
            sizes.append(size)
    if not sizes or sizes[-1] != (h, w):
        sizes.append((h, w))
    out: list[Level] = []
    first = 0
    for i, (lh, lw) in enumerate(sizes):
        if schedule is not None:  # the finest levels' iterations: the coarsest dropped first
            iterations = schedule.iterations[len(schedule.iterations) - len(sizes) + i]
            tolerance, window = schedule.tolerance, schedule.window
        else:
            last = i == len(sizes) - 1
            iterations = params.iterations if last else (params.scale_iterations or params.iterations)
            tolerance, window = params.tolerance, params.tolerance_window
        out.append(Level(i, lh, lw, iterations, first, tolerance, window))
        first += iterations
    return out
