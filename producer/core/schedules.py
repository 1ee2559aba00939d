"""Schedules (``params.schedule``): an outcome asked for, not iterations tuned by hand.

A schedule is a coarse-to-fine plan: how many levels (each √2 smaller than the next, the last at
the output size, as ``params.scales``), the L-BFGS iterations of each level and a tolerance
(stop a level early once its loss improved by less than that fraction over ``window``
iterations). Each is chosen from measurements (``benchmarks/schedules.py``, docs/benchmarks.md),
aimed at a final loss at the output size no higher than a single-scale run of ``reference``
iterations, in at most 60% of its time (met at 128² by ``standard`` and ``high``; not yet at
256², see docs/benchmarks.md#schedules):

* ``draft`` against 50 iterations,
* ``standard`` against 200,
* ``high`` against 500.

``none`` (the default) is no schedule: ``iterations``, ``scales``, ``scale_iterations`` and
``tolerance`` apply as given (the seed's single scale). A scheduled job leaves those at their
defaults: setting one as well is refused (:class:`~producer.core.errors.InvalidJob` naming it),
so a job never means two plans at once.

Where an output is too small for every level (a level's side under what the layers need), the
coarsest levels are dropped with their iterations, so a small output runs fewer levels and fewer
iterations; :attr:`Schedule.most_iterations` bounds what any size runs.

Pure Python: the light client validates and limits scheduled jobs without the engine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """One schedule's plan.

    Attributes:
        name: Its ``params.schedule`` value.
        iterations: L-BFGS iterations of each level, coarsest first, the last at the output size.
        tolerance: Each level stops once its loss improved by less than this fraction over
            ``window`` iterations (0: never).
        window: Iterations the tolerance looks back over.
        reference: Single-scale iterations at the output size it is measured against.
    """

    name: str
    iterations: tuple[int, ...]
    tolerance: float
    window: int
    reference: int

    @property
    def levels(self) -> int:
        """How many levels it plans (fewer run where the output is too small for them all)."""
        return len(self.iterations)

    @property
    def most_iterations(self) -> int:
        """The most L-BFGS iterations it runs, at any size: every level's."""
        return sum(self.iterations)


#: The schedules by name, from the cheapest. See docs/benchmarks.md#schedules for the runs.
SCHEDULES: dict[str, Schedule] = {
    s.name: s
    for s in (
        Schedule("draft", (15, 15, 30), tolerance=0.001, window=10, reference=50),
        Schedule("standard", (40, 40, 80), tolerance=0.001, window=10, reference=200),
        Schedule("high", (40, 40, 220), tolerance=0.001, window=10, reference=500),
    )
}
#: The values of ``params.schedule``: ``none`` and every schedule.
SCHEDULE_NAMES: tuple[str, ...] = ("none", *SCHEDULES)
#: The options a schedule sets; a scheduled job leaves them at their defaults.
SCHEDULED_OPTIONS: tuple[str, ...] = ("iterations", "scales", "scale_iterations", "tolerance", "tolerance_window")


def schedules_table() -> str:
    """The Markdown table of the schedules' plans (docs/engine.md has it; a test keeps them equal)."""
    rows = [
        "| schedule | levels | iterations per level, coarsest first | tolerance (window) | measured against |",
        "|---|---|---|---|---|",
    ]
    for s in SCHEDULES.values():
        rows.append(
            f"| `{s.name}` | {s.levels} | {' + '.join(map(str, s.iterations))} = {s.most_iterations} | "
            f"{s.tolerance:g} ({s.window} iterations) | {s.reference} single-scale iterations |"
        )
    return "\n".join(rows) + "\n"
