"""The exchange simulator: one real WebSocket server per venue on 127.0.0.1, its truth log and its faults.

Each venue's wire protocol comes from its ``collectors/sim/<venue>.py`` (``SIM``, see
:mod:`collectors.sim.protocol`); :mod:`collectors.sim.venue_server` runs one venue; this module
owns the multi-venue facade tests and ``liq simulate`` use.

Delivery and truth semantics (what end-to-end tests compare a collector's output against):

- A client receives an item when ``item.topic`` is in ``client.subscriptions`` (or the client
  subscribed to ``"*"``). ``frames()`` is called once per client per ``emit`` with only those
  items, so venues batch as they do live.
- An item's ``expected`` liquidations go to ``sent[venue]`` when at least one client received
  it, otherwise to ``unsent[venue]`` (nobody subscribed, or the venue was paused). With
  ``keep_sent=False`` (``liq simulate``, which runs for days) they are only counted
  (``venue(name).sent_count`` / ``unsent_count``): the truth file has them.
- ``recent`` (what ``snapshot()`` replays on subscribe) holds delivered items only, so a replay
  only ever repeats liquidations already in ``sent``: it tests de-duplication, never the truth.
- Venues whose ``SIM.gzip`` is true send every frame as binary (gzip-compressed; a frame the
  venue left uncompressed is compressed here). ``send_raw`` sends its frame unchanged.

Optional venue hook: a SIM with ``on_connect(client) -> list[Outgoing]`` is called right after
the handshake (path-based subscriptions such as Binance ``/stream?streams=...``, or a welcome
frame such as Bitfinex ``info``); subscriptions it adds trigger a snapshot like a subscribe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Self

from collectors.sim.protocol import Outgoing, SimClient, SimVenue
from collectors.sim.venue_server import RECENT_SIZE, VenueServer, available_venues, load_sim
from shared.market import MarketEvent
from shared.models import Liquidation

__all__ = ["ExchangeSimulator", "VenueServer", "available_venues", "load_sim"]

logger = logging.getLogger(__name__)


class ExchangeSimulator:
    """Simulated venues on 127.0.0.1; ``async with ExchangeSimulator(["bybit", "okx"]) as sim:``.

    ``venues`` are venue names (their ``collectors.sim.<name>.SIM`` is loaded) or SimVenue
    objects; ``ports`` pins a venue's port (0 or absent = a free port).
    """

    def __init__(
        self,
        venues: Iterable[str | SimVenue],
        *,
        ports: Mapping[str, int] | None = None,
        recent_size: int = RECENT_SIZE,
        keep_sent: bool = True,
    ) -> None:
        sims = [load_sim(v) if isinstance(v, str) else v for v in venues]
        ports = ports or {}
        self._venues = {sim.name: VenueServer(sim, ports.get(sim.name, 0), recent_size, keep_sent)
                        for sim in sims}

    @property
    def venues(self) -> tuple[str, ...]:
        return tuple(self._venues)

    @property
    def urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self._venues.items()}

    @property
    def sent(self) -> dict[str, list[Liquidation]]:
        """Per venue, every expected liquidation that reached at least one subscribed client."""
        return {name: server.sent for name, server in self._venues.items()}

    @property
    def unsent(self) -> dict[str, list[Liquidation]]:
        """Per venue, expected liquidations nobody could receive (unsubscribed or paused)."""
        return {name: server.unsent for name, server in self._venues.items()}

    def venue(self, name: str) -> VenueServer:
        try:
            return self._venues[name]
        except KeyError:
            simulated = ", ".join(self._venues)
            raise KeyError(f"venue {name!r} is not simulated here; simulated: {simulated}") from None

    def clients(self, venue: str) -> list[SimClient]:
        return list(self.venue(venue).clients.values())

    def subscribed(self, venue: str, topic: str | None = None) -> int:
        """How many connected clients of ``venue`` have subscriptions (to ``topic``)."""
        return self.venue(venue).subscribed(topic)

    async def start(self) -> None:
        for server in self._venues.values():
            await server.start()
            logger.debug("%s simulated on %s", server.name, server.url)

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self._venues.values()))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def emit(self, events: Sequence[MarketEvent]) -> list[Liquidation]:
        """Materialize and push ``events`` (events of venues not simulated here are ignored).

        Returns the expected liquidations that were sent, in venue order.
        """
        by_venue: dict[str, list[MarketEvent]] = {}
        for event in events:
            if event.venue in self._venues:
                by_venue.setdefault(event.venue, []).append(event)
        sent: list[Liquidation] = []
        for name, venue_events in by_venue.items():
            server = self._venues[name]
            sent.extend(await server.push(server.materialize(venue_events)))
        return sent

    async def drop_connections(self, venue: str, code: int | None = None) -> int:
        """Close every client of ``venue`` abruptly: TCP abort (client sees 1006) or ``code`` (e.g. 1011).

        Returns once the server has forgotten them; the number dropped.
        """
        return await self.venue(venue).drop(code)

    async def send_raw(self, venue: str, frame: Outgoing) -> int:
        """Send ``frame`` as is (e.g. malformed) to every client of ``venue``; how many got it."""
        return await self.venue(venue).send_raw(frame)

    def pause(self, venue: str) -> None:
        """Connected but silent: no events, snapshots or heartbeats (acks and pongs still flow)."""
        self.venue(venue).paused = True

    def resume(self, venue: str) -> None:
        self.venue(venue).paused = False

    def mute(self, venue: str, muted: bool = True) -> None:
        """Paused, and no acks or application pongs either: a venue end that went dead while
        WebSocket pongs still come back. :meth:`freeze` stops those too."""
        server = self.venue(venue)
        server.paused = server.muted = muted

    def ignore_subscribes(self, venue: str, ignoring: bool = True) -> None:
        """``venue`` silently ignores subscribe requests (no ack, no data), as a venue that never
        confirms a subscription; pings are still answered."""
        self.venue(venue).ignoring_subscribes = ignoring

    def freeze(self, venue: str) -> int:
        """Make the current connections of ``venue`` half-open: its end stops reading and sending,
        WebSocket pongs included, as when a link dies without a FIN. Frozen connections count no
        more as subscribed; new connections work. Returns how many were frozen."""
        return self.venue(venue).freeze()

    async def thaw(self, venue: str) -> int:
        """Abort the frozen connections of ``venue`` and wait until they are forgotten; how many."""
        return await self.venue(venue).thaw()

    async def refuse(self, venue: str, drop: bool = True,
                     status: HTTPStatus = HTTPStatus.SERVICE_UNAVAILABLE, body: str = "") -> None:
        """The venue is down: handshakes get HTTP ``status`` with ``body`` (by default ``<venue>
        is down``); with ``drop`` current clients are aborted too."""
        server = self.venue(venue)
        server.refusing, server.refusal_status, server.refusal_body = True, status, body
        if drop:
            await server.drop()

    def accept(self, venue: str) -> None:
        """Undo :meth:`refuse`: handshakes succeed again on the same port."""
        self.venue(venue).refusing = False

    async def wait_subscribed(
        self,
        venue: str,
        count: int = 1,
        timeout: float | None = 10.0,  # noqa: ASYNC109 - part of the contract; the error names the state
        topic: str | None = None,
    ) -> None:
        """Wait until ``count`` connected clients of ``venue`` have subscriptions (to ``topic``).

        Raises TimeoutError (listing the clients' subscriptions) after ``timeout`` seconds.
        """
        server = self.venue(venue)
        try:
            await asyncio.wait_for(server.wait_subscribed(count, topic), timeout)
        except TimeoutError:
            state = [sorted(client.subscriptions) for client in server.clients.values()]
            raise TimeoutError(
                f"{venue}: {count} subscribed client(s) not reached in {timeout}s; clients: {state}"
            ) from None
