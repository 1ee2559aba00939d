"""What comes back from a job: its states, and typed progress, result and error messages.

A request is a :class:`producer.core.contract.Job`; everything a worker sends back is one of the
dataclasses here, written with ``to_dict`` and read with ``from_dict`` (missing optional fields
take the documented default, unknown fields from a newer worker are ignored). They are the
shapes of docs/contract.md's "States, progress and results".

States: ``PENDING`` (queued) → ``STARTED`` → ``PROGRESS`` → one final state: ``SUCCESS``,
``FAILURE`` (a permanent error) or ``REVOKED`` (cancelled). A final state is final: redeliveries
of the job republish it and never run the job again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from enum import Enum
from typing import Any, TypeVar, cast


class JobState(str, Enum):
    """A job's state, spelled as Celery spells it (a ``str``: equal to ``"SUCCESS"`` and written as it)."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def final(self) -> bool:
        """Whether the job has ended (SUCCESS, FAILURE or REVOKED)."""
        return self in FINAL_STATES


PENDING, STARTED, PROGRESS = JobState.PENDING, JobState.STARTED, JobState.PROGRESS
SUCCESS, FAILURE, REVOKED = JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED
FINAL_STATES = frozenset({SUCCESS, FAILURE, REVOKED})

T = TypeVar("T")


class _Message:
    """``to_dict``/``from_dict`` for the dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(cast(Any, self))

    @classmethod
    def from_dict(cls: type[T], data: Any) -> T:
        """Read the dict form back, checking every field's type.

        Raises:
            ValueError: not an object, a required field missing, or a field of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        kwargs = {}
        for f in fields(cast(Any, cls)):
            if f.name in data:
                kwargs[f.name] = _typed(cls.__name__, f.name, str(f.type), data[f.name])
            elif f.default is MISSING:
                raise ValueError(f"{cls.__name__}: missing field {f.name!r}")
        return cls(**kwargs)


def _typed(owner: str, name: str, kind: str, value: Any) -> Any:
    if value is None and kind.endswith("| None"):
        return None
    base = kind.removesuffix(" | None")
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }.get(base)
    if not ok:
        raise ValueError(f"{owner}.{name}: expected {base}, got {value!r}"[:200])
    return float(value) if base == "float" else value


@dataclass(frozen=True)
class JobProgress(_Message):
    """Where a running job is (the ``PROGRESS`` state's ``result``).

    Attributes:
        job_id: The job.
        iteration: L-BFGS iterations done, counted across resumed runs.
        total: Iterations asked for.
        loss: Current total weighted loss.
        content_loss: Weighted content part of ``loss``.
        style_loss: Weighted style part of ``loss``.
        tv_loss: Weighted total-variation part of ``loss``.
        elapsed_s: Seconds since this run's start.
        level: The coarse-to-fine level (``params.scales``), 1-based.
        levels: How many levels the job has.
    """

    job_id: str
    iteration: int
    total: int
    loss: float
    content_loss: float = 0.0
    style_loss: float = 0.0
    tv_loss: float = 0.0
    elapsed_s: float = 0.0
    level: int = 1
    levels: int = 1


@dataclass(frozen=True)
class JobResult(_Message):
    """A finished job (the ``SUCCESS`` state's ``result``).

    Attributes:
        job_id: The job.
        output: ``s3://`` URI of the image written.
        bytes: Its size.
        width: Its width in pixels.
        height: Its height in pixels.
        format: ``png``, ``jpeg`` or ``webp``.
        loss: Final total loss.
        iterations: L-BFGS iterations done (across resumed runs).
        seconds: Wall time of the run that finished it.
        seconds_per_iteration: Mean seconds per iteration of that run.
        resumed_from: Iteration of the checkpoint that run started from (0: from scratch).
        stopped: Why the optimization ended: ``iterations`` (all done), ``tolerance`` (the loss
            stopped improving, ``params.tolerance``) or ``converged`` (L-BFGS's own criteria).
    """

    job_id: str
    output: str
    bytes: int
    width: int
    height: int
    format: str
    loss: float
    iterations: int
    seconds: float
    seconds_per_iteration: float
    resumed_from: int = 0
    stopped: str = "iterations"


@dataclass(frozen=True)
class JobError(_Message):
    """Why a job failed or was cancelled (the error class name in the error tree, and its message)."""

    type: str
    message: str


@dataclass(frozen=True)
class FinalState(_Message):
    """The end of a job, as the run that ended it recorded it (``stylequeue:done:<job>``).

    Attributes:
        state: ``SUCCESS``, ``FAILURE`` or ``REVOKED``.
        result: The result of a ``SUCCESS`` (its dict form).
        error_type: The error class of a ``FAILURE`` or ``REVOKED``.
        error_message: Its message.
        at: When it ended (Unix epoch seconds).
    """

    state: str
    at: float
    result: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> FinalState:
        """Read the stored form back (``result`` is checked as a :class:`JobResult`)."""
        if not isinstance(data, Mapping) or data.get("state") not in FINAL_STATES:
            raise ValueError(f"FinalState: not a final state: {data!r}"[:200])
        result = data.get("result")
        return cls(
            state=str(data["state"]),
            at=float(data.get("at") or 0.0),
            result=JobResult.from_dict(result).to_dict() if result is not None else None,
            error_type=data.get("error_type"),
            error_message=data.get("error_message"),
        )

    @property
    def job_result(self) -> JobResult | None:
        """The typed result of a ``SUCCESS``."""
        return JobResult.from_dict(self.result) if self.result is not None else None


@dataclass(frozen=True)
class JobSummary(_Message):
    """One line of ``stylequeue jobs``: a recent job and its state.

    Attributes:
        job_id: The job.
        state: Its state now (``PENDING`` while queued).
        first_seen: When it was submitted, or first started for a job sent by another client
            (Unix epoch seconds).
    """

    job_id: str
    state: str
    first_seen: float
