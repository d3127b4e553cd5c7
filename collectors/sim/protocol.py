"""The contract between the simulator's generic WebSocket server and one venue's wire protocol.

Each ``collectors/sim/<venue>.py`` exposes ``SIM: SimVenue``. The generic server
(``collectors.sim.server``) accepts connections on 127.0.0.1, hands every client frame to
``on_client_message`` (subscribe → ack, ping → pong), and pushes liquidations:

1. ``materialize(event, seq)`` turns a :class:`shared.market.MarketEvent` into a
   :class:`SimItem`: the venue-native record (integer contracts, venue symbol, order or position
   side as that venue uses) **and** the normalized Liquidation a correct collector must produce
   from it. The expected Liquidation is computed here from the venue's documented rules,
   independently of the collector's parser, so end-to-end tests compare against it.
2. ``frames(items, client)`` renders the items a client subscribed to as the venue's frames
   (batched where the venue batches).
3. ``snapshot(recent, client)`` is what the venue replays on subscribe (OKX, Bitfinex, dYdX,
   Lighter); empty for venues that replay nothing.
4. ``heartbeat(client)`` is a server-initiated ping/heartbeat frame (HTX ping, Bitfinex hb,
   Deribit test_request), or None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.market import MarketEvent
from shared.models import Liquidation

Outgoing = str | bytes


@dataclass
class SimClient:
    """What the server knows about one connected client."""

    path: str
    subscriptions: set[str] = field(default_factory=set)
    headers: dict[str, str] = field(default_factory=dict)
    """The handshake's HTTP headers (names in lower case)."""
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SimItem:
    """One liquidation in venue-native form plus the normalized result it must produce."""

    native: dict[str, Any]
    expected: list[Liquidation]
    topic: str
    """The subscription key that receives it (e.g. ``allLiquidation.BTCUSDT``, ``SWAP``)."""


class SimVenue(Protocol):
    name: str
    gzip: bool
    heartbeat_s: float

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None: ...

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]: ...

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]: ...

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]: ...

    def heartbeat(self, client: SimClient) -> Outgoing | None: ...
