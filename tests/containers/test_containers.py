"""The containers, built and run for real with Podman: the images from worker/Dockerfile and
producer/Dockerfile, the stack from docker-compose.yml (cpu profile), jobs through it from the
host, scaling, a warm stop, a kill, health checks.

Run with ``make test-containers`` (root, Debian; it installs podman and podman-compose). No image
registry is reachable here, so the base images are built from Debian's packages (debootstrap) and
pip wheels, and the upstream images of Redis, SeaweedFS and Flower are replaced by local
equivalents through compose.override.yml, next to this file. Everything is removed afterwards
(``STYLEQUEUE_KEEP_IMAGES=1`` keeps the images for a faster rerun).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.metrics import sample
from support.podman import (
    API_KEY,
    HERE,
    IMAGES,
    JOB,
    Stack,
    compose_env,
    healthy,
    ip_of,
    podman,
    project,
)
from support.waiting import wait_for

from producer.core.contract import ObjectRef

pytestmark = pytest.mark.containers

PROJECT = "stylequeue-test"


class PlainStack(Stack):
    """The plain stack: one Redis, reached from the host at its container's address."""

    @property
    def redis_url(self) -> str:
        return f"redis://{ip_of(self.container('redis'))}:6379/0"

    def client(self) -> Any:
        from producer.client import Client

        return Client(self.settings(self.redis_url))


@pytest.fixture(scope="module")
def stack(images: dict[str, float], weights_file: str) -> Iterator[PlainStack]:
    with project(PlainStack(PROJECT, [HERE / "compose.override.yml"], compose_env(weights_file))) as s:
        s.compose("up", "-d", "redis", "seaweedfs")
        s.wait_for_service("redis", lambda: healthy(s.container("redis")), 180, "healthy")
        s.seed_store(weights_file)
        s.compose("up", "-d", "worker-cpu", "flower", "api", "notifier")
        client = s.client()
        s.wait_for_service("worker-cpu", lambda: client.app.control.ping(timeout=1.0), 300, "an answer to a ping")
        s.wait_for_service("api", lambda: healthy(s.container("api")), 120, "healthy")
        yield s


def test_images_run_as_non_root_with_their_health_check_and_their_size(
    stack: PlainStack, images: dict[str, float]
) -> None:
    for key in ("worker", "api"):
        image = IMAGES[key]
        config = json.loads(podman("image", "inspect", image).stdout)[0]
        user = podman("run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
        assert user == "10001", f"{image} runs as {user}"
        print(f"\n{image}: {config['Size'] / 2**20:.0f} MiB, built in {images[key]:.0f} s")
    worker = json.loads(podman("image", "inspect", IMAGES["worker"]).stdout)[0]
    health = worker.get("Healthcheck") or worker.get("Config", {}).get("Healthcheck")
    assert health and health["Test"][-3:] == ["stylequeue", "health", "--ping"], health
    cmd = worker["Config"]["Cmd"]
    assert cmd == ["stylequeue", "worker"]
    # the compose command of the same service starts the same program
    inspect = json.loads(podman("inspect", stack.container("worker-cpu")).stdout)[0]
    assert inspect["Config"]["Cmd"][:2] == ["stylequeue", "worker"]


def test_a_job_through_the_containers_from_the_python_client_and_a_plain_celery_client(stack: PlainStack) -> None:
    from celery import Celery

    client = stack.client()
    job = client.submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 48, "iterations": 5})
    result = job.wait(timeout=300)
    assert stack.store().get(ObjectRef.parse(result.output, "output")).startswith(b"\x89PNG")

    plain = Celery(broker=stack.redis_url, backend=stack.redis_url)  # nothing of stylequeue: docs/contract.md
    job_id = uuid.uuid4().hex
    message = {**JOB, "output": "s3://stylequeue/results/", "params": {"size": 32, "iterations": 3}, "job_id": job_id}
    answer = plain.send_task("stylequeue.transfer", args=[message], task_id=job_id, queue="stylequeue").get(timeout=300)
    assert answer["output"] == f"s3://stylequeue/results/{job_id}.png"


def test_the_http_api_container_takes_a_job(stack: PlainStack) -> None:
    body = json.dumps({**JOB, "output": "s3://stylequeue/results/", "params": {"size": 32, "iterations": 3}}).encode()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    request = urllib.request.Request("http://127.0.0.1:8000/v1/jobs", data=body, headers=headers, method="POST")
    job_id = wait_for(lambda: json.loads(urllib.request.urlopen(request, timeout=10).read())["id"], 120, "the API")

    def state() -> str | None:
        get = urllib.request.Request(f"http://127.0.0.1:8000/v1/jobs/{job_id}", headers=headers)
        s = json.loads(urllib.request.urlopen(get, timeout=10).read())["state"]
        return s if s in ("SUCCESS", "FAILURE") else None

    assert wait_for(state, 300, "the API job") == "SUCCESS"
    # the playground's files are in the image (package data), served with their CSP
    with urllib.request.urlopen("http://127.0.0.1:8000/playground/playground.js", timeout=10) as r:
        assert r.status == 200 and "Content-Security-Policy" in r.headers and b"sessionStorage" in r.read()


