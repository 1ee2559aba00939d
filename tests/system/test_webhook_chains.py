"""Each webhook event is delivered by one chain of attempts, whatever else consumes the same Redis
and however long the receiver is down: the sequence that multiplied retries (issue 16, point 1;
before the fix, the first test saw 7 attempts of one event, two of them at the same instant).

Real processes: a redis-server of the test's own, ``stylequeue notifier``, a second Celery consumer
on the same Redis whose visibility timeout (2 s) is shorter than the waits between attempts, and a
receiver that is not ours and fails the first attempts of each event.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.processes import ServiceProcess
from support.waiting import wait_for
from support.webhooks import WebhookReceiver

from producer import broker
from producer.broker import keys, wire
from producer.broker.events import WEBHOOK_TASK, Delivery
from producer.devstack import RedisServer, stop_group
from producer.tenants import Tenant, hash_key
from producer.webhooks import new_secret

pytestmark = pytest.mark.slow

SECRET = new_secret()
QUEUE = "stylequeue-webhooks-chains"
BACKOFF_S = 2.0  # waits of 2, 4, 8, 16 s between attempts: longer than the bystander's 2 s and its restores


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver({"acme": SECRET})
    yield r
    r.stop()


def notifier_env(redis_url: str, **extra: str) -> dict[str, str]:
    """A notifier on the test's Redis, signing for tenant acme, allowed to call the local receiver."""
    tenant = Tenant("acme", hash_key("sq_chains"), ("inputs/acme/",), ("outputs/acme/",), webhook_secret=SECRET)
    return {
        "STYLEQUEUE_BROKER_URL": redis_url,
        "STYLEQUEUE_WEBHOOK_QUEUE": QUEUE,
        "STYLEQUEUE_API_KEYS_FILE": "",
        "STYLEQUEUE_API_KEYS": json.dumps({"keys": [tenant.to_dict()]}),
        "STYLEQUEUE_WEBHOOK_ALLOW_HTTP": "1",
        "STYLEQUEUE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
        **extra,
    }


