"""End to end with real components: redis-server, SeaweedFS S3 and `celery worker` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from support.processes import own_workers
from support.waiting import wait_for

from producer.core.contract import TASK_NAME, ObjectRef
from producer.core.errors import InvalidJob, JobFailed
from worker.nst import images

pytestmark = pytest.mark.slow

TINY = {"size": 32, "iterations": 4}


def test_job_end_to_end_through_the_client(client, worker, store, inputs) -> None:
    seen = []
    job = client.submit(
        inputs["content.png"],
        [inputs["style.jpg"], inputs["style2.png"]],
        "s3://outputs/results/",
        TINY,
        style_weights=[0.7, 0.3],
        format="webp",
    )
    result = job.wait(timeout=120, on_progress=seen.append)

    assert result.output == f"s3://outputs/results/{job.id}.webp"
    assert (result.width, result.height, result.format) == (32, 24, "webp")
    assert seen and all(1 <= p.iteration <= p.total == 4 for p in seen)
    assert job.status() == "SUCCESS"
    assert job.progress().iteration == result.iterations

    ref = ObjectRef("outputs", f"results/{job.id}.webp")
    head = store.head(ref)
    assert head["ContentType"] == "image/webp"
    meta = head["Metadata"]
    assert meta["job-id"] == job.id and int(meta["iterations"]) == result.iterations
    assert float(meta["loss"]) == pytest.approx(result.loss, rel=1e-6)
    assert json.loads(meta["params"])["size"] == 32
    assert images.load(store.get(ref)).shape == (24, 32, 3)


def test_cli_submit_wait_and_status(stack_env, worker, tmp_path) -> None:
    from support.images import png_bytes, random_rgb

    content, style = tmp_path / "photo.png", tmp_path / "painting.jpg"
    content.write_bytes(png_bytes(random_rgb(40, 40, 5)))
    style.write_bytes(png_bytes(random_rgb(40, 40, 6), fmt="JPEG"))
    env = {**os.environ, **stack_env}
    cli = [sys.executable, "-m", "producer.cli"]
    proc = subprocess.run(
        [
            *cli,
            "submit",
            str(content),
            str(style),
            "--bucket",
            "inputs",
            "--output",
            "s3://outputs/cli/",
            "--size",
            "32",
            "--iterations",
            "3",
            "--color",
            "preserve",
            "--wait",
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["output"].startswith("s3://outputs/cli/") and result["width"] == 32
    assert "3/3" in proc.stderr  # the progress bar reached the end

    status = subprocess.run([*cli, "status", result["job_id"]], capture_output=True, text=True, env=env, timeout=60)
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["state"] == "SUCCESS" and body["result"]["output"] == result["output"] and body["error"] is None


def test_non_image_fails_permanently_and_the_worker_serves_on(client, worker, inputs) -> None:
    bad = client.submit(inputs["not-an-image.jpg"], inputs["style.jpg"], "s3://outputs/bad/", TINY)
    with pytest.raises(JobFailed) as err:
        bad.wait(timeout=60)
    assert err.value.error_type == "ImageError"
    assert "not-an-image.jpg: not an image" in err.value.error_message
    assert bad.status() == "FAILURE"
    assert client.app.backend.get_task_meta(bad.id).get("retries") == 0  # never retried

    good = client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/after-bad/", TINY)
    assert good.wait(timeout=120).width == 32


@pytest.mark.parametrize(
    ("content", "error_type", "message"),
    [
        ("s3://inputs/test/missing.png", "ObjectNotFound", "s3://inputs/test/missing.png: no such object"),
        ("s3://forbidden/x.png", "BucketNotAllowed", "s3://forbidden/x.png is outside the buckets jobs may read"),
    ],
)
def test_store_errors_are_permanent(client, worker, inputs, content, error_type, message) -> None:
    job = client.submit(content, inputs["style.jpg"], "s3://outputs/x/", TINY)
    with pytest.raises(JobFailed) as err:
        job.wait(timeout=60)
    assert err.value.error_type == error_type and message in err.value.error_message


def test_message_from_another_language_is_validated_by_the_worker(client, worker) -> None:
    """A raw send_task, as any Celery client can do, with a message breaking the contract."""
    job_id = uuid.uuid4().hex
    client.app.send_task(
        TASK_NAME,
        args=[{"content": "s3://inputs/a.png", "output": "s3://outputs/"}],
        task_id=job_id,
        queue="stylequeue",
    )
    with pytest.raises(JobFailed) as err:
        client.job(job_id).wait(timeout=60)
    assert err.value.error_type == "InvalidJob" and err.value.error_message == "style: is required"


def test_the_producer_validates_before_sending(client) -> None:
    with pytest.raises(InvalidJob, match=r"params.iterations: -1 is out of range"):
        client.submit("s3://inputs/a.png", "s3://inputs/b.png", "s3://outputs/", {"iterations": -1})
    with pytest.raises(InvalidJob, match=r"jobs\[1\].output"):
        client.submit_many(
            [
                {"content": "s3://inputs/a.png", "style": "s3://inputs/b.png", "output": "s3://outputs/"},
                {"content": "s3://inputs/a.png", "style": "s3://inputs/b.png", "output": "s3://outputs/../x.png"},
            ]
        )


def test_cancel_a_running_job(client, worker, inputs) -> None:
    job = client.submit(
        inputs["content.png"], inputs["style.jpg"], "s3://outputs/cancel/", {"size": 32, "iterations": 2000}
    )
    started = []

    def on_progress(p) -> None:
        if not started:
            started.append(p)
            job.cancel()

    with pytest.raises(JobFailed) as err:
        job.wait(timeout=120, on_progress=on_progress)
    assert err.value.error_type == "JobCancelled" and "cancelled at iteration" in err.value.error_message
    assert job.status() == "REVOKED"


def test_submit_many_and_priorities(client, worker, inputs) -> None:
    jobs = [
        client.build(inputs["content.png"], inputs["style.jpg"], "s3://outputs/many/", {"size": 24, "iterations": 1})
        for _ in range(5)
    ]
    handles = client.submit_many(jobs, priority=2)
    assert [h.id for h in handles] == [j.job_id for j in jobs]
    results = [h.wait(timeout=120) for h in handles]
    assert len({r.output for r in results}) == 5


def test_an_unreachable_store_is_waited_out_for_the_retry_budget_then_fails(stack_env, weights_file, tmp_path) -> None:
    """A worker whose object store is unreachable keeps trying for STYLEQUEUE_RETRY_FOR_S, then fails
    the job for good (a dead letter), and serves on."""
    import time

    from producer.devstack import free_port

    dead_store = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # A local weights file: the worker needs no store to start.
    overrides = {
        "STYLEQUEUE_S3_ENDPOINT_URL": dead_store,
        "STYLEQUEUE_WEIGHTS": weights_file,
        "STYLEQUEUE_RETRY_FOR_S": "4",
    }
    with own_workers(stack_env, tmp_path, "deadstore", **overrides) as (dead, (w,)):
        started = time.monotonic()
        job = dead.submit("s3://inputs/test/content.png", "s3://inputs/test/style.jpg", "s3://outputs/", TINY)
        with pytest.raises(JobFailed) as err:
            job.wait(timeout=120)
        assert err.value.error_type == "StoreUnavailable" and "EndpointConnectionError" in err.value.error_message
        assert time.monotonic() - started >= 4  # the budget is time, not a count of attempts
        # The dead letter is filed just after the FAILURE state is stored.
        wait_for(lambda: job.id in [d["job_id"] for d in dead.dead_letters()], 30, "the dead letter")
        assert w.events("job_failed", job.id)


def test_priorities_land_in_per_priority_lists(client, stack_env) -> None:
    """kombu's list names: one list per priority step (0 in the bare queue list); lower numbers drain first."""
    import redis

    from producer.client import Client
    from producer.core.settings import Settings

    idle = Client(Settings.from_env({**stack_env, "STYLEQUEUE_QUEUE": "stylequeue-nobody"}))
    msg = {"content": "s3://inputs/a.png", "style": "s3://inputs/b.png", "output": "s3://outputs/"}
    idle.submit_many([msg] * 3, priority=0)
    idle.send(msg)  # default priority 5
    idle.send(msg, priority=9)
    r = redis.Redis.from_url(stack_env["STYLEQUEUE_BROKER_URL"])
    names = ("stylequeue-nobody", "stylequeue-nobody\x06\x165", "stylequeue-nobody\x06\x169")
    assert [r.llen(q) for q in names] == [3, 1, 1]
    with pytest.raises(InvalidJob, match="priority"):
        idle.send(msg, priority=10)


def test_a_job_with_levels_reports_them_and_its_stop(client, worker, inputs) -> None:
    """Coarse-to-fine levels and an early stop through the job system: progress says the level,
    the result why it stopped."""
    seen = []
    params = {"size": 48, "iterations": 30, "scales": 2, "scale_iterations": 2, "tolerance": 0.9, "tolerance_window": 1}
    result = client.submit(inputs["content.png"], inputs["style.jpg"], "s3://outputs/levels/", params).wait(
        timeout=120, on_progress=seen.append
    )
    assert {p.levels for p in seen} == {2} and [p.level for p in seen][:2] == [1, 1] and seen[-1].level == 2
    assert result.stopped == "tolerance" and result.iterations < 32