def test_metrics_from_the_worker_containers_port(stack: PlainStack) -> None:
    stack.client().submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 32, "iterations": 2}).wait(
        timeout=300
    )
    urls = [f"http://{ip_of(name)}:9808/metrics" for name in stack.workers()]

    def succeeded() -> float:
        texts = [urllib.request.urlopen(url, timeout=10).read().decode() for url in urls]
        return sum(sample(t, "celery_task_succeeded_total") for t in texts if "celery_task_succeeded_total{" in t)

    assert wait_for(succeeded, 60, "a succeeded task counted on :9808") >= 1


def test_every_service_reports_healthy(stack: PlainStack) -> None:
    for service in ("redis", "seaweedfs", "worker-cpu", "api"):
        assert wait_for(lambda s=service: healthy(stack.container(s)), 300, f"{service} healthy")
    status = podman("ps", "--format", "{{.Names}} {{.Status}}", "--filter", f"name={PROJECT}").stdout
    for service in ("redis", "seaweedfs", "worker-cpu", "api"):
        line = next(line for line in status.splitlines() if line.startswith(stack.container(service)))
        assert "(healthy)" in line, status
    for service in ("redis", "seaweedfs", "worker-cpu", "api", "notifier", "flower"):  # none in a restart loop
        state = json.loads(podman("inspect", stack.container(service)).stdout)[0]
        assert state["State"]["Running"] and state["RestartCount"] == 0, (service, state["State"])


def test_two_workers_run_two_jobs_at_once(stack: PlainStack) -> None:
    stack.compose("up", "-d", "--scale", "worker-cpu=2", "worker-cpu")
    client = stack.client()
    wait_for(lambda: len(client.app.control.ping(timeout=1.0) or []) >= 2, 300, "two workers")
    jobs = [
        client.submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 48, "iterations": 150})
        for _ in range(2)
    ]
    where = wait_for(lambda: (w := [stack.running(j.id) for j in jobs]) and all(w) and w, 180, "both jobs running")
    assert len(set(where)) == 2  # one job in each container, at the same time
    for job in jobs:
        job.wait(timeout=600)


def test_stop_during_a_job_finishes_it_and_exits_0(stack: PlainStack) -> None:
    client = stack.client()
    job = client.submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 48, "iterations": 150})
    name = wait_for(lambda: stack.running(job.id), 180, "the job running")
    podman("stop", "-t", "300", name, timeout=400)  # warm shutdown: the job first
    state = json.loads(podman("inspect", name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, state
    result = job.result(timeout=10)
    assert result.iterations == 150 and result.resumed_from == 0  # finished by the stopped worker itself
    stack.compose("up", "-d", "--scale", "worker-cpu=2", "worker-cpu")


def test_a_killed_worker_leaves_its_job_to_the_other(stack: PlainStack) -> None:
    client = stack.client()
    wait_for(lambda: len(client.app.control.ping(timeout=1.0) or []) >= 2, 300, "two workers")
    job = client.submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 48, "iterations": 300})
    name = wait_for(lambda: stack.running(job.id), 180, "the job running")
    wait_for(lambda: (p := job.progress()) is not None and p.iteration >= 20, 180, "a checkpoint")
    podman("kill", name)
    result = job.wait(timeout=600)
    assert result.iterations == 300 and result.resumed_from > 0  # resumed elsewhere from its checkpoint
    stack.compose("up", "-d", "--scale", "worker-cpu=2", "worker-cpu")


def test_a_worker_whose_child_is_stuck_reports_unhealthy(stack: PlainStack) -> None:
    client = stack.client()
    job = client.submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 48, "iterations": 1000})
    name = wait_for(lambda: stack.running(job.id), 180, "the job running")
    assert healthy(name)
    state = podman(
        "exec", name, "sh", "-c", f"grep -l {job.id} /tmp/stylequeue-health/child-*.json | head -1 | xargs cat"
    )
    child = json.loads(state.stdout)["pid"]
    podman("exec", name, "sh", "-c", f"kill -STOP {child}")  # the pool child hangs; the parent still answers pings
    try:
        assert wait_for(lambda: not healthy(name), 120, "the health check to fail")

        def reported_unhealthy() -> bool:  # after the compose file's `retries` failed checks in a row
            healthy(name)
            return "unhealthy" in podman("ps", "--format", "{{.Status}}", "--filter", f"name={name}").stdout

        wait_for(reported_unhealthy, 300, "the container reported unhealthy")
    finally:
        podman("exec", name, "sh", "-c", f"kill -CONT {child}", check=False)
        client.job(job.id).cancel()
