"""Schedules (params.schedule): their plans, their validation, their limits, and a run across levels."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from support.images import random_rgb

from producer.cli import options
from producer.core.contract import Job
from producer.core.errors import InvalidJob
from producer.core.params import Params
from producer.core.schedules import SCHEDULE_NAMES, SCHEDULED_OPTIONS, SCHEDULES, Schedule, schedules_table
from worker.nst import pyramid
from worker.nst.engine import Engine, Progress

ROOT = Path(__file__).resolve().parents[2]
MIN_SIDE = 16  # VGG19's default layers need 16 px (vgg.min_side_px)


def test_the_schedules_are_draft_standard_high_against_50_200_500_single_scale_iterations() -> None:
    assert SCHEDULE_NAMES == ("none", "draft", "standard", "high")
    assert [s.reference for s in SCHEDULES.values()] == [50, 200, 500]
    costs = [s.most_iterations for s in SCHEDULES.values()]
    assert costs == sorted(costs)  # a better outcome plans more work
    for s in SCHEDULES.values():
        assert s.levels >= 2 and all(n >= 1 for n in s.iterations) and 0 <= s.tolerance < 1 and s.window >= 1


@pytest.mark.parametrize("name", ["draft", "standard", "high"])
def test_a_schedule_plans_its_levels_iterations_and_tolerance(name: str) -> None:
    schedule = SCHEDULES[name]
    plan = pyramid.levels((384, 512), Params(schedule=name), MIN_SIDE)
    assert len(plan) == schedule.levels
    assert [lv.iterations for lv in plan] == list(schedule.iterations)
    assert (plan[-1].height, plan[-1].width) == (384, 512)
    for coarse, fine in zip(plan, plan[1:]):  # √2 per level
        assert fine.width / coarse.width == pytest.approx(2**0.5, rel=0.02)
        assert fine.first == coarse.last
    assert {(lv.tolerance, lv.window) for lv in plan} == {(schedule.tolerance, schedule.window)}
    assert plan[-1].last == schedule.most_iterations == Params(schedule=name).most_iterations


@pytest.mark.parametrize("name", ["draft", "standard", "high"])
def test_a_small_output_drops_the_coarsest_levels_with_their_iterations(name: str) -> None:
    schedule = SCHEDULES[name]
    for side in (16, 24, 32, 64):
        plan = pyramid.levels((side, side), Params(schedule=name, size=side), MIN_SIDE)
        assert min(plan[0].height, plan[0].width) >= MIN_SIDE
        assert [lv.iterations for lv in plan] == list(schedule.iterations[schedule.levels - len(plan) :])
        assert plan[-1].last <= Params(schedule=name).most_iterations
    assert len(pyramid.levels((16, 16), Params(schedule=name), MIN_SIDE)) == 1
    assert len(pyramid.levels((24, 24), Params(schedule=name), MIN_SIDE)) == min(2, schedule.levels)


def test_no_schedule_keeps_the_options_as_given() -> None:
    params = Params(iterations=5, scales=3, scale_iterations=2, tolerance=0.01, tolerance_window=4)
    plan = pyramid.levels((64, 64), params, MIN_SIDE)
    assert [lv.iterations for lv in plan] == [2, 2, 5] and {(lv.tolerance, lv.window) for lv in plan} == {(0.01, 4)}
    assert params.schedule == "none" and params.most_iterations == 9
    assert len(pyramid.levels((64, 64), Params(), MIN_SIDE)) == 1  # the default: the seed's single scale


@pytest.mark.parametrize("name", SCHEDULED_OPTIONS)
def test_a_job_that_sets_a_schedule_and_what_it_plans_is_refused_naming_the_field(name: str) -> None:
    value = {"iterations": 300, "scales": 2, "scale_iterations": 7, "tolerance": 0.01, "tolerance_window": 5}[name]
    with pytest.raises(InvalidJob, match=rf"params.{name}: is set by schedule 'standard'"):
        Params.from_dict({"schedule": "standard", name: value})
    assert getattr(Params.from_dict({name: value}), name) == value  # fine without a schedule


def test_schedule_values_and_round_trips() -> None:
    with pytest.raises(InvalidJob, match="params.schedule: 'best' is not one of none, draft, standard, high"):
        Params.from_dict({"schedule": "best"})
    params = Params.from_dict({"schedule": "high", "size": 256, "precision": "float32"})
    assert Params.from_dict(params.to_dict()) == params  # the defaults it carries are no conflict
    assert params.replace(size=128).schedule == "high"
    assert params.replace(schedule="none", iterations=300).most_iterations == 300


def test_the_iteration_limit_counts_a_schedules_every_level() -> None:
    base = {"content": "s3://photos/c.png", "style": "s3://photos/s.png", "output": "s3://results/o/", "job_id": "j"}
    job = Job.from_message({**base, "params": {"schedule": "high"}})
    most = SCHEDULES["high"].most_iterations
    assert job.params.most_iterations == most
    job.check_limits(2048, most)
    with pytest.raises(InvalidJob, match=rf"params.schedule: schedule 'high' runs up to {most} iterations in all"):
        job.check_limits(2048, most - 1)
    # A limit under the default `iterations` (which a scheduled job leaves alone) refuses only
    # the schedules over it: draft's 60 pass a limit of 80, though the unused default is 100.
    draft = Job.from_message({**base, "params": {"schedule": "draft"}})
    draft.check_limits(2048, SCHEDULES["draft"].most_iterations)
    assert draft.params.iterations > SCHEDULES["draft"].most_iterations


def test_the_schedule_flag() -> None:
    parser = argparse.ArgumentParser()
    options.add_flags(parser)
    assert "--schedule" in parser.format_help()
    assert options.params_from_args(parser.parse_args(["--schedule", "draft"])) == {"schedule": "draft"}
    assert "schedule" not in options.params_from_args(parser.parse_args([]))  # default: none
    with pytest.raises(SystemExit):
        parser.parse_args(["--schedule", "best"])


def test_a_scheduled_transfer_reports_progress_across_its_levels(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny schedule in place of standard's plan: levels 1..3 in order, counts on across them."""
    monkeypatch.setitem(SCHEDULES, "standard", Schedule("standard", (2, 2, 3), 0.0, 10, 200))
    content, style = random_rgb(48, 64, 1), random_rgb(40, 40, 2)
    params = Params(size=64, schedule="standard", precision="float32", init="noise", seed=1)
    plan = engine.plan(content.shape[:2], params)
    assert [(lv.height, lv.width, lv.iterations) for lv in plan] == [(24, 32, 2), (34, 45, 2), (48, 64, 3)]
    seen: list[Progress] = []
    result = engine.transfer(content, [style], params, callback=seen.append)
    assert [p.iteration for p in seen] == list(range(1, 8)) and {p.total for p in seen} == {7}
    assert [p.level for p in seen] == [1, 1, 2, 2, 3, 3, 3] and {p.levels for p in seen} == {3}
    assert result.image.shape == (48, 64, 3) and result.iterations == 7 == params.most_iterations


