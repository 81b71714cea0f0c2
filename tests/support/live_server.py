"""Run the real ``scimd`` command line and server in subprocesses, for end-to-end tests.

Everything goes through ``python -m scimd.cli.main`` with the current interpreter, so the tests
work without the ``scimd`` console script on ``PATH``. The same helpers serve SQLite and
PostgreSQL: only the database URL differs (e.g. ``SCIMD_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import httpx

SCIMD_COMMAND: Final = (sys.executable, "-m", "scimd.cli.main")
LOCALHOST: Final = "127.0.0.1"
SCIM_PREFIX: Final = "/scim/v2"
HEALTH_PATH: Final = "/healthz"
CLI_TIMEOUT_SECONDS: Final = 60.0
STARTUP_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 10.0
LOG_TAIL_CHARS: Final = 4000
PORT_ATTEMPTS: Final = 3
ENTRA_SCOPES: Final = ("API", "USER SYNC")


class ScimdCommandError(RuntimeError):
    """A ``scimd`` command exited non-zero or printed something unexpected."""


class ServerStartError(RuntimeError):
    """``scimd serve`` exited or did not answer ``/healthz`` in time."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def sqlite_url(path: Path) -> str:
    """Return the SQLAlchemy URL of an SQLite file (``sqlite:////abs/path`` for absolute)."""
    return f"sqlite:///{path}"


def _tail(text: str) -> str:
    return text if len(text) <= LOG_TAIL_CHARS else "...\n" + text[-LOG_TAIL_CHARS:]


def _environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}


# --------------------------------------------------------------------------------------------
# One-shot CLI commands
# --------------------------------------------------------------------------------------------


def run_scimd(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = CLI_TIMEOUT_SECONDS
) -> subprocess.CompletedProcess[str]:
    """Run ``scimd ARGS`` to completion; raise :class:`ScimdCommandError` on failure."""
    command = [*SCIMD_COMMAND, *args]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_environment(env),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ScimdCommandError(f"`scimd {shlex.join(args)}` timed out after {timeout}s") from error
    if completed.returncode != 0:
        raise ScimdCommandError(
            f"`scimd {shlex.join(args)}` exited with {completed.returncode}\n"
            f"--- stdout ---\n{_tail(completed.stdout)}\n--- stderr ---\n{_tail(completed.stderr)}"
        )
    return completed


@dataclass(frozen=True)
class AppCredentials:
    """An OAuth 2 application created with ``scimd apps create``; the secret is the bearer."""

    client_id: str
    client_secret: str


