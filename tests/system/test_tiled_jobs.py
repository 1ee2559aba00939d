"""Tiled jobs through a real worker: from the Python client, and from a plain Celery client that
imports nothing of ours (docs/contract.md)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def test_a_tiled_job_runs_through_a_worker_with_progress_and_result(client, worker, inputs) -> None:
    job = client.submit(
        inputs["content.png"], inputs["style.jpg"], "s3://outputs/tiled/", {"size": 96, "iterations": 4, "tile": 64}
    )
    seen = []
    result = job.wait(timeout=300, on_progress=seen.append)
    assert result.iterations == 4 and result.width == 96 and seen and seen[-1].total == 4


@pytest.mark.slow
def test_a_plain_celery_client_gets_tiled_jobs_and_a_clear_error_for_a_bad_tile(client, worker, inputs) -> None:
    """As docs/contract.md tells a client that imports nothing of ours: the tile is an ordinary option."""

    from celery import Celery

    app = Celery(broker=client.settings.broker_url, backend=client.settings.broker_url)
    base = {"content": inputs["content.png"], "style": inputs["style.jpg"], "output": "s3://outputs/tiled-plain/"}

    def send(params: dict[str, int]) -> Any:
        job_id = uuid.uuid4().hex
        message = {**base, "params": params, "job_id": job_id}
        return app.send_task("stylequeue.transfer", args=[message], task_id=job_id, queue="stylequeue")

    good = send({"size": 96, "iterations": 2, "tile": 64}).get(timeout=300)
    assert good["iterations"] == 2 and good["width"] == 96
    bad = send({"size": 96, "iterations": 2, "tile": 10})
    with pytest.raises(Exception, match=r"params\.tile"):  # the worker's error, re-raised by Celery
        bad.get(timeout=120)
    assert bad.state == "FAILURE"
