"""Worker logs as text or as JSON lines, with the job's id on every line written during a job.

``STYLEQUEUE_LOG_FORMAT=json`` turns every handler Celery sets up (in the parent and in each
pool child) into one JSON object per line: ``ts``, ``level``, ``logger``, ``process``,
``message``, ``job_id`` (while a job runs, or when the line is about one), ``event`` (a stable
name for the lines ops and tests look for: ``job_done``, ``job_resumed``, ``job_recovered``,
``delivery_dropped``, ``delivery_deferred``, ...) and any other structured fields. With ``text``
(the default) Celery's usual format gains ``[job <id>]`` on job lines.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger

from producer.core.settings import Settings

#: Attributes every LogRecord has; anything else on a record is a structured field of the line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JobFilter(logging.Filter):
    """Puts ``job_id`` on records written while a task runs, or about one (Celery's own lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.job_id`` (never drops a record)."""
        if getattr(record, "job_id", None) is None:
            from celery._state import get_current_task

            task = get_current_task()
            job_id = getattr(getattr(task, "request", None), "id", None) if task is not None else None
            data = getattr(record, "data", None)
            if job_id is None and isinstance(data, dict):
                job_id = data.get("id")  # Celery's "received" / "succeeded" lines in the parent
            record.job_id = job_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "data" and value is not None:
                line[key] = value if isinstance(value, (str, int, float, bool, list, dict)) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Celery's own formatter, with ``[job <id>]`` on the lines of a job that do not name it."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        """Celery's line, with the job id when it does not show."""
        text = self.inner.format(record)
        job_id = getattr(record, "job_id", None)
        return f"{text} [job {job_id}]" if job_id and job_id not in text else text


#: billiard's logger (``billiard.util.get_logger``): the worker pool's own lines.
POOL_LOGGER = "multiprocessing"


def apply(logger: logging.Logger, settings: Settings) -> None:
    """Give every handler of ``logger`` the job filter and the chosen format."""
    for handler in logger.handlers:
        if not any(isinstance(f, JobFilter) for f in handler.filters):
            handler.addFilter(JobFilter())
        if settings.log_format == "json":
            handler.setFormatter(JsonFormatter())
        elif not isinstance(handler.formatter, TextFormatter):
            handler.setFormatter(TextFormatter(handler.formatter))


def install(settings: Settings) -> None:
    """Format the handlers Celery has set up already, and any it sets up later (pool children)."""
    from celery.utils.log import task_logger

    apply(logging.getLogger(), settings)
    apply(task_logger, settings)
    apply(logging.getLogger(POOL_LOGGER), settings)

    @after_setup_logger.connect(weak=False)
    def _root(logger: logging.Logger, **_: Any) -> None:
        apply(logger, settings)
        # Celery gives billiard's logger (it does not propagate) handlers of its own: the pool's
        # lines, such as a child that exited on a signal at shutdown, in the same format.
        apply(logging.getLogger(POOL_LOGGER), settings)

    @after_setup_task_logger.connect(weak=False)
    def _task(logger: logging.Logger, **_: Any) -> None:
        apply(logger, settings)
