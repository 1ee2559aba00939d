import json
import os
import subprocess
import time
from pathlib import Path

from support.processes import cli

from worker.signals.health import ChildState, check


def test_idle_and_running_children_are_healthy(tmp_path: Path) -> None:
    state = ChildState(tmp_path)
    state.idle()
    assert check(tmp_path, max_job_s=60).ok
    state.started("job-1")
    v = check(tmp_path, max_job_s=60, stall_s=30)
    assert v.ok and "job job-1" in v.lines[0]


def test_a_job_past_the_hard_limit_is_stuck(tmp_path: Path) -> None:
    ChildState(tmp_path).started("job-2")
    v = check(tmp_path, max_job_s=60, now=time.time() + 61)
    assert not v.ok and "stuck: job job-2" in v.lines[0]


def test_a_job_without_progress_is_stalled(tmp_path: Path) -> None:
    state = ChildState(tmp_path, min_interval_s=0)
    state.started("job-3")
    state.progressed()
    assert not check(tmp_path, max_job_s=3600, stall_s=10, now=time.time() + 11).ok
    assert check(tmp_path, max_job_s=3600, stall_s=10, now=time.time() + 5).ok


def test_files_of_dead_children_are_ignored_and_removed(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that no longer exists
    stale = tmp_path / f"child-{proc.pid}.json"
    stale.write_text(json.dumps({"pid": proc.pid, "job_id": "x", "started_at": 0, "progress_at": 0}))
    assert check(tmp_path, max_job_s=1).ok and not stale.exists()
    state = ChildState(tmp_path)
    state.idle()
    state.remove()
    assert not list(tmp_path.iterdir())


def test_the_stall_limit_comes_from_the_environment_and_the_flag_overrides_it(tmp_path: Path) -> None:
    """The image's HEALTHCHECK has no --stall-s: STYLEQUEUE_HEALTH_STALL_S sets it per deployment."""
    state = {"pid": os.getpid(), "job_id": "job-4", "started_at": time.time() - 60, "progress_at": time.time() - 60}
    (tmp_path / f"child-{os.getpid()}.json").write_text(json.dumps(state))
    env = {**os.environ, "STYLEQUEUE_HEALTH_DIR": str(tmp_path)}
    assert cli("health", env=env).returncode == 0  # no stall limit by default
    env["STYLEQUEUE_HEALTH_STALL_S"] = "30"
    assert cli("health", env=env).returncode == 1
    assert cli("health", "--stall-s", "0", env=env).returncode == 0
    assert cli("health", "--stall-s", "90", env=env).returncode == 0
