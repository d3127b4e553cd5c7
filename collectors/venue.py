"""The contract between the generic connection loop (``collectors.base``) and a venue module.

A venue module (``collectors/venues/<name>.py``) knows one exchange's wire format and nothing
about sockets. It exposes a module-level ``VENUE: VenueSpec``. The spec says where to connect
and builds one :class:`VenueSession` per connection; the session turns the venue's frames into
normalized :class:`~shared.models.Liquidation` objects and says what to send (subscriptions,
application-level pings, replies to server pings).

Rules every session follows:

- ``on_message`` is pure apart from the session's own small state (Bitfinex chanId map,
  OKX/BitMEX snapshot flags). It never does I/O and never sleeps.
- A frame that cannot be decoded raises :class:`shared.errors.ParseError`; the loop counts it,
  logs a truncated sample and carries on with the same connection. In a frame of several rows,
  a row that is not valid is left out and returned in ``rejected`` (counted and logged the same
  way), the others kept (``_common.each_row``); a frame none of whose rows is valid raises.
  That holds for a row of the wrong type as for a row of bad values: the frame's struct keeps
  its rows raw (``list[msgspec.Raw]``) and each row is typed on its own (``_common.decode_row``).
- Control frames (acks, pongs, heartbeats, non-liquidation trades) return an empty output,
  except the venue's confirmation of a subscribe request the session sent (its ack), which
  returns ``CONFIRMED`` (``SessionOutput.confirmed``): a connection is ``up`` once it has seen
  as many as the session's ``confirmations()`` (``subscribing`` until then);
  an error reply returns ``_common.server_error(...)``, which logs it and carries it in ``error``.
  A refusal naming some of the connection's own symbols (Bybit: a symbol delisted since the
  listing) returns them in ``refused`` instead: the collector drops them from the connection's
  plan (``ConnectionPlan.session_for``) and the other symbols keep the venue up.
- A replayed snapshot on (re)subscribe is returned like any other data; the loop removes
  duplicates by ``Liquidation.event_id`` across reconnects (``collectors.dedupe``). Only
  frames that a venue documents as history-only snapshots (Lighter ``subscribed/trade``,
  BitMEX ``partial``) are skipped by the session itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from collectors.instruments import Instrument, InstrumentTable
from shared.errors import ParseError
from shared.models import Liquidation

FeedSemantics = Literal["complete", "sampled", "aggregated", "partial"]
Outgoing = str | bytes


@dataclass(frozen=True)
class SessionOutput:
    """What one incoming frame produced: liquidations and frames to send back."""

    liquidations: list[Liquidation] = field(default_factory=list)
    replies: list[Outgoing] = field(default_factory=list)
    rejected: list[ParseError] = field(default_factory=list)
    """Rows of the frame that are not valid, left out of ``liquidations`` (each is counted and
    logged like a malformed frame)."""
    error: str = ""
    """What the venue answered with an error (a refused subscription): the connection's health
    says so (``degraded``) until it is reopened."""
    refused: tuple[str, ...] = ()
    """Native symbols of the connection the venue refused by name (the session has logged it):
    the collector drops them from the connection's plan, so no reconnect asks for them again
    (a later listing that names them brings them back); only from sessions whose plans have
    ``session_for``."""
    confirmed: int = 0
    """How many of the subscribe requests ``on_open`` sent this frame confirms (the venue's ack;
    a refusal naming only ``refused`` symbols answers its request too)."""
    reconnect: str = ""
    """Why the venue wants a new connection (OKX notice 64008 before an upgrade closes it,
    Bitfinex info 20051 before a restart): the collector reopens it at once."""


EMPTY = SessionOutput()
CONFIRMED = SessionOutput(confirmed=1)
"""The output of a frame that is the venue's ack of one subscribe request and nothing else."""


class VenueSession(Protocol):
    """One connection's protocol state machine."""

    def on_open(self) -> list[Outgoing]:
        """Frames to send right after the WebSocket opens (subscribe, set_heartbeat, …)."""
        ...

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        """Decode one frame (already decompressed) into liquidations and replies."""
        ...

    def confirmations(self) -> int:
        """How many confirmations (``SessionOutput.confirmed``) the requests of ``on_open`` await
        before the connection is ``up`` (0: it is up once open)."""
        ...

    def heartbeat(self) -> Outgoing | None:
        """The application-level ping to send every ``heartbeat_s``; None = WebSocket pings."""
        ...