def create_app(
    database_url: str,
    name: str,
    *,
    grant: str = "bearer",
    scopes: Sequence[str] = ENTRA_SCOPES,
    env: Mapping[str, str] | None = None,
) -> AppCredentials:
    """Create an OAuth 2 application and return its client id and (bearer) secret."""
    scope_args = [arg for scope in scopes for arg in ("--scope", scope)]
    args = ["apps", "create", "--name", name, "--grant", grant, *scope_args, "--json"]
    completed = run_scimd(*args, "--database-url", database_url, env=env)
    try:
        data = json.loads(completed.stdout)
        return AppCredentials(str(data["client_id"]), str(data["client_secret"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ScimdCommandError(
            "`scimd apps create --json` did not print a JSON object with client_id and "
            f"client_secret: {error}\n--- stdout ---\n{_tail(completed.stdout)}"
        ) from error


def revoke_app(database_url: str, client_id: str, *, env: Mapping[str, str] | None = None) -> None:
    """Revoke an OAuth 2 application; its secrets must stop working."""
    run_scimd("apps", "revoke", client_id, "--database-url", database_url, env=env)


def add_user_property(
    database_url: str,
    name: str,
    *,
    type_: str = "String",
    env: Mapping[str, str] | None = None,
) -> None:
    """Define a custom user property of the Bizagi ``UserProperties`` extension."""
    run_scimd("properties", "add", name, "--type", type_, "--database-url", database_url, env=env)


# --------------------------------------------------------------------------------------------
# Long-running server
# --------------------------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A running ``scimd serve``; stop it with :meth:`stop` or use it as a context manager."""

    process: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def root_url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def scim_url(self) -> str:
        """SCIM base URL, e.g. ``http://127.0.0.1:PORT/scim/v2``."""
        return self.root_url + SCIM_PREFIX

    def stderr_text(self) -> str:
        """Everything the server has written to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stdout_text(self) -> str:
        """Everything the server has written to stdout so far."""
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout``) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def wait_until_healthy(server: ServerProcess, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
    """Poll ``GET /healthz`` until it answers 200; raise :class:`ServerStartError` otherwise.

    Fails fast when the process exits; the error carries the server's stderr.
    """
    url = server.root_url + HEALTH_PATH
    deadline = time.monotonic() + timeout
    last_outcome = "no answer yet"
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            code = server.process.poll()
            if code is not None:
                raise ServerStartError(
                    f"scimd serve exited with {code} before {url} answered\n"
                    f"--- stderr ---\n{_tail(server.stderr_text())}"
                )
            try:
                response = client.get(url)
            except httpx.TransportError as error:
                last_outcome = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return
                last_outcome = f"HTTP {response.status_code}: {response.text[:200]}"
            time.sleep(0.1)
    raise ServerStartError(
        f"scimd serve did not answer 200 on {url} within {timeout}s (last: {last_outcome})\n"
        f"--- stderr ---\n{_tail(server.stderr_text())}"
    )


def start_server(
    database_url: str,
    *,
    log_dir: Path,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> ServerProcess:
    """Start ``scimd serve`` on 127.0.0.1 and return once ``/healthz`` answers 200.

    Output goes to log files in ``log_dir`` (never to pipes, which could fill up and block the
    server). On failure the process is stopped and :class:`ServerStartError` is raised with
    its stderr. Without an explicit ``port`` a free one is picked, and picked again if another
    process grabbed it before the server bound it.
    """
    attempts = 1 if port is not None else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        server = _launch(database_url, log_dir, port or free_port(), env, extra_args)
        try:
            wait_until_healthy(server, startup_timeout)
        except ServerStartError:
            server.stop()
            lost_port = "address already in use" in server.stderr_text().lower()
            if not (lost_port and attempt < attempts):
                raise
        except BaseException:
            server.stop()
            raise
        else:
            return server
    raise AssertionError("unreachable")  # pragma: no cover


def _launch(
    database_url: str,
    log_dir: Path,
    port: int,
    env: Mapping[str, str] | None,
    extra_args: Sequence[str],
) -> ServerProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout_path = log_dir / f"scimd-serve-{port}.stdout.log"
    stderr_path = log_dir / f"scimd-serve-{port}.stderr.log"
    command = [
        *SCIMD_COMMAND,
        "serve",
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--database-url",
        database_url,
        *extra_args,
    ]
    # The child keeps its own copies of the log file descriptors; ours close right away.
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=_environment(env)
        )
    return ServerProcess(process, port, stdout_path, stderr_path)


# --------------------------------------------------------------------------------------------
# A provisioned server, as Entra ID sees it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveServer:
    """A running server with an Entra-style OAuth 2 application and its bearer token."""

    base_url: str
    """SCIM base URL (``http://127.0.0.1:PORT/scim/v2``), what Entra calls the Tenant URL."""
    root_url: str
    token: str
    client_id: str
    database_url: str
    process: ServerProcess


@contextmanager
def provisioned_server(
    database_url: str,
    *,
    log_dir: Path,
    app_name: str = "entra",
    user_properties: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[LiveServer]:
    """Prepare a database the way the Entra replay expects, serve it, and stop it afterwards.

    Creates a bearer-token application (scopes API and USER SYNC), defines the custom user
    properties (default ``IdentificationNumber: String``), then starts the server.
    """
    properties = {"IdentificationNumber": "String"} if user_properties is None else user_properties
    credentials = create_app(database_url, app_name, env=env)
    for name, type_ in properties.items():
        add_user_property(database_url, name, type_=type_, env=env)
    with start_server(database_url, log_dir=log_dir, env=env) as server:
        yield LiveServer(
            base_url=server.scim_url,
            root_url=server.root_url,
            token=credentials.client_secret,
            client_id=credentials.client_id,
            database_url=database_url,
            process=server,
        )
