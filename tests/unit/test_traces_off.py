"""Traces cost nothing when off, and their settings: each check in a fresh interpreter (``enabled()`` is
read once per process), against a real redis-server where messages are written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support.otlp import OtlpReceiver

from producer.broker import wire

# Records every import statement naming ``opentelemetry`` in stylequeue's own code (the caller of
# ``__import__``), whether the module is loaded already or not: third-party libraries import it by
# themselves (FastAPI always; redis-py 8 whenever the SDK is installed), stylequeue must not when
# traces are off.
_WATCH = """
import builtins, os, sys
ours = tuple(os.path.join(os.getcwd(), d) + os.sep for d in ("producer", "worker"))
imported_by_us = []
_import = builtins.__import__
def watch(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] == "opentelemetry":
        caller = sys._getframe(1).f_code.co_filename
        if caller.startswith(ours):
            imported_by_us.append((name, caller))
    return _import(name, globals, locals, fromlist, level)
builtins.__import__ = watch
"""


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", _WATCH + code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )


def test_off_no_stylequeue_code_imports_opentelemetry_and_no_message_carries_a_trace(unit_redis_server) -> None:
    """Every path that traces when on, run with no endpoint: the API app, a publish, a job's end
    webhook, a deferred copy, the notifier's schedule and POST, the worker's signal module."""
    code = f"""
import importlib, json, pkgutil, time, threading
import producer, worker.signals, worker.runtime
from producer import broker, tracing
for m in pkgutil.walk_packages(producer.__path__, "producer."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
for name in ("worker.app", "worker.signals.traces", "worker.runtime.recovery"):
    importlib.import_module(name)
from producer.api.app import create_app
from producer.broker.events import Announcer, Delivery, Event
from producer.client import Client
from producer.core.settings import Settings
from producer import notifier
from worker.runtime import recovery
from worker.signals import traces

settings = Settings.from_env({{"STYLEQUEUE_BROKER_URL": {unit_redis_server.url!r}, "STYLEQUEUE_QUEUE": "traces-off"}})
redis = broker.connect(settings.broker_url)
redis.flushdb()
create_app(settings)
traces.install(settings)
client = Client(settings)
client.submit("s3://inputs/a.png", "s3://inputs/b.png", "s3://outputs/", {{"size": 32, "iterations": 3}})
record = {{"webhook": "https://example.com/hook", "tenant": "acme"}}
hook = Announcer(redis, settings).webhook(Event("e1", "job.completed", "acme.j", {{}}, time.time()), record)
redis.lpush(hook.list_name, hook.payload)
recovery.step_aside(redis, "acme.j2", None, None, {{"job_id": "acme.j2"}}, "traces-off", 5, 60.0)
delivery = Delivery("e1", "https://example.com/hook", "acme", "acme.j", "{{}}", time.time())
notifier.schedule(redis, delivery, trace=tracing.headers())
notifier.post(delivery, "whsec_" + "A" * 32, 0.5, ["127.0.0.1"])  # nobody listens on 443 here
with tracing.span("anything", "client") as span:
    span.set("k", 1)
    span.fail("no")
with tracing.attached({{"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}}):
    pass

messages = [m for k in redis.keys("*") if redis.type(k) == b"list" for m in redis.lrange(k, 0, -1)]
assert len(messages) == 3, messages
assert not [m for m in messages if b"traceparent" in m], messages
assert b"trace" not in redis.hget("stylequeue:webhooks:pending", "e1")
assert tracing.headers() == {{}} and tracing.enabled() is False
loaded = [m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter",
                                                  "opentelemetry.instrumentation"))]
assert not loaded, loaded
if "opentelemetry.trace" in sys.modules:  # FastAPI's own import: still no provider of ours
    assert type(sys.modules["opentelemetry.trace"].get_tracer_provider()).__name__ == "ProxyTracerProvider"
assert not [t.name for t in threading.enumerate() if "Otel" in t.name or "BatchSpan" in t.name]
print(json.dumps(imported_by_us))
"""
    proc = run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_on_setup_names_the_service_and_a_span_gives_messages_its_context() -> None:
    code = """
from producer import tracing
from opentelemetry import trace
assert tracing.enabled() and tracing.setup(tracing.WORKER) and tracing.setup("another")  # once per process
assert trace.get_tracer_provider().resource.attributes["service.name"] == "stylequeue-worker"
assert tracing.headers() == {}  # outside any span: nothing to carry
with tracing.span("publish q", "producer") as span:
    carrier = tracing.headers()
    ids = trace.get_current_span().get_span_context()
assert carrier["traceparent"].startswith(f"00-{ids.trace_id:032x}-{ids.span_id:016x}-"), carrier
with tracing.attached(carrier), tracing.span("child"):
    assert trace.get_current_span().get_span_context().trace_id == ids.trace_id
assert any(f.endswith("tracing.py") for _, f in imported_by_us), imported_by_us  # the watch sees ours
print("ok")
"""
    otlp = OtlpReceiver()
    try:
        proc = run(code, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
        publish, child = otlp.find(name="publish q"), otlp.find(name="child")  # exported at exit
        assert len(publish) == len(child) == 1 and publish[0].service == "stylequeue-worker"
        assert (child[0].trace_id, child[0].parent_id) == (publish[0].trace_id, publish[0].span_id)
    finally:
        otlp.stop()
    named = run(
        "from producer import tracing\nfrom opentelemetry import trace\n"
        "tracing.setup(tracing.API)\nprint(trace.get_tracer_provider().resource.attributes['service.name'])",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_SERVICE_NAME="edge-api",
    )
    assert named.stdout.strip() == "edge-api", named.stderr[-3000:]


def test_settings_this_build_cannot_honour_leave_traces_off_and_say_so() -> None:
    code = """
import logging, sys
logging.basicConfig(level=logging.WARNING)
from producer import tracing
assert not tracing.enabled() and not tracing.setup(tracing.API)
assert "opentelemetry.sdk.trace" not in sys.modules
"""
    for env, said in (
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "only http/protobuf is supported"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "only http/protobuf is supported"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "only otlp is supported"),
        ({"OTEL_SDK_DISABLED": "true"}, ""),
        ({"OTEL_TRACES_EXPORTER": "none"}, ""),
    ):
        proc = run(code, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", **env)
        assert proc.returncode == 0, (env, proc.stderr[-3000:])
        assert said in proc.stderr and (said or "WARNING" not in proc.stderr), (env, proc.stderr)


def test_extra_headers_go_into_the_celery_headers_and_change_nothing_else() -> None:
    carrier = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "k=v"}
    plain = wire.envelope("job-1", {"job_id": "job-1"}, "stylequeue", 5)
    added = wire.with_headers(plain, carrier)
    built = wire.envelope("job-1", {"job_id": "job-1"}, "stylequeue", 5, headers=carrier)
    a, b, p = json.loads(added.payload), json.loads(built.payload), json.loads(plain.payload)
    for m in (a, b):
        assert {k: m["headers"][k] for k in carrier} == carrier
        m["properties"].pop("delivery_tag")
    p["properties"].pop("delivery_tag")
    assert a == b and {**a, "headers": {k: v for k, v in a["headers"].items() if k not in carrier}} == p
    assert wire.with_headers(plain, {}) is plain and added.message_bytes == plain.message_bytes
    assert list(a["headers"])[:2] == ["traceparent", "tracestate"]  # first: Celery's own win any clash
