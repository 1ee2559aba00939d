"""A webhook receiver that is not ours: a real HTTP server that verifies signatures."""

from __future__ import annotations

import json
import time
from typing import Any


class WebhookReceiver:
    """A real HTTP server that receives webhooks the way a tenant's would.

    It checks each delivery's Standard Webhooks signature itself (HMAC-SHA256 over
    ``id.timestamp.body``, no stylequeue code), answers by path: ``/ok`` 204, ``/flaky/N`` 503 to
    the first N attempts of each event then 200, ``/down`` always 500; and records every attempt,
    and each event id's body once (what a receiver that deduplicates on ``webhook-id`` processes).
    """

    def __init__(self, secrets: dict[str, str]) -> None:
        import base64
        import hashlib
        import hmac
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.attempts: list[dict[str, Any]] = []
        self.processed: dict[str, dict[str, Any]] = {}
        self.raw: list[tuple[dict[str, str], bytes]] = []  # every delivery as received: headers, body
        self.bad_signatures = 0
        lock = threading.Lock()
        receiver = self
        keys = {name: base64.b64decode(s.removeprefix("whsec_")) for name, s in secrets.items()}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                msg_id, stamp = self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", "")
                signed = f"{msg_id}.{stamp}.".encode() + body
                given = [s.split(",", 1)[1] for s in self.headers.get("webhook-signature", "").split() if "," in s]
                signer = next(
                    (
                        name
                        for name, key in keys.items()
                        if any(
                            hmac.compare_digest(
                                base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode(), g
                            )
                            for g in given
                        )
                    ),
                    None,
                )
                path = self.path.split("?")[0]
                with lock:
                    receiver.raw.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    tries = sum(1 for a in receiver.attempts if a["id"] == msg_id and a["path"] == path)
                    receiver.attempts.append({"id": msg_id, "path": path, "signer": signer, "at": time.time()})
                    if signer is None or abs(time.time() - int(stamp or 0)) > 300:
                        receiver.bad_signatures += 1
                        status = 401
                    elif path == "/down":
                        status = 500
                    elif path.startswith("/flaky/") and tries < int(path.rsplit("/", 1)[1]):
                        status = 503
                    else:
                        status = 204 if path == "/ok" else 200
                        if msg_id not in receiver.processed:
                            receiver.processed[msg_id] = {"path": path, "signer": signer, **json.loads(body)}
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self, job_id: str) -> dict[str, dict[str, Any]]:
        """Processed events about ``job_id`` (or a batch), by event type."""
        return {e["type"]: e for e in list(self.processed.values()) if e["data"]["id"] == job_id}

    def tries(self, event_id: str) -> int:
        """Attempts of the event ``event_id``."""
        return sum(1 for a in list(self.attempts) if a["id"] == event_id)

    def completions(self, job_id: str) -> dict[str, int]:
        """Attempts of each ``completed`` event about ``job_id`` (or a batch), by event id
        (``<id>.completed.<end time in ms>``: one id per end)."""
        counts: dict[str, int] = {}
        for a in list(self.attempts):
            if a["id"].startswith(f"{job_id}.completed."):
                counts[a["id"]] = counts.get(a["id"], 0) + 1
        return counts

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
