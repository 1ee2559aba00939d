"""``stylequeue queue``: the queue's depth, once as JSON or served as Prometheus metrics."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Register ``queue``."""
    p = sub.add_parser("queue", help="print the queue's depth as JSON: every priority list plus unacked jobs")
    p.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        default=None,
        help="serve it as Prometheus metrics on PORT instead (an exporter for autoscalers)",
    )
    p.set_defaults(run=run_queue)


def run_queue(args: argparse.Namespace) -> int:
    """Run ``stylequeue queue``."""
    import json

    from producer import broker
    from producer.broker.queues import depth
    from producer.core.settings import Settings

    settings = Settings.from_env()
    client = broker.of(settings, 5.0)
    if args.serve is not None:
        from producer.broker.exporter import serve

        serve(args.serve, client, settings.queue)
        return 0
    d = depth(client, settings.queue)
    print(json.dumps({"queue": d.queue, "total": d.total, "unacked": d.unacked, "ready": d.ready}, indent=2))
    return 0
