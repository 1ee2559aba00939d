"""Live progress over HTTP: ``GET /v1/jobs/{id}/events`` and ``GET /v1/events`` as Server-Sent
Events, from a real ``stylequeue api`` process and a real HTTP client, with the session's Redis,
SeaweedFS and worker running the jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.processes import cli, start_api
from support.sse import Listener

from producer.devstack import free_port

pytestmark = pytest.mark.slow

C, S = "s3://inputs/test/content.png", "s3://inputs/test/style.jpg"
#: Tiny jobs, exact numbers (pinned precision): 20 iterations announce ten progress events.
PARAMS = {"size": 32, "iterations": 20, "precision": "float32"}


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
def server(
    stack_env: dict[str, str], keys: dict[str, Any], worker: Any, inputs: Any, tmp_path_factory
) -> Iterator[Any]:
    env = {
        **stack_env,
        "STYLEQUEUE_API_KEYS_FILE": keys["_file"],
        "STYLEQUEUE_API_STREAM_KEEPALIVE_S": "0.5",
        "STYLEQUEUE_METRICS_PORT": "0",
    }
    port = free_port()
    process = start_api(env, tmp_path_factory.mktemp("stream-api") / "api.log", port)
    process.url = f"http://127.0.0.1:{port}"
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


def test_a_jobs_stream_replays_resumes_after_last_event_id_and_closes(api: str, keys: dict[str, Any]) -> None:
    with http(api, keys["north"]) as north:
        job_id = submit(north, "north")
        first = Listener(north, f"/v1/jobs/{job_id}/events")
        events = first.until("completed")
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

        # after its completed event there is nothing to follow: 204 (an EventSource stops there)
        done = north.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(events[-1].id)})
        assert done.status_code == 204


def test_streams_are_authenticated_isolated_and_kept_alive(api: str, keys: dict[str, Any]) -> None:
    with http(api, keys["north"]) as north, http(api, keys["south"]) as south, http(api, None) as anonymous:
        job_id = submit(north, "north", {**PARAMS, "iterations": 2})
        assert anonymous.get(f"/v1/jobs/{job_id}/events").status_code == 401
        assert anonymous.get("/v1/events").status_code == 401
        hidden = south.get(f"/v1/jobs/{job_id}/events")  # another tenant's job does not exist for it
        assert hidden.status_code == 404 and hidden.json()["error"]["type"] == "JobNotFound"
        bad = north.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]["message"]

        quiet = Listener(south, "/v1/events")
        mine = Listener(north, "/v1/events")
        other = submit(north, "north", {**PARAMS, "iterations": 2})
        assert mine.until("completed")[-1].data["id"] in (job_id, other)
        # south saw none of north's events, only comments every 0.5 s
        seen = [quiet.next(timeout_s=10, comments=True) for _ in range(4)]
        assert all(e is not None and e.name in ("comment", "retry") for e in seen), seen
        assert any(e is not None and e.data == "keep-alive" for e in seen)
        quiet.close()
        mine.close()

        metrics = httpx.get(f"{api}/metrics", timeout=10).text
        assert "stylequeue_api_streams_open" in metrics


def test_openapi_documents_the_streams(api: str) -> None:
    doc = json.loads(httpx.get(f"{api}/openapi.json", timeout=10).text)
    for path in ("/v1/jobs/{job_id}/events", "/v1/events"):
        assert "text/event-stream" in doc["paths"][path]["get"]["responses"]["200"]["content"], path


def test_the_api_log_has_no_errors(server: Any) -> None:
    """Streams closed by their clients, or cut short, leave no traceback (checked last in the module)."""
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
