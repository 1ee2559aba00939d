"""Podman and podman-compose as the container tests drive them (tests/containers): the images this
machine can build without a registry, and a compose project reached from the host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.images import png_bytes, random_rgb
from support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "containers"
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
JOB = {"content": "s3://stylequeue/inputs/content.png", "style": "s3://stylequeue/inputs/style.png"}


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


def build_images(scratch: Path) -> dict[str, float]:
    """Every image the stacks use: the base from debootstrap, the rest with podman build; seconds each.
    The bases are kept if present; the project's own images are always rebuilt (they are under test)."""
    seconds: dict[str, float] = {}
    if not has_image(IMAGES["debian"]):
        rootfs = scratch / "rootfs"
        rootfs.mkdir()
        started = time.monotonic()
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"], timeout=1200)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["podman", "import", "-", IMAGES["debian"]], stdin=tar.stdout)
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        seconds["debian"] = time.monotonic() - started
    if not has_image(PYTHON_BASE):
        context = scratch / "python-base"
        context.mkdir()
        shutil.copy(HERE / "python.Dockerfile", context / "Dockerfile")
        host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
        (context / "ca-certificates.crt").write_bytes(host_ca.read_bytes() if host_ca.exists() else b"")
        seconds["python"] = build(PYTHON_BASE, context / "Dockerfile", context)
    for name in ("redis", "seaweedfs", "flower"):
        if not has_image(IMAGES[name]):
            seconds[name] = build(IMAGES[name], HERE / f"{name}.Dockerfile", HERE)
    base = ("--build-arg", f"BASE_IMAGE={PYTHON_BASE}")
    seconds["worker"] = build(IMAGES["worker"], ROOT / "worker" / "Dockerfile", ROOT, *base)
    seconds["api"] = build(IMAGES["api"], ROOT / "producer" / "Dockerfile", ROOT, *base)
    return seconds


def ip_of(name: str) -> str:
    out = podman("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name).stdout.split()
    assert out, f"{name} has no IP"
    return out[0]


def healthy(name: str) -> bool:
    """Run the container's own health check now (podman has no systemd timer here to run it)."""
    return podman("healthcheck", "run", name, check=False, timeout=120).returncode == 0


def buckets_exist(store: Any, *names: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        for name in names:
            store.client.head_bucket(Bucket=name)
    except ClientError:
        return False
    return True


class Stack:
    """One compose project (docker-compose.yml plus ``files``, cpu profile), as a user on the host
    reaches it."""

    def __init__(self, project: str, files: list[Path], env: dict[str, str]) -> None:
        self.project = project
        self.files = files
        self.env = env

    def compose(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        argv = [str(Path(os.environ.get("VENV", ROOT / ".venv")) / "bin" / "podman-compose"), "-p", self.project]
        for path in [ROOT / "docker-compose.yml", *self.files]:
            argv += ["-f", str(path)]
        argv += ["--profile", "cpu", *args]
        return run(argv, timeout=timeout, cwd=ROOT, env={**os.environ, **self.env})

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.project}_{service}_{index}"

    def log(self, service: str, tail: int = 80) -> str:
        out = podman("logs", "--tail", str(tail), self.container(service), check=False)
        return (out.stdout + out.stderr)[-6000:]

    def wait_for_service(self, service: str, check: Any, timeout_s: float, what: str) -> Any:
        """Wait for ``check()``; if it never holds, fail naming the service, with its log."""
        try:
            return wait_for(check, timeout_s, what)
        except TimeoutError:
            pytest.fail(
                f"service {service!r}: {what} not reached within {timeout_s:.0f} s; its log:\n{self.log(service)}"
            )

    def settings(self, broker_url: str) -> Any:
        from producer.core.settings import Settings

        return Settings(
            broker_url=broker_url,
            s3_endpoint_url="http://127.0.0.1:8333",
            input_buckets=("stylequeue",),
            output_buckets=("stylequeue/results/",),
        )

    def store(self) -> Any:
        from producer.storage import Store

        return Store(self.settings("redis://unused:6379/0"))

    def workers(self) -> list[str]:
        names = podman("ps", "--format", "{{.Names}}", "--filter", f"name={self.project}_worker-cpu").stdout.split()
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

    def remove(self) -> None:
        """``compose down -v``, then whatever it leaves: podman-compose does not remove the replicas a
        ``--scale`` added, nor the volumes they still hold."""
        self.compose("down", "-v", "-t", "30", timeout=600)
        label = f"label=com.docker.compose.project={self.project}"
        left = podman("ps", "-aq", "--filter", label).stdout.split()
        if left:  # --depend: a replica still depends on redis and seaweedfs
            podman("rm", "-f", "--depend", "-t", "5", *left, timeout=300)
        volumes = podman("volume", "ls", "-q", "--filter", f"name={self.project}_").stdout.split()
        if volumes:
            podman("volume", "rm", "-f", *volumes)

    def print_logs(self) -> None:
        names = podman("ps", "-a", "--format", "{{.Names}}", "--filter", f"name={self.project}", check=False)
        for name in names.stdout.split():
            print(f"\n--- {name} ---\n" + podman("logs", "--tail", "40", name, check=False).stdout[-4000:])

    def seed_store(self, weights_file: str) -> None:
        """The test's weights and two tiny images, uploaded from the host once SeaweedFS is healthy."""
        from producer.core.contract import ObjectRef

        self.wait_for_service("seaweedfs", lambda: healthy(self.container("seaweedfs")), 180, "healthy")
        store = self.store()
        self.wait_for_service(
            "seaweedfs", lambda: buckets_exist(store, "models", "stylequeue"), 120, "the buckets weed mini creates"
        )
        store.upload_file(weights_file, ObjectRef("models", "vgg19/test.weights.h5"))
        for name, seed in (("content.png", 1), ("style.png", 2)):
            store.put(ObjectRef("stylequeue", f"inputs/{name}"), png_bytes(random_rgb(48, 64, seed)), "image/png")


def compose_env(weights_file: str) -> dict[str, str]:
    """What compose.override.yml reads from the environment: the weights' digest and the API's keys."""
    from producer.core.digest import sha256_file
    from producer.tenants import hash_key

    entry = {
        "tenant": "ops",
        "key_sha256": hash_key(API_KEY),
        "input": ["stylequeue"],
        "output": ["stylequeue/results/"],
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID=ENV_FILE["AWS_ACCESS_KEY_ID"], AWS_SECRET_ACCESS_KEY=ENV_FILE["AWS_SECRET_ACCESS_KEY"]
    )
    return {
        "STYLEQUEUE_TEST_WEIGHTS_SHA256": sha256_file(weights_file),
        "STYLEQUEUE_TEST_API_KEYS": json.dumps({"keys": [entry]}),
    }


@contextmanager
def project(stack: Stack) -> Iterator[Stack]:
    """A clean project for the test module: a previous run's leftovers removed first, and the
    containers' logs printed and everything removed at the end."""
    stack.remove()
    try:
        yield stack
    finally:
        stack.print_logs()
        stack.remove()
