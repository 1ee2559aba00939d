"""What several test modules share: images, real worker processes, waiting on conditions, reading
worker events and metrics. Fixtures are in conftest.py; test modules import helpers from here only."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from producer.devstack import stop_group

T = TypeVar("T")
CLI = [sys.executable, "-m", "producer.cli"]


def png_bytes(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG", **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt, **save)
    return buf.getvalue()


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image (noise blurred by upsampling), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def wait_for(check: Callable[[], T | None], timeout_s: float = 60.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (and return that) or ``timeout_s`` passes.

    For things with nothing to block on: a server starting up, a counter or an ack landing just
    after the result a test waited for, a key expiring. ``check`` may raise ``OSError`` while not
    ready.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
            if value:
                return value
        except OSError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.05)  # nothing to block on: poll, within the deadline


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
    from worker.middleware.health import pid_alive

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
    stack_env: dict[str, str], tmp_path: Path, name: str, count: int = 1, **overrides: str
) -> Iterator[tuple[Any, list[WorkerProcess]]]:
    """``count`` workers on their own queue ``stylequeue-<name>`` (so the session worker never takes
    their jobs), each with its own health dir, and a client for that queue; stopped on exit."""
    from producer.client import Client
    from producer.settings import Settings

    env = {**stack_env, "STYLEQUEUE_QUEUE": f"stylequeue-{name}", "STYLEQUEUE_METRICS_PORT": "0", **overrides}
    client = Client(Settings.from_env(env))
    workers = [
        WorkerProcess(
            {**env, "STYLEQUEUE_HEALTH_DIR": str(tmp_path / f"health-{i}")}, tmp_path / f"worker-{i}.log", f"{name}{i}"
        )
        for i in range(count)
    ]
    try:
        for w in workers:
            w.wait_ready(client.app)
        yield client, workers
    finally:
        for w in workers:
            w.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def sample(text: str, metric: str, **labels: str) -> float:
    """The value of a series (the largest, when several processes report it)."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(metric + "{") or line.startswith(metric + " ")
        if all(f'{k}="{v}"' in line for k, v in labels.items())
    ]
    if values:
        return max(values)
    raise AssertionError(f"{metric} {labels} not in metrics:\n{text[:3000]}")


def objects(store: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix`` (all pages)."""
    keys: list[str] = []
    token = None
    while True:
        page = store.client.list_objects_v2(
            Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {})
        )
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return sorted(keys)


# -- the HTTP API: a real server, a real notifier, a real webhook receiver --------------------


class ServiceProcess:
    """A ``stylequeue`` command serving something (``api``, ``notifier``) in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
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


def start_api(env: dict[str, str], log_path: Path, port: int) -> ServiceProcess:
    """``stylequeue api`` on 127.0.0.1:``port``, once it answers ``/healthz``."""
    api = ServiceProcess(["api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env, log_path)

    def up() -> bool:
        api.alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(up, 60, "the API to answer /healthz")
    return api


class WebhookReceiver:
    """A real HTTP server that receives webhooks the way a tenant's would.

    It checks each delivery's Standard Webhooks signature itself (HMAC-SHA256 over
    ``id.timestamp.body``, no stylequeue code), answers by path: ``/ok`` 204, ``/flaky/N`` 503 to
    the first N attempts of each event then 200, ``/down`` always 500; and records every attempt,
    and each event id's body once (what a receiver that deduplicates on ``webhook-id`` processes).
    """

    def __init__(self, secrets: dict[str, str]) -> None:
        import base64
        import hashlib
        import hmac
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.attempts: list[dict[str, Any]] = []
        self.processed: dict[str, dict[str, Any]] = {}
        self.raw: list[tuple[dict[str, str], bytes]] = []  # every delivery as received: headers, body
        self.bad_signatures = 0
        lock = threading.Lock()
        receiver = self
        keys = {name: base64.b64decode(s.removeprefix("whsec_")) for name, s in secrets.items()}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                msg_id, stamp = self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", "")
                signed = f"{msg_id}.{stamp}.".encode() + body
                given = [s.split(",", 1)[1] for s in self.headers.get("webhook-signature", "").split() if "," in s]
                signer = next(
                    (
                        name
                        for name, key in keys.items()
                        if any(
                            hmac.compare_digest(
                                base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode(), g
                            )
                            for g in given
                        )
                    ),
                    None,
                )
                path = self.path.split("?")[0]
                with lock:
                    receiver.raw.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    tries = sum(1 for a in receiver.attempts if a["id"] == msg_id and a["path"] == path)
                    receiver.attempts.append({"id": msg_id, "path": path, "signer": signer, "at": time.time()})
                    if signer is None or abs(time.time() - int(stamp or 0)) > 300:
                        receiver.bad_signatures += 1
                        status = 401
                    elif path == "/down":
                        status = 500
                    elif path.startswith("/flaky/") and tries < int(path.rsplit("/", 1)[1]):
                        status = 503
                    else:
                        status = 204 if path == "/ok" else 200
                        if msg_id not in receiver.processed:
                            receiver.processed[msg_id] = {"path": path, "signer": signer, **json.loads(body)}
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self, job_id: str) -> dict[str, dict[str, Any]]:
        """Processed events about ``job_id`` (or a batch), by event type."""
        return {e["type"]: e for e in list(self.processed.values()) if e["data"]["id"] == job_id}

    def tries(self, event_id: str) -> int:
        return sum(1 for a in list(self.attempts) if a["id"] == event_id)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
