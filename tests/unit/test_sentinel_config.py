"""Sentinel URLs and settings, without servers: parsing, defaults, and what Celery is given."""

from __future__ import annotations

import pytest

from producer import broker
from producer.broker.celery_app import celery_config
from producer.core.errors import ConfigError
from producer.core.settings import Settings

URL = "sentinel://:s3cret@h1:26379;sentinel://h2:26380;sentinel://h3/2"


def test_a_sentinel_url_names_its_hosts_database_and_password() -> None:
    assert broker.sentinel_hosts(URL) == ([("h1", 26379), ("h2", 26380), ("h3", 26379)], 2, "s3cret")
    with pytest.raises(ConfigError, match="STYLEQUEUE_BROKER_URL"):
        broker.sentinel_hosts("sentinel://h1:26379;redis://h2:6379/0")


def test_a_sentinel_url_needs_the_master_name() -> None:
    with pytest.raises(ConfigError, match="STYLEQUEUE_REDIS_MASTER_NAME"):
        Settings.from_env({"STYLEQUEUE_BROKER_URL": URL})
    with pytest.raises(ConfigError, match="STYLEQUEUE_REDIS_MASTER_NAME"):
        Settings.from_env({"STYLEQUEUE_RESULT_BACKEND": URL})
    with pytest.raises(ConfigError, match="STYLEQUEUE_REDIS_MASTER_NAME"):
        broker.connect(URL)


def test_replicas_are_waited_for_by_default_only_with_sentinel() -> None:
    assert Settings().min_replicas == 0
    ha = Settings.from_env({"STYLEQUEUE_BROKER_URL": URL, "STYLEQUEUE_REDIS_MASTER_NAME": "m"})
    assert ha.sentinel and ha.min_replicas == 1
    assert Settings.from_env({"STYLEQUEUE_REDIS_MIN_REPLICAS": "2"}).min_replicas == 2
    with pytest.raises(ConfigError, match="STYLEQUEUE_REDIS_MIN_REPLICAS"):
        Settings.from_env({"STYLEQUEUE_REDIS_MIN_REPLICAS": "-1"})


def test_celery_gets_the_master_name_for_the_broker_and_the_result_backend() -> None:
    env = {"STYLEQUEUE_BROKER_URL": URL, "STYLEQUEUE_REDIS_MASTER_NAME": "m", "STYLEQUEUE_SENTINEL_PASSWORD": "pw"}
    config = celery_config(Settings.from_env(env))
    assert config["broker_url"] == config["result_backend"] == URL
    for options in (config["broker_transport_options"], config["result_backend_transport_options"]):
        assert options["master_name"] == "m" and options["sentinel_kwargs"] == {"password": "pw"}
    plain = celery_config(Settings())
    assert "master_name" not in plain["broker_transport_options"]


def test_every_connection_of_a_sentinel_deployment_asks_the_sentinels() -> None:
    from redis.sentinel import SentinelConnectionPool

    settings = Settings.from_env({"STYLEQUEUE_BROKER_URL": URL, "STYLEQUEUE_REDIS_MASTER_NAME": "m"})
    client = broker.of(settings, 2.0)  # no connection is made until a command
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "m"
    assert [
        tuple(s.connection_pool.connection_kwargs[k] for k in ("host", "port")) for s in pool.sentinel_manager.sentinels
    ] == [
        ("h1", 26379),
        ("h2", 26380),
        ("h3", 26379),
    ]
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "s3cret"
    short = broker.with_timeout(client, 0.5)
    assert isinstance(short.connection_pool, SentinelConnectionPool)
    assert short.connection_pool.connection_kwargs["socket_timeout"] == 0.5
