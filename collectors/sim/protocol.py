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

The venue's own liveness rules, enforced by the server so that a collector that breaks them is
disconnected as it would be live (optional attributes, read with ``getattr``; 0 = no rule):

- ``max_unanswered: int``: the venue closes a connection once this many of its pings are
  unanswered (HTX 2, Deribit 1: "the API server will immediately close the connection"). The
  venue module counts them: ``heartbeat()`` adds one to ``client.unanswered`` for each ping
  that needs an answer, ``on_client_message`` sets it back to 0 on the documented answer.
- ``idle_close_s: float``: the venue closes a connection it has heard nothing from (no
  subscribe, no ping) for this long (OKX 30 s, Hyperliquid 60 s, Bitget and Lighter 2 min).
- ``max_lifetime_s: float``: the venue ends every connection this long after it opened
  (Binance: "A single connection is only valid for 24 hours"), with :data:`LIFETIME_CLOSE`.

The first two close with :data:`LIVENESS_CLOSE` (the codes are the simulator's choice; the venues
do not document theirs). A muted venue (a half-open connection) closes nothing.

A request the venue does not serve (``on_client_message`` raised ValueError, KeyError, …) gets
the venue's error frame from the optional ``refusal(client, message, reason) -> Outgoing``
(``{"event":"error",…}``, a JSON-RPC error, …), as live: a renamed or retired channel is
answered, not met with silence.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.market import MarketEvent
from shared.models import Liquidation

Outgoing = str | bytes
LIVENESS_CLOSE = 1008
"""Close code of a connection the venue drops for breaking its heartbeat rules (policy violation)."""
LIFETIME_CLOSE = 1001
"""Close code of a connection the venue ends at its maximum lifetime (going away)."""


def request_of(message: str | bytes) -> dict[str, Any]:
    """A client frame as a JSON object (for a refusal to echo its id); {} when it is not one."""
    try:
        request = json.loads(gzip.decompress(message) if isinstance(message, bytes) else message)
    except (ValueError, OSError, EOFError):
        return {}
    return request if isinstance(request, dict) else {}


@dataclass
class SimClient:
    """What the server knows about one connected client."""

    path: str
    subscriptions: set[str] = field(default_factory=set)
    headers: dict[str, str] = field(default_factory=dict)
    """The handshake's HTTP headers (names in lower case)."""
    state: dict[str, Any] = field(default_factory=dict)
    unanswered: int = 0
    """The venue's pings this client has not answered yet (see ``max_unanswered``)."""
    last_heard: float = 0.0
    """Event-loop time of the client's last frame (or of the handshake; see ``idle_close_s``)."""


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
