"""Webhook signatures (against the Standard Webhooks reference vector), the SSRF guard, and the
keys document, without servers."""

from __future__ import annotations

import json

import pytest

from producer.core.errors import ConfigError, InvalidJob
from producer.core.settings import Settings
from producer.notifier import BACKOFF_MAX_S, backoff_s
from producer.tenants import Tenants, hash_key, validate_entry
from producer.webhooks import check_url, new_secret, sign, verify


def test_signature_matches_the_standard_webhooks_reference() -> None:
    # The example of https://github.com/standard-webhooks/standard-webhooks (spec/standard-webhooks.md).
    secret, msg_id, stamp, body = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        '{"test": 2432232314}',
    )
    assert sign(secret, msg_id, stamp, body) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify(secret, msg_id, str(stamp), body, "v1,bogus v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    assert not verify(new_secret(), msg_id, str(stamp), body, sign(secret, msg_id, stamp, body))


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://10.0.0.8/x",
        "https://192.168.1.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://0.0.0.0/x",
        "https://localhost/x",
        "http://example.com/x",
        "ftp://example.com/x",
        "https:///nohost",
    ],
)
def test_the_guard_refuses_internal_and_non_https_targets(url: str) -> None:
    with pytest.raises(InvalidJob) as e:
        check_url(url, Settings(), "jobs[2].webhook")
    assert e.value.field == "jobs[2].webhook"


def test_the_guard_allows_what_ops_list_and_only_that() -> None:
    local = Settings(webhook_allow_networks=("127.0.0.1/32",), webhook_allow_http=True)
    check_url("http://127.0.0.1:8080/hook", local)
    with pytest.raises(InvalidJob):
        check_url("http://10.0.0.1/hook", local)
    with pytest.raises(InvalidJob, match="STYLEQUEUE_WEBHOOK_HOSTS"):
        check_url(
            "https://127.0.0.1/hook",
            Settings(webhook_hosts=("*.example.com",), webhook_allow_networks=("127.0.0.0/8",)),
        )
    with pytest.raises(ConfigError, match="STYLEQUEUE_WEBHOOK_ALLOW_NETWORKS"):
        check_url("https://10.0.0.1/hook", Settings(webhook_allow_networks=("not-a-network",)))


def test_backoff_doubles_with_jitter_up_to_an_hour() -> None:
    waits = [backoff_s(n, 5.0) for n in range(20)]
    assert 4.0 <= waits[0] <= 6.0 and 8.0 <= waits[1] <= 12.0
    assert max(waits) <= BACKOFF_MAX_S * 1.2 and waits[-1] >= BACKOFF_MAX_S * 0.8


def entry(**changes: object) -> dict[str, object]:
    return {"tenant": "acme", "key_sha256": hash_key("k"), "input": ["in/acme/"], "output": ["out/acme/"], **changes}


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"tenant": "Acme.Corp"}, "tenant"),
        ({"key_sha256": "abc"}, "key_sha256"),
        ({"input": []}, "input"),
        ({"output": "out"}, "output"),
        ({"rate_per_s": -1}, "rate_per_s"),
        ({"max_in_flight": True}, "max_in_flight"),
        ({"colour": 1}, "colour"),
    ],
)
def test_a_wrong_keys_entry_is_refused_naming_it(bad: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidJob, match=words):
        validate_entry(entry(**bad))
    with pytest.raises(ConfigError, match="STYLEQUEUE_API_KEYS"):
        Tenants.load(Settings(api_keys=json.dumps({"keys": [entry(**bad)]})))


def test_keys_authenticate_by_hash_only() -> None:
    tenants = Tenants.load(Settings(api_keys=json.dumps({"keys": [entry()]})))
    acme = tenants.authenticate("Bearer k")
    assert acme is not None and acme.tenant == "acme"
    assert tenants.authenticate("Bearer K") is None and tenants.authenticate(None) is None
    assert tenants.authenticate("Basic k") is None
