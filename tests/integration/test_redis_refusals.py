"""Redis refusing writes for a while, by real means: a primary turned replica (``READONLY``, as
during a failover) and a full Redis under ``noeviction`` (``OOM``). Both are transient: the client
says so within its budget (``BrokerUnavailable``, nothing queued) and works once Redis takes writes
again; the retry loops of workers treat them the same way (``producer.broker.errors``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import broker
from producer.broker.queues import depth
from producer.client import Client
from producer.core.errors import BrokerUnavailable
from producer.core.settings import Settings
from producer.devstack import RedisServer

C, S, OUT = "s3://photos/c.png", "s3://photos/s.png", "s3://results/out/"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary, other = RedisServer(tmp_path / "a").start(), RedisServer(tmp_path / "b").start()
    yield primary, other
    other.stop()
    primary.stop()


def test_readonly_and_oom_are_transient_for_the_client(servers: tuple[RedisServer, RedisServer]) -> None:
    server, other = servers
    admin = broker.connect(server.url)
    client = Client(Settings(broker_url=server.url, queue="refusals"), timeout_s=1.0)

    admin.execute_command("REPLICAOF", "127.0.0.1", str(other.port))  # now a read-only replica
    with pytest.raises(BrokerUnavailable, match="ReadOnlyError"):
        client.submit(C, S, OUT)
    admin.execute_command("REPLICAOF", "NO", "ONE")
    assert client.submit(C, S, OUT).status() == "PENDING"

    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # full: every write is refused with OOM
    with pytest.raises(BrokerUnavailable, match="OutOfMemoryError"):
        client.submit(C, S, OUT)
    admin.config_set("maxmemory", "0")
    client.submit(C, S, OUT)
    assert depth(admin, "refusals").total == 2  # exactly the two that were accepted
