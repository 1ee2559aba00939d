"""Traces across real processes: one trace from the API's request to the webhook's POST.

A real ``stylequeue api``, a real worker (prefork, one child), a real ``stylequeue notifier``,
redis-server, SeaweedFS and a webhook receiver that is not ours, all exporting to an OTLP/HTTP
receiver of the test's own (:mod:`support.otlp`, protobuf decoded with opentelemetry-proto).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.images import png_bytes, random_rgb
from support.otlp import OtlpReceiver, Span
from support.processes import ServiceProcess, own_workers, start_api
from support.waiting import wait_for
from support.webhooks import WebhookReceiver

from producer.core.contract import ObjectRef
from producer.tenants import Tenant, hash_key
from producer.webhooks import new_secret

pytestmark = pytest.mark.slow

API, WORKER, NOTIFIER = "stylequeue-api", "stylequeue-worker", "stylequeue-notifier"
NAME = "traces"
QUEUE = f"stylequeue-{NAME}"  # own_workers' queue
KEY = "sq_traces_test_key"
SECRET = new_secret()
CONTENT, STYLE = "s3://inputs/acme/traces-content.png", "s3://inputs/acme/traces-style.png"
PARAMS = {"size": 32, "iterations": 3}


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver({"acme": SECRET})
    yield r
    r.stop()


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str], otlp: OtlpReceiver) -> dict[str, str]:
    """Every process of the test: traces to the test's receiver, its own queues, tenant acme."""
    tenant = Tenant("acme", hash_key(KEY), ("inputs/acme/",), ("outputs/acme/",), webhook_secret=SECRET)
    return {
        **stack_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans leave within a fraction of a second
        "OTEL_SERVICE_NAME": "",  # each process's default name, whatever the machine's environment says
        "OTEL_RESOURCE_ATTRIBUTES": "",
        "STYLEQUEUE_QUEUE": QUEUE,
        "STYLEQUEUE_WEBHOOK_QUEUE": f"stylequeue-webhooks-{NAME}",
        "STYLEQUEUE_API_KEYS_FILE": "",
        "STYLEQUEUE_API_KEYS": json.dumps({"keys": [tenant.to_dict()]}),
        "STYLEQUEUE_WEBHOOK_ALLOW_HTTP": "1",
        "STYLEQUEUE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
        "STYLEQUEUE_WEBHOOK_BACKOFF_S": "0.2",
        "STYLEQUEUE_METRICS_PORT": "0",
    }


@pytest.fixture(scope="module")
def workers(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[Any]]]:
    with own_workers(env, tmp_path_factory.mktemp("traced-workers"), NAME) as (client, procs):
        yield client, procs


