"""Redis high availability in containers: docker-compose.yml with deploy/compose.ha.yml (a primary,
two replicas, three Sentinels, every service pointed at the Sentinels), run with Podman; the
primary's container SIGKILLed while a job runs and while more are submitted through the HTTP API.

The host reaches the API (published on :8000) and the store (:8333); Redis only for the test's
checks, at the promoted primary's container address. Images come from conftest.py, shared with
test_containers.py; compose.ha.override.yml swaps in the local Redis image.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from support.podman import API_KEY, HERE, JOB, ROOT, Stack, compose_env, healthy, ip_of, podman, project
from support.store import objects
from support.waiting import wait_for

from producer.broker.keys import EVENTS
from producer.core.states import FINAL_STATES

pytestmark = pytest.mark.containers

PROJECT = "stylequeue-ha-test"
FILES = [ROOT / "deploy" / "compose.ha.yml", HERE / "compose.override.yml", HERE / "compose.ha.override.yml"]
REDIS = ("redis", "redis-replica-1", "redis-replica-2")
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
ADDRESSES = {  # the Sentinels name servers by their fixed addresses (deploy/compose.ha.yml says why)
    ip: name
    for name, service in yaml.safe_load(FILES[0].read_text())["services"].items()
    if (ip := (service.get("networks") or {}).get("default", {}).get("ipv4_address"))
}


def api(method: str, path: str, body: dict[str, Any] | None = None, key: str | None = API_KEY) -> tuple[int, Any]:
    """(status, JSON body) of one HTTP request to the API container; (0, reason) if none came back."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:8000{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def ended(job_id: str, timeout_s: float = 600) -> dict[str, Any]:
    """The job's resource once it has ended, polled at the tenant's pace (its rate limit holds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, answer = api("GET", f"/v1/jobs/{job_id}")
        if status == 200 and answer["state"] in FINAL_STATES:
            return dict(answer)
        assert status in (200, 429), (status, answer)
        time.sleep(0.5)
    raise TimeoutError(f"{job_id} did not end within {timeout_s} s")


class HAStack(Stack):
    def role(self, service: str) -> str | None:
        """``master`` or ``slave`` as the server in ``service``'s container says; None if it is down."""
        out = podman("exec", self.container(service), "redis-cli", "role", check=False, timeout=30)
        return out.stdout.split("\n", 1)[0].strip() or None if out.returncode == 0 else None

    def primary(self) -> str | None:
        """The service whose server is the primary now, the Sentinels agreeing on it (None in the gap)."""
        masters = [s for s in REDIS if self.role(s) == "master"]
        named = {self.master_by(s) for s in SENTINELS}
        return masters[0] if len(masters) == 1 and named == {masters[0]} else None

    def master_by(self, sentinel: str) -> str | None:
        """The service ``sentinel`` names as the primary (from its address)."""
        cmd = ("redis-cli", "-p", "26379", "sentinel", "get-master-addr-by-name", "stylequeue")
        out = podman("exec", self.container(sentinel), *cmd, check=False, timeout=30).stdout.split()
        return ADDRESSES.get(out[0], out[0]) if out else None

    def sentinel_events(self) -> str:
        """Each Sentinel's log: what it saw and did (+sdown, +tilt, votes)."""
        return "\n".join(f"--- {s}\n{self.log(s, tail=60)}" for s in SENTINELS)

    def redis(self) -> Any:
        import redis

        service = self.primary()
        assert service, "no primary the Sentinels agree on"
        return redis.Redis(host=ip_of(self.container(service)), port=6379, socket_timeout=10)

    def worker_events(self, event: str, job_id: str) -> list[dict[str, Any]]:
        out = podman("logs", self.container("worker-cpu"), check=False)
        found = []
        for line in (out.stdout + out.stderr).splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event and record.get("job_id") == job_id:
                found.append(record)
        return found


@pytest.fixture(scope="module")
def ha(images: dict[str, float], weights_file: str) -> Iterator[HAStack]:
    with project(HAStack(PROJECT, FILES, compose_env(weights_file))) as s:
        s.compose("up", "-d", *REDIS, *SENTINELS, "seaweedfs")
        for service in (*REDIS, *SENTINELS):
            s.wait_for_service(service, lambda service=service: healthy(s.container(service)), 180, "healthy")
        s.wait_for_service("sentinel-1", lambda: s.primary() == "redis", 120, "the Sentinels agreeing on `redis`")
        s.seed_store(weights_file)
        s.compose("up", "-d", "worker-cpu", "api")
        s.wait_for_service("api", lambda: healthy(s.container("api")), 180, "healthy (/readyz through Sentinel)")
        s.wait_for_service("worker-cpu", lambda: healthy(s.container("worker-cpu")), 300, "healthy (a ping answered)")
        yield s


