"""The HTTP API, from outside: a real ``stylequeue api`` server on a loopback port, a real HTTP
client (httpx, and curl), real redis-server, SeaweedFS, worker and notifier processes, and a real
webhook receiver that checks signatures itself and fails the first attempts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.images import png_bytes, random_rgb
from support.metrics import sample
from support.processes import CLI, ServiceProcess, start_api
from support.waiting import wait_for
from support.webhooks import WebhookReceiver

from producer.core.contract import ObjectRef
from producer.devstack import RedisServer, free_port

pytestmark = pytest.mark.slow

TENANTS = {
    # name: (inputs, outputs, extra `keys create` flags)
    "acme": ("inputs/acme/", "outputs/acme/", ["--max-priority", "2", "--rate", "500", "--burst", "1000"]),
    "globex": ("inputs/globex/", "outputs/globex/", ["--rate", "500", "--burst", "1000"]),
    "tiny": ("inputs/tiny/", "outputs/tiny/", ["--rate", "0.5", "--burst", "2", "--max-in-flight", "2"]),
}
MAX_BODY = 4_000_000
C, S = "s3://inputs/acme/content.png", "s3://inputs/acme/style.jpg"


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Keys made with the real `stylequeue keys create --add-to FILE`: name -> {key, secret}; and the file."""
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    made: dict[str, Any] = {"_file": str(path)}
    for name, (read, write, flags) in TENANTS.items():
        out = subprocess.run(
            [
                *CLI,
                "keys",
                "create",
                "--tenant",
                name,
                "--input",
                read,
                "--output",
                write,
                *flags,
                "--add-to",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        key, entry = out.split("\n", 1)
        made[name] = {"key": key.strip(), "secret": json.loads(entry)["webhook_secret"]}
    assert all(made[n]["key"] not in path.read_text() for n in TENANTS)  # only hashes are kept
    return made


@pytest.fixture(scope="module")
def api_env(stack_env: dict[str, str], tenants: dict[str, Any]) -> dict[str, str]:
    return {
        **stack_env,
        "STYLEQUEUE_API_KEYS_FILE": tenants["_file"],
        "STYLEQUEUE_WEBHOOK_ALLOW_HTTP": "1",
        "STYLEQUEUE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",  # the receiver; other private ones stay refused
        "STYLEQUEUE_WEBHOOK_BACKOFF_S": "0.2",
        "STYLEQUEUE_WEBHOOK_RETRY_FOR_S": "5",
        "STYLEQUEUE_API_MAX_BODY_BYTES": str(MAX_BODY),
        "STYLEQUEUE_METRICS_PORT": "0",
    }


@pytest.fixture(scope="module")
def api(api_env: dict[str, str], worker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_api(api_env, tmp_path_factory.mktemp("api") / "api.log")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def notifier(api_env: dict[str, str], client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    proc = ServiceProcess(
        ["notifier", "-c", "4", "-n", "notifier-test@%h"], api_env, tmp_path_factory.mktemp("n") / "n.log"
    )
    wait_for(
        lambda: (
            proc.alive() and any("notifier-test" in k for r in client.app.control.ping(timeout=1.0) or [] for k in r)
        ),
        90,
        "the notifier to answer a ping",
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def receiver(tenants: dict[str, Any]) -> Iterator[WebhookReceiver]:
    r = WebhookReceiver({name: tenants[name]["secret"] for name in TENANTS})
    yield r
    r.stop()


@pytest.fixture(scope="module")
def images(store: Any) -> None:
    for tenant in ("acme", "globex"):
        store.put(ObjectRef("inputs", f"{tenant}/content.png"), png_bytes(random_rgb(40, 48, 1)), "image/png")
        store.put(
            ObjectRef("inputs", f"{tenant}/style.jpg"), png_bytes(random_rgb(32, 32, 2), fmt="JPEG"), "image/jpeg"
        )


def http(base: str, tenants: dict[str, Any], tenant: str | None = "acme") -> httpx.Client:
    headers = {"Authorization": f"Bearer {tenants[tenant]['key']}"} if tenant else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def job(tenant: str = "acme", iterations: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "content": f"s3://inputs/{tenant}/content.png",
        "style": f"s3://inputs/{tenant}/style.jpg",
        "output": f"s3://outputs/{tenant}/",
        "params": {"size": 32, "iterations": iterations},
        **extra,
    }


def until(c: httpx.Client, job_id: str, *states: str, timeout_s: float = 120) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = c.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        return body if body["state"] in states else None

    try:
        return wait_for(reached, timeout_s, f"job {job_id} in {states}")
    except TimeoutError:
        raise AssertionError(c.get(f"/v1/jobs/{job_id}").text) from None


def queued(redis_client: Any) -> int:
    """Messages waiting in every stylequeue priority list."""
    return sum(redis_client.llen(k) for k in redis_client.keys("stylequeue*") if redis_client.type(k) == b"list")


# -- endpoints ----------------------------------------------------------------------------------


def test_submit_poll_fetch_with_signed_retried_webhooks_once_per_event(
    api, tenants, images, notifier, receiver, redis_client
) -> None:
    redis_client.xgroup_create("stylequeue:events", "test-reader", id="$", mkstream=True)
    with http(api, tenants) as c:
        r = c.post(
            "/v1/jobs",
            json=job(
                iterations=20, webhook=receiver.url("/flaky/2"), webhook_events=["started", "progress", "completed"]
            ),
        )
        assert r.status_code == 202, r.text
        body = r.json()
        # The resource as it is when the response is written: an idle worker may have taken it already.
        assert r.headers["location"] == f"/v1/jobs/{body['id']}" and body["state"] in ("PENDING", "STARTED", "PROGRESS")
        assert body["id"].startswith("acme.") and body["created_at"].endswith("Z")
        done = until(c, body["id"], "SUCCESS")
        assert done["result"]["iterations"] == 20 and done["result"]["output"].startswith("s3://outputs/acme/")
        assert done["started_at"] and done["finished_at"] and done["error"] is None
        image = httpx.get(done["output_url"], timeout=30)  # presigned: no credentials
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

        got = wait_for(lambda: (e := receiver.events(body["id"])) and "job.completed" in e and e, 60, "the webhook")
        assert got["job.completed"]["data"]["state"] == "SUCCESS" and got["job.completed"]["signer"] == "acme"
        assert got["job.completed"]["data"]["result"]["output"] == done["result"]["output"]
        assert "job.started" in got and "job.progress" in got
        assert list(receiver.completions(body["id"]).values()) == [3]  # two refused, the third taken: retried
        assert receiver.bad_signatures == 0
        record = wait_for(lambda: (j := c.get(f"/v1/jobs/{body['id']}").json())["webhook"]["delivered"] >= 3 and j, 30)
        assert record["webhook"]["failed"] == 0

    # the same changes, on the stream any language reads with a consumer group
    entries = redis_client.xreadgroup("test-reader", "me", {"stylequeue:events": ">"}, count=1000)[0][1]
    types = [f[b"type"].decode() for _, f in entries if f[b"job_id"].decode() == body["id"]]
    assert types[0] == "job.queued" and "job.started" in types and types[-1] == "job.completed"


def test_a_webhook_that_never_succeeds_is_recorded_as_failed(api, tenants, images, notifier, receiver) -> None:
    with http(api, tenants) as c:
        job_id = c.post("/v1/jobs", json=job(webhook=receiver.url("/down"))).json()["id"]
        until(c, job_id, "SUCCESS")
        failed = wait_for(lambda: (w := c.get(f"/v1/jobs/{job_id}").json()["webhook"])["failed"] and w, 60, "give up")
        assert failed["delivered"] == 0 and failed["last_error"] == "HTTP 500"
        assert [n >= 3 for n in receiver.completions(job_id).values()] == [True]
        assert sample(c.get("/metrics").text, "stylequeue_webhooks_failed_total") >= 1


def test_idempotency_key_and_client_job_id_return_the_same_job(api, tenants, images, redis_client) -> None:
    with http(api, tenants) as c:
        key = uuid.uuid4().hex
        first = c.post("/v1/jobs", json=job(), headers={"Idempotency-Key": key})
        again = c.post("/v1/jobs", json=job(), headers={"Idempotency-Key": key})
        assert first.status_code == 202 and again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true" and again.json()["id"] == first.json()["id"]
        mine = f"order-{uuid.uuid4().hex[:8]}"
        a = c.post("/v1/jobs", json=job(job_id=mine))
        b = c.post("/v1/jobs", json=job(job_id=mine))
        assert a.json()["id"] == b.json()["id"] == f"acme.{mine}" and b.status_code == 200
        for job_id in (first.json()["id"], a.json()["id"]):
            until(c, job_id, "SUCCESS")
        listed = [j["id"] for j in c.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]]
        assert listed.count(first.json()["id"]) == 1 and listed.count(f"acme.{mine}") == 1


def test_a_retry_after_the_claim_expired_or_a_replica_crashed_never_queues_twice(
    api, tenants, images, redis_client
) -> None:
    """The job's record (kept for the result expiry) answers a retry, not the request's claim: a
    claim gone (expired) replays the job; a claim left by a crashed replica answers 409 for at
    most a minute (``CLAIM_TTL_S``), with Retry-After, and is never a day-long lock."""
    from producer.api.submission import CLAIM_TTL_S
    from producer.broker import keys

    with http(api, tenants) as c:
        mine = f"order-{uuid.uuid4().hex[:8]}"
        first = c.post("/v1/jobs", json=job(job_id=mine))
        until(c, first.json()["id"], "SUCCESS")
        for claim in redis_client.scan_iter(f"stylequeue:idem:acme:*{mine}"):
            redis_client.delete(claim)  # the claim expired; the record stays
        again = c.post("/v1/jobs", json=job(job_id=mine))
        assert again.status_code == 200 and again.json()["state"] == "SUCCESS"
        # not queued again: it would be back among the tenant's jobs in flight (a slot leaked for good)
        assert redis_client.zscore(keys.TENANT_INFLIGHT.format("acme"), first.json()["id"]) is None

        crashed = f"order-{uuid.uuid4().hex[:8]}"
        redis_client.set(keys.IDEMPOTENCY.format("acme", f"acme.{crashed}"), "1", ex=CLAIM_TTL_S)
        busy = c.post("/v1/jobs", json=job(job_id=crashed))
        assert busy.status_code == 409 and busy.headers["retry-after"] == "5" and CLAIM_TTL_S <= 60
        assert 0 < redis_client.ttl(keys.IDEMPOTENCY.format("acme", f"acme.{crashed}")) <= 60


def test_cancel_returns_the_state_after_the_request(api, tenants, images) -> None:
    with http(api, tenants) as c:
        running = c.post("/v1/jobs", json=job(iterations=2000)).json()["id"]
        until(c, running, "PROGRESS")
        after = c.post(f"/v1/jobs/{running}/cancel").json()
        assert after["cancel_requested"] and after["state"] in ("PROGRESS", "REVOKED")
        ended = until(c, running, "REVOKED")
        assert ended["error"]["type"] == "JobCancelled" and ended["output_url"] is None
        # one queued behind nothing it can overtake: lowest priority while the worker is busy
        busy = c.post("/v1/jobs", json=job(iterations=2000)).json()["id"]
        until(c, busy, "PROGRESS")
        waiting = c.post("/v1/jobs", json=job(priority=9)).json()["id"]
        now = c.post(f"/v1/jobs/{waiting}/cancel").json()
        assert now["state"] == "REVOKED"  # not started: ended by the request itself
        c.post(f"/v1/jobs/{busy}/cancel")
        until(c, busy, "REVOKED")
        assert c.get(f"/v1/jobs/{waiting}").json()["started_at"] is None


def test_list_pages_through_every_job_once_and_filters(api, tenants, images) -> None:
    with http(api, tenants, "globex") as c:
        missing = {**job("globex"), "content": "s3://inputs/globex/no-such.png"}
        ids = [c.post("/v1/jobs", json=missing).json()["id"] for _ in range(5)]
        for job_id in ids:
            until(c, job_id, "FAILURE")
        seen, cursor = [], None
        while True:
            page = c.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) and set(ids) <= set(seen)
        failed = c.get("/v1/jobs", params={"state": "FAILURE"}).json()["jobs"]
        assert set(ids) <= {j["id"] for j in failed} and all(j["state"] == "FAILURE" for j in failed)
        assert c.get(f"/v1/jobs/{ids[0]}").json()["error"]["type"] == "ObjectNotFound"
        assert c.get("/v1/jobs", params={"state": "SLEEPING"}).status_code == 422


def test_batch_counts_by_state_and_calls_its_webhook_once_all_ended(api, tenants, images, notifier, receiver) -> None:
    with http(api, tenants) as c:
        bad = {**job(), "content": "s3://inputs/acme/no-such.png"}
        r = c.post("/v1/batches", json={"jobs": [job(), bad, bad], "webhook": receiver.url("/ok")})
        assert r.status_code == 202, r.text
        batch = r.json()
        assert batch["total"] == 3 and len(batch["jobs"]) == 3 and r.headers["location"] == f"/v1/batches/{batch['id']}"
        ended = wait_for(lambda: (b := c.get(f"/v1/batches/{batch['id']}").json())["ended"] and b, 120, "the batch")
        assert ended["counts"] == {"PENDING": 0, "STARTED": 0, "SUCCESS": 1, "FAILURE": 2, "REVOKED": 0}
        listed = c.get("/v1/jobs", params={"batch": batch["id"]}).json()["jobs"]
        assert sorted(j["id"] for j in listed) == sorted(batch["jobs"])
        done = wait_for(lambda: receiver.events(batch["id"]).get("batch.completed"), 60, "the batch webhook")
        assert done["data"]["counts"] == {"SUCCESS": 1, "FAILURE": 2, "REVOKED": 0}
        assert list(receiver.completions(batch["id"]).values()) == [1]


def test_uploads_give_presigned_puts_a_client_without_s3_credentials_can_use(api, tenants) -> None:
    with http(api, tenants) as c:
        r = c.post(
            "/v1/uploads",
            json={
                "files": [
                    {"name": "my photo.png", "content_type": "image/png"},
                    {"name": "art.png", "content_type": "image/png"},
                ]
            },
        )
        assert r.status_code == 200, r.text
        uploads = r.json()["uploads"]
        assert all(u["uri"].startswith("s3://inputs/acme/uploads/") for u in uploads)
        for u, seed in zip(uploads, (1, 2)):
            put = httpx.put(u["url"], content=png_bytes(random_rgb(32, 32, seed)), headers=u["headers"], timeout=30)
            assert put.status_code == 200, put.text
        submitted = c.post("/v1/jobs", json={**job(), "content": uploads[0]["uri"], "style": uploads[1]["uri"]})
        until(c, submitted.json()["id"], "SUCCESS")
        assert (
            c.post(
                "/v1/uploads", json={"files": [{"name": "x.exe", "content_type": "application/x-msdownload"}]}
            ).status_code
            == 422
        )


def test_health_readiness_metrics_and_openapi(api, tenants) -> None:
    with http(api, tenants) as c:
        assert c.get("/healthz").json() == {"ok": True}
        assert c.get("/readyz").json() == {"ok": True, "problems": []}
        c.get("/v1/jobs/acme.nope")
        text = c.get("/metrics").text
        assert sample(text, "stylequeue_api_requests_total", route="/v1/jobs/{job_id}", method="GET", status="404") >= 1
        assert "stylequeue_api_request_seconds_bucket" in text
        spec = c.get("/openapi.json").json()
        assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/batches", "/v1/uploads"} <= set(
            spec["paths"]
        )
        schema = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert "iterations" in schema["properties"]["params"]["properties"] and "webhook" in schema["properties"]
        assert "swagger" in c.get("/docs").text.lower()


# -- keys and tenants ---------------------------------------------------------------------------


def test_no_key_or_a_wrong_key_is_401(api, tenants) -> None:
    with http(api, tenants, None) as c:
        r = c.post("/v1/jobs", json=job())
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer sq_not-a-key"}).status_code == 401


def test_the_keys_file_is_reloaded_revoked_keys_stop_new_ones_start(api_env, worker, tmp_path) -> None:
    """Ops edit the keys file of a running API: no restart. A broken edit keeps the keys in force."""
    path = tmp_path / "keys.json"

    def create(name: str) -> str:
        flags = ["--tenant", name, "--input", f"inputs/{name}/", "--output", f"outputs/{name}/", "--add-to", str(path)]
        out = subprocess.run(
            [*CLI, "keys", "create", *flags],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split("\n", 1)[0].strip()

    keep, gone = create("keep"), create("gone")
    port = free_port()
    server = start_api({**api_env, "STYLEQUEUE_API_KEYS_FILE": str(path)}, tmp_path / "api.log", port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:

            def status(key: str) -> int:
                return c.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code

            assert status(keep) == 200 and status(gone) == 200
            document = json.loads(path.read_text())
            document["keys"] = [e for e in document["keys"] if e["tenant"] != "gone"]
            path.write_text(json.dumps(document))
            wait_for(lambda: status(gone) == 401, 10, "the revoked key refused")
            late = create("late")
            wait_for(lambda: status(late) == 200, 10, "the new tenant's key accepted")
            path.write_text("{not json")
            time.sleep(2)  # past the reload check: the broken file is refused, the keys in force stay
            assert status(keep) == 200 and status(late) == 200 and status(gone) == 401
            assert "not valid; the keys in force stay" in server.log()
    finally:
        server.stop()


def test_outside_the_tenants_buckets_or_priority_is_403(api, tenants, redis_client) -> None:
    before = queued(redis_client)
    with http(api, tenants) as c:
        for body, field in [
            ({**job(), "content": "s3://inputs/globex/content.png"}, "content"),
            ({**job(), "output": "s3://outputs/globex/"}, "output"),
            ({**job(), "style": ["s3://inputs/acme/style.jpg", "s3://inputs/other/x.png"]}, "style[1]"),
            (job(priority=1), "priority"),  # acme may use 2 to 9
        ]:
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 403 and r.json()["error"]["field"] == field, r.text
    assert queued(redis_client) == before


def test_a_tenant_cannot_see_cancel_or_list_another_tenants_jobs(api, tenants, images) -> None:
    with http(api, tenants, "acme") as acme, http(api, tenants, "globex") as globex:
        job_id = acme.post("/v1/jobs", json=job(iterations=3)).json()["id"]
        batch = acme.post("/v1/batches", json={"jobs": [job()]}).json()["id"]
        assert globex.get(f"/v1/jobs/{job_id}").status_code == 404
        assert globex.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
        assert globex.get(f"/v1/batches/{batch}").status_code == 404
        assert globex.get("/v1/jobs", params={"batch": batch}).status_code == 404
        assert job_id not in {j["id"] for j in globex.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]}
        assert until(acme, job_id, "SUCCESS")["cancel_requested"] is False


def test_over_the_rate_or_the_in_flight_cap_is_429_with_retry_after(api, tenants, redis_client) -> None:
    before = queued(redis_client)
    with http(api, tenants, "tiny") as c:
        tiny = {
            **job(),
            "content": "s3://inputs/tiny/c.png",
            "style": "s3://inputs/tiny/s.png",
            "output": "s3://outputs/tiny/",
        }
        over = c.post("/v1/batches", json={"jobs": [tiny] * 3})  # in flight: at most 2
        assert over.status_code == 429 and over.json()["error"]["type"] == "TooManyInFlight"
        statuses = [c.get("/v1/jobs").status_code for _ in range(3)]  # burst 2, 0.5/s
        assert 429 in statuses
        limited = c.get("/v1/jobs")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert queued(redis_client) == before


# -- bad input: the whole 4xx matrix runs in process (tests/unit/test_api_validation.py) -----


def test_redis_down_is_503_with_retry_after(api_env, tenants, tmp_path) -> None:
    """Its own API and redis-server, and that Redis stopped for real."""
    redis = RedisServer(tmp_path / "redis").start()
    port = free_port()
    server = start_api({**api_env, "STYLEQUEUE_BROKER_URL": redis.url}, tmp_path / "api.log", port)
    headers = {"Authorization": f"Bearer {tenants['acme']['key']}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
            assert c.post("/v1/jobs", json=job()).status_code == 202
            redis.stop()
            for r in (c.post("/v1/jobs", json=job()), c.post("/v1/batches", json={"jobs": [job()] * 3})):
                assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
                assert r.json()["error"]["type"] == "BrokerUnavailable"
            assert c.get("/readyz").status_code == 503
    finally:
        server.stop()
        redis.stop()


# -- any language: curl only --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_whole_job_driven_with_curl_only(api, tenants, images, tmp_path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(
        """set -eu
auth="Authorization: Bearer $KEY"
created=$(curl -sS -X POST "$API/v1/jobs" -H "$auth" -H 'Content-Type: application/json' -d '{
  "content": "s3://inputs/acme/content.png", "style": "s3://inputs/acme/style.jpg",
  "output": "s3://outputs/acme/", "params": {"size": 32, "iterations": 3}}')
id=$(printf '%s' "$created" | sed -n 's/.*"id":"\\([^"]*\\)".*/\\1/p')
for i in $(seq 1 240); do
  job=$(curl -sS "$API/v1/jobs/$id" -H "$auth")
  case "$job" in *'"state":"SUCCESS"'*) break ;; *'"state":"FAILURE"'*) echo "$job"; exit 1 ;; esac
  sleep 0.5
done
url=$(printf '%s' "$job" | sed -n 's/.*"output_url":"\\([^"]*\\)".*/\\1/p')
curl -sS -o "$OUT" "$url"
echo "$id"
"""
    )
    out = tmp_path / "result.png"
    done = subprocess.run(
        ["sh", str(script)],
        env={"PATH": os.environ["PATH"], "API": api, "KEY": tenants["acme"]["key"], "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().startswith("acme.") and out.read_bytes().startswith(b"\x89PNG")


def _readme_block(marker: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "http-api.md").read_text()
    after = text.split(f"<!-- {marker} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_readmes_verification_snippets_accept_real_deliveries_and_refuse_forged_ones(
    api, tenants, images, notifier, receiver, tmp_path
) -> None:
    with http(api, tenants) as c:
        job_id = c.post("/v1/jobs", json=job(webhook=receiver.url("/ok"))).json()["id"]
    headers, body = wait_for(
        lambda: next(
            ((h, b) for h, b in list(receiver.raw) if h["webhook-id"].startswith(f"{job_id}.completed.")), None
        ),
        120,
        "the delivery",
    )
    headers = {k.lower(): v for k, v in headers.items()}
    secret = tenants["acme"]["secret"]
    namespace: dict[str, Any] = {}
    exec(_readme_block("verify-python"), namespace)
    assert namespace["verify"](secret, headers, body)
    assert not namespace["verify"](secret, headers, body.replace(b"SUCCESS", b"FAILURE"))
    assert not namespace["verify"](tenants["globex"]["secret"], headers, body)

    script = tmp_path / "verify.sh"
    script.write_text("set -eu\n" + _readme_block("verify-openssl"))
    (tmp_path / "body.json").write_bytes(body)

    def openssl(secret: str, signature: str) -> int:
        env = {
            "PATH": os.environ["PATH"],
            "SECRET": secret,
            "ID": headers["webhook-id"],
            "TS": headers["webhook-timestamp"],
            "SIG": signature,
        }
        return subprocess.run(["sh", str(script)], cwd=tmp_path, env=env, capture_output=True, timeout=30).returncode

    assert openssl(secret, headers["webhook-signature"]) == 0
    assert openssl(tenants["globex"]["secret"], headers["webhook-signature"]) != 0
