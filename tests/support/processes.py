"""Real processes: the ``stylequeue`` CLI, ``celery worker`` processes and their logs, the
API server, and which Redis connections a process holds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producer.devstack import stop_group
from support.waiting import wait_for

CLI = [sys.executable, "-m", "producer.cli"]
#: ``CLI`` as a terminal starts it, Ctrl-C (SIGINT) at its default: a shell starts a background job
#: with SIGINT ignored, and every process under it (pytest, its workers, what they start) inherits
#: that, so a test of Ctrl-C would depend on how its run was started.
CLI_IN_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'producer.cli', *sys.argv[1:]])",
]


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The process SIGSTOPped for the block and SIGCONTinued after it, whatever happens inside.

    A frozen server still accepts connections (the kernel does) and answers nothing: its clients
    block in their reads, as behind a hung server or a stalled network. Tests use it to hold a
    job at its next write for as long as they need, whatever the CPU's speed.
    """
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the real ``stylequeue`` command as a user would."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


class WorkerProcess:
    """A real worker (`stylequeue worker`, i.e. `celery -A worker.app worker`) in its own process group.

    Its logs are JSON lines (``STYLEQUEUE_LOG_FORMAT=json``) unless the env says otherwise, so tests
    read its events rather than its wording.
    """

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "w1", concurrency: int = 1) -> None:
        self.log_path = log_path
        self.name = name
        argv = [*CLI, "worker", "-c", str(concurrency), "-n", f"{name}@%h"]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, "STYLEQUEUE_LOG_FORMAT": "json", **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, app: Any, timeout_s: float = 120.0) -> None:
        """Wait until the worker answers a ping (its consumer is up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited early:\n{self.log(5000)}"
            if any(self.name in k for r in app.control.ping(timeout=1.0) or [] for k in r):
                return
        raise TimeoutError(f"worker not ready in {timeout_s} s:\n{self.log(5000)}")

    def log(self, tail: int | None = None) -> str:
        """The worker's whole output (or its last ``tail`` characters, for error messages)."""
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def lines(self) -> list[dict[str, Any]]:
        """Every JSON line of its output."""
        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def events(self, event: str, job_id: str | None = None) -> list[dict[str, Any]]:
        """Its log lines with ``event`` (and ``job_id``)."""
        return [r for r in self.lines() if r.get("event") == event and (job_id is None or r.get("job_id") == job_id)]

    def stop(self, sig: int | None = None, timeout_s: float = 60.0) -> int | None:
        import signal

        code = stop_group(self.proc, timeout_s, sig or signal.SIGTERM)
        self._log.close()
        return code


def events(workers: list[WorkerProcess], event: str, job_id: str | None = None) -> list[dict[str, Any]]:
    """``event`` lines across several workers."""
    return [e for w in workers for e in w.events(event, job_id)]


def child_running(workers: list[WorkerProcess], job_id: str, min_age_s: float = 0.0) -> tuple[Any, int] | None:
    """(worker, pid) of a live pool child running ``job_id`` for at least ``min_age_s``, from the health files."""
    from worker.signals.health import pid_alive

    for i, w in enumerate(workers):
        for f in (w.log_path.parent / f"health-{i}").glob("child-*.json"):
            try:
                state = json.loads(f.read_text())
            except (ValueError, OSError):
                continue
            young = time.time() - float(state.get("started_at") or 0) < min_age_s
            if state.get("job_id") == job_id and not young and pid_alive(int(state["pid"])):
                return w, int(state["pid"])
    return None


def tcp_ports(pid: int) -> set[int]:
    """The local TCP ports of process ``pid`` and all its descendants (their Redis connections, ...)."""
    import psutil

    root = psutil.Process(pid)
    ports: set[int] = set()
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            ports.update(c.laddr.port for c in proc.net_connections(kind="tcp") if c.laddr)
    return ports


def redis_clients_from(redis: Any, ports: set[int]) -> list[dict[str, Any]]:
    """The connections Redis still holds whose client side is one of ``ports``."""
    return [c for c in redis.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ports]


@contextlib.contextmanager
def own_workers(
    stack_env: dict[str, str],
    tmp_path: Path,
    name: str,
    count: int = 1,
    each: list[dict[str, str]] | None = None,
    **overrides: str,
) -> Iterator[tuple[Any, list[WorkerProcess]]]:
    """``count`` workers on their own queue ``stylequeue-<name>`` (so the session worker never takes
    their jobs), each with its own health dir, and a client for that queue; stopped on exit.
    ``each`` gives every worker settings of its own (and the count)."""
    from producer.client import Client
    from producer.core.settings import Settings

    env = {**stack_env, "STYLEQUEUE_QUEUE": f"stylequeue-{name}", "STYLEQUEUE_METRICS_PORT": "0", **overrides}
    client = Client(Settings.from_env(env))
    own = each if each is not None else [{} for _ in range(count)]
    workers = [
        WorkerProcess(
            {**env, "STYLEQUEUE_HEALTH_DIR": str(tmp_path / f"health-{i}"), **mine},
            tmp_path / f"worker-{i}.log",
            f"{name}{i}",
        )
        for i, mine in enumerate(own)
    ]
    try:
        for w in workers:
            w.wait_ready(client.app)
        yield client, workers
    finally:
        for w in workers:
            w.stop()


class ServiceProcess:
    """A ``stylequeue`` command serving something (``api``, ``notifier``) in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.url = ""  # where it serves, for the API (start_api)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*CLI, *args], env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self, tail: int = 5000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"{self.proc.args} exited:\n{self.log()}"
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        import signal

        stop_group(self.proc, timeout_s, signal.SIGTERM)
        self._log.close()


def start_api(env: dict[str, str], log_path: Path, port: int | None = None) -> ServiceProcess:
    """``stylequeue api`` on 127.0.0.1:``port`` (a free one by default), once it answers ``/healthz``;
    its ``url`` is ``http://127.0.0.1:<port>``."""
    from producer.devstack import free_port

    port = port or free_port()
    api = ServiceProcess(["api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env, log_path)
    api.url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        api.alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(up, 60, "the API to answer /healthz")
    return api
