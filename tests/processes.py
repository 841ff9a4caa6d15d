"""accel's components as real processes on loopback ports, for integration tests.

Each component runs as ``python -m accel ...`` exactly as an operator would run it.
Conductors, agents and apis get a socket the test bound itself (``--listen-fd``),
so the test knows their address without racing for a port; drivers listen on
``127.0.0.1:0`` and announce their real port in their hello.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from accel.cli import fleet_daemons, node_daemons
from accel.cli.argv import Setting, accel_argv
from accel.internal.tls import TlsFiles

TOKEN = "integration-test-token-0123456789"
DEADLINE_SECONDS = 30.0
Found = TypeVar("Found")


def run_accel(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``accel ARGS`` as a user runs it, without this machine's ACCEL_* settings."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    return subprocess.run(
        [sys.executable, "-m", "accel", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**environment, **(env or {})},
    )


def wait_until(
    check: Callable[[], Found | None],
    what: str,
    timeout: float = DEADLINE_SECONDS,
    on_timeout: str | Callable[[], str] = "",
) -> Found:
    """Polls ``check`` until it returns something truthy; a safety net, not a speed test.

    ``on_timeout`` may be a callable, so that logs are read when the wait gives up
    rather than when it starts.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            detail = on_timeout() if callable(on_timeout) else on_timeout
            raise AssertionError(f"gave up waiting for {what}\n{detail}")
        time.sleep(0.05)


def internal_client(version: str | None = "1.1", tls: TlsFiles | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if version:
        headers["Accel-Internal-Version"] = version
    verify = tls.client_context() if tls is not None else True
    return httpx.Client(headers=headers, timeout=10.0, verify=verify)


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    url: str
    process: subprocess.Popen[bytes]
    sock: socket.socket | None = None

    @property
    def endpoint(self) -> str:
        return self.url.split("://", 1)[-1]

    def alive(self) -> bool:
        return self.process.poll() is None

    def serves(self, verify: ssl.SSLContext | bool = True) -> bool:
        """Whether it answers ``GET /`` with 200 now (a probe to poll, not a check)."""
        try:
            return httpx.get(self.url + "/", timeout=2.0, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        try:
            return f"--- {self.name} log ---\n" + self.log_path.read_text()[-4000:]
        except OSError:
            return ""


@dataclass
class Cluster:
    """Starts components for one test and stops them all at its end."""

    workdir: Path
    services: list[Service] = field(default_factory=list)
    # With certificates, internal components speak mutual TLS (the api as a client).
    tls: TlsFiles | None = None
    # Set in every component's environment (e.g. PYTHONPROFILEIMPORTTIME).
    env: dict[str, str] = field(default_factory=dict)

    def _tls_settings(self) -> dict[str, Setting]:
        """The TLS settings of every internal component of this cluster."""
        if self.tls is None:
            return {}
        return {"tls_cert": self.tls.cert, "tls_key": self.tls.key, "tls_ca": self.tls.ca}

    def _internal_url(self, sock: socket.socket) -> str:
        url = url_of(sock)
        return url.replace("http://", "https://") if self.tls is not None else url

    def logs(self) -> str:
        return "\n".join(service.log() for service in self.services)

    def spawn(
        self,
        name: str,
        argv: list[str],
        sock: socket.socket | None,
        url: str,
        env: dict[str, str] | None = None,
    ) -> Service:
        """Runs ``argv`` (see accel.cli.argv), handing it ``sock`` if given."""
        log_path = self.workdir / f"{name}-{len(self.services)}.log"
        environment = {**os.environ, "ACCEL_INTERNAL_TOKEN": TOKEN, **self.env, **(env or {})}
        with open(log_path, "ab") as output:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(sock.fileno(),) if sock else (),
                env=environment,
            )
        service = Service(name, argv, log_path, url, process, sock)
        self.services.append(service)
        return service

    def _ready(self, service: Service) -> Service:
        def answers() -> bool:
            if not service.alive():
                raise AssertionError(f"{service.name} exited\n{service.log()}")
            return service.serves(self.tls.client_context() if self.tls is not None else True)

        wait_until(answers, f"{service.name} to serve", on_timeout=service.log)
        return service

    def restart(self, service: Service) -> Service:
        """Starts the same command again on the same socket (same address)."""
        service.stop()
        self.services.remove(service)
        # The same socket keeps its descriptor: the command line holds as it was.
        again = self.spawn(service.name, service.argv, service.sock, service.url)
        return self._ready(again) if service.sock is not None else again

    def conductor(self, database: str, **settings: Setting) -> Service:
        sock = bound_socket()
        argv = accel_argv(
            fleet_daemons.conductor,
            database=database,
            listen_fd=sock.fileno(),
            **self._tls_settings(),
            **settings,
        )
        return self._ready(self.spawn("conductor", argv, sock, self._internal_url(sock)))

    def api(self, database: str, **settings: Setting) -> Service:
        """An api, under noauth unless ``settings`` say otherwise."""
        sock = bound_socket()
        # noauth unless ``settings`` names another --auth.
        chosen: dict[str, Setting] = {"auth": "noauth", **self._tls_settings(), **settings}
        argv = accel_argv(fleet_daemons.api, database=database, listen_fd=sock.fileno(), **chosen)
        return self._ready(self.spawn("api", argv, sock, url_of(sock)))

    def agent(
        self,
        conductors: list[str],
        name: str,
        **settings: Setting,
    ) -> Service:
        sock = bound_socket()
        argv = accel_argv(
            node_daemons.agent,
            conductor=",".join(conductors),
            name=name,
            listen_fd=sock.fileno(),
            **self._tls_settings(),
            **settings,
        )
        return self._ready(self.spawn(f"agent-{name}", argv, sock, self._internal_url(sock)))

    def driver(self, kind: str, agent: Service, sysfs_root: Path, **settings: Setting) -> Service:
        """A driver on 127.0.0.1:0, ready once the agent lists it."""
        argv = accel_argv(
            node_daemons.driver,
            kind=kind,
            agent=agent.url,
            sysfs_root=sysfs_root,
            **self._tls_settings(),
            **settings,
        )
        service = self.spawn(f"driver-{kind.lower()}", argv, None, "")

        def registered() -> str | None:
            if not service.alive():
                raise AssertionError(f"driver {kind} exited\n{service.log()}")
            for driver in agent_drivers(agent, self.tls):
                if driver["type"] == kind:
                    return str(driver["endpoint"])
            return None

        endpoint = wait_until(registered, f"driver {kind} to register", on_timeout=self.logs)
        service.url = f"{'https' if self.tls else 'http'}://{endpoint}"
        return service

    def discard(self, service: Service) -> None:
        """Stops a service for good and frees its socket."""
        service.stop()
        if service.sock is not None:
            service.sock.close()
        self.services.remove(service)

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop()
            if service.sock is not None:
                service.sock.close()


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"http://{host}:{port}"


def agent_drivers(agent: Service, tls: TlsFiles | None = None) -> list[dict[str, Any]]:
    try:
        with internal_client(version=None, tls=tls) as client:  # any agent speaks the seed's 1.0
            drivers: list[dict[str, Any]] = client.get(agent.url + "/v1/drivers").json()["drivers"]
    except (httpx.HTTPError, ValueError, KeyError):
        return []
    return drivers
