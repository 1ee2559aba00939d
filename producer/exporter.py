"""A tiny Prometheus exporter of the queue depth, for autoscalers (``stylequeue queue --serve PORT``).

Workers export the same gauges, but an autoscaler that may scale workers to zero needs a source
that stays up without them. This one needs only the light client (no prometheus_client): it
writes the text exposition format itself, reading Redis at each scrape.
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from producer.queues import depth

log = logging.getLogger(__name__)


def render(redis_client: Any, queue: str) -> str:
    """The metrics page: ``celery_queue_length``, ``stylequeue_queue_ready``, ``stylequeue_queue_unacked``."""
    d = depth(redis_client, queue)
    lines = [
        "# HELP celery_queue_length Jobs in the queue: all priorities plus unacked",
        "# TYPE celery_queue_length gauge",
        f'celery_queue_length{{queue_name="{queue}"}} {d.total}',
        "# HELP stylequeue_queue_ready Waiting jobs",
        "# TYPE stylequeue_queue_ready gauge",
        *(f'stylequeue_queue_ready{{queue="{queue}",priority="{p}"}} {n}' for p, n in d.ready.items()),
        "# HELP stylequeue_queue_unacked Jobs taken, not yet acknowledged",
        "# TYPE stylequeue_queue_unacked gauge",
        f'stylequeue_queue_unacked{{queue="{queue}"}} {d.unacked}',
    ]
    return "\n".join(lines) + "\n"


def serve(port: int, redis_client: Any, queue: str) -> None:
    """Serve ``/metrics`` on ``port`` until interrupted."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body, status = render(redis_client, queue).encode(), 200
            except Exception as e:  # Redis down: say so with a 503, keep serving
                body, status = f"broker unavailable: {e}\n".encode(), 503
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    log.info("queue exporter on :%d/metrics for queue %s", port, queue)
    try:
        server.serve_forever()
    finally:
        server.server_close()
