"""Shared fixtures: seeded random VGG19 weights saved to a file, generated images, and real services
(redis-server, SeaweedFS, celery worker processes). Helpers shared by test modules are in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from support.images import png_bytes, random_rgb
from support.processes import WorkerProcess
from support.store import BUCKETS, WEIGHTS_URI


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The machine in every log: the CPU flags that decide precision ``auto``, and what it resolves to."""
    from pathlib import Path

    from worker.nst import vgg

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16") if f in flags]
    forced = os.environ.get(vgg.AUTO_PRECISION_ENV)
    return [
        f"cpu: {os.cpu_count()} cores, flags {' '.join(shown) or '(none of avx2/avx512/amx)'}",
        f"precision auto -> {vgg.resolve_precision('auto')}"
        + (f" ({vgg.AUTO_PRECISION_ENV}={forced})" if forced else f" (native bfloat16: {vgg.native_bfloat16()})"),
    ]


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A VGG19 (no top) Keras weights file with seeded random weights, loaded like real ones."""
    from worker.nst import vgg

    return vgg.save_random_weights(tmp_path_factory.mktemp("weights") / "vgg19_random.weights.h5", seed=1)


@pytest.fixture(scope="session")
def engine(weights_file: str) -> Any:
    from worker.nst.engine import Engine

    return Engine(weights=weights_file)


@pytest.fixture
def content() -> np.ndarray:
    return random_rgb(48, 64, seed=1)


@pytest.fixture
def style() -> np.ndarray:
    return random_rgb(40, 40, seed=2)


# -- real services: redis-server, SeaweedFS S3, and `celery worker` processes ------------------


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A real redis-server and a real SeaweedFS S3 server on free ports, for the whole session."""
    from producer.devstack import RedisServer, SeaweedS3

    base = tmp_path_factory.mktemp("services")
    redis = RedisServer(base / "redis").start()
    s3 = SeaweedS3(base / "s3", buckets=BUCKETS).start()
    yield redis, s3
    s3.stop()
    redis.stop()


@pytest.fixture(scope="session")
def stack_env(services: tuple[Any, Any], weights_file: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the worker and client processes; the weights come from the store."""
    from producer.core.digest import sha256_file
    from producer.devstack import DEV_KEY, free_port

    redis, s3 = services
    s3.client().upload_file(weights_file, "models", "vgg19/random.weights.h5")
    env = {
        "STYLEQUEUE_BROKER_URL": redis.url,
        "STYLEQUEUE_S3_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": DEV_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_KEY,
        "STYLEQUEUE_INPUT_BUCKETS": "inputs",
        "STYLEQUEUE_OUTPUT_BUCKETS": "outputs",
        "STYLEQUEUE_WEIGHTS": WEIGHTS_URI,
        "STYLEQUEUE_WEIGHTS_SHA256": sha256_file(weights_file),
        "STYLEQUEUE_WEIGHTS_CACHE_DIR": str(tmp_path_factory.mktemp("weights-cache")),
        "STYLEQUEUE_PROGRESS_INTERVAL_S": "0",
        "STYLEQUEUE_RETRY_FOR_S": "20",
        "STYLEQUEUE_RETRY_BACKOFF_MAX_S": "2",
        "STYLEQUEUE_METRICS_PORT": str(free_port()),
        "STYLEQUEUE_HEALTH_DIR": str(tmp_path_factory.mktemp("health")),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    # The test process is a client too: boto3 reads the credentials from the environment.
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    return env


@pytest.fixture(scope="session")
def client(stack_env: dict[str, str]) -> Any:
    from producer.client import Client
    from producer.core.settings import Settings

    return Client(Settings.from_env(stack_env))


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = WorkerProcess(stack_env, tmp_path_factory.mktemp("worker") / "worker.log")
    w.wait_ready(client.app)
    yield w
    w.stop()


@pytest.fixture(scope="session")
def store(stack_env: dict[str, str]) -> Any:
    from producer.core.settings import Settings
    from producer.storage import Store

    return Store(Settings.from_env(stack_env))


@pytest.fixture(scope="session")
def redis_client(stack_env: dict[str, str]) -> Any:
    """The session's broker Redis."""
    from producer import broker

    return broker.connect(stack_env["STYLEQUEUE_BROKER_URL"])


@pytest.fixture(scope="session")
def inputs(store: Any) -> dict[str, str]:
    """Images (and non-images) uploaded to the inputs bucket: name -> s3 URI."""
    from producer.core.contract import ObjectRef

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


@pytest.fixture(scope="session")
def unit_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A redis-server for unit tests of the Redis scripts (separate from the stack's)."""
    from producer.devstack import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("unit-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(unit_redis_server: Any) -> Any:
    """A client of an empty database of the unit-test redis-server."""
    from producer import broker

    r = broker.connect(unit_redis_server.url)
    r.flushdb()
    return r
