"""One webhook attempt against real sockets: it goes to the address the guard checked (no second
DNS lookup), ends by its deadline whatever the receiver does, and tells the tenant nothing of why
a connection failed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support.webhooks import WebhookReceiver

from producer.broker.events import Delivery
from producer.core.errors import InvalidJob
from producer.core.settings import Settings
from producer.devstack import free_port
from producer.notifier import post
from producer.webhooks import check_url, new_secret

SECRET = new_secret()


def delivery(url: str) -> Delivery:
    return Delivery("evt-1", url, "acme", "acme.job", '{"id": "evt-1"}', time.time())


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver({"acme": SECRET})
    yield r
    r.stop()


def test_the_attempt_connects_to_the_checked_address_not_a_new_lookup(receiver: WebhookReceiver) -> None:
    """The URL's name does not even resolve: only the address handed over is dialled."""
    url = f"http://rebound.invalid:{receiver.port}/ok"
    assert post(delivery(url), SECRET, 5.0, ["127.0.0.1"]) is None
    headers, _ = receiver.raw[-1]
    assert headers["host"] == f"rebound.invalid:{receiver.port}" and receiver.bad_signatures == 0


def test_a_slow_receiver_cannot_hold_the_attempt_past_its_deadline() -> None:
    """A receiver that trickles its answer a byte at a time (each read within the socket timeout)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                if stop.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    error = post(delivery(f"http://127.0.0.1:{server.getsockname()[1]}/"), SECRET, 1.0, ["127.0.0.1"])
    elapsed = time.monotonic() - started
    stop.set()
    server.close()
    assert error is not None and elapsed < 5, elapsed  # the deadline (1 s) ended it, not the receiver


def test_why_a_connection_failed_stays_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens
    error = post(delivery(f"http://127.0.0.1:{port}/"), SECRET, 2.0, ["127.0.0.1"])
    assert error is not None and "refused" not in error.lower() and str(port) not in error
    assert any("refused" in r.getMessage().lower() for r in caplog.records)


@pytest.mark.parametrize(
    "address",
    ["100.100.100.200", "100.64.0.1", "192.0.2.10", "198.18.0.1", "10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1"],
    ids=["alibaba-metadata", "shared-space", "documentation", "benchmarking", "private", "link-local", "mapped"],
)
def test_only_globally_reachable_addresses_are_called(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(InvalidJob, match="not a public address"):
        check_url(f"https://{host}/hook", Settings())


def test_the_guard_returns_what_it_checked() -> None:
    settings = Settings(webhook_allow_http=True, webhook_allow_networks=("127.0.0.1/32",))
    assert check_url("http://127.0.0.1:8080/hook", settings) == ["127.0.0.1"]


def test_a_stalled_tls_handshake_is_cut_at_the_deadline() -> None:
    """A server that accepts and never answers the TLS hello: the deadline ends the handshake."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    started = time.monotonic()
    error = post(delivery(f"https://localhost:{server.getsockname()[1]}/"), SECRET, 1.0, ["127.0.0.1"])
    elapsed = time.monotonic() - started
    server.close()
    for conn in held:
        conn.close()
    assert error is not None and elapsed < 5, elapsed


def test_the_next_checked_address_is_tried_when_one_does_not_connect(receiver: WebhookReceiver) -> None:
    """A name with two addresses, the first refusing (nothing listens on 127.0.0.2 here): the second
    is dialled, within the same deadline, and takes the delivery."""
    url = f"http://both.invalid:{receiver.port}/ok"
    assert post(delivery(url), SECRET, 5.0, ["127.0.0.2", "127.0.0.1"]) is None
    assert receiver.tries("evt-1") == 1
