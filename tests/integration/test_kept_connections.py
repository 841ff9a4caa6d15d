"""A conductor keeps an agent's idle connection for three of its heartbeat intervals,
past uvicorn's default of five seconds, so that each heartbeat reuses the last one's
connection instead of making a new TCP (and TLS) handshake."""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urlsplit

from tests.processes import TOKEN, Cluster

HEARTBEAT = 3.0  # the conductor keeps an idle connection 9 s


def hello_over(connection: socket.socket, endpoint: str) -> bytes:
    """Sends one hello on ``connection``; the whole answer, head and body."""
    body = json.dumps({"status": "READY", "endpoint": endpoint, "name": "node1"}).encode()
    connection.sendall(
        b"POST /v1/hello HTTP/1.1\r\nHost: conductor\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nAccel-Internal-Version: 1.5\r\n".encode()
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    # Read to the body's end: uvicorn writes the head and the body apart, and a body
    # left unread would be taken for the start of the next answer.
    answer = b""
    while True:
        head, found, rest = answer.partition(b"\r\n\r\n")
        if found:
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if length is not None and len(rest) >= int(length.group(1)):
                return answer
        chunk = connection.recv(65536)
        if not chunk:
            return answer  # the conductor closed the connection
        answer += chunk


def test_an_idle_agent_connection_outlives_uvicorns_default(
    cluster: Cluster, sqlite_url: str
) -> None:
    conductor = cluster.conductor(sqlite_url, heartbeat_interval=HEARTBEAT)
    url = urlsplit(conductor.url)
    # The agent's address: bound, not listening, so the sync the hello asks for fails fast.
    with socket.socket() as agent, socket.create_connection((url.hostname, url.port), 10) as conn:
        agent.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{agent.getsockname()[1]}"
        conn.settimeout(10)
        assert hello_over(conn, endpoint).startswith(b"HTTP/1.1 200")
        time.sleep(6.5)  # idle past five seconds, within nine
        assert hello_over(conn, endpoint).startswith(b"HTTP/1.1 200")
