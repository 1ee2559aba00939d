"""How a test checks that a job ended for good."""

from __future__ import annotations

from typing import Any

import pytest

from producer.core.errors import JobFailed
from support.waiting import wait_for


def expect_permanent(client: Any, job_id: str, error_type: str, fragment: str) -> None:
    """The job ended FAILED with ``error_type`` whose message holds ``fragment``: never retried,
    kept as a dead letter, its end final (it never runs again)."""
    # A message published raw (not through the client) has no record until a worker takes it: wait
    # for its end to be recorded, not for a job the client may not know yet.
    wait_for(lambda: client.redis.get(f"stylequeue:done:{job_id}"), 60, f"the end of job {job_id}")
    with pytest.raises(JobFailed) as err:
        client.job(job_id).wait(timeout=60)
    assert err.value.error_type == error_type, err.value
    assert fragment in err.value.error_message, err.value
    assert not client.app.backend.get_task_meta(job_id).get("retries")  # never retried (or never ran)
    # Kept as a dead letter (filed just after the FAILURE state), and final: the job never runs again.
    wait_for(lambda: job_id in {d["job_id"] for d in client.dead_letters()}, 30, "the dead letter")
