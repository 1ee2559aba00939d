"""The ``stylequeue`` command line: the client's commands here, the worker's by entry points.

=========================== ===================================================================
module                      commands
=========================== ===================================================================
``producer.cli.jobs``       ``submit``, ``status``, ``wait``, ``cancel``, ``jobs``, ``dead``,
                            ``schema``
``producer.cli.operate``    ``queue``
``producer.cli.api``        ``api`` (the HTTP API), ``notifier`` (its webhooks), ``keys create``
``worker.cli.stylize``      ``stylize`` (one transfer, locally), ``samples``
``worker.cli.operate``      ``worker``, ``health``
``worker.cli.dev``          ``dev`` (the whole system on one machine)
``producer.cli.options``    the engine's flags, generated from :class:`producer.core.params.Params`
=========================== ===================================================================

Other packages add commands as Celery's do (``celery.commands``): a function taking the
sub-parsers object, declared in the ``stylequeue.commands`` entry-point group (see
``pyproject.toml``); the worker's commands come that way, so the light client never imports the
worker. Commands that need the engine import TensorFlow only when they run, so
``stylequeue --help`` works on a light-client install. Exit codes: 0 success, 1 an error,
2 usage, 3 timeout, 4 no such job, 69 cannot reach Redis (``EX_UNAVAILABLE``: after
``STYLEQUEUE_CLIENT_TIMEOUT_S``, one line naming the URL; ``-v`` adds the traceback), 130
interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from producer.core.errors import BrokerUnavailable, JobNotFound, StylequeueError

#: Exit code when Redis cannot be reached (sysexits' EX_UNAVAILABLE).
EXIT_UNREACHABLE = 69


#: The entry-point group whose functions add sub-commands (``add_commands(subparsers)``).
COMMANDS_GROUP = "stylequeue.commands"


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser: the client's commands, then each ``stylequeue.commands`` entry point's.

    An entry point whose package is not installed (the API's light image has no ``worker``) adds
    nothing.
    """
    from importlib.metadata import entry_points

    from producer.cli import api, jobs, operate  # argparse only at import time; no TensorFlow

    parser = argparse.ArgumentParser(prog="stylequeue", description="Neural style transfer as a service.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (jobs, operate, api):
        module.add_commands(sub)
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name):
        try:
            add_commands = ep.load()
        except ModuleNotFoundError as e:
            if e.name != ep.value.split(".")[0]:
                raise
            logging.getLogger(__name__).debug("commands %s: %s is not installed here", ep.name, e.name)
            continue
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stylequeue`` script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except JobNotFound as e:
        print(f"stylequeue: error: {e}", file=sys.stderr)
        return 4
    except BrokerUnavailable as e:
        return _unreachable(e, args.verbose)
    except StylequeueError as e:
        print(f"stylequeue: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        if e.name in ("fastapi", "uvicorn", "starlette", "prometheus_client") and args.command in ("api", "notifier"):
            print(f"stylequeue: error: {args.command!r} needs: pip install 'stylequeue[api]'", file=sys.stderr)
            return 1
        if e.name in ("tensorflow", "keras", "numpy", "scipy", "PIL"):
            print(
                f"stylequeue: error: {args.command!r} needs the engine: pip install 'stylequeue[worker]' "
                f"({e.name} is not installed)",
                file=sys.stderr,
            )
            return 1
        raise
    except TimeoutError as e:
        print(f"stylequeue: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("stylequeue: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # A command with its own connection (queue, health): redis-py's or kombu's error as is.
        from producer.client import unreachable

        if isinstance(e, unreachable()):
            from producer.core.settings import Settings

            return _unreachable(BrokerUnavailable.after(Settings.from_env().broker_url, 0.0, e), args.verbose)
        if isinstance(e, OSError) or type(e).__module__.startswith(("kombu", "redis")):
            print(f"stylequeue: error: cannot reach the broker or store: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        raise


def _unreachable(e: BrokerUnavailable, verbose: int) -> int:
    """One line: what could not be reached, for how long, and what to set."""
    if verbose:
        logging.getLogger("stylequeue").error("cannot reach Redis", exc_info=e)
    if os.environ.get("STYLEQUEUE_BROKER_URL"):
        hint = "check that Redis runs there, or set STYLEQUEUE_BROKER_URL to where it runs"
    else:
        hint = "STYLEQUEUE_BROKER_URL is not set, so the default was used: set it to your Redis URL"
    print(f"stylequeue: error: {e}; {hint}", file=sys.stderr)
    return EXIT_UNREACHABLE
