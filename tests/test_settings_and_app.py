import pytest

from producer.app import celery_config
from producer.errors import InvalidJob
from producer.settings import Settings


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
    assert s.bucket_allowed("photos") and not s.bucket_allowed("other")
    assert Settings().bucket_allowed("anything")


def test_bad_environment_names_the_variable() -> None:
    with pytest.raises(InvalidJob, match="STYLEQUEUE_MAX_PIXELS: must be a number"):
        Settings.from_env({"STYLEQUEUE_MAX_PIXELS": "lots"})
    with pytest.raises(InvalidJob, match="STYLEQUEUE_SOFT_TIME_LIMIT_S"):
        Settings.from_env({"STYLEQUEUE_SOFT_TIME_LIMIT_S": "100", "STYLEQUEUE_HARD_TIME_LIMIT_S": "50"})


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
    assert c["task_track_started"] and c["worker_cancel_long_running_tasks_on_connection_loss"]
    assert c["worker_proc_alive_timeout"] >= 60 and c["result_expires"] > 0
    assert c["result_backend_always_retry"] and c["task_send_sent_event"] is False
    assert c["task_routes"]["stylequeue.transfer"]["queue"] == "stylequeue"