@pytest.fixture(scope="module")
def api(env: dict[str, str], workers: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_api(env, tmp_path_factory.mktemp("traced-api") / "api.log")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def notifier(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    log = tmp_path_factory.mktemp("traced-notifier") / "notifier.log"
    proc = ServiceProcess(["notifier", "-c", "2", "-n", "traces-notifier@%h"], env, log)
    wait_for(lambda: proc.alive() and "ready" in proc.log(), 60, "the notifier to start")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def images(store: Any) -> None:
    for uri, seed in ((CONTENT, 1), (STYLE, 2)):
        store.put(ObjectRef.parse(uri, "test"), png_bytes(random_rgb(32, 40, seed)), "image/png")


def one(spans: list[Span], what: str, **match: Any) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (what, found, sorted((s.service, s.name) for s in spans))
    return found[0]


def test_one_trace_from_the_api_request_to_the_webhook_post(api, notifier, receiver, otlp, images) -> None:
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
        r = c.post(
            "/v1/jobs",
            json={
                "content": CONTENT,
                "style": STYLE,
                "output": "s3://outputs/acme/",
                "params": PARAMS,
                "webhook": receiver.url("/flaky/1?token=s3cret"),  # refused once, then taken: two attempts
            },
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        done = wait_for(
            lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["state"] in ("SUCCESS", "FAILURE") and j, 180, "the job"
        )
        assert done["state"] == "SUCCESS", done
    wait_for(lambda: "job.completed" in receiver.events(job_id), 60, "the webhook")
    ((event_id, tries),) = receiver.completions(job_id).items()
    assert tries == 2

    def whole() -> list[Span] | None:
        posts = otlp.find(service=NOTIFIER, name="POST", attributes={"stylequeue.webhook.event_id": event_id})
        spans = otlp.trace(posts[0].trace_id) if len(posts) == tries else []
        have = {(s.service, s.name) for s in spans}
        wanted = {
            (API, "POST /v1/jobs"),
            (API, f"publish {QUEUE}"),
            (WORKER, "run/stylequeue.transfer"),
            (WORKER, "S3.GetObject"),
            (WORKER, "S3.PutObject"),
            (NOTIFIER, "run/stylequeue.webhook"),
            (NOTIFIER, "POST"),
        }
        return spans if wanted <= have else None

    spans = wait_for(whole, 60, "the job's spans from every process")
    assert {s.service for s in spans} == {API, WORKER, NOTIFIER}
    request = one(spans, "the request", service=API, name="POST /v1/jobs")
    publish = one(spans, "the publish", service=API, name=f"publish {QUEUE}")
    run = one(spans, "the task", service=WORKER, name="run/stylequeue.transfer")
    consumed = one(spans, "the webhook message", service=NOTIFIER, name="run/stylequeue.webhook")
    refused, post = sorted((s for s in spans if s.name == "POST"), key=lambda s: s.start_ns)
    reads = [s for s in spans if s.name == "S3.GetObject" and not s.error]  # (a missing checkpoint is a 404)
    writes = [s for s in spans if s.name == "S3.PutObject"]
    assert reads and writes and not any(s.error for s in writes)

    # one root, the API's request; every other span's parent is in the trace, and is the right one
    by_id = {s.span_id: s for s in spans}
    assert [s for s in spans if not s.parent_id] == [request]
    assert all(s.parent_id in by_id for s in spans if s is not request)
    assert publish.parent_id == request.span_id
    assert run.parent_id == publish.span_id  # the traceparent the publish wrote into the message
    assert all(s.parent_id == run.span_id for s in reads + writes)
    assert consumed.parent_id == run.span_id  # the end of the job wrote the context into the webhook's message
    assert refused.parent_id == post.parent_id == consumed.span_id  # kept with the event, for every attempt

    assert (request.kind, publish.kind, run.kind, consumed.kind, post.kind) == (
        "server",
        "producer",
        "consumer",
        "consumer",
        "client",
    )
    assert all(s.kind == "client" for s in reads + writes)
    assert publish.attributes["messaging.message.id"] == job_id == run.attributes["messaging.message.id"]
    assert run.attributes["celery.task_name"] == "stylequeue.transfer" and not run.error
    assert reads[0].attributes["rpc.service"] == "S3"
    assert (refused.attributes["http.response.status_code"], refused.error) == (503, True)
    assert (post.attributes["http.response.status_code"], post.error) == (200, False)
    assert post.attributes["stylequeue.job_id"] == job_id
    assert post.attributes["url.full"] == receiver.url("/flaky/1")  # no query: it may hold the tenant's token
    # in time: the publish inside the request, the S3 calls inside the task, each after its cause
    assert request.start_ns <= publish.start_ns <= publish.end_ns <= request.end_ns
    assert publish.start_ns <= run.start_ns
    assert all(run.start_ns <= s.start_ns <= s.end_ns <= run.end_ns for s in reads + writes)
    assert run.start_ns <= consumed.start_ns <= refused.start_ns < post.start_ns
    assert not otlp.refused


def test_a_plain_celery_clients_job_starts_a_trace_of_its_own_in_the_worker(
    workers, env: dict[str, str], otlp, images
) -> None:
    from celery import Celery

    client, _ = workers
    app = Celery(broker=env["STYLEQUEUE_BROKER_URL"])
    app.conf.broker_transport_options = {"priority_steps": list(range(10))}
    job_id = uuid.uuid4().hex
    job = {
        "version": 1,
        "job_id": job_id,
        "content": CONTENT,
        "style": STYLE,
        "output": "s3://outputs/acme/",
        "params": PARAMS,
    }
    app.send_task("stylequeue.transfer", args=[job], task_id=job_id, queue=QUEUE, priority=5)  # no traceparent
    assert client.job(job_id).wait(timeout=180).output.startswith("s3://outputs/acme/")

    def ran() -> Span | None:
        found = otlp.find(service=WORKER, name="run/stylequeue.transfer", attributes={"messaging.message.id": job_id})
        writes = found and [s for s in otlp.trace(found[0].trace_id) if s.name == "S3.PutObject"]
        return found[0] if writes else None

    run = wait_for(ran, 60, "the worker's spans of the plain client's job")
    assert run.parent_id == "" and run.kind == "consumer"  # a root: a trace of its own
    spans = otlp.trace(run.trace_id)
    assert {s.service for s in spans} == {WORKER}
    assert all(s.parent_id == run.span_id for s in spans if s.name.startswith("S3."))
    app.close()
