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
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.images import png_bytes, random_rgb
from support.metrics import sample
from support.waiting import wait_for

from producer.core.contract import ObjectRef

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PROJECT = "stylequeue-test"
PYTHON_BASE = "localhost/stylequeue-python:3.11"
IMAGES = {
    "debian": "localhost/stylequeue-debian:bookworm",
    "python": PYTHON_BASE,
    "redis": "localhost/stylequeue-test-redis:latest",
    "seaweedfs": "localhost/stylequeue-test-seaweedfs:latest",
    "flower": "localhost/stylequeue-test-flower:latest",
    "worker": "localhost/stylequeue-worker:cpu-test",
    "api": "localhost/stylequeue-api:test",
}
ENV_FILE = dict(
    line.split("=", 1)
    for line in (ROOT / "deploy" / "stylequeue.env").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
API_KEY = "sq_container-test-key"


def run(argv: list[str], timeout: float = 1800, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def podman(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], **kw)


def has_image(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def build(tag: str, dockerfile: Path, context: Path, *args: str) -> float:
    """Build with the recipe these machines need (host network for the package registries); seconds."""
    started = time.monotonic()
    podman("build", "--network", "host", "--format", "docker", "-f", str(dockerfile), "-t", tag, *args, str(context))
    return time.monotonic() - started


def container(service: str, index: int = 1) -> str:
    return f"{PROJECT}_{service}_{index}"


def ip_of(name: str) -> str:
    out = podman("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name).stdout.split()
    assert out, f"{name} has no IP"
    return out[0]


def healthy(name: str) -> bool:
    """Run the container's own health check now (podman has no systemd timer here to run it)."""
    return podman("healthcheck", "run", name, check=False, timeout=120).returncode == 0


def service_log(service: str, tail: int = 80) -> str:
    out = podman("logs", "--tail", str(tail), container(service), check=False)
    return (out.stdout + out.stderr)[-6000:]


def wait_for_service(service: str, check: Any, timeout_s: float, what: str) -> None:
    """Wait for ``check()``; if it never holds, fail naming the service, with its log."""
    try:
        wait_for(check, timeout_s, what)
    except TimeoutError:
        pytest.fail(
            f"service {service!r}: {what} not reached within {timeout_s:.0f} s; its log:\n{service_log(service)}"
        )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, float]]:
    """Every image, built once per run: base from debootstrap, the rest with podman build."""
    seconds: dict[str, float] = {}
    if not has_image(IMAGES["debian"]):
        rootfs = tmp_path_factory.mktemp("rootfs")
        started = time.monotonic()
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"], timeout=1200)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["podman", "import", "-", IMAGES["debian"]], stdin=tar.stdout)
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        seconds["debian"] = time.monotonic() - started
    if not has_image(PYTHON_BASE):
        context = tmp_path_factory.mktemp("python-base")
        shutil.copy(HERE / "python.Dockerfile", context / "Dockerfile")
        host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
        (context / "ca-certificates.crt").write_bytes(host_ca.read_bytes() if host_ca.exists() else b"")
        seconds["python"] = build(PYTHON_BASE, context / "Dockerfile", context)
    for name in ("redis", "seaweedfs", "flower"):
        if not has_image(IMAGES[name]):
            seconds[name] = build(IMAGES[name], HERE / f"{name}.Dockerfile", HERE)
    # The project's own images are always rebuilt: they are what is under test.
    seconds["worker"] = build(
        IMAGES["worker"], ROOT / "worker" / "Dockerfile", ROOT, "--build-arg", f"BASE_IMAGE={PYTHON_BASE}"
    )
    seconds["api"] = build(
        IMAGES["api"], ROOT / "producer" / "Dockerfile", ROOT, "--build-arg", f"BASE_IMAGE={PYTHON_BASE}"
    )
    print("\nbuild seconds:", json.dumps({k: round(v) for k, v in seconds.items()}))
    yield seconds
    if not os.environ.get("STYLEQUEUE_KEEP_IMAGES"):
        podman("rmi", "-f", *IMAGES.values(), check=False)


class Stack:
    """The running compose project, as a user on the host reaches it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def compose(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        argv = [
            str(Path(os.environ.get("VENV", ROOT / ".venv")) / "bin" / "podman-compose"),
            "-p",
            PROJECT,
            "-f",
            str(ROOT / "docker-compose.yml"),
            "-f",
            str(HERE / "compose.override.yml"),
            "--profile",
            "cpu",
            *args,
        ]
        return run(argv, timeout=timeout, cwd=ROOT, env={**os.environ, **self.env})

    @property
    def redis_url(self) -> str:
        return f"redis://{ip_of(container('redis'))}:6379/0"

    def settings(self) -> Any:
        from producer.core.settings import Settings

        return Settings(
            broker_url=self.redis_url,
            s3_endpoint_url="http://127.0.0.1:8333",
            input_buckets=("stylequeue",),
            output_buckets=("stylequeue/results/",),
        )

    def client(self) -> Any:
        from producer.client import Client

        return Client(self.settings())

    def store(self) -> Any:
        from producer.storage import Store

        return Store(self.settings())

    def workers(self) -> list[str]:
        names = podman("ps", "--format", "{{.Names}}", "--filter", f"name={PROJECT}_worker-cpu").stdout.split()
        return sorted(names)

    def running(self, job_id: str) -> str | None:
        """The worker container whose pool child runs ``job_id`` now (from its health files)."""
        for name in self.workers():
            script = 'for f in /tmp/stylequeue-health/child-*.json; do cat "$f"; echo; done 2>/dev/null'
            out = podman("exec", name, "sh", "-c", script, check=False).stdout
            for line in out.splitlines():
                try:
                    state = json.loads(line)
                except ValueError:
                    continue
                if state.get("job_id") == job_id:
                    return name
        return None


def remove_project(stack: Stack) -> None:
    """``compose down -v``, then whatever it leaves: podman-compose does not remove the replicas a
    ``--scale`` added, nor the volumes they still hold."""
    stack.compose("down", "-v", "-t", "30", timeout=600)
    label = f"label=com.docker.compose.project={PROJECT}"
    left = podman("ps", "-aq", "--filter", label).stdout.split()
    if left:  # --depend: a replica still depends on redis and seaweedfs
        podman("rm", "-f", "--depend", "-t", "5", *left, timeout=300)
    volumes = podman("volume", "ls", "-q", "--filter", f"name={PROJECT}_").stdout.split()
    if volumes:
        podman("volume", "rm", "-f", *volumes)


def buckets_exist(store: Any, *names: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        for name in names:
            store.client.head_bucket(Bucket=name)
    except ClientError:
        return False
    return True


@pytest.fixture(scope="module")
def stack(images: dict[str, float], weights_file: str) -> Iterator[Stack]:
    from producer.core.digest import sha256_file
    from producer.tenants import hash_key

    keys = {
        "keys": [
            {
                "tenant": "ops",
                "key_sha256": hash_key(API_KEY),
                "input": ["stylequeue"],
                "output": ["stylequeue/results/"],
            }
        ]
    }
    s = Stack(
        {"STYLEQUEUE_TEST_WEIGHTS_SHA256": sha256_file(weights_file), "STYLEQUEUE_TEST_API_KEYS": json.dumps(keys)}
    )
    os.environ.update(
        AWS_ACCESS_KEY_ID=ENV_FILE["AWS_ACCESS_KEY_ID"], AWS_SECRET_ACCESS_KEY=ENV_FILE["AWS_SECRET_ACCESS_KEY"]
    )
    remove_project(s)  # a previous run's leftovers
    try:
        s.compose("up", "-d", "redis", "seaweedfs")
        # Each service's own health check (the store's probes its S3 endpoint, what the workers use).
        for service in ("redis", "seaweedfs"):
            wait_for_service(service, lambda service=service: healthy(container(service)), 180, "healthy")
        store = s.store()
        wait_for_service(
            "seaweedfs", lambda: buckets_exist(store, "models", "stylequeue"), 120, "the buckets weed mini creates"
        )
        store.upload_file(weights_file, ObjectRef("models", "vgg19/test.weights.h5"))
        for name, seed in (("content.png", 1), ("style.png", 2)):
            store.put(ObjectRef("stylequeue", f"inputs/{name}"), png_bytes(random_rgb(48, 64, seed)), "image/png")
        s.compose("up", "-d", "worker-cpu", "flower", "api", "notifier")
        client = s.client()
        wait_for_service("worker-cpu", lambda: client.app.control.ping(timeout=1.0), 300, "an answer to a ping")
        wait_for_service("api", lambda: healthy(container("api")), 120, "healthy")
        yield s
    finally:
        for name in podman(
            "ps", "-a", "--format", "{{.Names}}", "--filter", f"name={PROJECT}", check=False
        ).stdout.split():
            print(f"\n--- {name} ---\n" + podman("logs", "--tail", "40", name, check=False).stdout[-4000:])
        remove_project(s)


JOB = {"content": "s3://stylequeue/inputs/content.png", "style": "s3://stylequeue/inputs/style.png"}


def test_images_run_as_non_root_with_their_health_check_and_their_size(stack: Stack, images: dict[str, float]) -> None:
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
    inspect = json.loads(podman("inspect", container("worker-cpu")).stdout)[0]
    assert inspect["Config"]["Cmd"][:2] == ["stylequeue", "worker"]


def test_a_job_through_the_containers_from_the_python_client_and_a_plain_celery_client(stack: Stack) -> None:
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


def test_the_http_api_container_takes_a_job(stack: Stack) -> None:
    body = json.dumps({**JOB, "output": "s3://stylequeue/results/", "params": {"size": 32, "iterations": 3}}).encode()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    request = urllib.request.Request("http://127.0.0.1:8000/v1/jobs", data=body, headers=headers, method="POST")
    job_id = wait_for(lambda: json.loads(urllib.request.urlopen(request, timeout=10).read())["id"], 120, "the API")

    def state() -> str | None:
        get = urllib.request.Request(f"http://127.0.0.1:8000/v1/jobs/{job_id}", headers=headers)
        s = json.loads(urllib.request.urlopen(get, timeout=10).read())["state"]
        return s if s in ("SUCCESS", "FAILURE") else None

    assert wait_for(state, 300, "the API job") == "SUCCESS"


def test_metrics_from_the_worker_containers_port(stack: Stack) -> None:
    stack.client().submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 32, "iterations": 2}).wait(
        timeout=300
    )
    urls = [f"http://{ip_of(name)}:9808/metrics" for name in stack.workers()]

    def succeeded() -> float:
        texts = [urllib.request.urlopen(url, timeout=10).read().decode() for url in urls]
        return sum(sample(t, "celery_task_succeeded_total") for t in texts if "celery_task_succeeded_total{" in t)

    assert wait_for(succeeded, 60, "a succeeded task counted on :9808") >= 1


def test_every_service_reports_healthy(stack: Stack) -> None:
    for service in ("redis", "seaweedfs", "worker-cpu", "api"):
        assert wait_for(lambda s=service: healthy(container(s)), 300, f"{service} healthy")
    status = podman("ps", "--format", "{{.Names}} {{.Status}}", "--filter", f"name={PROJECT}").stdout
    for service in ("redis", "seaweedfs", "worker-cpu", "api"):
        line = next(line for line in status.splitlines() if line.startswith(container(service)))
        assert "(healthy)" in line, status
    for service in ("redis", "seaweedfs", "worker-cpu", "api", "notifier", "flower"):  # none in a restart loop
        state = json.loads(podman("inspect", container(service)).stdout)[0]
        assert state["State"]["Running"] and state["RestartCount"] == 0, (service, state["State"])


def test_two_workers_run_two_jobs_at_once(stack: Stack) -> None:
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


def test_stop_during_a_job_finishes_it_and_exits_0(stack: Stack) -> None:
    client = stack.client()
    job = client.submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 48, "iterations": 150})
    name = wait_for(lambda: stack.running(job.id), 180, "the job running")
    podman("stop", "-t", "300", name, timeout=400)  # warm shutdown: the job first
    state = json.loads(podman("inspect", name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, state
    result = job.result(timeout=10)
    assert result.iterations == 150 and result.resumed_from == 0  # finished by the stopped worker itself
    stack.compose("up", "-d", "--scale", "worker-cpu=2", "worker-cpu")


def test_a_killed_worker_leaves_its_job_to_the_other(stack: Stack) -> None:
    client = stack.client()
    wait_for(lambda: len(client.app.control.ping(timeout=1.0) or []) >= 2, 300, "two workers")
    job = client.submit(JOB["content"], JOB["style"], "s3://stylequeue/results/", {"size": 48, "iterations": 300})
    name = wait_for(lambda: stack.running(job.id), 180, "the job running")
    wait_for(lambda: (p := job.progress()) is not None and p.iteration >= 20, 180, "a checkpoint")
    podman("kill", name)
    result = job.wait(timeout=600)
    assert result.iterations == 300 and result.resumed_from > 0  # resumed elsewhere from its checkpoint
    stack.compose("up", "-d", "--scale", "worker-cpu=2", "worker-cpu")


def test_a_worker_whose_child_is_stuck_reports_unhealthy(stack: Stack) -> None:
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
