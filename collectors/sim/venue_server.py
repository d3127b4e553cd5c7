"""One simulated venue: its WebSocket server, clients, heartbeats and their rules, snapshot replay,
truth log and faults.

:class:`collectors.sim.server.ExchangeSimulator` runs one :class:`VenueServer` per venue; the
delivery and truth semantics are described there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import importlib
import importlib.util
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from collectors import VENUES
from collectors.sim.protocol import LIFETIME_CLOSE, LIVENESS_CLOSE, Outgoing, SimClient, SimItem, SimVenue
from shared.market import MarketEvent
from shared.models import Liquidation

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
RECENT_SIZE = 200
WILDCARD = "*"
GZIP_MAGIC = b"\x1f\x8b"
VenueError = (ValueError, KeyError, TypeError, IndexError, AttributeError)
"""What a venue module may raise on a client frame it does not understand (logged, skipped)."""


def load_sim(name: str) -> SimVenue:
    """The ``SIM`` of ``collectors/sim/<name>.py``."""
    sim: SimVenue = importlib.import_module(f"collectors.sim.{name}").SIM
    return sim


def available_venues() -> list[str]:
    """Venues (in ``collectors.VENUES`` order) whose simulator module exists."""
    return [name for name in VENUES if importlib.util.find_spec(f"collectors.sim.{name}") is not None]


def wants(client: SimClient, item: SimItem) -> bool:
    return item.topic in client.subscriptions or WILDCARD in client.subscriptions


class VenueServer:
    """One venue's WebSocket server: clients, sequence counter, recent items and truth log."""

    def __init__(self, sim: SimVenue, port: int = 0, recent_size: int = RECENT_SIZE,
                 keep_sent: bool = True) -> None:
        self.sim = sim
        self.name = sim.name
        self.port = port
        self.clients: dict[ServerConnection, SimClient] = {}
        self.recent: deque[SimItem] = deque(maxlen=recent_size)
        self.keep_sent = keep_sent
        """Keep every expected liquidation in ``sent``/``unsent`` (tests compare them); otherwise
        only count them (``liq simulate`` runs for days)."""
        self.sent: list[Liquidation] = []
        self.unsent: list[Liquidation] = []
        self.sent_count = 0
        self.unsent_count = 0
        self.seq = 0
        self.paused = False
        self.muted = False
        """Connected but dead silent: not even acks or application pongs (WebSocket pongs still flow)."""
        self.ignoring_subscribes = False
        """Subscribe requests are silently ignored: no ack, no subscription, no data (other
        requests, pings among them, are answered as usual)."""
        self.refusing = False
        self.refusal_status = HTTPStatus.SERVICE_UNAVAILABLE
        """The HTTP status handshakes get while ``refusing`` (a geo-block: 451 or 403)."""
        self.refusal_body = ""
        """The body of that answer ("": ``<venue> is down``)."""
        self.frozen: set[ServerConnection] = set()
        """Connections whose venue end stopped reading and sending, WebSocket pongs included: a
        half-open link. Only these; later connections work."""
        self._server: Server | None = None
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    async def start(self) -> None:
        self._server = await serve(
            self._handle, HOST, self.port, process_request=self._process_request, compression=None
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # ------------------------------------------------------------------ connections

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.refusing:
            return conn.respond(self.refusal_status, self.refusal_body or f"{self.name} is down\n")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        return self._rest(conn, request.path)

    def _rest(self, conn: ServerConnection, path: str) -> Response:
        """A plain HTTP GET: the venue's REST answer (its instruments endpoint), or 404."""
        rest: Callable[[str, bytes | None], bytes | None] | None = getattr(self.sim, "rest", None)
        body = rest(path, None) if rest is not None else None
        if body is None:
            return conn.respond(HTTPStatus.NOT_FOUND, f"{self.name}: no REST resource {path}\n")
        response = conn.respond(HTTPStatus.OK, "")
        for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body)))):
            del response.headers[name]
            response.headers[name] = value
        return dataclasses.replace(response, body=body)

    async def _handle(self, conn: ServerConnection) -> None:
        request = conn.request
        client = SimClient(path=request.path if request else "/",
                           headers={k.lower(): v for k, v in request.headers.raw_items()} if request else {})
        client.last_heard = asyncio.get_running_loop().time()
        self.clients[conn] = client
        watches = [asyncio.create_task(watch(conn, client)) for watch in self._watches()]
        try:
            await self._after_change(conn, client, set(), self._on_connect(client))
            async for message in conn:
                client.last_heard = asyncio.get_running_loop().time()
                await self._on_message(conn, client, message)
        except ConnectionClosed:
            pass
        finally:
            for task in watches:
                task.cancel()
            del self.clients[conn]
            await self._notify()

    def _on_connect(self, client: SimClient) -> list[Outgoing]:
        hook: Callable[[SimClient], list[Outgoing]] | None = getattr(self.sim, "on_connect", None)
        return hook(client) if hook is not None else []

    async def _on_message(self, conn: ServerConnection, client: SimClient, message: str | bytes) -> None:
        before = set(client.subscriptions)
        try:
            replies = self.sim.on_client_message(client, message)
        except VenueError as exc:
            logger.warning("%s: client frame not understood (%s): %.200r", self.name, exc, message)
            replies = self._refusal(client, message, exc)
        await self._after_change(conn, client, before, replies)

    def _refusal(self, client: SimClient, message: str | bytes, exc: Exception) -> list[Outgoing]:
        """The venue's error reply to a request it does not serve (none if it has no ``refusal``)."""
        refusal: Callable[[SimClient, str | bytes, str], Outgoing] | None = getattr(self.sim, "refusal", None)
        return [] if refusal is None else [refusal(client, message, str(exc))]

    async def _after_change(
        self, conn: ServerConnection, client: SimClient, before: set[str], replies: Sequence[Outgoing]
    ) -> None:
        """Send replies; on new subscriptions replay the snapshot and wake ``wait_subscribed``
        (unless ``ignoring_subscribes``: then the subscribe is undone and unanswered)."""
        if self.ignoring_subscribes and client.subscriptions - before:
            client.subscriptions.intersection_update(before)
            replies = []
        for reply in [] if self.muted else replies:
            await self.send(conn, reply)
        if client.subscriptions - before and not self.paused:
            recent = [item for item in self.recent if wants(client, item)]
            for frame in self.sim.snapshot(recent, client):
                await self.send(conn, frame)
        if client.subscriptions != before:
            await self._notify()

    def _watches(self) -> list[Callable[[ServerConnection, SimClient], Coroutine[Any, Any, None]]]:
        """The per-connection timers this venue runs: its pings, its idle limit, its lifetime."""
        watches: list[Callable[[ServerConnection, SimClient], Coroutine[Any, Any, None]]] = []
        if self.sim.heartbeat_s > 0:
            watches.append(self._heartbeat)
        if getattr(self.sim, "idle_close_s", 0.0) > 0:
            watches.append(self._idle_close)
        if getattr(self.sim, "max_lifetime_s", 0.0) > 0:
            watches.append(self._end_of_life)
        return watches

    async def _heartbeat(self, conn: ServerConnection, client: SimClient) -> None:
        """The venue's pings; past ``max_unanswered`` unanswered ones, the venue hangs up."""
        limit: int = getattr(self.sim, "max_unanswered", 0)
        while True:
            await asyncio.sleep(self.sim.heartbeat_s)
            if self.paused or conn in self.frozen:
                continue
            if limit and client.unanswered >= limit:
                await conn.close(LIVENESS_CLOSE, f"{client.unanswered} ping(s) not answered")
                return
            frame = self.sim.heartbeat(client)
            if frame is not None:
                await self.send(conn, frame)

    async def _idle_close(self, conn: ServerConnection, client: SimClient) -> None:
        """Hang up on a client silent for ``idle_close_s`` (unless muted: a half-open link)."""
        idle_s = float(getattr(self.sim, "idle_close_s", 0.0))
        loop = asyncio.get_running_loop()
        while True:
            left = client.last_heard + idle_s - loop.time()
            if left <= 0 and not self.muted and conn not in self.frozen:
                await conn.close(LIVENESS_CLOSE, f"nothing received for {idle_s:g}s")
                return
            await asyncio.sleep(left if left > 0 else idle_s)

    async def _end_of_life(self, conn: ServerConnection, client: SimClient) -> None:
        """End the connection ``max_lifetime_s`` after it opened (a frozen one stays frozen)."""
        lifetime_s = float(getattr(self.sim, "max_lifetime_s", 0.0))
        await asyncio.sleep(lifetime_s)
        if conn not in self.frozen:
            await conn.close(LIFETIME_CLOSE, f"connection lifetime of {lifetime_s:g}s reached")

    def _wire(self, frame: Outgoing) -> Outgoing:
        """Gzip venues send binary frames; compress anything a venue left uncompressed."""
        if not self.sim.gzip:
            return frame
        data = frame.encode() if isinstance(frame, str) else frame
        return data if data.startswith(GZIP_MAGIC) else gzip.compress(data, mtime=0)

    async def send(self, conn: ServerConnection, frame: Outgoing, raw: bool = False) -> bool:
        """Send one frame; False when the client has gone or its link is frozen (never raises for a
        closed socket)."""
        if conn in self.frozen:
            return False
        try:
            await conn.send(frame if raw else self._wire(frame))
        except ConnectionClosed:
            return False
        return True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ market data

    def materialize(self, events: Iterable[MarketEvent]) -> list[SimItem]:
        items = []
        for event in events:
            self.seq += 1
            item = self.sim.materialize(event, self.seq)
            if item is not None:
                items.append(item)
        return items

    async def push(self, items: Sequence[SimItem]) -> list[Liquidation]:
        """Send ``items`` to every subscribed client; record the truth; return what was sent."""
        delivered: set[int] = set()
        if not self.paused:
            clients = [(conn, client) for conn, client in self.clients.items() if conn not in self.frozen]
            await asyncio.gather(*(self._push_client(c, client, items, delivered) for c, client in clients))
        sent: list[Liquidation] = []
        unsent: list[Liquidation] = []
        for index, item in enumerate(items):
            if index in delivered:
                self.recent.append(item)
                sent.extend(item.expected)
            else:
                unsent.extend(item.expected)
        self.sent_count += len(sent)
        self.unsent_count += len(unsent)
        if self.keep_sent:
            self.sent.extend(sent)
            self.unsent.extend(unsent)
        return sent

    async def _push_client(
        self, conn: ServerConnection, client: SimClient, items: Sequence[SimItem], delivered: set[int]
    ) -> None:
        indexes = [i for i, item in enumerate(items) if wants(client, item)]
        if not indexes:
            return
        delivered.update(indexes)
        for frame in self.sim.frames([items[i] for i in indexes], client):
            await self.send(conn, frame)

    # ------------------------------------------------------------------ faults and waits

    async def drop(self, code: int | None = None) -> int:
        """Close every client abruptly (TCP abort → 1006, or a close frame with ``code``)."""
        dropped = set(self.clients)
        for conn in dropped:
            if code is None:
                conn.transport.abort()
            else:
                await conn.close(code, "simulated failure")
        await self.wait_gone(dropped)
        return len(dropped)

    async def wait_gone(self, conns: set[ServerConnection]) -> None:
        """Wait until none of ``conns`` is connected any more (whoever closed them); no timeout."""
        async with self._changed:
            await self._changed.wait_for(lambda: not conns & self.clients.keys())

    def freeze(self) -> int:
        """Make every current connection half-open: the venue end neither reads (so not even
        WebSocket pings get a pong) nor sends; how many. New connections work as usual."""
        for conn in self.clients.keys() - self.frozen:
            conn.transport.pause_reading()
            self.frozen.add(conn)
        return len(self.frozen)

    async def thaw(self) -> int:
        """Forget the frozen connections (their peers gave up on them long ago): abort them and
        wait until they are gone; how many."""
        frozen, self.frozen = self.frozen, set()
        for conn in frozen:
            conn.transport.abort()
        await self.wait_gone(frozen)
        return len(frozen)

    async def send_raw(self, frame: Outgoing) -> int:
        """Send ``frame`` unchanged (no gzip) to every client; the number that got it."""
        results = await asyncio.gather(*(self.send(conn, frame, raw=True) for conn in list(self.clients)))
        return sum(results)

    def subscribed(self, topic: str | None = None) -> int:
        subs = [client.subscriptions for conn, client in self.clients.items() if conn not in self.frozen]
        return sum(1 for s in subs if (topic in s if topic is not None else s))

    async def wait_subscribed(self, count: int, topic: str | None = None) -> None:
        """Wait until ``count`` connected clients have subscriptions (to ``topic``); no timeout."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.subscribed(topic) >= count)
