"""A TCP proxy that breaks the network on command, for fault-injection tests.

Tests point a client (kombu, redis-py, psycopg) at the proxy instead of the real
service, then flip the proxy into a failure mode to see how the code under test
copes: the service refusing connections, connections dropped mid-conversation, a
black-holed network that never answers, or a slow link.

The proxy runs an asyncio event loop in a daemon thread so that plain synchronous
tests can drive it. Every mode change is executed *on* the loop and waited for, so
when a method returns the new behaviour is already in force -- no sleeps needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

_T = TypeVar("_T")
_CHUNK = 64 * 1024
# SO_LINGER on, timeout 0: close() sends RST instead of FIN, like a crashed peer or a firewall.
_LINGER_RST = struct.pack("ii", 1, 0)


class _Mode(enum.Enum):
    PASS = "pass"  # noqa: S105 - a mode name, not a password
    REFUSE = "refuse"
    HANG = "hang"


class _Link:
    """One client connection and, once connected, its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        # Once a link has swallowed bytes its byte stream is corrupt, so it never forwards again.
        self.hung = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]

    def reset(self) -> None:
        """Drop both sides with an RST, the way a dying host or middlebox does."""
        for writer in self.writers():
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            writer.transport.abort()


class FaultProxy:
    """Forward TCP from ``listen_host:port`` to ``upstream_host:upstream_port``, or fail on purpose.

    Use as a context manager (or ``start()``/``stop()``). ``port`` is chosen by the OS.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1"
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self._port = 0
        self._mode = _Mode.PASS
        self._latency = 0.0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        # While refusing, this bound but non-listening socket keeps our port reserved:
        # the kernel answers SYNs with RST (ECONNREFUSED) and nobody else can take the port.
        self._placeholder: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FaultProxy.port is only known after start()")
        return self._port

    def start(self) -> Self:
        if self._loop is not None:
            raise RuntimeError("FaultProxy already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"FaultProxy->{self.upstream_port}", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cut every connection, close the listener, stop the loop and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            # getaddrinfo for a non-numeric upstream host runs in the default executor: reap it.
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- public controls ------------------------------------------------------------------------

    def url_for(self, url: str) -> str:
        """``url`` with its host:port replaced by the proxy's; scheme, credentials, path kept."""
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{self.listen_host}:{self.port}"))

    def pass_through(self) -> None:
        """Forward bytes normally (the initial mode). Connections already hung stay hung."""
        self._call(self._set_mode(_Mode.PASS))

    def refuse(self) -> None:
        """Refuse new connections (ECONNREFUSED) and reset the open ones: the service is down."""
        self._call(self._set_mode(_Mode.REFUSE))

    def hang(self) -> None:
        """Black-hole the network: accept connections but never forward or answer a byte."""
        self._call(self._set_mode(_Mode.HANG))

    def cut(self) -> None:
        """Reset every open connection now; new connections are handled in the current mode."""
        self._call(self._cut())

    def set_latency(self, seconds: float) -> None:
        """Delay every forwarded chunk by ``seconds`` in both directions (0 disables)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._call(self._set_latency(seconds))

    @property
    def active_connections(self) -> int:
        return len(self._links)

    # -- loop side --------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FaultProxy is not running; call start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _set_latency(self, seconds: float) -> None:
        self._latency = seconds

    async def _set_mode(self, mode: _Mode) -> None:
        self._mode = mode
        if mode is _Mode.REFUSE:
            self._close_listener()
            if self._placeholder is None:
                self._placeholder = self._bound_socket()
            await self._cut()
        elif self._server is None:
            await self._listen()
        if mode is _Mode.HANG:
            for link in self._links:
                link.hung = True

    def _bound_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, self._port))
        return sock

    async def _listen(self) -> None:
        # Linux lets us bind and listen while the (non-listening) placeholder still holds the
        # port, so there is no window in which another process could grab it.
        sock = self._bound_socket()
        sock.listen(128)
        self._port = sock.getsockname()[1]
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        self._server = await asyncio.start_server(self._accept, sock=sock)

    def _close_listener(self) -> None:
        # Server.close() closes the listening socket synchronously; queued, unaccepted
        # connections are reset by the kernel. We don't await wait_closed(): from Python 3.12
        # it waits for every connection, and our links are cut separately.
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _cut(self) -> None:
        links = list(self._links)
        self._links.clear()
        for link in links:
            link.reset()
        tasks = [link.task for link in links if link.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _shutdown(self) -> None:
        self._close_listener()
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        await self._cut()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback that starts a task we own: asyncio 3.11's own per-client task
        # logs a spurious traceback when cancelled, and cut() needs to cancel.
        link = _Link(writer)
        if self._mode is _Mode.REFUSE:  # accepted just before the listener closed
            link.reset()
            return
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(self._serve(link, reader))

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        """Relay one accepted client for its whole life."""
        writer = link.client
        try:
            if self._mode is _Mode.HANG:
                link.hung = True
                with contextlib.suppress(OSError):
                    while await reader.read(_CHUNK):
                        pass  # swallow everything until the client gives up
                return
            try:
                up_reader, link.upstream = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                link.reset()  # upstream is down: the client sees a reset, not a hang
                return
            to_upstream = asyncio.create_task(self._pump(reader, link.upstream, link))
            to_client = asyncio.create_task(self._pump(up_reader, writer, link))
            try:
                # Either side closing ends the conversation (AMQP/RESP never half-close) ...
                await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
                if link.hung and not to_upstream.done():
                    # ... except in a black hole, where not even the upstream's FIN gets through.
                    await to_upstream
            finally:
                for pump in (to_upstream, to_client):
                    pump.cancel()
                await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        finally:
            self._links.discard(link)
            for w in link.writers():
                w.close()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link
    ) -> None:
        with contextlib.suppress(OSError):  # a reset or broken pipe just ends this direction
            while data := await src.read(_CHUNK):
                if self._latency:
                    await asyncio.sleep(self._latency)
                if link.hung:
                    continue
                dst.write(data)
                await dst.drain()