def test_the_primary_killed_mid_job_every_acknowledged_job_ends_once(ha: HAStack) -> None:
    params = {"size": 48, "iterations": 300, "init": "noise"}
    body = {**JOB, "output": "s3://stylequeue/results/", "params": params}
    queued = {**body, "params": {**params, "iterations": 20}}  # waits in the queue through the kill
    first = [api("POST", "/v1/jobs", b) for b in (body, queued)]
    assert all(status == 202 for status, _ in first), first
    acknowledged = [answer["id"] for _, answer in first]
    wait_for(lambda: ha.running(acknowledged[0]), 300, "the first job running")

    refused: list[str] = []
    unexpected: list[str] = []
    answered: list[tuple[float, int]] = []  # (when, /readyz's status)
    stop = threading.Event()

    def submit_through_the_gap() -> None:
        while not stop.is_set():
            status, answer = api("POST", "/v1/jobs", {**body, "params": {"size": 32, "iterations": 5}})
            if status == 202:
                acknowledged.append(answer["id"])
            elif status == 503 and answer["error"]["type"] == "BrokerUnavailable":
                refused.append(json.dumps(answer))
            else:  # checked below, in the test's own thread
                unexpected.append(f"{status} {answer}")
            stop.wait(1.5)

    def watch_readiness() -> None:
        while not stop.is_set():
            answered.append((time.monotonic(), api("GET", "/readyz", key=None)[0]))
            stop.wait(0.5)

    threads = [threading.Thread(target=f, daemon=True) for f in (submit_through_the_gap, watch_readiness)]
    for t in threads:
        t.start()
    assert ha.running(acknowledged[0]), "the job ran to its end before the kill: give it more iterations"
    killed_at, before_kill = time.monotonic(), len(acknowledged)
    podman("kill", "--signal", "KILL", ha.container("redis"))
    try:
        promoted = wait_for(lambda: (p := ha.primary()) not in (None, "redis") and p, 120, "a replica promoted")
    except TimeoutError:
        pytest.fail(f"no replica promoted within 120 s of the kill; the Sentinels' events:\n{ha.sentinel_events()}")
    if "+tilt" in (events := ha.sentinel_events()):  # a Sentinel stalled for over 2 s: reported, not failed
        print(f"\nSentinels in TILT mode during the failover:\n{events}")

    def readiness() -> list[int]:
        return [status for _, status in answered]

    wait_for(lambda: 503 in readiness() and readiness()[-2:] == [200, 200], 120, "/readyz back to 200")
    wait_for(lambda: len(acknowledged) >= before_kill + 3, 120, "submits acknowledged after the kill")
    stop.set()
    for t in threads:
        t.join()
    first_503 = next(t for t, status in answered if status == 503)
    back = next(t for t, status in answered if status == 200 and t > first_503)
    gap = f"503 {first_503 - killed_at:.1f} s after the kill, 200 after {back - killed_at:.1f} s"
    print(f"\n{promoted} promoted; /readyz {gap}")

    assert not unexpected, unexpected
    for job_id in acknowledged:
        assert ended(job_id)["state"] == "SUCCESS", job_id
    pngs = {o for o in objects(ha.store(), "stylequeue", "results/") if o.endswith(".png")}
    assert {f"results/{j}.png" for j in acknowledged} <= pngs
    assert len(pngs) - len(acknowledged) <= len(refused)  # a refused submit may still have run, once
    for job_id in acknowledged:  # none ran twice to completion
        done = ha.worker_events("job_done", job_id)
        assert len(done) <= 1 and done + ha.worker_events("output_adopted", job_id), job_id
    # the promoted primary has each job's end, once (it was on a replica before it was announced)
    ends = [f[b"job_id"].decode() for _, f in ha.redis().xrange(EVENTS) if f[b"type"] == b"job.completed"]
    assert sorted(j for j in ends if j in acknowledged) == sorted(acknowledged)
    for text in refused:
        assert "Redis" in text or "replica" in text, text
