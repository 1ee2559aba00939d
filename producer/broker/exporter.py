"""A tiny Prometheus exporter of the queue depth, for autoscalers (``stylequeue queue --serve PORT``).

Workers export the same gauges (one definition: :func:`producer.broker.queues.gauges`), but an
autoscaler that may scale workers to zero needs a source that stays up without them. This one
needs only the light client (no prometheus_client): it renders the text exposition format itself,
reading Redis at each scrape.
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from producer.broker.queues import depth, gauges

log = logging.getLogger(__name__)


def render(redis_client: Any, queue: str) -> str:
    """The metrics page: the queue-depth gauges of :func:`producer.broker.queues.gauges` in the text format."""
    lines: list[str] = []
    seen: set[str] = set()
    for g in gauges(depth(redis_client, queue)):
        if g.name not in seen:
            seen.add(g.name)
            lines += [f"# HELP {g.name} {g.help}", f"# TYPE {g.name} gauge"]
        labels = ",".join(f'{k}="{v}"' for k, v in g.labels.items())
        lines.append(f"{g.name}{{{labels}}} {g.value:g}")
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
