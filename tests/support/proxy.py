"""A TCP proxy of the tests' own in front of a real redis-server, to lose one reply on purpose."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from producer.devstack import free_port


class ReplyDroppingProxy:
    """Forwards every connection to ``127.0.0.1:<target_port>`` byte for byte, except once: the
    command that carries ``trigger`` (e.g. the SHA of a Lua script sent by ``EVALSHA``) reaches the
    server and runs, but its reply is thrown away and the client's connection is reset, as when a
    network drops a reply or the server answers after the client's timeout.

    Args:
        target_port: The redis-server's port.
        trigger: Bytes that mark the command whose reply is lost (the first one seen).
    """

    def __init__(self, target_port: int, trigger: bytes) -> None:
        self.target_port = target_port
        self.trigger = trigger
        self.port = free_port()
        #: Set once a reply has been dropped.
        self.dropped = threading.Event()
        self._armed = True
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            drop = threading.Event()  # this connection's next reply is the one to lose
            threading.Thread(target=self._upstream, args=(client, server, drop), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, drop), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, drop: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._armed and self.trigger in data:
                        self._armed = False
                        drop.set()  # before the command goes on: its reply cannot slip through
                server.sendall(data)
        _close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, drop: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if drop.is_set():
                    self.dropped.set()
                    break  # the reply is lost; the client sees its connection reset
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        _close(client, server)

    def close(self) -> None:
        """Stop accepting connections (those open end with their peers)."""
        self._closed = True
        self._listener.close()


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()
