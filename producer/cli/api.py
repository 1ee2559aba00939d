"""``stylequeue api``, ``notifier`` and ``keys``: the HTTP API, its webhook notifier, its keys.

Light processes: neither imports TensorFlow (``pip install 'stylequeue[api]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    """Register ``api``, ``notifier`` and ``keys``."""
    p = sub.add_parser(
        "api",
        help="serve the HTTP API (uvicorn)",
        description="Serve the HTTP API: POST /v1/jobs, /v1/batches, /v1/uploads, GET /v1/jobs/{id}, "
        "/docs, /openapi.json, /healthz, /readyz, /metrics. Stateless: run as many as you like.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--log-level", default="info", help="uvicorn's log level (default info)")
    p.set_defaults(run=run_api)

    p = sub.add_parser(
        "notifier",
        help="deliver webhooks (a Celery worker on the webhook queue; replaces this process)",
        description="Exec `celery -A producer.notifier worker` on STYLEQUEUE_WEBHOOK_QUEUE with a thread pool. "
        "Arguments after -- go to celery unchanged.",
    )
    p.add_argument("-c", "--concurrency", type=int, default=16, help="deliveries at once (default 16)")
    p.add_argument("-n", "--hostname", default="notifier@%h", help="node name (default notifier@%%h)")
    p.add_argument("-l", "--loglevel", default="INFO")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="extra celery worker arguments, after --")
    p.set_defaults(run=run_notifier)

    p = sub.add_parser("keys", help="make API keys")
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = keys_sub.add_parser(
        "create",
        help="make a key: prints it once, and the entry (its hash) for the keys file",
        description="Prints the key (give it to the tenant; it is not stored) on stdout's first line and the "
        "entry to add to STYLEQUEUE_API_KEYS_FILE as JSON after it; --add-to appends the entry to that file.",
    )
    c.add_argument("--tenant", required=True, help="tenant name: 1-32 of a-z 0-9 _ - (prefixes its job ids)")
    c.add_argument("--input", action="append", required=True, help="bucket or bucket/prefix/ it may read (repeat)")
    c.add_argument("--output", action="append", required=True, help="bucket or bucket/prefix/ it may write (repeat)")
    c.add_argument("--max-priority", type=int, default=0, help="most urgent priority it may use, 0-9 (default 0)")
    c.add_argument("--rate", type=float, default=10.0, help="requests per second (default 10)")
    c.add_argument("--burst", type=int, default=100, help="requests at once above the rate (default 100)")
    c.add_argument("--max-in-flight", type=int, default=1000, help="jobs not ended yet, at most (default 1000)")
    c.add_argument("--webhook-secret", default=None, help="signing secret (default: a new whsec_ secret)")
    c.add_argument("--add-to", default=None, metavar="FILE", help="append the entry to this keys file")
    c.set_defaults(run=run_keys_create)


def run_api(args: argparse.Namespace) -> int:
    """Run ``stylequeue api``."""
    import uvicorn

    from producer.api.app import create_app
    from producer.core.settings import Settings

    create_app(Settings.from_env())  # a wrong keys file or setting fails here, with its message
    uvicorn.run(
        "producer.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        proxy_headers=True,
        # On SIGTERM the event streams end at once (producer.api.app.close_streams_on_exit);
        # whatever else is still open after this long (s) is cancelled.
        timeout_graceful_shutdown=30,
    )
    return 0


def notifier_argv(settings: Any, concurrency: int, hostname: str, loglevel: str, extra: list[str]) -> list[str]:
    """The celery command line of a notifier."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "producer.notifier",
        "worker",
        "-Q",
        settings.webhook_queue,
        "--pool",
        "threads",
        "-c",
        str(concurrency),
        "-n",
        hostname,
        "-l",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        *[a for a in extra if a != "--"],
    ]


def run_notifier(args: argparse.Namespace) -> int:
    """Run ``stylequeue notifier`` (execs celery)."""
    from producer.core.settings import Settings
    from producer.tenants import Tenants

    settings = Settings.from_env()
    Tenants.load(settings)  # the secrets sign every delivery: a wrong keys file fails now
    argv = notifier_argv(settings, args.concurrency, args.hostname, args.loglevel, args.celery_args)
    os.execv(argv[0], argv)
    return 0  # not reached


def run_keys_create(args: argparse.Namespace) -> int:
    """Run ``stylequeue keys create``."""
    from producer.tenants import Tenant, hash_key, new_key, validate_entry
    from producer.webhooks import new_secret

    key = new_key()
    entry = Tenant(
        tenant=args.tenant,
        key_sha256=hash_key(key),
        input=tuple(args.input),
        output=tuple(args.output),
        max_priority=args.max_priority,
        rate_per_s=args.rate,
        burst=args.burst,
        max_in_flight=args.max_in_flight,
        webhook_secret=args.webhook_secret or new_secret(),
    ).to_dict()
    validate_entry(entry)
    if args.add_to:
        path = Path(args.add_to)
        document = json.loads(path.read_text()) if path.exists() else {"keys": []}
        document["keys"].append(entry)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(path)
    print(key)
    print(json.dumps(entry, indent=2))
    return 0
