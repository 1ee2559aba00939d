"""A Server-Sent Events reader for tests: the events of an httpx streaming response, one at a time."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from support.metrics import sample, scrape


def streams_open(api: str) -> float:
    """The streams the API process at ``api`` (``http://127.0.0.1:PORT``) has open, from its /metrics."""
    return sample(scrape(int(api.rsplit(":", 1)[1])), "stylequeue_api_streams_open")


@dataclass(frozen=True)
class Event:
    """One event as a client sees it (``comment`` for a ``:`` line, ``retry`` for ``retry:``)."""

    name: str
    id: str | None
    data: Any


def events(response: httpx.Response) -> Iterator[Event]:
    """Parse the stream as the HTML standard says (fields, blank-line dispatch, comments)."""
    name, event_id, data = "message", None, []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield Event(name, event_id, json.loads("\n".join(data)))
            name, data = "message", []
        elif line.startswith(":"):
            yield Event("comment", None, line[1:].strip())
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value
            elif field == "retry":
                yield Event("retry", None, int(value))


class Listener:
    """A stream read in a thread, its events queued: the test waits on :meth:`next` with a deadline
    (the stream stays open between events, so a plain iteration could block the test for ever)."""

    def __init__(self, client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[Event | None] = queue.Queue()
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self._response: httpx.Response | None = None
        self._opened = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, path, headers or {}), daemon=True)
        self._thread.start()
        if not self._opened.wait(30):
            raise TimeoutError(f"{path}: no response in 30 s")

    def _run(self, client: httpx.Client, path: str, headers: dict[str, str]) -> None:
        try:
            self._read(client, path, headers)
        except httpx.HTTPError:
            if not self._stop.is_set():  # a stream the test closed may end so; any other is an error
                raise
        finally:
            self._opened.set()
            self.events.put(None)  # the stream closed

    def _read(self, client: httpx.Client, path: str, headers: dict[str, str]) -> None:
        with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(10, read=120)) as r:
            self.status, self.headers, self._response = r.status_code, r.headers, r
            self._opened.set()
            if r.status_code == 200:
                for event in events(r):
                    if self._stop.is_set():
                        return
                    self.events.put(event)

    def next(self, timeout_s: float = 60.0, comments: bool = False) -> Event | None:
        """The next event (comments and ``retry`` skipped unless ``comments``); None once closed."""
        while True:
            event = self.events.get(timeout=timeout_s)
            if event is None or comments or event.name not in ("comment", "retry"):
                return event

    def until(self, name: str, timeout_s: float = 120.0) -> list[Event]:
        """Every event up to and including the first ``name`` one."""
        seen = []
        while True:
            event = self.next(timeout_s)
            assert event is not None, f"the stream closed before {name!r}; saw {[e.name for e in seen]}"
            seen.append(event)
            if event.name == name:
                return seen

    def close(self) -> None:
        """Close the connection, as a client going away does."""
        self._stop.set()
        if self._response is not None:
            self._response.close()
        self._thread.join(30)
