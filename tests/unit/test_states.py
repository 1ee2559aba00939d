"""Typed progress, results and final states, read back strictly."""

import pytest

from producer.core.states import FinalState, JobProgress, JobResult

RESULT = JobResult("j", "s3://b/j.png", 100, 32, 24, "png", 1.5, 10, 2.0, 0.2)


def test_round_trips() -> None:
    assert JobResult.from_dict(RESULT.to_dict()) == RESULT
    p = JobProgress("j", 3, 10, 1.0, 0.5, 0.4, 0.1, 1.5)
    assert JobProgress.from_dict(p.to_dict()) == p
    final = FinalState("SUCCESS", 1.0, result=RESULT.to_dict())
    assert FinalState.from_dict(final.to_dict()).job_result == RESULT


def test_optional_fields_default_and_unknown_ones_are_ignored() -> None:
    p = JobProgress.from_dict({"job_id": "j", "iteration": 1, "total": 2, "loss": 3, "from_a_newer_worker": True})
    assert p.elapsed_s == 0.0 and p.loss == 3.0 and isinstance(p.loss, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"job_id": "j", "iteration": "1", "total": 2, "loss": 3.0}, "JobProgress.iteration: expected int"),
        ({"job_id": "j", "total": 2, "loss": 3.0}, "missing field 'iteration'"),
        ([1, 2], "expected an object"),
    ],
)
def test_bad_shapes_are_named(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobProgress.from_dict(data)


def test_a_final_state_must_be_final() -> None:
    with pytest.raises(ValueError, match="not a final state"):
        FinalState.from_dict({"state": "PROGRESS", "at": 1})
