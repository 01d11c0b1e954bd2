"""A fault-injecting TCP proxy for the tests: a flaky network between MQTT clients and the broker.

``FaultProxy(upstream_host, upstream_port)`` listens on a free loopback port and forwards each connection
to the upstream (the broker); its faults, on command or on a random schedule:

- ``cut_all(mode)``: cut every open connection, ``"rst"`` (a reset: ``SO_LINGER`` 0) or ``"fin"`` (a close);
- ``cut_handshakes(count, mode, server_bytes=0)``: the next ``count`` new connections are cut as soon as the
  server sent more than ``server_bytes`` bytes (0: the client's CONNECT reaches the broker but its CONNACK,
  or a TLS ServerHello, never reaches the client); ``mode`` may be a list, one mode per connection;
- ``stall(seconds)``: stop forwarding both ways, keeping every socket open (no FIN, no RST: a half-open
  link); connections made during the stall stall too. ``stall_start()`` / ``resume()`` for open-ended ones;
- ``set_latency(seconds, jitter)``: delay every chunk (order kept, as TCP does);
- ``set_bandwidth(bytes_per_s)``: cap each direction (shared by all connections), None for no cap;
- ``refuse(True)``: stop listening (clients get "connection refused"), ``refuse(False)`` listens again;
- ``random_cuts(min_s, max_s, mode)``: cut everything every ``min_s``..``max_s`` seconds until
  ``stop_random()`` (mode ``"mixed"`` picks RST or FIN each time), from a seeded ``random.Random``.

``stats`` counts connections, cuts and bytes; ``events`` records (monotonic time, what) for each fault.
All of it runs on one asyncio loop in a daemon thread; the control methods are thread-safe. Loopback only.

Fixture: ``fault_proxy`` is a factory, ``fault_proxy(broker, **options)`` (a ``tests.broker.Broker`` or a
``(host, port)``) returns a started ``FaultProxy``; all are closed at teardown. Import it into a test module
(``from tests.faultproxy import fault_proxy``) to use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
CHUNK = 65536
MODES = ("rst", "fin")


@dataclass
class ProxyStats:
    connections: int = 0  # accepted
    active: int = 0
    cuts: int = 0  # connections cut by cut_all / random_cuts
    handshake_cuts: int = 0  # connections cut by cut_handshakes
    cut_rounds: int = 0  # cut_all calls (random ones included)
    stalls: int = 0
    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client


@dataclass
class _Conn:
    ident: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    cut_after: int | None = None  # cut once the server sent more than this many bytes
    cut_mode: str = "rst"
    down: int = 0
    closed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class _Pacer:
    """A shared bandwidth cap for one direction: when the next chunk may go."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self.free_at = 0.0

    async def wait(self, size: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + size / self.rate
        if self.free_at > now:
            await asyncio.sleep(self.free_at - now)


class FaultProxy:
    """See the module docstring."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0, seed: int | None = 0,
                 scheme: str = "mqtt") -> None:
        if upstream_host not in (LOOPBACK, "localhost"):
            raise ValueError(f"the fault proxy forwards to loopback only, not {upstream_host!r}")
        self.upstream = (LOOPBACK, upstream_port)
        self.host = LOOPBACK
        self.port = port
        self.scheme = scheme
        self.stats = ProxyStats()
        self.events: list[tuple[float, str]] = []
        self.random = random.Random(seed)
        self.latency = 0.0
        self.jitter = 0.0
        self._up = _Pacer()
        self._down = _Pacer()
        self._conns: dict[int, _Conn] = {}
        self._handshake_cuts: list[tuple[str, int]] = []
        self._next_id = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._random_task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True, backlog=128
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._close(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._loop.close()

    async def _close(self) -> None:
        if self._random_task is not None:
            self._random_task.cancel()
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns.values()):
            self._cut(conn, "fin")
        await asyncio.sleep(0)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _soon(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return self._call(run())

    def _event(self, what: str) -> None:
        with self._lock:
            self.events.append((time.monotonic(), what))

    # ----------------------------------------------------------------- faults (thread-safe)

    def cut_all(self, mode: str = "rst") -> int:
        """Cut every open connection now; returns how many were cut."""
        _check_mode(mode)
        return int(self._soon(lambda: self._cut_all(mode)))

    def _cut_all(self, mode: str) -> int:
        conns = [c for c in self._conns.values() if not c.closed]
        for conn in conns:
            self._cut(conn, mode)
        self.stats.cuts += len(conns)
        self.stats.cut_rounds += 1
        self._event(f"cut {len(conns)} ({mode})")
        return len(conns)

    def cut_handshakes(self, count: int, mode: str | Sequence[str] = "rst", server_bytes: int = 0) -> None:
        """Cut each of the next ``count`` new connections once the server sent over ``server_bytes``."""
        modes = [mode] * count if isinstance(mode, str) else list(mode)
        if len(modes) != count:
            raise ValueError(f"{len(modes)} modes for {count} handshakes")
        for each in modes:
            _check_mode(each)
        self._soon(lambda: self._handshake_cuts.extend((m, server_bytes) for m in modes))

    def stall(self, seconds: float) -> None:
        """Stop forwarding both ways for ``seconds`` (sockets stay open: no FIN, no RST)."""
        self._soon(lambda: self._stall(seconds))

    def stall_start(self) -> None:
        self._soon(lambda: self._stall(None))

    def resume(self) -> None:
        self._soon(self._resume)

    def _stall(self, seconds: float | None) -> None:
        assert self._flowing is not None
        self._flowing.clear()
        self.stats.stalls += 1
        self._event(f"stall {seconds if seconds is not None else 'open-ended'}")
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        if seconds is not None:
            self._stall_timer = self._loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        assert self._flowing is not None
        if not self._flowing.is_set():
            self._event("resume")
        self._flowing.set()
        self._stall_timer = None

    @property
    def stalled(self) -> bool:
        return self._flowing is not None and not self._flowing.is_set()

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Every chunk is delivered ``seconds`` +- ``jitter`` after it was read (never reordered)."""
        self.latency, self.jitter = max(0.0, seconds), max(0.0, jitter)

    def set_bandwidth(self, bytes_per_s: float | None) -> None:
        """Cap each direction to ``bytes_per_s`` (shared by all connections); None lifts the cap."""
        self._up.rate = self._down.rate = bytes_per_s

    def refuse(self, refusing: bool = True) -> None:
        """Stop listening (new clients are refused) or listen again on the same port."""

        async def toggle() -> None:
            if refusing and self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
                self._event("refusing")
            elif not refusing and self._server is None:
                await self._listen()
                self._event("listening")

        self._call(toggle())

    def random_cuts(self, min_s: float = 0.5, max_s: float = 2.0, mode: str = "mixed") -> None:
        """Cut everything every ``min_s``..``max_s`` seconds until ``stop_random()``."""
        if mode != "mixed":
            _check_mode(mode)

        async def schedule() -> None:
            while True:
                await asyncio.sleep(self.random.uniform(min_s, max_s))
                self._cut_all(self.random.choice(MODES) if mode == "mixed" else mode)

        def begin() -> None:
            if self._random_task is not None:
                self._random_task.cancel()
            self._random_task = self._loop.create_task(schedule())

        self._soon(begin)

    def stop_random(self) -> None:
        def end() -> None:
            if self._random_task is not None:
                self._random_task.cancel()
                self._random_task = None

        self._soon(end)

    def active(self) -> int:
        return int(self._soon(lambda: sum(not c.closed for c in self._conns.values())))

    # ----------------------------------------------------------------- forwarding (the loop's thread)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(writer, "rst")
            return
        for each in (writer, up_writer):
            sock = each.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next_id += 1
        conn = _Conn(self._next_id, writer, up_writer)
        if self._handshake_cuts:
            conn.cut_mode, conn.cut_after = self._handshake_cuts.pop(0)
        self._conns[conn.ident] = conn
        self.stats.active += 1
        conn.tasks = [
            asyncio.create_task(self._pump(conn, reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(conn, up_reader, writer, upstream=False)),
        ]
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._finish(conn)

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """One direction: read, wait out stalls, delay, pace, maybe cut, write; EOF passes on as a FIN."""
        assert self._flowing is not None
        pacer = self._up if upstream else self._down
        due_last = 0.0
        try:
            while not conn.closed:
                await self._flowing.wait()
                size = CHUNK if pacer.rate is None else max(1, min(CHUNK, int(pacer.rate / 20)))
                data = await reader.read(size)
                read_at = time.monotonic()
                if not data:
                    if not conn.closed and writer.can_write_eof():
                        writer.write_eof()
                    return
                if self.latency or self.jitter:
                    due = read_at + self.latency + self.random.uniform(-self.jitter, self.jitter)
                    due_last = max(due, due_last)  # TCP never reorders
                    delay = due_last - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await self._flowing.wait()  # a stall also holds what was read before it
                await pacer.wait(len(data))
                if conn.closed:
                    return
                if not upstream and conn.cut_after is not None and conn.down + len(data) > conn.cut_after:
                    keep = conn.cut_after - conn.down
                    if keep > 0:
                        writer.write(data[:keep])
                        await writer.drain()
                    self.stats.handshake_cuts += 1
                    self._event(f"handshake cut ({conn.cut_mode}) after {conn.down + max(0, keep)} bytes")
                    self._cut(conn, conn.cut_mode)
                    return
                writer.write(data)
                if upstream:
                    self.stats.bytes_up += len(data)
                else:
                    conn.down += len(data)
                    self.stats.bytes_down += len(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            self._cut(conn, "fin")

    def _cut(self, conn: _Conn, mode: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        _abort(conn.client, mode)
        _abort(conn.server, mode)
        for task in conn.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    def _finish(self, conn: _Conn) -> None:
        if self._conns.pop(conn.ident, None) is not None:
            self.stats.active -= 1
        if not conn.closed:
            conn.closed = True
            for writer in (conn.client, conn.server):
                with contextlib.suppress(Exception):
                    writer.close()


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"cut mode {mode!r}: use one of {MODES}")


def _abort(writer: asyncio.StreamWriter, mode: str) -> None:
    """Close at once: ``rst`` sends a reset (linger 0), ``fin`` a normal close."""
    sock = writer.get_extra_info("socket")
    if mode == "rst" and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


ProxyFactory = Callable[..., FaultProxy]


@pytest.fixture
def fault_proxy() -> Iterator[ProxyFactory]:
    """``fault_proxy(broker, **options)``: a started proxy in front of ``broker``; closed at teardown."""
    proxies: list[FaultProxy] = []

    def make(target: Any, **options: Any) -> FaultProxy:
        host, port = (target.host, target.port) if hasattr(target, "port") else target
        options.setdefault("scheme", getattr(target, "scheme", "mqtt"))
        proxy = FaultProxy(host, port, **options).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()
