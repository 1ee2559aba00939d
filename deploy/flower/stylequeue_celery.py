"""Celery settings for Flower (``celery --config=stylequeue_celery flower``), mounted by docker-compose.yml.

stylequeue keeps one Redis list per priority 0-9 (kombu's list names, see producer/broker/queues.py);
Flower counts only the lists of the priority steps it is told, and kombu's default is 0, 3, 6, 9.
With this, Flower's queue length is the true number of waiting jobs.
"""

broker_transport_options = {"priority_steps": list(range(10))}

# With deploy/compose.ha.yml the broker is a sentinel:// URL: kombu needs the master's name.
import os  # noqa: E402

if os.environ.get("STYLEQUEUE_REDIS_MASTER_NAME"):
    broker_transport_options["master_name"] = os.environ["STYLEQUEUE_REDIS_MASTER_NAME"]
