"""Shared fixtures: seeded random VGG19 weights saved to a file, and generated test images."""

from __future__ import annotations

import contextlib
import io
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


def png_bytes(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG", **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt, **save)
    return buf.getvalue()


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour image (noise blurred by upsampling), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A VGG19 (no top) Keras weights file with seeded random weights, loaded like real ones."""
    from worker import vgg

    return vgg.save_random_weights(tmp_path_factory.mktemp("weights") / "vgg19_random.weights.h5", seed=1)


@pytest.fixture(scope="session")
def engine(weights_file: str):  # type: ignore[no-untyped-def]
    from worker.engine import Engine

    return Engine(weights=weights_file)


@pytest.fixture
def content() -> np.ndarray:
    return random_rgb(48, 64, seed=1)


@pytest.fixture
def style() -> np.ndarray:
    return random_rgb(40, 40, seed=2)


# -- real services: redis-server, SeaweedFS S3, and `celery worker` processes ------------------

BUCKETS = ["inputs", "outputs", "models", "forbidden"]


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real redis-server and a real SeaweedFS S3 server on free ports, for the whole session."""
    from producer.services import RedisServer, SeaweedS3

    base = tmp_path_factory.mktemp("services")
    redis = RedisServer(base / "redis").start()
    s3 = SeaweedS3(base / "s3", buckets=BUCKETS).start()
    yield redis, s3
    s3.stop()
    redis.stop()


@pytest.fixture(scope="session")
def stack_env(services, weights_file: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Environment of the worker and client processes; the weights come from the store."""
    from producer.services import DEV_KEY, free_port
    from producer.storage import sha256_file

    redis, s3 = services
    s3.client().upload_file(weights_file, "models", "vgg19/random.weights.h5")
    env = {
        "STYLEQUEUE_BROKER_URL": redis.url,
        "STYLEQUEUE_S3_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": DEV_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_KEY,
        "STYLEQUEUE_ALLOWED_BUCKETS": "inputs,outputs,models",
        "STYLEQUEUE_WEIGHTS": "s3://models/vgg19/random.weights.h5",
        "STYLEQUEUE_WEIGHTS_SHA256": sha256_file(weights_file),
        "STYLEQUEUE_WEIGHTS_CACHE_DIR": str(tmp_path_factory.mktemp("weights-cache")),
        "STYLEQUEUE_PROGRESS_INTERVAL_S": "0",
        "STYLEQUEUE_MAX_RETRIES": "2",
        "STYLEQUEUE_RETRY_BACKOFF_MAX_S": "2",
        "STYLEQUEUE_METRICS_PORT": str(free_port()),
        "STYLEQUEUE_HEALTH_DIR": str(tmp_path_factory.mktemp("health")),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    # The test process is a client too: boto3 reads the credentials from the environment.
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    return env


class WorkerProcess:
    """A real worker (`stylequeue worker`, i.e. `celery -A worker.app worker`) in its own process group."""

    def __init__(self, env: dict[str, str], log_path, name: str = "w1", concurrency: int = 1) -> None:  # type: ignore[no-untyped-def]
        """Start it; the queue is ``env["STYLEQUEUE_QUEUE"]`` (default ``stylequeue``)."""
        import subprocess
        import sys

        self.log_path = log_path
        self.name = name
        # `stylequeue worker` execs the real `celery -A worker.app worker ...` command line.
        argv = [sys.executable, "-m", "producer.cli", "worker", "-c", str(concurrency), "-n", f"{name}@%h"]
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, app, timeout_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
        """Wait until the worker answers a ping (its consumer is up)."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited early:\n{self.log(5000)}"
            if any(self.name in k for r in app.control.ping(timeout=1.0) or [] for k in r):
                return
        raise TimeoutError(f"worker not ready in {timeout_s} s:\n{self.log(5000)}")

    def log(self, tail: int | None = None) -> str:
        """The worker's whole log (or its last ``tail`` characters, for error messages)."""
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def stop(self, sig: int | None = None, timeout_s: float = 60.0) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig or signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def client(stack_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from producer.client import Client
    from producer.settings import Settings

    return Client(Settings.from_env(stack_env))


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], client, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    w = WorkerProcess(stack_env, tmp_path_factory.mktemp("worker") / "worker.log")
    w.wait_ready(client.app)
    yield w
    w.stop()


@pytest.fixture(scope="session")
def store(stack_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from producer.settings import Settings
    from producer.storage import Store

    return Store(Settings.from_env({**stack_env, "STYLEQUEUE_ALLOWED_BUCKETS": ""}))


@pytest.fixture(scope="session")
def inputs(store) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Images (and non-images) uploaded to the inputs bucket: name -> s3 URI."""
    from producer.contract import ObjectRef

    objects = {
        "content.png": png_bytes(random_rgb(48, 64, 1)),
        "style.jpg": png_bytes(random_rgb(40, 40, 2), fmt="JPEG"),
        "style2.png": png_bytes(random_rgb(32, 32, 3)),
        "not-an-image.jpg": b"this is not an image, just some text",
    }
    uris = {}
    for name, data in objects.items():
        ref = ObjectRef("inputs", f"test/{name}")
        store.put(ref, data, "application/octet-stream")
        uris[name] = ref.uri
    return uris


@contextlib.contextmanager
def own_workers(stack_env: dict[str, str], tmp_path, name: str, count: int = 1, **overrides: str):  # type: ignore[no-untyped-def]
    """``count`` more workers on their own queue ``stylequeue-<name>`` (so the session worker never
    takes their jobs), each with its own health dir, and a client for that queue; stopped on exit."""
    from producer.client import Client
    from producer.settings import Settings

    env = {**stack_env, "STYLEQUEUE_QUEUE": f"stylequeue-{name}", "STYLEQUEUE_METRICS_PORT": "0", **overrides}
    client = Client(Settings.from_env(env))
    workers = [
        WorkerProcess(
            {**env, "STYLEQUEUE_HEALTH_DIR": str(tmp_path / f"health-{i}")},
            tmp_path / f"worker-{i}.log",
            name=f"{name}{i}",
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


def wait_for(check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    """Retry ``check`` (which raises OSError while not ready) until it returns or ``timeout_s`` passes.

    For things with nothing to block on: a server starting up, a counter or an ack landing just
    after the result a test waited for.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # nothing to block on: poll, within the deadline
