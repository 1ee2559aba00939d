"""``GET /v1/jobs?state=`` against a real redis-server: a filtered page looks at a bounded number of
jobs, however few match, and the cursor goes on from where it stopped."""

from __future__ import annotations

import json
from typing import Any

from producer.api.resources import SCAN_MAX, Views
from producer.broker import keys
from producer.core.settings import Settings


def test_a_filtered_page_looks_at_a_bounded_number_of_jobs(fresh_redis: Any) -> None:
    index = keys.TENANT_JOBS.format("acme")
    total = 2 * SCAN_MAX + 500
    pipe = fresh_redis.pipeline()
    for n in range(total):  # the oldest job succeeded, the 2,499 after it failed
        job_id = f"acme.{n:05d}"
        pipe.zadd(index, {job_id: 1000.0 + n})
        state = "SUCCESS" if n == 0 else "FAILURE"
        pipe.set(keys.DONE.format(job_id), json.dumps({"state": state, "at": 5000.0 + n}))
    pipe.execute()
    views = Views(Settings(), fresh_redis, fresh_redis)
    cursor, seen, pages = None, [], 0
    while True:
        page = views.page(index, "SUCCESS", 10, cursor)
        pages += 1
        seen += [j["id"] for j in page["jobs"]]
        if page["next_cursor"] is None:
            break
        before = -1 if cursor is None else fresh_redis.zrevrank(index, cursor)
        assert fresh_redis.zrevrank(index, page["next_cursor"]) - before <= SCAN_MAX  # looked at ≤ SCAN_MAX
        cursor = page["next_cursor"]
    assert seen == ["acme.00000"] and pages == 3  # two empty pages with a cursor, then the match
    unfiltered = views.page(index, None, 7, None)
    assert len(unfiltered["jobs"]) == 7 and unfiltered["next_cursor"] == f"acme.{total - 7:05d}"
