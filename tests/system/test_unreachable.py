"""A client that cannot reach Redis says so within its budget, in one line, whatever the failure:
nothing listening on the port, or a ``redis-server`` that accepts and never answers (SIGSTOPped).

Real processes: the ``stylequeue`` command as a user runs it, the Python client in this process,
real ``redis-server``s. The budget is ``STYLEQUEUE_CLIENT_TIMEOUT_S`` (2 s here); the bounds
asserted are of the budget's order (startup included), not a speed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from support.processes import frozen, own_workers
from support.waiting import wait_for

from producer import broker
from producer.broker import keys
from producer.core.errors import BrokerUnavailable, PartialSubmit
from producer.devstack import RedisServer, free_port

pytestmark = pytest.mark.slow

BUDGET_S = 2.0
# Far below the minutes a library retry loop took, far above the budget: the CLI's start (~1 s) and
# at most one more socket timeout.
BOUND_S = 3 * BUDGET_S + 10
C, S = "s3://inputs/test/content.png", "s3://inputs/test/style.jpg"
COMMANDS = {
    "status": ["status", "some-job"],
    "wait": ["wait", "some-job", "--timeout", "60"],
    "cancel": ["cancel", "some-job"],
    "jobs": ["jobs"],
    "dead-list": ["dead", "list"],
    "dead-requeue": ["dead", "requeue", "some-job"],
    "queue": ["queue"],
    "submit": ["submit", C, S, "--output", "s3://outputs/unreachable/"],
}


def stylequeue(args: list[str], broker_url: str | None, timeout: float = 120) -> tuple[int, str, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEQUEUE_")}
    env["STYLEQUEUE_CLIENT_TIMEOUT_S"] = str(BUDGET_S)
    if broker_url is not None:
        env["STYLEQUEUE_BROKER_URL"] = broker_url
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "producer.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def assert_one_line_unreachable(rc: int, out: str, err: str, elapsed: float, url_shown: str) -> None:
    assert rc == 69, (rc, out, err)
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"stylequeue: error: cannot reach Redis at {url_shown} ") and "STYLEQUEUE_BROKER_URL" in err
    assert "Traceback" not in err and "Retrying" not in err
    assert elapsed < BOUND_S, f"{elapsed:.1f} s"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-unreachable"), password="hunter2").start()
    yield server
    server.stop()


@contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """The server SIGSTOPped: connections are accepted (by the kernel), nothing is answered."""
    assert server.proc is not None
    with frozen(server.proc.pid):
        yield


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_command_against_a_port_with_nothing_listening(command: list[str]) -> None:
    port = free_port()
    rc, out, err, elapsed = stylequeue(command, f"redis://:hunter2@127.0.0.1:{port}/0")
    assert_one_line_unreachable(rc, out, err, elapsed, f"redis://:**@127.0.0.1:{port}/0")
    assert "hunter2" not in err and "Connection refused" in err


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_command_against_a_stopped_server_then_again_once_it_is_back(
    command: list[str], redis_server: RedisServer
) -> None:
    with stopped(redis_server):
        rc, out, err, elapsed = stylequeue(command, redis_server.url)
    assert_one_line_unreachable(rc, out, err, elapsed, redis_server.url.replace("hunter2", "**"))
    assert "Timeout" in err
    rc, out, err, _ = stylequeue(command, redis_server.url)
    assert "cannot reach" not in err, err
    expected = {"status": 4, "wait": 4, "cancel": 4, "dead-requeue": 1}.get(COMMANDS_BY_ARGS[tuple(command)], 0)
    assert rc == expected, (rc, out, err)  # an unknown job is "no such job" (4), not "unreachable" (69)


COMMANDS_BY_ARGS = {tuple(v): k for k, v in COMMANDS.items()}


def test_the_hint_says_when_the_default_url_was_used() -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 6379)) == 0:
            pytest.skip("something listens on localhost:6379, the default")
    rc, out, err, elapsed = stylequeue(["status", "some-job"], None)
    assert_one_line_unreachable(rc, out, err, elapsed, "redis://localhost:6379/0")
    assert "STYLEQUEUE_BROKER_URL is not set, so the default was used" in err


def test_verbose_shows_the_traceback() -> None:
    rc, _, err, _ = stylequeue(["-v", "status", "some-job"], f"redis://127.0.0.1:{free_port()}/0")
    assert rc == 69 and "Traceback" in err and err.strip().splitlines()[-1].startswith("stylequeue: error: cannot")


def client_calls(client: Any) -> dict[str, Any]:
    job = client.job("some-job")
    return {
        "status": job.status,
        "progress": job.progress,
        "result": lambda: job.result(timeout=30),
        "wait": lambda: job.wait(timeout=30),
        "cancel": job.cancel,
        "error": job.error,
        "jobs": client.jobs,
        "dead_letters": client.dead_letters,
        "requeue_dead": lambda: client.requeue_dead("some-job"),
        "submit": lambda: client.submit(C, S, "s3://outputs/unreachable/"),
        "submit_many": lambda: client.submit_many([client.build(C, S, "s3://outputs/unreachable/")] * 3),
    }


@pytest.mark.parametrize("failure", ["nothing-listening", "stopped"])
def test_every_client_method_raises_broker_unavailable_within_the_budget(
    failure: str, redis_server: RedisServer
) -> None:
    from producer.client import Client
    from producer.core.settings import Settings

    url = f"redis://127.0.0.1:{free_port()}/0" if failure == "nothing-listening" else redis_server.url
    client = Client(Settings(broker_url=url), timeout_s=BUDGET_S)
    calls = client_calls(client)
    assert len(calls) == 11
    with stopped(redis_server) if failure == "stopped" else nullcontext():
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable) as caught:
                call()
            elapsed = time.monotonic() - started
            assert elapsed < 2 * BUDGET_S + 1, f"{name}: {elapsed:.1f} s"
            assert (
                caught.value.waited_s is not None
                and "127.0.0.1:" in caught.value.url
                and "hunter2" not in str(caught.value)
            )
            assert (name == "submit_many") == isinstance(caught.value, PartialSubmit), name
            if isinstance(caught.value, PartialSubmit):  # a stopped server may have the transaction
                outcome = caught.value.unknown if failure == "stopped" else caught.value.not_sent
                assert len(outcome) == 3 and not caught.value.sent


def test_the_budget_is_a_setting_and_an_argument() -> None:
    from producer.client import Client
    from producer.core.settings import Settings

    settings = Settings.from_env({"STYLEQUEUE_CLIENT_TIMEOUT_S": "1.5"})
    assert Client(settings).timeout_s == 1.5 and Client(settings, timeout_s=0.5).timeout_s == 0.5
    assert Client(Settings()).timeout_s == 5.0  # the default: at most 10 s, as documented
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        Client(Settings(broker_url=url), timeout_s=0.5).job("x").status()
    assert time.monotonic() - started < 3


def test_wait_waits_through_a_redis_restart_and_says_so(stack_env, inputs, services, tmp_path: Path) -> None:
    """``stylequeue wait`` on a running job while its Redis restarts (append-only file: nothing is
    lost): the progress line says Redis is unreachable, and the result comes once it is back.

    The job is running throughout, on any CPU: from its first progress until Redis is back the store
    is frozen (SIGSTOP), so the run waits in its next checkpoint write; then it goes on, and is
    cancelled a few iterations later, far from where L-BFGS would converge (hundreds of iterations).
    """
    _, s3 = services
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        env = {
            "STYLEQUEUE_BROKER_URL": server.url,
            "STYLEQUEUE_LEASE_TTL_S": "3",
            "STYLEQUEUE_SWEEP_INTERVAL_S": "1",
            "STYLEQUEUE_CHECKPOINT_EVERY_ITERATIONS": "5",
        }
        with own_workers(stack_env, tmp_path, "blip", **env) as (client, _):
            params = {"size": 48, "iterations": 2000, "init": "noise", "seed": 4}
            job = client.submit(C, S, "s3://outputs/blip/", params)
            wait_for(job.progress, 120, "the job's first progress")
            cli_env = {
                **stack_env,
                **env,
                "STYLEQUEUE_CLIENT_TIMEOUT_S": str(BUDGET_S),
                "STYLEQUEUE_QUEUE": "stylequeue-blip",
            }
            with frozen(s3.proc.pid):
                waiter = subprocess.Popen(
                    [sys.executable, "-m", "producer.cli", "wait", job.id, "--timeout", "240"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=cli_env,
                )
                channel = keys.CELERY_META.format(job.id)  # the waiter follows the job on its channel
                watcher = broker.connect(server.url)
                wait_for(lambda: watcher.pubsub_numsub(channel)[0][1] >= 1, 60, "the waiter to follow the job")
                server.stop()
                time.sleep(2 * BUDGET_S)  # down for longer than the client's budget
                server.start()
                at = job.progress().iteration
            wait_for(lambda: (p := job.progress()) is not None and p.iteration > at, 120, "progress after the restart")
            job.cancel()
            out, err = waiter.communicate(timeout=120)
            assert "Redis unreachable for" in err, err
            assert waiter.returncode == 1 and "JobCancelled" in err, (waiter.returncode, out, err)
    finally:
        server.stop()


def test_a_submitted_job_is_seen_after_the_server_comes_back(redis_server: RedisServer) -> None:
    from producer.client import Client
    from producer.core.settings import Settings

    client = Client(Settings(broker_url=redis_server.url, queue="unreachable-back"), timeout_s=BUDGET_S)
    with stopped(redis_server), pytest.raises(BrokerUnavailable):
        client.submit(C, S, "s3://outputs/unreachable/")
    job = client.submit(C, S, "s3://outputs/unreachable/")
    assert job.status() == "PENDING" and [j.job_id for j in client.jobs()][:1] == [job.id]
    assert json.loads(stylequeue(["status", job.id], redis_server.url)[1])["state"] == "PENDING"
