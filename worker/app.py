"""The worker's Celery app: ``stylequeue worker`` runs ``celery -A worker.app worker`` with it.

Importing this module does no work: it declares the app (whose configuration is read from the
environment when Celery first needs it) and a bootstep. The bootstep runs when a worker starts:
it installs the worker's policies (:mod:`worker.signals`: logs, metrics, health files, dead
letters, refused messages, the recovery sweep) and, in each pool child, loads the model before
the child takes a job (TensorFlow and CUDA do not survive ``fork``, so the parent never imports
TensorFlow; ``worker_proc_alive_timeout`` gives the child time to load).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps

from producer.broker.celery_app import celery_config
from producer.core.settings import Settings


def _config() -> dict[str, Any]:
    return celery_config(Settings.from_env())


class Setup(bootsteps.StartStopStep):
    """Installs stylequeue's policies in a starting worker, and stops what they started."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        from worker import signals

        super().__init__(worker, **kwargs)
        self.settings = Settings.from_env()
        signals.install(self.settings)

    def start(self, worker: Any) -> None:
        """The worker (parent process) starts: serve metrics, start the sweep."""
        from worker import signals

        signals.start(self.settings, worker.hostname)

    def stop(self, worker: Any) -> None:
        """The worker stops."""
        from worker import signals

        signals.stop()


app = Celery("stylequeue-worker", include=["worker.tasks"])
app.add_defaults(_config)
app.steps["worker"].add(Setup)
