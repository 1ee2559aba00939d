"""Live progress over HTTP: ``GET /v1/jobs/{id}/events`` and ``GET /v1/events`` as Server-Sent
Events, from a real ``stylequeue api`` process and a real HTTP client, with the session's Redis,
SeaweedFS and worker running the jobs.

Where a test needs a job to wait (a stream opened while it is queued), the session worker is
frozen (SIGSTOP) while the job is submitted and thawed once the stream is open: the order of
events follows from that, not from how fast the CPU is.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.processes import cli, frozen, start_api
from support.sse import Listener, streams_open
from support.waiting import wait_for

pytestmark = pytest.mark.slow

C, S = "s3://inputs/test/content.png", "s3://inputs/test/style.jpg"
#: Tiny jobs, exact numbers (pinned precision): 20 iterations announce ten progress events.
PARAMS = {"size": 32, "iterations": 20, "precision": "float32"}
#: Streams a tenant may have open in the test's API process.
PER_TENANT = 3


@pytest.fixture(scope="module")
def keys(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two tenants made with the real ``stylequeue keys create``: name -> key; and the file."""
    path = tmp_path_factory.mktemp("stream-keys") / "keys.json"
    made: dict[str, Any] = {"_file": str(path)}
    for tenant in ("north", "south"):
        read = "inputs/test/" if tenant == "north" else f"inputs/{tenant}/"  # tenants' prefixes never overlap
        flags = ["--input", read, "--output", f"outputs/{tenant}/", "--rate", "500", "--burst", "1000"]
        out = cli("keys", "create", "--tenant", tenant, *flags, "--add-to", str(path), env=stack_env, timeout=60)
        assert out.returncode == 0, out.stderr
        made[tenant] = out.stdout.split("\n", 1)[0].strip()
    return made


@pytest.fixture(scope="module")
def api_env(stack_env: dict[str, str], keys: dict[str, Any]) -> dict[str, str]:
    return {
        **stack_env,
        "STYLEQUEUE_API_KEYS_FILE": keys["_file"],
        "STYLEQUEUE_API_STREAM_KEEPALIVE_S": "0.5",
        "STYLEQUEUE_API_MAX_STREAMS_PER_TENANT": str(PER_TENANT),
        "STYLEQUEUE_METRICS_PORT": "0",
    }


@pytest.fixture(scope="module")
def server(api_env: dict[str, str], worker: Any, inputs: Any, tmp_path_factory) -> Iterator[Any]:
    process = start_api(api_env, tmp_path_factory.mktemp("stream-api") / "api.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def api(server: Any) -> str:
    return str(server.url)


def http(api: str, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)


def submit(client: httpx.Client, tenant: str, params: dict[str, Any] = PARAMS) -> str:
    body = {"content": C, "style": S, "output": f"s3://outputs/{tenant}/", "params": params}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_a_tenants_stream_follows_a_job_live_from_queued_to_its_resource(api: str, keys: dict[str, Any]) -> None:
    with http(api, keys["north"]) as north:
        live = Listener(north, "/v1/events")  # open before the job exists: all of it arrives live
        assert live.status == 200 and live.headers is not None
        assert live.headers["content-type"].startswith("text/event-stream")
        assert live.next(comments=True).name == "retry"
        job_id = submit(north, "north")
        seen = [e for e in live.until("completed") if e.data["id"] == job_id]
        live.close()
    names = [e.name for e in seen]
    assert names[0] == "queued" and "started" in names and names[-1] == "completed", names
    progress = [e.data for e in seen if e.name == "progress"]
    assert progress and all(p["total"] == 20 for p in progress), names
    assert [p["iteration"] for p in progress] == sorted(p["iteration"] for p in progress)
    for field in ("iteration", "total", "loss", "level", "levels", "elapsed_s"):
        assert field in progress[-1], progress[-1]
    final = seen[-1].data  # the job resource, as GET /v1/jobs/{id} has it
    assert final["state"] == "SUCCESS" and final["result"]["iterations"] == 20 and final["output_url"]
    ids = [e.id for e in seen]
    assert all(ids) and len(set(ids)) == len(ids)


def test_a_jobs_stream_replays_resumes_after_last_event_id_and_closes(
    api: str, keys: dict[str, Any], worker: Any
) -> None:
    with http(api, keys["north"]) as north:
        with frozen(worker.proc.pid):  # the job stays queued until its stream is open
            job_id = submit(north, "north")
            first = Listener(north, f"/v1/jobs/{job_id}/events")
            assert first.next().name == "queued"  # replayed: it was queued before the stream opened
        events = first.until("completed")  # the rest, live
        assert first.next() is None  # the stream closed by itself after completed
        assert events[-1].data["state"] == "SUCCESS" and events[-1].data["id"] == job_id
        progress = [e for e in events if e.name == "progress"]
        assert len(progress) >= 2, [e.name for e in events]

        # resumed after the first progress event: only what followed it, the same ids
        resumed = Listener(north, f"/v1/jobs/{job_id}/events", {"Last-Event-ID": str(progress[0].id)})
        after = resumed.until("completed")
        following = events[events.index(progress[0]) + 1 :]
        assert [(e.id, e.name) for e in after] == [(e.id, e.name) for e in following]

        # ended already: its completed at once, and nothing else
        again = Listener(north, f"/v1/jobs/{job_id}/events")
        only = again.until("completed")
        assert [e.name for e in only] == ["completed"] and only[0].id == events[-1].id
        assert again.next() is None

        # at or after its completed event nothing follows: 204
        for last in (str(events[-1].id), f"{int(str(events[-1].id).split('-')[0]) + 1}-0"):
            assert north.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last}).status_code == 204
    wait_for(lambda: streams_open(api) == 0, 30, "every stream released")