@pytest.fixture
def notifier(redis_server: RedisServer, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = notifier_env(
        redis_server.url,
        STYLEQUEUE_WEBHOOK_BACKOFF_S=str(BACKOFF_S),
        STYLEQUEUE_WEBHOOK_RETRY_FOR_S="120",
        STYLEQUEUE_WEBHOOK_TIMEOUT_S="2",
    )
    proc = ServiceProcess(["notifier", "-c", "4", "-n", "chains@%h"], env, tmp_path / "notifier.log")
    wait_for(lambda: proc.alive() and "ready" in proc.log(), 60, "the notifier to start")
    yield proc
    proc.stop()


@pytest.fixture
def bystander(redis_server: RedisServer, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(tmp_path / "bystander.log", "wb")  # noqa: SIM115 - closed below
    env = {
        **os.environ,
        "BYSTANDER_BROKER_URL": redis_server.url,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "support.bystander", "worker", "-c", "1", "-l", "INFO", "-n", "by@%h"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(lambda: b"ready" in (tmp_path / "bystander.log").read_bytes(), 60, "the bystander to start")
    yield proc
    stop_group(proc, 20)
    log.close()


def send(redis: Any, delivery: Delivery) -> None:
    """Queue a delivery's message as the events publisher does (one copy per call)."""
    e = wire.envelope(
        f"webhook-{delivery.event_id}-{uuid.uuid4().hex[:8]}", delivery.to_dict(), QUEUE, 0, task=WEBHOOK_TASK
    )
    redis.lpush(e.list_name, e.payload)


def delivery(receiver: WebhookReceiver, path: str) -> Delivery:
    event = f"evt-{uuid.uuid4().hex[:12]}"
    body = json.dumps({"id": event, "type": "job.completed", "data": {"id": "acme.job"}})
    return Delivery(event, receiver.url(path), "acme", "acme.job", body, time.time())


def test_a_receiver_down_longer_than_a_neighbours_visibility_timeout_gets_one_chain(
    redis_server, receiver, notifier, bystander
) -> None:
    redis = broker.connect(redis_server.url)
    failing = 4  # attempts refused: down for 2 + 4 + 8 + 16 = 30 s, 15x the bystander's timeout
    events = [delivery(receiver, f"/flaky/{failing}") for _ in range(3)]
    for d in events:
        send(redis, d)
    send(redis, events[0])  # a second copy of one event's message: still one chain
    wait_for(lambda: all(d.event_id in receiver.processed for d in events), 90, "every event delivered")
    time.sleep(1.2 * BACKOFF_S * 2 ** (failing - 1))  # what a copied chain would still send afterwards
    for d in events:
        times = [a["at"] for a in receiver.attempts if a["id"] == d.event_id]
        assert len(times) == failing + 1, (d.event_id, times)  # one chain: N refusals, then the delivery
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(gap >= 0.8 * BACKOFF_S * 2**i for i, gap in enumerate(gaps)), gaps  # never two at once
    assert receiver.bad_signatures == 0
    assert redis.zcard(keys.WEBHOOKS_DUE) == 0 and redis.hlen(keys.WEBHOOKS_PENDING) == 0
    counts = {k.decode(): int(v) for k, v in redis.hgetall(keys.WEBHOOKS).items()}
    assert counts == {"delivered": 3, "attempts_failed": 3 * failing}, counts


def test_a_late_copy_of_a_delivered_event_starts_nothing(redis_server, receiver, notifier) -> None:
    redis = broker.connect(redis_server.url)
    d = delivery(receiver, "/ok")
    send(redis, d)
    wait_for(lambda: d.event_id in receiver.processed, 60, "the delivery")
    send(redis, d)  # kombu's restore, or a second publish, long after
    marker = delivery(receiver, "/ok")
    send(redis, marker)
    wait_for(lambda: marker.event_id in receiver.processed, 60, "a later event, delivered after the copy")
    time.sleep(1)
    assert receiver.tries(d.event_id) == 1


def test_a_claim_holds_the_event_until_it_expires_then_another_notifier_delivers_it(
    redis_server, receiver, notifier
) -> None:
    """The claim is a lease: the state a notifier killed mid-attempt leaves (a claim that nobody
    ends) keeps every notifier off the event until it expires, then one delivers it, once; the
    dead claimer's late word (its token) changes nothing."""
    from producer import notifier as module

    redis = broker.connect(redis_server.url)
    d = delivery(receiver, "/ok")
    assert module.schedule(redis, d, at=time.time() + 3600)  # not due: the running notifier leaves it
    claim = module.scripts.load("producer.broker", "webhook_claim")
    held_s = 6.0
    claimed_at = time.time()
    got = claim(
        redis,
        3,
        keys.WEBHOOKS_DUE,
        keys.WEBHOOKS_PENDING,
        keys.WEBHOOKS_CLAIMS,
        claimed_at + 3601,
        claimed_at + held_s,
        10,
        "dead",
    )
    assert got[0].decode() == d.event_id  # claimed by a "notifier" that will never end it
    wait_for(lambda: d.event_id in receiver.processed, 60, "a notifier to deliver it once the claim expired")
    first = next(a["at"] for a in receiver.attempts if a["id"] == d.event_id)
    assert first >= claimed_at + held_s - 0.5  # nobody touched it while the claim held
    end = module.scripts.load("producer.broker", "webhook_end")
    done = keys.WEBHOOK_DONE.format(d.event_id)
    assert not end(
        redis, 4, keys.WEBHOOKS_DUE, keys.WEBHOOKS_PENDING, done, keys.WEBHOOKS_CLAIMS, d.event_id, "failed", 60, "dead"
    )
    assert receiver.tries(d.event_id) == 1 and redis.get(done) == b"delivered"


def test_the_dispatcher_goes_on_after_redis_restarts(tmp_path, receiver) -> None:
    """Redis (append-only) restarts under a running notifier: it goes on claiming and delivering."""
    server = RedisServer(tmp_path / "redis-aof", appendonly=True).start()
    proc = ServiceProcess(["notifier", "-c", "2", "-n", "restart@%h"], notifier_env(server.url), tmp_path / "r.log")
    try:
        wait_for(lambda: proc.alive() and "ready" in proc.log(), 60, "the notifier to start")
        before = delivery(receiver, "/ok")
        send(broker.connect(server.url), before)
        wait_for(lambda: before.event_id in receiver.processed, 60, "a delivery before the restart")
        server.stop()
        time.sleep(3)  # the dispatcher's claims fail meanwhile
        server.start()
        after = delivery(receiver, "/ok")
        send(broker.connect(server.url), after)
        wait_for(lambda: after.event_id in receiver.processed, 60, "a delivery after the restart")
        assert receiver.tries(before.event_id) == 1 and receiver.tries(after.event_id) == 1
    finally:
        proc.stop()
        server.stop()


def test_a_tenant_added_to_the_keys_file_later_gets_its_webhooks_signed(redis_server, tmp_path) -> None:
    """The notifier reads the keys file again when it changes: a new tenant's secret signs at once."""
    first = Tenant("acme", hash_key("sq_a"), ("inputs/acme/",), ("outputs/acme/",), webhook_secret=SECRET)
    later_secret = new_secret()
    later = Tenant(
        "initech", hash_key("sq_i"), ("inputs/initech/",), ("outputs/initech/",), webhook_secret=later_secret
    )
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [first.to_dict()]}))
    receiver = WebhookReceiver({"initech": later_secret})
    env = notifier_env(redis_server.url, STYLEQUEUE_API_KEYS_FILE=str(path), STYLEQUEUE_API_KEYS="")
    proc = ServiceProcess(["notifier", "-c", "2", "-n", "keys@%h"], env, tmp_path / "keys-notifier.log")
    try:
        wait_for(lambda: proc.alive() and "ready" in proc.log(), 60, "the notifier to start")
        path.write_text(json.dumps({"keys": [first.to_dict(), later.to_dict()]}))  # after it started
        time.sleep(1.5)  # past the reload check
        event = f"evt-{uuid.uuid4().hex[:12]}"
        body = json.dumps({"id": event, "type": "job.completed", "data": {"id": "initech.job"}})
        send(
            broker.connect(redis_server.url),
            Delivery(event, receiver.url("/ok"), "initech", "initech.job", body, time.time()),
        )
        wait_for(lambda: event in receiver.processed, 60, "the new tenant's webhook, signed with its secret")
        assert receiver.processed[event]["signer"] == "initech" and receiver.bad_signatures == 0
    finally:
        proc.stop()
        receiver.stop()
