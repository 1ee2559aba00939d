import pytest

from producer.broker.celery_app import celery_config
from producer.core.errors import ConfigError
from producer.core.settings import Settings


def test_from_env_types_and_fallbacks() -> None:
    s = Settings.from_env(
        {
            "STYLEQUEUE_BROKER_URL": "rediss://:secret@redis:6380/1",
            "STYLEQUEUE_ALLOWED_BUCKETS": "photos, results ,",
            "STYLEQUEUE_MAX_ITERATIONS": "50",
            "STYLEQUEUE_PROGRESS_INTERVAL_S": "0.25",
            "AWS_ENDPOINT_URL": "http://minio:9000",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    )
    assert s.allowed_buckets == ("photos", "results")
    assert (s.max_iterations, s.progress_interval_s) == (50, 0.25)
    assert (s.s3_endpoint_url, s.s3_region) == ("http://minio:9000", "eu-west-1")
    assert s.backend_url == s.broker_url
    assert s.readable == s.writable == ("photos", "results")  # the old variable covers both
    split = Settings.from_env({"STYLEQUEUE_INPUT_BUCKETS": "photos", "STYLEQUEUE_OUTPUT_BUCKETS": "results/out/"})
    assert (split.readable, split.writable) == (("photos",), ("results/out/",))
    assert Settings.from_env({"STYLEQUEUE_S3_CONDITIONAL_WRITES": "off"}).s3_conditional_writes is False


def test_bad_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="STYLEQUEUE_MAX_PIXELS: must be a number"):
        Settings.from_env({"STYLEQUEUE_MAX_PIXELS": "lots"})
    with pytest.raises(ConfigError, match="STYLEQUEUE_SOFT_TIME_LIMIT_S"):
        Settings.from_env({"STYLEQUEUE_SOFT_TIME_LIMIT_S": "100", "STYLEQUEUE_HARD_TIME_LIMIT_S": "50"})
    with pytest.raises(ConfigError, match="STYLEQUEUE_S3_CONDITIONAL_WRITES: must be 1/0"):
        Settings.from_env({"STYLEQUEUE_S3_CONDITIONAL_WRITES": "maybe"})
    with pytest.raises(ConfigError, match="STYLEQUEUE_LOG_FORMAT"):
        Settings.from_env({"STYLEQUEUE_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="STYLEQUEUE_VISIBILITY_TIMEOUT_S: must be at least 3 sweep intervals"):
        Settings.from_env({"STYLEQUEUE_VISIBILITY_TIMEOUT_S": "20", "STYLEQUEUE_SWEEP_INTERVAL_S": "10"})


def test_celery_config_for_long_gpu_jobs() -> None:
    s = Settings(hard_time_limit_s=1200, soft_time_limit_s=1100)
    c = celery_config(s)
    assert c["task_acks_late"] and c["task_reject_on_worker_lost"] and c["worker_prefetch_multiplier"] == 1
    assert c["accept_content"] == ["json"] and c["result_accept_content"] == ["json"]
    assert c["task_serializer"] == c["result_serializer"] == "json"
    assert (c["task_soft_time_limit"], c["task_time_limit"]) == (1100, 1200)
    assert c["broker_transport_options"]["visibility_timeout"] > c["task_time_limit"]
    assert (
        c["result_backend_transport_options"]["visibility_timeout"]
        == c["broker_transport_options"]["visibility_timeout"]
    )
    assert c["task_track_started"] and not c["worker_cancel_long_running_tasks_on_connection_loss"]
    assert c["worker_proc_alive_timeout"] >= 60 and c["result_expires"] > 0
    assert c["result_backend_always_retry"] and c["task_send_sent_event"] is False
    # A backend outage is waited out for about STYLEQUEUE_RETRY_FOR_S (retries x longest sleep).
    retry_s = c["result_backend_max_retries"] * c["result_backend_max_sleep_between_retries_ms"] / 1000
    assert retry_s >= s.retry_for_s
    # kombu's own list names (default separator) with one list per priority.
    transport = c["broker_transport_options"]
    assert "sep" not in transport and transport["priority_steps"] == list(range(10))
    assert c["task_routes"]["stylequeue.transfer"]["queue"] == "stylequeue"


def test_json_logs_cover_the_pools_own_logger() -> None:
    """billiard's logger does not propagate and Celery gives it a handler of its own: with
    STYLEQUEUE_LOG_FORMAT=json its lines (a pool child killed at shutdown) are JSON too."""
    import json
    import subprocess
    import sys

    script = (
        "import logging\n"
        "from celery import Celery\n"
        "from producer.core.settings import Settings\n"
        "from worker.signals import logs\n"
        "logs.install(Settings(log_format='json'))\n"
        "Celery('x').log.setup(loglevel='INFO')\n"
        "logging.getLogger('multiprocessing').error('Process %r exited with %r', 'ForkPoolWorker-1', 'signal 15')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    lines = [line for line in out.stderr.splitlines() if "ForkPoolWorker-1" in line]
    assert lines and json.loads(lines[0])["level"] == "ERROR", out.stderr
