"""Throw-away servers for tests that must crash or misconfigure a service.

The shared Redis on 6379 must never be killed or reconfigured, so durability tests
(AOF, ``appendfsync``, SIGKILL mid-write) get their own ``redis-server`` process in a
temp dir. ``HungListener`` stands in for a service whose host accepts TCP but never
speaks -- the case where a client without timeouts blocks forever.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.processes import end_process

REDIS_SERVER = "/usr/bin/redis-server"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; racy, but good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _config_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _reap(box: list[subprocess.Popen[bytes]], directory: Path) -> None:
    for process in box:
        end_process(process)
    box.clear()
    shutil.rmtree(directory, ignore_errors=True)


class PrivateRedis:
    """A private ``redis-server`` on a free port, stored in its own temp dir.

    Keyword options become ``redis-server`` flags (underscores turn into dashes, booleans
    into yes/no): ``PrivateRedis(appendonly=True, appendfsync="always")``. RDB snapshots
    are off unless you pass ``save``. ``kill()`` then ``start()`` reuses the same dir and
    port, so whatever the AOF persisted is there again and client URLs stay valid.
    """

    def __init__(self, *, startup_timeout: float = 10.0, **options: str | int | bool) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="private-redis-"))
        self.startup_timeout = startup_timeout
        self.options: dict[str, str] = {"save": ""}
        self.options.update({k.replace("_", "-"): _config_value(v) for k, v in options.items()})
        # A one-slot box shared with the finalizer: a test that forgets close() (or dies)
        # still gets its server killed and its dir removed at GC or interpreter exit.
        self._box: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _reap, self._box, self.directory)

    @property
    def _process(self) -> subprocess.Popen[bytes] | None:
        return self._box[0] if self._box else None

    @_process.setter
    def _process(self, process: subprocess.Popen[bytes] | None) -> None:
        self._box[:] = [] if process is None else [process]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server (caller closes it)."""
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self) -> Self:
        """Start (or restart after ``kill``/``stop``) and return once it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.directory), "--logfile", "redis.log", "--daemonize", "no"]
        for name, value in self.options.items():
            args += [f"--{name}", value]
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        probe = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        try:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at startup:\n{self.log[-2000:]}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if probe.ping():
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server not answering PING:\n{self.log[-2000:]}")
                time.sleep(0.02)
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no final fsync -- only what the AOF already has survives."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """Graceful SIGTERM shutdown."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is not None:
            end_process(process, sig)

    def close(self) -> None:
        """Kill the server and delete its directory."""
        self._finalizer()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class HungListener:
    """A TCP server that accepts connections and never sends a byte (nor closes them).

    Simulates a wedged service or a black-holed load balancer: the TCP handshake
    succeeds, so only a read/handshake timeout in the client can get it unstuck.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="HungListener", daemon=True)

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        with self._lock:
            return len(self._accepted)

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self) -> Self:
        self._listener.listen(64)
        self._listener.settimeout(0.05)  # poll, so close() can stop the thread promptly
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._accepted.append(conn)  # kept open, never read, never written

    def close(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for conn in self._accepted:
                conn.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
