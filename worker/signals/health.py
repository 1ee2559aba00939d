"""Worker health: per-child state files, the handlers that keep them, and ``stylequeue health``.

Each pool child keeps a small JSON file in ``STYLEQUEUE_HEALTH_DIR`` saying which job it runs
since when, updated as iterations go by.
``celery inspect ping`` only proves the parent process answers; a child stuck inside a job (a
hung GPU call, a deadlock) answers nothing and holds its job forever. The check flags a job that
has run longer than the hard time limit plus a grace period — Celery should have killed it by
then — or whose child has made no progress for ``--stall-s`` seconds.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_process_init, worker_process_shutdown

from producer.core.settings import Settings


class ChildState:
    """Writes this child's state file; one instance per pool child."""

    def __init__(self, directory: str | os.PathLike[str], min_interval_s: float = 2.0) -> None:
        self.path = Path(directory) / f"child-{os.getpid()}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.min_interval_s = min_interval_s
        self._state: dict[str, object] = {}
        self._written = 0.0

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        os.replace(tmp, self.path)  # atomic: the checker never reads half a file
        self._written = time.monotonic()

    def idle(self) -> None:
        """No job running (written at start-up and after each job)."""
        self._state = {"pid": os.getpid(), "job_id": None, "started_at": None, "progress_at": time.time()}
        self._write()

    def started(self, job_id: str) -> None:
        """A job begins."""
        now = time.time()
        self._state = {"pid": os.getpid(), "job_id": job_id, "started_at": now, "progress_at": now}
        self._write()

    def progressed(self) -> None:
        """An iteration finished (written at most every ``min_interval_s`` seconds)."""
        self._state["progress_at"] = time.time()
        if time.monotonic() - self._written >= self.min_interval_s:
            self._write()

    def remove(self) -> None:
        """The child exits."""
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Verdict:
    """Result of a health check: ``ok`` and one line per problem (or per child when fine)."""

    ok: bool
    lines: tuple[str, ...]


def check(
    directory: str | os.PathLike[str], max_job_s: float, stall_s: float | None = None, now: float | None = None
) -> Verdict:
    """Inspect every child's state file.

    Args:
        directory: State-file directory (``STYLEQUEUE_HEALTH_DIR``).
        max_job_s: A job older than this is stuck (use the hard time limit plus a grace period).
        stall_s: A job with no iteration for this long is stuck (``None``: not checked).
        now: Current epoch time (for tests).
    """
    now = time.time() if now is None else now
    lines, ok = [], True
    for path in sorted(Path(directory).glob("child-*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now
        pid, job = state.get("pid"), state.get("job_id")
        if not pid_alive(int(pid or 0)):
            path.unlink(missing_ok=True)  # a child that died without cleaning up
            continue
        if job is None:
            lines.append(f"child {pid}: idle")
            continue
        age = now - float(state["started_at"])
        quiet = now - float(state["progress_at"])
        if age > max_job_s:
            ok = False
            lines.append(f"child {pid}: stuck: job {job} running for {age:.0f} s (limit {max_job_s:.0f} s)")
        elif stall_s is not None and quiet > stall_s:
            ok = False
            lines.append(f"child {pid}: stalled: job {job} made no progress for {quiet:.0f} s")
        else:
            lines.append(f"child {pid}: job {job} for {age:.0f} s")
    return Verdict(ok, tuple(lines))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def install(settings: Settings) -> None:
    """Keep each pool child's state file: idle at start and after each job, the job while it runs."""
    from worker import signals

    state: list[ChildState] = []
    signals.on_progress(lambda iteration, total: state[0].progressed() if state else None)

    @worker_process_init.connect(weak=False)
    def _ready(**_: Any) -> None:  # after the model loaded (see worker.signals.install's order)
        state.append(ChildState(settings.health_dir))
        state[0].idle()

    @worker_process_shutdown.connect(weak=False)
    def _exit(**_: Any) -> None:
        if state:
            state[0].remove()

    @task_prerun.connect(weak=False)
    def _started(task_id: str = "", **_: Any) -> None:
        if state:
            state[0].started(task_id)

    @task_postrun.connect(weak=False)
    def _ended(**_: Any) -> None:
        if state:
            state[0].idle()