@dataclass(frozen=True)
class ConnectionPlan:
    """One WebSocket connection a collector keeps open: its URL and how to build its session."""

    url: str
    label: str
    new_session: Callable[[], VenueSession]
    symbols: tuple[str, ...] = ()
    """The symbols it subscribes, where a listing chose them (``VenueSpec.relists``)."""
    session_for: Callable[[tuple[str, ...]], VenueSession] | None = None
    """A session subscribing only the given ones of ``symbols`` (where a session can report
    symbols the venue refused, ``SessionOutput.refused``)."""


@dataclass(frozen=True)
class InstrumentRequest:
    """One request to a venue's public instruments endpoint."""

    path: str
    """Path and query, e.g. ``/api/v5/public/instruments?instType=SWAP``."""
    body: bytes | None = None
    """A POST body (Hyperliquid-style APIs); None for GET."""


@dataclass(frozen=True)
class InstrumentSource:
    """Where a venue publishes its contract sizes, and how to read them (``collectors.refresh``).

    Live collectors ask ``live_rest_url``; a collector pointed at another server (the simulator,
    ``ws://127.0.0.1:PORT``) asks that server over http on the same host and port.
    """

    live_rest_url: str
    """e.g. ``https://www.okx.com``."""
    requests: tuple[InstrumentRequest, ...]
    parse: Callable[[bytes, InstrumentRequest], list[Instrument]]
    """``parse(body, request)``: the instruments one response lists (pure; ValueError if malformed)."""
    table: InstrumentTable
    """The live table the venue's sessions read: a refresh updates it in place."""


@dataclass(frozen=True)
class VenueSpec:
    """Static facts about a venue plus the factory of its connections."""

    name: str
    """CLI and stream name, e.g. ``binance_usdm`` (also ``Liquidation.exchange``)."""
    live_url: str
    markets: str
    """Human summary, e.g. ``USD-M perpetuals and dated futures``."""
    semantics: FeedSemantics
    semantics_note: str
    """e.g. ``at most 1 liquidation per symbol per second (snapshot)``."""
    heartbeat_s: float
    """Seconds between application pings (or WebSocket pings when ``heartbeat`` is None)."""
    usual_gap_s: float
    """Longest silence that is normal on a busy day; ``suspect`` after several times this."""
    plans: Callable[[str, Sequence[str]], list[ConnectionPlan]]
    """``plans(base_url, symbols)``: the connections to open (Bybit shards topics over several)."""
    new_parser: Callable[[], VenueSession]
    """A session with default subscriptions, used by ``liq parse`` and ``liq replay``."""
    gzip: bool = False
    """Frames arrive gzip-compressed (HTX)."""
    replays_on_subscribe: bool = False
    """The venue sends recent liquidations again on each subscribe (OKX, Bitfinex): a collector
    starting up first remembers the ids it published recently, so they are not published twice."""
    answers_pings: bool = False
    """The venue's documentation says it answers every application ping: a connection that then
    receives no frame for a few ping intervals is dead, and is reopened."""
    max_connection_s: float | None = None
    """The venue ends every connection at this age (Binance: 24 h), and what happens until the
    reconnect is lost: a collector opens a replacement before then (``collectors.base``)."""
    server_heartbeat_s: float | None = None
    """The venue sends a frame by itself at least this often (HTX's pings, Deribit's heartbeats
    once ``set_heartbeat`` asked for them): a connection with no frame for a few of these is dead,
    and is reopened, even if WebSocket pongs still come back."""
    default_symbols: tuple[str, ...] = ()
    """Native symbols subscribed when none are given (venues without an all-symbol channel)."""
    headers: tuple[tuple[str, str], ...] = ()
    """HTTP headers sent with the WebSocket handshake (Gate: ``X-Gate-Size-Decimal: 1``)."""
    relists: bool = False
    """Its plans subscribe symbol by symbol from the venue's listing (Bybit: no wildcard topic):
    a collector given no symbols asks for the listing again periodically and opens connections
    for symbols listed since (see ``Collector``)."""
    instruments: InstrumentSource | None = None
    """The public instruments endpoint of a venue whose quantities need contract sizes; None
    where frames carry base quantities (or fixed, documented contract sizes) already."""