def test_a_schedules_tolerance_ends_each_level_early(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tolerance 1 over 1 iteration: each level stops at its 2nd iteration; the count goes on from
    the next level's planned start, so progress still ends at the plan's total."""
    monkeypatch.setitem(SCHEDULES, "draft", Schedule("draft", (5, 5, 5), 1.0, 1, 50))
    content, style = random_rgb(48, 64, 1), random_rgb(40, 40, 2)
    params = Params(size=64, schedule="draft", precision="float32", init="noise", seed=1)
    seen: list[Progress] = []
    result = engine.transfer(content, [style], params, callback=seen.append)
    assert [(p.level, p.iteration) for p in seen] == [(1, 1), (1, 2), (2, 6), (2, 7), (3, 11), (3, 12)]
    assert {p.total for p in seen} == {15} and result.stopped == "tolerance"


def test_the_draft_plan_runs_on_a_tiny_image(engine: Engine) -> None:
    """draft's own plan at 48x64 (the shapes above: traced once): levels in order, counts monotone."""
    content, style = random_rgb(48, 64, 1), random_rgb(40, 40, 2)
    params = Params(size=64, schedule="draft", precision="float32")
    plan = engine.plan(content.shape[:2], params)
    seen: list[Progress] = []
    result = engine.transfer(content, [style], params, callback=seen.append)
    levels = [p.level for p in seen]
    assert levels == sorted(levels) and set(levels) <= set(range(1, len(plan) + 1)) and levels[-1] == len(plan)
    counts = [p.iteration for p in seen]
    assert counts == sorted(set(counts)) and counts[-1] <= plan[-1].last <= params.most_iterations
    assert {p.total for p in seen} == {plan[-1].last} and result.image.shape == (48, 64, 3)


def test_the_docs_table_is_the_generated_one() -> None:
    assert schedules_table() in (ROOT / "docs" / "engine.md").read_text(), (
        "regenerate: python -c 'from producer.core.schedules import schedules_table; print(schedules_table())'"
    )
