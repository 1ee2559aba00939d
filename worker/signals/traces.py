"""Traces (``OTEL_EXPORTER_OTLP_ENDPOINT`` set): each pool child exports its own spans.

A span per job (Celery's instrumentation: ``run/stylequeue.transfer``, in the trace of the
message's ``traceparent``, or a trace of its own) and per S3 call (botocore's). Set up in every
child at its start, never in the parent: the exporter's thread does not survive ``fork``. A child
exports what is left when it exits. Off, nothing is connected and nothing imports OpenTelemetry.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from producer import tracing
from producer.core.settings import Settings


def install(settings: Settings) -> None:
    """Trace every pool child's jobs, when traces are on."""
    if not tracing.enabled():
        return

    @worker_process_init.connect(weak=False)
    def _start(**_: Any) -> None:
        tracing.setup(tracing.WORKER, instrument=("celery", "botocore"))

    @worker_process_shutdown.connect(weak=False)
    def _exit(**_: Any) -> None:
        tracing.shutdown()
