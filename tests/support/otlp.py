"""An OTLP/HTTP trace receiver of the tests' own: a real HTTP server that decodes what exporters send.

It takes ``POST /v1/traces`` with protobuf bodies (``ExportTraceServiceRequest``, gzip or not),
as any collector does, answers 200 with an empty ``ExportTraceServiceResponse``, and keeps every
span as a plain :class:`Span` (ids in hex, the service from the resource).
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

KINDS = {
    ProtoSpan.SPAN_KIND_INTERNAL: "internal",
    ProtoSpan.SPAN_KIND_SERVER: "server",
    ProtoSpan.SPAN_KIND_CLIENT: "client",
    ProtoSpan.SPAN_KIND_PRODUCER: "producer",
    ProtoSpan.SPAN_KIND_CONSUMER: "consumer",
}


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    error: bool = False


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


class OtlpReceiver:
    """A real OTLP/HTTP endpoint on a loopback port: ``endpoint`` is what ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.refused: list[str] = []  # what was not a trace export (a wrong path or content type)
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                    with lock:
                        receiver.refused.append(f"{self.path} {self.headers.get('content-type')}")
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                got = []
                for rs in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            got.append(
                                Span(
                                    service=str(resource.get("service.name", "")),
                                    name=s.name,
                                    kind=KINDS.get(s.kind, str(s.kind)),
                                    trace_id=s.trace_id.hex(),
                                    span_id=s.span_id.hex(),
                                    parent_id=s.parent_span_id.hex(),
                                    start_ns=s.start_time_unix_nano,
                                    end_ns=s.end_time_unix_nano,
                                    attributes={a.key: _value(a.value) for a in s.attributes},
                                    error=s.status.code == s.status.STATUS_CODE_ERROR,
                                )
                            )
                with lock:
                    receiver.requests += 1
                    receiver.spans.extend(got)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in list(self.spans) if s.trace_id == trace_id]

    def find(self, **match: Any) -> list[Span]:
        """Spans whose fields equal ``match`` (``attributes`` too: the given ones, among others)."""
        wanted = match.pop("attributes", {})
        return [
            s
            for s in list(self.spans)
            if all(getattr(s, k) == v for k, v in match.items())
            and all(s.attributes.get(k) == v for k, v in wanted.items())
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
