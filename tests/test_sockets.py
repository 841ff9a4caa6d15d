"""Listening sockets a component binds before it serves (accel.sockets): a real port
known before the first hello, handed to a child only by name and adopted there, the
endpoint peers are told, and every descriptor the system allows."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys

import pytest

from accel.sockets import adopt, bind, endpoint_of

# A child that reports whether descriptor argv[1] is a socket listening on port argv[2].
HOLDS_IT = """
import os, socket, sys
try:
    held = socket.socket(fileno=os.dup(int(sys.argv[1])))
except OSError:
    print("closed")
else:
    print("ours" if held.getsockname()[1] == int(sys.argv[2]) else "another")
"""
# A child that adopts descriptor argv[1] and serves one connection on it.
SERVES_ONE = """
import sys
from accel.sockets import adopt
sock = adopt(int(sys.argv[1]))
connection, _ = sock.accept()
connection.sendall(b"inheritable" if sock.get_inheritable() else b"kept")
connection.close()
"""


def child(script: str, *args: object, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=pass_fds,
    )


def test_port_0_binds_a_free_port_that_is_known_before_serving() -> None:
    with bind("127.0.0.1:0") as sock, bind("127.0.0.1:0") as other:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0 and port != other.getsockname()[1]
        assert endpoint_of(sock) == f"127.0.0.1:{port}"
        # Listening already: a peer's connection waits in the queue until it is served.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            connection, _ = sock.accept()
            connection.close()


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:\uff18\uff10", ":"],
)
def test_a_listen_address_without_a_port_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        bind(listen)


def test_a_bare_port_listens_everywhere_and_is_advertised_by_host_name() -> None:
    with bind(":0") as sock:
        host, port = sock.getsockname()
        assert host == "0.0.0.0"
        assert endpoint_of(sock) == f"{socket.gethostname()}:{port}"
        assert endpoint_of(sock, "node1.example.org:7000") == "node1.example.org:7000"
        with pytest.raises(ValueError, match="host:port"):
            endpoint_of(sock, "node1.example.org")


def test_an_ipv6_address_is_bound_as_ipv6_and_advertised_in_brackets() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with bind("[::1]:0") as sock:
        assert sock.family == socket.AF_INET6
        assert endpoint_of(sock) == f"[::1]:{sock.getsockname()[1]}"


def test_a_child_gets_the_socket_only_when_handed_it_and_keeps_it_from_its_own() -> None:
    with bind("127.0.0.1:0") as sock:
        fd, port = sock.fileno(), sock.getsockname()[1]
        assert not sock.get_inheritable()
        unnamed = child(HOLDS_IT, fd, port)
        assert unnamed.communicate(timeout=30)[0].strip() in ("closed", "another")
        named = child(HOLDS_IT, fd, port, pass_fds=(fd,))
        assert named.communicate(timeout=30)[0].strip() == "ours"

        server = child(SERVES_ONE, fd, pass_fds=(fd,))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
                connection.settimeout(30)
                assert connection.recv(64) == b"kept"  # adopted, not passed on again
        finally:
            server.communicate(timeout=30)
        assert server.returncode == 0


def test_adopt_takes_over_a_listening_descriptor() -> None:
    with bind("127.0.0.1:0") as sock:
        duplicate = sock.dup()
        duplicate.set_inheritable(True)
        adopted = adopt(duplicate.detach())
        with adopted:
            assert adopted.getsockname() == sock.getsockname()
            assert not adopted.get_inheritable()


RAISES = """
import resource
from accel.sockets import raise_file_limit
print(raise_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_a_process_takes_every_descriptor_it_may() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(hard, 256)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    # In a child, so that this test process keeps its own limits.
    found = subprocess.run(
        [sys.executable, "-c", RAISES],
        preexec_fn=lower,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    returned, soft = map(int, found.stdout.split())
    assert returned == soft == hard
