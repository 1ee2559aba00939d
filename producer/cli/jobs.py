"""``stylequeue submit | status | wait | cancel | jobs | dead | schema``: the client from the command line.

Configuration comes from the environment (:mod:`producer.core.settings`). Results and statuses are
printed as JSON on stdout; progress bars and errors go to stderr. Exit codes: 0 success, 1 the
job failed or an error, 2 usage, 3 timeout, 4 no such job, 69 cannot reach Redis (within
``STYLEQUEUE_CLIENT_TIMEOUT_S``; ``wait`` waits through an outage once it has found the job).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from producer.cli import options
from producer.cli.progressbar import ProgressBar
from producer.core.contract import ObjectRef
from producer.core.errors import ImageError, InvalidJob
from producer.core.states import SUCCESS


def add_commands(sub: Any) -> None:
    """Register ``submit``, ``status``, ``wait``, ``cancel``, ``jobs``, ``dead`` and ``schema``."""
    p = sub.add_parser(
        "submit",
        help="enqueue a style-transfer job",
        description="Enqueue a job. CONTENT and STYLE are s3:// URIs, or local files with --bucket.",
    )
    p.add_argument("content", help="s3://bucket/key of the content image (or a local file with --bucket)")
    p.add_argument("styles", nargs="+", metavar="style", help="style image URI(s) (or local files with --bucket)")
    p.add_argument("--output", help="s3://bucket/key, or a prefix ending in '/' (default s3://BUCKET/results/)")
    p.add_argument("--bucket", help="upload local files to this bucket (under uploads/) first")
    p.add_argument("--style-blend", help="comma-separated blend weights, one per style")
    options.add_mask_flag(p, "s3:// URI, or a local file with --bucket")
    p.add_argument("--format", choices=["png", "jpeg", "webp"], help="output format (default from the key, else png)")
    p.add_argument("--job-id", help="your id for the job (default: a random one)")
    p.add_argument("--priority", type=int, help="0 (most urgent) to 9 (least); default 5")
    p.add_argument("--wait", action="store_true", help="wait for the result, with a progress bar")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    options.add_flags(p)
    p.set_defaults(run=run_submit)

    p = sub.add_parser("status", help="print a job's state, progress, result or error as JSON")
    p.add_argument("job_id")
    p.set_defaults(run=run_status)

    p = sub.add_parser("wait", help="wait for a job, with a progress bar; print its result as JSON")
    p.add_argument("job_id")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    p.set_defaults(run=run_wait)

    p = sub.add_parser("dead", help="jobs that failed for good: list them, or send one back")
    dead = p.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    d = dead.add_parser("list", help="print the dead letters as JSON, newest first")
    d.add_argument("--limit", type=int, default=100)
    d.set_defaults(run=run_dead_list)
    d = dead.add_parser("requeue", help="send a dead-lettered job again, with the same id")
    d.add_argument("job_id")
    d.set_defaults(run=run_dead_requeue)

    p = sub.add_parser("cancel", help="cancel a job (queued: skipped; running: stops at the next iteration)")
    p.add_argument("job_id")
    p.set_defaults(run=run_cancel)

    p = sub.add_parser("schema", help="print the JSON Schema of the job message (for producers in any language)")
    p.set_defaults(run=run_schema)

    p = sub.add_parser("jobs", help="list recent jobs and their states as JSON, newest first")
    p.add_argument("--state", help="only jobs in this state (PENDING, STARTED, PROGRESS, SUCCESS, FAILURE, REVOKED)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.set_defaults(run=run_jobs)


def _client() -> Any:
    from producer.client import Client

    return Client()


def _as_uri(value: str, bucket: str | None, store: Any, field: str) -> str:
    """An s3:// URI as is; a local file uploaded under ``uploads/<sha256>`` of ``bucket``."""
    if value.startswith("s3://"):
        return value
    path = Path(value)
    if not path.is_file():
        raise ImageError(f"{field} {value!r}: no such file (give an s3:// URI, or a local file with --bucket)")
    if bucket is None:
        raise InvalidJob("--bucket", f"{field} {value!r} is a local file: give --bucket to upload it")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ref = ObjectRef(bucket, f"uploads/{digest[:32]}{path.suffix.lower()}")
    store.upload_file(path, ref)
    return ref.uri


def run_submit(args: argparse.Namespace) -> int:
    """Run ``stylequeue submit``."""
    client = _client()
    params = options.params_from_args(args)
    mask_args = options.masks_of(args.style_mask, len(args.styles))
    local = [v for v in [args.content, *args.styles, *mask_args] if v is not None and not v.startswith("s3://")]
    store = None
    if local and args.bucket:
        from producer.storage import Store

        store = Store(client.settings)
    content = _as_uri(args.content, args.bucket, store, "content")
    styles = [_as_uri(s, args.bucket, store, "style") for s in args.styles]
    masks = (
        None if args.style_mask is None else [m and _as_uri(m, args.bucket, store, "--style-mask") for m in mask_args]
    )
    output = args.output or (f"s3://{args.bucket}/results/" if args.bucket else None)
    if output is None:
        raise InvalidJob("--output", "is required (or give --bucket to write under s3://BUCKET/results/)")
    weights = None
    if args.style_blend:
        try:
            weights = [float(w) for w in args.style_blend.split(",")]
        except ValueError:
            raise InvalidJob("--style-blend", f"{args.style_blend!r} is not a list of numbers") from None
    job = client.submit(
        content,
        styles,
        output,
        params,
        style_weights=weights,
        style_masks=masks,
        job_id=args.job_id,
        format=args.format,
        priority=args.priority,
    )
    if not args.wait:
        print(job.id)
        return 0
    print(f"submitted {job.id}", file=sys.stderr)
    return _wait(job, args.timeout)


def _wait(job: Any, timeout: float | None) -> int:
    bar = ProgressBar()
    try:
        result = job.wait(timeout=timeout, on_progress=bar, on_outage=bar.outage)
    finally:
        bar.close()
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def run_wait(args: argparse.Namespace) -> int:
    """Run ``stylequeue wait``."""
    return _wait(_client().job(args.job_id), args.timeout)


def run_status(args: argparse.Namespace) -> int:
    """Run ``stylequeue status``."""
    job = _client().job(args.job_id)
    state = job.status()
    out: dict[str, Any] = {"job_id": job.id, "state": state}
    progress = job.progress()
    out["progress"] = None if progress is None else progress.to_dict()
    out["result"] = job.result(timeout=1).to_dict() if state == SUCCESS else None
    err = job.error()
    out["error"] = None if err is None else {"type": err.error_type, "message": err.error_message}
    print(json.dumps(out, indent=2))
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    """Run ``stylequeue cancel``."""
    outcome = _client().job(args.job_id).cancel()
    print(json.dumps({"job_id": args.job_id, "cancel": outcome}))
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    """Run ``stylequeue jobs``."""
    print(json.dumps([j.to_dict() for j in _client().jobs(state=args.state, limit=args.limit)], indent=2))
    return 0


def run_schema(args: argparse.Namespace) -> int:
    """Run ``stylequeue schema``."""
    from producer.core.schema import job_schema

    print(json.dumps(job_schema(), indent=2))
    return 0


def run_dead_list(args: argparse.Namespace) -> int:
    """Run ``stylequeue dead list``."""
    print(json.dumps(_client().dead_letters(args.limit), indent=2))
    return 0


def run_dead_requeue(args: argparse.Namespace) -> int:
    """Run ``stylequeue dead requeue``."""
    print(_client().requeue_dead(args.job_id).id)
    return 0