def test_curl_follows_a_job_to_its_end_as_the_docs_show(api: str, keys: dict[str, Any]) -> None:
    """An outsider's client: `curl -N` (docs/http-api.md) reads the stream and exits by itself at
    the end, the last event the job resource."""
    with http(api, keys["north"]) as north:
        job_id = submit(north, "north", {**PARAMS, "iterations": 2})
    argv = ["curl", "-sS", "-N", "-H", f"Authorization: Bearer {keys['north']}", f"{api}/v1/jobs/{job_id}/events"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr  # the server closed the stream: curl ended on its own
    blocks = [b for b in out.stdout.split("\n\n") if b.startswith("id: ")]
    last = dict(line.split(": ", 1) for line in blocks[-1].splitlines())
    assert last["event"] == "completed" and json.loads(last["data"])["state"] == "SUCCESS", out.stdout


def test_streams_are_authenticated_isolated_bounded_and_kept_alive(api: str, keys: dict[str, Any]) -> None:
    with http(api, keys["north"]) as north, http(api, keys["south"]) as south, http(api, None) as anonymous:
        job_id = submit(north, "north", {**PARAMS, "iterations": 2})
        assert anonymous.get(f"/v1/jobs/{job_id}/events").status_code == 401
        assert anonymous.get("/v1/events").status_code == 401
        hidden = south.get(f"/v1/jobs/{job_id}/events")  # another tenant's job does not exist for it
        assert hidden.status_code == 404 and hidden.json()["error"]["type"] == "JobNotFound"
        for bad_id in ("yesterday", "99999999999999999999-0"):  # not an id; over Redis's 64 bits
            bad = north.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": bad_id})
            assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]["message"], bad.text

        quiet = Listener(south, "/v1/events")
        mine = Listener(north, "/v1/events")
        submit(north, "north", {**PARAMS, "iterations": 2})
        assert mine.until("completed")[-1].data["id"].startswith("north.")
        # south saw none of north's events in 3 s, only comments every 0.5 s
        seen = [quiet.next(timeout_s=10, comments=True) for _ in range(7)]
        assert all(e is not None and e.name in ("comment", "retry") for e in seen), seen
        assert any(e is not None and e.data == "keep-alive" for e in seen)
        mine.close()

        # at most PER_TENANT streams of a tenant at once in this process; closing one frees it
        more = [Listener(south, "/v1/events") for _ in range(PER_TENANT - 1)]
        over = south.get("/v1/events")
        assert over.status_code == 429 and over.json()["error"]["type"] == "TooManyStreams", over.text
        quiet.close()
        wait_for(lambda: streams_open(api) == PER_TENANT - 1, 30, "a closed stream released")
        again = Listener(south, "/v1/events")
        assert again.status == 200
        for listener in (*more, again):
            listener.close()
        wait_for(lambda: streams_open(api) == 0, 30, "every stream released")


def test_sigterm_ends_open_streams_at_once(api_env: dict[str, str], keys: dict[str, Any], tmp_path: Path) -> None:
    """The server waits for open responses before it stops: a stream must end when it is told to
    stop, not hold the process until uvicorn's graceful-shutdown timeout cancels it (which it
    logs)."""
    process = start_api(api_env, tmp_path / "api.log")
    with http(process.url, keys["north"]) as north:
        listeners = [Listener(north, "/v1/events") for _ in range(2)]
        for listener in listeners:
            assert listener.next(comments=True).name == "retry"
        process.proc.send_signal(signal.SIGTERM)
        for listener in listeners:
            while (e := listener.next(timeout_s=60, comments=True)) is not None:
                assert e.name == "comment", e  # keep-alives until it closes
        code = process.proc.wait(60)
    log = process.log()
    # uvicorn re-raises the signal it handled once it has shut down: killed by SIGTERM, cleanly
    assert code in (0, -signal.SIGTERM) and "timeout graceful shutdown exceeded" not in log, log
    assert "Traceback" not in log, log


def test_openapi_documents_the_streams(api: str) -> None:
    doc = json.loads(httpx.get(f"{api}/openapi.json", timeout=10).text)
    for path in ("/v1/jobs/{job_id}/events", "/v1/events"):
        assert "text/event-stream" in doc["paths"][path]["get"]["responses"]["200"]["content"], path


def test_the_api_log_has_no_errors(server: Any) -> None:
    """Streams closed by their clients, or cut short, leave no traceback (checked last in the module)."""
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
