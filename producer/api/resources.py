"""What the HTTP API returns: jobs, pages of jobs, batches, upload URLs, readiness.

Read from Redis only (the API keeps no state of its own): a job's record
(``stylequeue:job:<id>``), its final state (``stylequeue:done:<id>``, written by the run that ended
it) and, while it runs, its progress (the Celery result's ``PROGRESS`` meta). A job resource::

    {"id": "acme.4f1c…", "state": "PROGRESS", "created_at": "2026-11-30T08:00:00.000Z",
     "started_at": "…", "finished_at": null, "batch": null,
     "progress": {"iteration": 40, "total": 100, "loss": 1.2e6, "level": 1, "levels": 1, …},
     "result": null, "error": null, "output_url": null, "output_url_expires_at": null,
     "cancel_requested": false, "webhook": {"url": "https://…", "events": ["completed"],
     "delivered": 0, "failed": 0, "last_error": null}}

A finished job's ``result`` is the worker's :class:`~producer.core.states.JobResult`; ``output_url`` is
a presigned GET of the output, valid ``STYLEQUEUE_PRESIGN_EXPIRES_S`` (made for
``STYLEQUEUE_S3_PUBLIC_ENDPOINT_URL`` when clients reach the store by another name than the
workers). Times are ISO 8601 UTC.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
import time
import uuid
from typing import Any

from producer import broker
from producer.broker import keys
from producer.broker.events import iso
from producer.core.errors import InvalidJob
from producer.core.settings import Settings
from producer.core.states import FAILURE, FINAL_STATES, PENDING, PROGRESS, REVOKED, STARTED, SUCCESS, FinalState
from producer.storage import make_client
from producer.tenants import Tenant

#: The states ``GET /v1/jobs?state=`` filters by (a job in ``PROGRESS`` is listed as ``STARTED``).
LISTED_STATES = (PENDING, STARTED, SUCCESS, FAILURE, REVOKED)
#: Jobs a filtered page looks at, at most, whatever its ``limit``: one request costs Redis a
#: bounded amount of work; a page may then hold fewer jobs than asked (or none) with a cursor.
SCAN_MAX = 1000
#: Content types an upload may declare.
UPLOAD_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class Views:
    """Builds the API's resources.

    Args:
        settings: Result expiry, presign expiry and endpoints.
        redis: Client of the broker's Redis.
        backend_redis: Client of the result backend's Redis (progress).
    """

    def __init__(self, settings: Settings, redis: Any, backend_redis: Any) -> None:
        self.settings = settings
        self.redis = redis
        self.backend_redis = backend_redis
        public = dataclasses.replace(
            settings, s3_endpoint_url=settings.s3_public_endpoint_url or settings.s3_endpoint_url
        )
        self.presigner = make_client(public)
        self.probe = make_client(settings, probe_timeout_s=3.0)

    def job(self, job_id: str) -> dict[str, Any]:
        """The job resource (see the module docstring)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.JOB.format(job_id))
        pipe.get(keys.DONE.format(job_id))
        pipe.exists(keys.CANCEL.format(job_id))
        raw_record, raw_final, cancel = pipe.execute()
        record = {k.decode(): v.decode() for k, v in raw_record.items()}
        final = FinalState.from_dict(json.loads(raw_final)) if raw_final else None
        state = final.state if final else record.get("state", PENDING)
        progress = None
        if final is None:
            meta = self._meta(job_id)
            if meta.get("status") in (STARTED, PROGRESS):
                state = str(meta["status"])
            if meta.get("status") == PROGRESS and isinstance(meta.get("result"), dict):
                progress = {k: v for k, v in meta["result"].items() if k != "job_id"}
        elif final.result is not None:
            r = final.result
            progress = {"iteration": r["iterations"], "total": r["iterations"], "loss": r["loss"]}
        out: dict[str, Any] = {
            "id": job_id,
            "state": state,
            "created_at": _time(record.get("created_at")),
            "started_at": _time(record.get("started_at")),
            "finished_at": _time(str(final.at)) if final else _time(record.get("finished_at")),
            "batch": record.get("batch"),
            "progress": progress,
            "result": final.result if final else None,
            "error": {"type": final.error_type, "message": final.error_message or ""}
            if final and final.error_type
            else None,
            "output_url": None,
            "output_url_expires_at": None,
            "cancel_requested": bool(cancel),
            "webhook": None,
        }
        if final is not None and final.result is not None:
            out["output_url"] = self.presign_get(final.result["output"])
            out["output_url_expires_at"] = iso(time.time() + self.settings.presign_expires_s)
        if record.get("webhook"):
            out["webhook"] = {
                "url": record["webhook"],
                "events": record.get("webhook_events", "completed").split(","),
                "delivered": int(record.get("webhook_delivered", 0)),
                "failed": int(record.get("webhook_failed", 0)),
                "last_error": record.get("webhook_last_error"),
            }
        return out

    def _meta(self, job_id: str) -> dict[str, Any]:
        try:
            raw = self.backend_redis.get(keys.CELERY_META.format(job_id))
        except broker.errors():
            return {}  # progress is best effort; the state is in the broker
        try:
            meta = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    def page(self, index: str, state: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
        """A page of an index (a tenant's or a batch's jobs), newest first.

        ``cursor`` is the last id of the previous page (``next_cursor``); new jobs arriving
        meanwhile do not shift the pages after it. A ``state`` filter looks at most
        :data:`SCAN_MAX` jobs per request: a page may hold fewer than ``limit`` jobs, or none,
        and still have a ``next_cursor`` (the last job looked at) to go on from.

        Raises:
            InvalidJob: an unknown state, or a cursor that is not (or no longer) in the index.
        """
        if state is not None and state not in LISTED_STATES:
            raise InvalidJob("state", f"{state!r} is not one of {', '.join(LISTED_STATES)}")
        start = 0
        if cursor:
            rank = self.redis.zrevrank(index, cursor)
            if rank is None:
                raise InvalidJob("cursor", "is not a job of this list (it may have expired): start again")
            start = rank + 1
        jobs: list[dict[str, Any]] = []
        budget = limit if state is None else SCAN_MAX
        scanned = 0
        last: str | None = None
        while len(jobs) < limit and scanned < budget:
            chunk = min(max(limit, 100), budget - scanned)
            entries = self.redis.zrevrange(index, start + scanned, start + scanned + chunk - 1, withscores=True)
            if not entries:
                break
            for summary in self._summaries([(m.decode(), s) for m, s in entries]):
                scanned += 1
                last = summary["id"]
                if state is None or summary["state"] == state:
                    jobs.append(summary)
                    if len(jobs) == limit:
                        break
        more = last is not None and self.redis.zrevrank(index, last) not in (None, self.redis.zcard(index) - 1)
        return {"jobs": jobs, "next_cursor": last if more else None}

    def _summaries(self, entries: list[tuple[str, float]]) -> list[dict[str, Any]]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in entries:
            pipe.hmget(keys.JOB.format(job_id), "state", "batch", "finished_at")
            pipe.get(keys.DONE.format(job_id))
        answers = pipe.execute()
        out = []
        for (job_id, created), (record, done) in zip(entries, zip(answers[::2], answers[1::2])):
            recorded, batch, finished = (v.decode() if v is not None else None for v in record)
            final = FinalState.from_dict(json.loads(done)) if done else None
            job_state = final.state if final else (recorded or PENDING)
            out.append(
                {
                    "id": job_id,
                    "state": STARTED if job_state == PROGRESS else job_state,
                    "created_at": iso(created),
                    "finished_at": iso(final.at) if final else _time(finished),
                    "batch": batch,
                }
            )
        return out

    def batch(self, batch_id: str, info: dict[str, str]) -> dict[str, Any]:
        """A batch: its jobs counted by state, and whether all have ended."""
        total, ended, running = int(info["total"]), int(info.get("ended", 0)), int(info.get("running", 0))
        counts = {
            PENDING: max(0, total - ended - running),
            STARTED: running,
            **{s: int(info.get(s.lower(), 0)) for s in sorted(FINAL_STATES)},
        }
        return {
            "id": batch_id,
            "total": total,
            "counts": counts,
            "ended": ended == total,
            "created_at": _time(info.get("created_at")),
            "webhook": info.get("webhook") or None,
            "jobs": f"/v1/jobs?batch={batch_id}",
        }

    def presign_get(self, uri: str) -> str:
        """A presigned GET URL of an ``s3://`` object."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return str(
            self.presigner.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.settings.presign_expires_s
            )
        )

    def upload(self, tenant: Tenant, spec: Any, field: str) -> dict[str, Any]:
        """A presigned PUT for one input image, under the tenant's first input prefix.

        ``spec`` is ``{"name": "photo.jpg", "content_type": "image/jpeg"}``; the object is
        ``<bucket>/<prefix>uploads/<random>/<name>``, and the client must send the same
        ``Content-Type`` it declared (it is signed).

        Raises:
            InvalidJob: naming ``field``, for a missing name or a type that is not an image's.
        """
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
            raise InvalidJob(f"{field}.name", "each file needs a name (a string)")
        content_type = spec.get("content_type", "application/octet-stream")
        if content_type not in UPLOAD_TYPES:
            raise InvalidJob(f"{field}.content_type", f"{content_type!r} is not one of {', '.join(UPLOAD_TYPES)}")
        name = _SAFE_NAME.sub("_", posixpath.basename(spec["name"]))[-200:] or "upload"
        bucket, _, prefix = tenant.input[0].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        key = f"{prefix}uploads/{uuid.uuid4().hex}/{name}"
        url = self.presigner.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=self.settings.presign_expires_s,
        )
        return {
            "uri": f"s3://{bucket}/{key}",
            "url": url,
            "method": "PUT",
            "headers": {"Content-Type": content_type},
            "expires_at": iso(time.time() + self.settings.presign_expires_s),
        }

    def readiness(self) -> list[str]:
        """What is not reachable (empty when ready): the broker, the result backend, the store."""
        problems = []
        for name, client in (("broker", self.redis), ("result backend", self.backend_redis)):
            try:
                client.ping()
            except broker.errors() as e:
                problems.append(f"{name}: {e}")
        from botocore.exceptions import ClientError

        try:
            self.probe.list_buckets()
        except ClientError as e:  # it answered: reachable, unless it answered 5xx
            if int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)) >= 500:
                problems.append(f"object store: {e}"[:300])
        except Exception as e:  # unreachable, timed out
            problems.append(f"object store: {type(e).__name__}: {e}"[:300])
        return problems


def _time(value: str | None) -> str | None:
    return iso(float(value)) if value else None
