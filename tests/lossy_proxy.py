"""A loopback TCP relay that loses answers: the service did the work, the caller never hears.

A service advertised at the relay's address (``--advertise``) is called through it.
While ``losing`` is set, the relay passes each POST on whole and cuts both
connections the moment its answer starts to come back, as a network that fails
after the far side committed would. Otherwise, and for reads, it relays both ways.
"""

from __future__ import annotations

import contextlib
import socket
import threading

IDLE_SECONDS = 60.0


class AnswerLosingProxy:
    def __init__(self) -> None:
        # Set once the service listens: it is started advertising this relay's address.
        self.target = ""
        self.losing = True
        self.lost = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)
        self._closed = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def endpoint(self) -> str:
        host, port = self._listener.getsockname()
        return f"{host}:{port}"

    def close(self) -> None:
        self._closed.set()
        self._accepting.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            host, port = self.target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=IDLE_SECONDS)
        except (OSError, ValueError):
            client.close()
            return
        client.settimeout(IDLE_SECONDS)
        methods: list[bytes] = []  # of the requests on this connection, in order
        forward = threading.Thread(target=_pump, args=(client, upstream, methods), daemon=True)
        forward.start()
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if self.losing and methods and methods[-1] == b"POST":
                    with self._lock:
                        self.lost += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            forward.join(IDLE_SECONDS)


def _pump(source: socket.socket, sink: socket.socket, methods: list[bytes]) -> None:
    try:
        while data := source.recv(65536):
            method = data.split(b" ", 1)[0]
            if method in (b"GET", b"POST", b"PATCH", b"PUT", b"DELETE", b"HEAD"):
                methods.append(method)
            sink.sendall(data)
    except OSError:
        pass
