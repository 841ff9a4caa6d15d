"""Listening sockets that a component binds before it serves.

Binding before serving lets a component started with ``--listen HOST:0`` know its
real port before it says hello, and lets ``accel up`` hand a bound socket to a part
it restarts (``--listen-fd``, as systemd socket activation does), so a restarted
part keeps its address. A server also takes every descriptor the system allows it:
a conductor keeps a connection open to each agent between heartbeats.
"""

from __future__ import annotations

import resource
import socket

from accel.internal.endpoints import split_endpoint


def bind(listen: str) -> socket.socket:
    """A listening TCP socket for ``host:port``; port 0 picks a free one."""
    host, port = _split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    # Not inheritable: a child is handed it only by name (Popen's pass_fds). A tool the
    # component runs (an FPGA programmer) that held it would keep the port answering,
    # unserved, after the component died.
    return sock


def _split_listen(listen: str) -> tuple[str, int]:
    if listen.startswith(":"):
        listen = "0.0.0.0" + listen
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {listen!r} must be HOST:PORT")
    return host, int(port)


def adopt(fd: int) -> socket.socket:
    """A listening socket inherited from the process that started us, kept from our own
    children (see ``bind``)."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock


def endpoint_of(sock: socket.socket, advertise: str | None = None) -> str:
    """The ``host:port`` peers should call: ``advertise`` if given, else the bound address."""
    if advertise:
        split_endpoint(advertise)
        return advertise
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def raise_file_limit() -> int:
    """Raises this process's open-descriptor limit to the hard limit; that limit.

    Soft limits of 1,024 are common, and a conductor of thousands of agents, or a
    simulator of thousands of nodes, holds a socket or more for each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit the kernel caps lower
            return soft
    return hard
