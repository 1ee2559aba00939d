"""``stylequeue worker`` and ``health``: the commands worker containers run.

Compose, the Dockerfile, Kubernetes and ``stylequeue dev`` all start workers with
``stylequeue worker``, so they run the same Celery command line.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

NODE_PREFIX = "stylequeue"


def add_commands(sub: Any) -> None:
    """Register ``worker`` and ``health``."""
    p = sub.add_parser(
        "worker",
        help="run a Celery worker for stylequeue jobs (replaces this process)",
        description="Exec `celery -A worker.app worker` with stylequeue's options. "
        "Arguments after -- go to celery unchanged.",
    )
    p.add_argument(
        "-c", "--concurrency", type=int, default=None, help="pool processes (default: number of GPUs, else 1)"
    )
    p.add_argument("-n", "--hostname", default=f"{NODE_PREFIX}@%h", help="node name (default stylequeue@%%h)")
    p.add_argument("-l", "--loglevel", default="INFO")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="extra celery worker arguments, after --")
    p.set_defaults(run=run_worker)

    p = sub.add_parser(
        "health",
        help="exit 0 if this machine's worker is healthy, 1 if not",
        description="Checks every pool child's current job against the hard time limit "
        "(and --stall-s), and with --ping that the worker answers.",
    )
    p.add_argument("--ping", action="store_true", help="also ping the worker through the broker")
    p.add_argument("--node", default=None, help="node name to ping (default stylequeue@<hostname>)")
    p.add_argument(
        "--stall-s",
        type=float,
        default=None,
        help="a job without progress this long is stuck (default STYLEQUEUE_HEALTH_STALL_S; 0: no limit)",
    )
    p.add_argument("--grace-s", type=float, default=120.0, help="slack past the hard time limit (default 120)")
    p.set_defaults(run=run_health)


def worker_argv(settings: Any, concurrency: int | None, hostname: str, loglevel: str, extra: list[str]) -> list[str]:
    """The celery command line of a stylequeue worker."""
    from worker.runtime.devices import visible_gpus  # stdlib only; at call time, so `--help` stays light

    argv = [
        sys.executable,
        "-m",
        "celery",
        # JSON logs: no banner either, so that every line of the worker's output is a JSON object.
        *(["--quiet"] if settings.log_format == "json" else []),
        "-A",
        "worker.app",
        "worker",
        "-Q",
        settings.queue,
        "--pool",
        "prefork",
        "-c",
        str(concurrency or max(1, len(visible_gpus()))),
        "-n",
        hostname,
        "-l",
        loglevel,
        # Gossip and mingle cost broker traffic on every worker for features we do not use.
        "--without-gossip",
        "--without-mingle",
    ]
    return argv + [a for a in extra if a != "--"]


def run_worker(args: argparse.Namespace) -> int:
    """Exec the Celery worker (so it is PID 1's direct child and gets SIGTERM itself)."""
    from producer.core.settings import Settings

    argv = worker_argv(Settings.from_env(), args.concurrency, args.hostname, args.loglevel, args.celery_args)
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


def run_health(args: argparse.Namespace) -> int:
    """Run ``stylequeue health``."""
    from producer.core.settings import Settings
    from worker.signals import health

    settings = Settings.from_env()
    stall_s = settings.health_stall_s if args.stall_s is None else args.stall_s
    verdict = health.check(settings.health_dir, settings.hard_time_limit_s + args.grace_s, stall_s or None)
    lines, ok = list(verdict.lines), verdict.ok
    if args.ping:
        from producer.broker.celery_app import make_celery

        node = args.node or f"{NODE_PREFIX}@{socket.gethostname()}"
        replies = make_celery(settings, result_backend=False).control.ping(destination=[node], timeout=5.0)
        if any(node in r for r in replies or []):
            lines.append(f"{node}: answers ping")
        else:
            ok = False
            lines.append(f"{node}: no answer to ping within 5 s")
    print("\n".join(lines) or "no worker children yet")
    print("healthy" if ok else "UNHEALTHY")
    return 0 if ok else 1
