"""Parsing helpers shared by every venue module: numbers, ids, dates, URLs and the Liquidation builder.

The API is small and stable; venue modules import only these names:

- ``decode(decoder, raw, venue)``: run a module-level msgspec Decoder; any decode or validation
  failure (bad UTF-8 and too deep nesting included) becomes :class:`shared.errors.ParseError`
  carrying a sample of the frame.
- ``server_error(venue, detail)``: log a venue's error reply; the SessionOutput to return for it.
- ``frame_errors(venue, raw)``: context manager turning a ValueError raised while parsing one
  frame (a bad date, a bad enum) into ParseError with the frame's sample.
- ``each_row(venue, raw, rows, build)``: the SessionOutput of a frame of several rows, built
  row by row: a row that is not valid (ParseError, ValueError) is left out and carried in
  ``rejected``, the others kept; when no row is valid the frame is malformed (ParseError).
  A frame struct declares its rows ``list[msgspec.Raw]`` and ``build`` types each one with
  ``decode_row``, so a row of the wrong type (``"price": null``, a number where an object is
  due) costs only itself, never the frame's typed decode; a builder also filters (returns
  None for a row that is no liquidation: a plain trade or fill).
- ``decode_row(decoder, row, venue)``: one ``msgspec.Raw`` row typed by a module-level Decoder;
  a row of the wrong type or shape → ParseError (rejected alone by ``each_row``).
- ``inflate(raw, venue)``: a gzip frame (HTX) inflated, anything else unchanged; bad or truncated
  gzip, or more than ``MAX_INFLATED`` bytes inflated, raises ParseError (the connection loop,
  ``liq parse`` and ``liq replay`` all call it).
- ``num(value, venue, name)``: a wire number (``"0.014"``, ``836``, ``9910.0``) as float; an
  empty string, ``None``, garbage or a value that is not finite (``"NaN"``, ``"inf"``,
  ``"1e999"``) raises ParseError naming the field.
- ``position_side(raw, long_if=..., short_if=..., venue=...)``: the liquidated position from a
  raw side string (case-insensitive), e.g. Binance ``long_if="SELL"``; anything else → ParseError.
- ``event_digest(symbol_native, timestamp_ms, side, price, quantity_native)``: the deterministic
  event_id for venues without their own id (same liquidation → same id on every replay).
- ``make_liquidation(venue, inst, side=..., price=..., quantity_native=..., native_unit=..., ...)``:
  the one place that turns a native quantity into base units and USD notional.
  ``native_unit`` says what the exchange's number counts:

  * ``"base"``: base asset (Binance USD-M ``z``, Bybit linear ``v``); notional = qty × price;
  * ``"contracts"``: contracts of ``inst.contract_value`` ``inst.contract_value_unit``
    (a base code / ``"base"`` → base = n × cv; ``"USD"`` or a USD-like quote → notional = n × cv,
    base = notional / price). Unknown size → quantity stays in contracts, notional unknown;
  * ``"USD"`` or a quote code: a value (Deribit inverse ``amount``, Bitget ``amount``):
    base = value / price, notional = value when the code is USD-like.

  A notional is only known in USD when the quote (or the value unit) is USD-like
  (``instruments.USD_QUOTES``: USDT, USDC and the other USD coins count as 1 USD).
- ``yymmdd_expiry("200925")`` → ``"2020-09-25"``; ``ddmmmyy_expiry("27DEC25")`` → ``"2025-12-27"``;
  ``month_code_expiry("Z", "25")`` → last Friday of that month (BitMEX/Bybit quarterlies);
  ``iso_ms("2020-12-18T00:30:58.559Z")`` → ms; ``ms_date(1758873600000)`` → ``"2025-09-26"`` (UTC).
- ``market_type(linear, expiry)``: the MarketType literal for a perpetual or a dated future.
- ``with_default_path(base_url, path)``: ``base_url`` + ``path`` when ``base_url`` has no path.
- ``liquidation_to_row(liq)``: the flat JSON-able dict ``liq parse`` prints.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from collectors.instruments import USD_QUOTES, Instrument, canonical_asset
from collectors.venue import EMPTY, ConnectionPlan, SessionOutput, VenueSession
from shared.errors import ParseError
from shared.models import (
    Liquidation,
    MarketType,
    QuantityUnit,
    Side,
    TimestampSource,
    plausible_amount,
    plausible_epoch_ms,
)

T = TypeVar("T")
MIN_EVENT_MS = 1_230_768_000_000
"""2009-01-01T00:00:00Z: no crypto venue liquidated anything before; an earlier event time is
seconds (or 0) read as milliseconds."""
ExtraValue = str | float | int | None


def decode(decoder: msgspec.json.Decoder[T], raw: bytes | str, venue: str) -> T:
    """Decode one frame with a prebuilt Decoder; invalid JSON or shape → ParseError.

    msgspec reports bad UTF-8 in bytes (UnicodeDecodeError), lone surrogates in a str
    (UnicodeEncodeError) and nesting too deep to follow (RecursionError) outside DecodeError.
    """
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:  # ValidationError: a DecodeError
        raise ParseError(venue, str(exc), raw) from exc


def get_json(url: str) -> Any:
    """GET ``url`` and decode its JSON (a venue's public listing); OSError or ValueError on failure."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def listed_or_default(venue: str, base_url: str, live_host: str, listing: Callable[[], list[str]],
                      defaults: Sequence[str]) -> list[str]:
    """The venue's own listing (``listing()``, a public REST call) when ``base_url`` is its live
    host and the listing names something; the simulator, another host or a failed listing get
    ``defaults`` (a failure is logged)."""
    if urlsplit(base_url).hostname == live_host:
        try:
            listed = listing()
            if listed:
                return listed
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logging.getLogger(f"collectors.venues.{venue}").warning(
                "%s: listing failed (%s); subscribing the default symbols", venue, exc)
    return list(defaults)


def server_error(venue: str, detail: object) -> SessionOutput:
    """Log what a venue answered with an error, and return it as the frame's output: a refused
    subscription (a renamed channel, a delisted symbol) would otherwise look like a quiet market
    until the feed turns suspect; the collector marks the venue degraded with it."""
    text = str(detail)[:200]
    logging.getLogger(f"collectors.venues.{venue}").warning(
        "%s: the venue answered with an error: %s", venue, text)
    return SessionOutput(error=text)


@contextmanager
def frame_errors(venue: str, raw: bytes | str) -> Iterator[None]:
    """Re-raise a ValueError from parsing ``raw`` as ParseError (the loop counts and skips it)."""
    try:
        yield
    except ValueError as exc:
        raise ParseError(venue, str(exc), raw) from exc


def decode_row(decoder: msgspec.json.Decoder[T], row: msgspec.Raw, venue: str) -> T:
    """One row of a frame (declared ``list[msgspec.Raw]``) typed on its own: a row of the wrong
    type or shape → ParseError naming the row, which ``each_row`` rejects alone."""
    try:
        return decoder.decode(row)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:  # ValidationError: a DecodeError
        raise ParseError(venue, f"row: {exc}") from exc


R = TypeVar("R")


def each_row(venue: str, raw: bytes | str, rows: Iterable[R],
             build: Callable[[R], Liquidation | Sequence[Liquidation] | None]) -> SessionOutput:
    """The liquidations of a frame's rows (``build`` returns none, one or several per row).

    A row that is not valid is left out, its error (with the frame's sample) in ``rejected``:
    one bad row must not cost the frame's other liquidations. ``rows`` are best still raw
    (``msgspec.Raw``, typed by ``build`` with :func:`decode_row`): a row of the wrong type is
    then a bad row too. When rows were refused and none gave a liquidation, the frame is
    malformed: its first error is raised."""
    liquidations: list[Liquidation] = []
    rejected: list[ParseError] = []
    for row in rows:
        try:
            built = build(row)
        except ParseError as exc:
            rejected.append(ParseError(venue, exc.reason, raw))  # the sample: the frame
            continue
        except ValueError as exc:
            rejected.append(ParseError(venue, str(exc), raw))
            continue
        if isinstance(built, Liquidation):
            liquidations.append(built)
        elif built is not None:
            liquidations += built
    if rejected and not liquidations:
        raise rejected[0]
    return SessionOutput(liquidations, rejected=rejected) if liquidations else EMPTY


GZIP_MAGIC = b"\x1f\x8b"
MAX_INFLATED = 2**24
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def inflate(raw: bytes | str, venue: str) -> bytes | str:
    """A gzip-compressed frame (HTX) inflated; anything else unchanged. Bad or truncated gzip,
    or a frame inflating beyond ``MAX_INFLATED`` bytes (the socket's own frame limit: a small
    frame must not take gigabytes of memory), → ParseError."""
    if not isinstance(raw, bytes) or not raw.startswith(GZIP_MAGIC):
        return raw
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        data = inflater.decompress(raw, MAX_INFLATED)
    except zlib.error as exc:
        raise ParseError(venue, f"bad gzip frame: {exc}", raw[:40]) from exc
    if inflater.unconsumed_tail:
        raise ParseError(venue, f"gzip frame inflates beyond {MAX_INFLATED} bytes", raw[:40])
    if not inflater.eof:
        raise ParseError(venue, "truncated gzip frame", raw[:40])
    return data


def num(value: str | float | None, venue: str, name: str) -> float:
    """A wire number (string or JSON number) as a finite float; missing, malformed, ``"NaN"``,
    ``"inf"`` or beyond the float range (``"1e999"``, a 400-digit integer) → ParseError."""
    if value is None or isinstance(value, bool):
        raise ParseError(venue, f"missing number {name}")
    try:
        number = float(value)
    except (ValueError, OverflowError) as exc:
        raise ParseError(venue, f"bad number {name}={str(value)[:40]!r}") from exc
    if not math.isfinite(number):
        raise ParseError(venue, f"bad number {name}={str(value)[:40]!r}")
    return number


def position_side(raw: str | None, *, long_if: str, short_if: str, venue: str) -> Side:
    """``"long"`` when ``raw`` equals ``long_if``, ``"short"`` for ``short_if`` (case-insensitive)."""
    value = (raw or "").lower()
    if value == long_if.lower():
        return "long"
    if value == short_if.lower():
        return "short"
    raise ParseError(venue, f"unknown side {raw!r}")


def event_digest(
    symbol_native: str, timestamp_ms: int, side: str, price: float, quantity_native: float
) -> str:
    """Deterministic 32-hex-digit id from the liquidation's own facts (never the receive time)."""
    key = f"{symbol_native}|{timestamp_ms}|{side}|{float(price)!r}|{float(quantity_native)!r}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def yymmdd_expiry(code: str) -> str:
    """``"200925"`` → ``"2020-09-25"``; raises ValueError when it is not a date."""
    return datetime.strptime(code, "%y%m%d").date().isoformat()


def ddmmmyy_expiry(code: str) -> str:
    """``"27DEC25"`` or ``"7MAR25"`` → ISO date; raises ValueError when it is not a date."""
    return datetime.strptime(code.upper().zfill(7), "%d%b%y").date().isoformat()


MONTH_CODES = "FGHJKMNQUVXZ"


def month_code_expiry(letter: str, yy: str) -> str:
    """Futures month code (``H`` = March) and 2-digit year → last Friday of that month."""
    month = MONTH_CODES.index(letter.upper()) + 1
    year = 2000 + int(yy)
    last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    return (last - timedelta(days=(last.weekday() - 4) % 7)).isoformat()


def iso_ms(text: str) -> int:
    """ISO-8601 time (``Z`` or offset) → ms since epoch; raises ValueError when malformed."""
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def ms_date(ms: int) -> str:
    """ms since epoch → its UTC date in ISO form (instruments endpoints' expiry times)."""
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def market_type(linear: bool, expiry: str | None) -> MarketType:
    """Perpetual or dated future, linear or inverse."""
    if expiry is None:
        return "linear_perpetual" if linear else "inverse_perpetual"
    return "linear_future" if linear else "inverse_future"


def symbol_plans(url: str, label: str, symbols: list[str], per_connection: int,
                 session: Callable[[list[str]], VenueSession]) -> list[ConnectionPlan]:
    """One connection per ``per_connection`` symbols (a venue's subscription limit), labelled
    ``label``, ``label:1``, …, each remembering its symbols (for relisting)."""
    chunks = [symbols[i : i + per_connection] for i in range(0, len(symbols), per_connection)]
    return [ConnectionPlan(url, label + (f":{n}" if n else ""), functools.partial(session, chunk),
                           symbols=tuple(chunk)) for n, chunk in enumerate(chunks)]


def with_default_path(base_url: str, path: str) -> str:
    """``base_url`` unchanged when it has a path or query, else ``base_url`` + ``path``."""
    parts = urlsplit(base_url)
    if parts.path.strip("/") or parts.query:
        return base_url
    return base_url.rstrip("/") + path


def _usd_like(code: str | None) -> bool:
    return code is not None and canonical_asset(code) in USD_QUOTES


class _Amounts(msgspec.Struct, frozen=True):
    quantity: float
    unit: QuantityUnit
    notional: float
    known: bool
    contract_value: float | None = None
    contract_value_unit: str | None = None


def _from_base(inst: Instrument, qty: float, price: float) -> _Amounts:
    known = _usd_like(inst.quote)
    return _Amounts(qty, "base", qty * price if known else 0.0, known)


def _from_value(inst: Instrument, value: float, code: str, price: float, venue: str) -> _Amounts:
    if price <= 0:
        raise ParseError(venue, f"price {price} cannot convert a {code} value to base")
    known = _usd_like(code)
    return _Amounts(value / price, "base", value if known else 0.0, known)


def _from_contracts(inst: Instrument, n: float, price: float, venue: str) -> _Amounts:
    cv, unit = inst.contract_value, inst.contract_value_unit
    if cv is None or unit is None:
        return _Amounts(n, "contracts", 0.0, False)
    base = canonical_asset(inst.base)
    if unit == "base" or canonical_asset(unit) == base:
        out = _from_base(inst, n * cv, price)
        return msgspec.structs.replace(out, contract_value=cv, contract_value_unit=base)
    if _usd_like(unit):
        out = _from_value(inst, n * cv, unit, price, venue)
        return msgspec.structs.replace(out, contract_value=cv, contract_value_unit=unit)
    return _Amounts(n, "contracts", 0.0, False)


def _amounts(inst: Instrument, qty: float, native_unit: str, price: float, venue: str) -> _Amounts:
    if native_unit == "base":
        return _from_base(inst, qty, price)
    if native_unit == "contracts":
        return _from_contracts(inst, qty, price, venue)
    return _from_value(inst, qty, native_unit, price, venue)


def _refuse_implausible(venue: str, inst: Instrument, price: float, quantity_native: float,
                        timestamp_ms: int) -> None:
    """ParseError for a nameless instrument, an event time outside [2009, 2100), or a price or
    quantity that is not above 0."""
    if not (inst.symbol_native and inst.base and inst.quote):
        raise ParseError(venue, f"instrument {inst.symbol_native!r} has an empty name, base or quote")
    if not (MIN_EVENT_MS <= timestamp_ms and plausible_epoch_ms(timestamp_ms)):
        raise ParseError(venue, f"event time {timestamp_ms} is not epoch milliseconds in [2009, 2100)",
                         inst.symbol_native)
    if not (price > 0 and quantity_native > 0):
        raise ParseError(venue, f"price {price!r} and quantity {quantity_native!r} must be above 0",
                         inst.symbol_native)


def _refuse_implausible_amounts(venue: str, inst: Instrument, price: float, qty_native: float,
                                amounts: _Amounts) -> None:
    """ParseError for an amount beyond 1e15, or a base quantity that underflowed to 0."""
    for name, value in (("price", price), ("quantity", qty_native), ("base quantity", amounts.quantity),
                        ("notional", amounts.notional)):
        if not plausible_amount(value):
            raise ParseError(venue, f"{name} {value!r} is outside [0, 1e15)", inst.symbol_native)
    if amounts.quantity <= 0:
        raise ParseError(venue, f"base quantity {amounts.quantity!r} must be above 0", inst.symbol_native)


def make_liquidation(
    venue: str,
    inst: Instrument,
    *,
    side: Side,
    side_raw: str,
    price: float,
    quantity_native: float,
    native_unit: str,
    timestamp_ms: int,
    event_id: str = "",
    received_ms: int = 0,
    timestamp_source: TimestampSource = "exchange",
    sampled: bool = False,
    extra: Mapping[str, ExtraValue] | None = None,
) -> Liquidation:
    """Build the normalized Liquidation; ``event_id=""`` means "use :func:`event_digest`".

    A frame no consumer could use is malformed (ParseError, ``shared.models``): an instrument
    with an empty native symbol, base or quote (a symbol fallback splitting garbage); an event
    time outside [2009, 2100) (seconds, microseconds or nanoseconds read as milliseconds); a
    price or quantity not above 0 (``quantity_native`` as sent: a venue with signed amounts
    passes their magnitude); a price, quantity or notional beyond 1e15; an extra computed from
    finite numbers that overflowed (Binance ``notional_usd_at_price_avg``).
    """
    _refuse_implausible(venue, inst, price, quantity_native, timestamp_ms)
    for key, value in (extra or {}).items():
        if isinstance(value, float) and not math.isfinite(value):  # the codec would write null
            raise ParseError(venue, f"extra {key} is {value!r}", inst.symbol_native)
    amounts = _amounts(inst, quantity_native, native_unit, price, venue)
    _refuse_implausible_amounts(venue, inst, price, quantity_native, amounts)
    return Liquidation(
        exchange=venue,
        symbol=inst.symbol,
        symbol_native=inst.symbol_native,
        base=canonical_asset(inst.base),
        quote=canonical_asset(inst.quote),
        market_type=inst.market_type,
        side=side,
        price=price,
        quantity=amounts.quantity,
        notional_usd=amounts.notional,
        timestamp_ms=timestamp_ms,
        event_id=event_id or event_digest(inst.symbol_native, timestamp_ms, side, price, quantity_native),
        side_raw=side_raw,
        quantity_unit=amounts.unit,
        quantity_native=quantity_native,
        quantity_native_unit=native_unit,
        contract_value=amounts.contract_value,
        contract_value_unit=amounts.contract_value_unit,
        notional_known=amounts.known,
        expiry=inst.expiry,
        timestamp_source=timestamp_source,
        received_ms=received_ms,
        sampled=sampled,
        extra=dict(extra or {}),
    )


def liquidation_to_row(liq: Liquidation) -> dict[str, Any]:
    """Flat JSON-able dict: every field but ``extra``, extra keys merged at top level.

    ``notional_usd`` is None when the notional is unknown.
    """
    row: dict[str, Any] = {name: getattr(liq, name) for name in liq.__struct_fields__ if name != "extra"}
    if not liq.notional_known:
        row["notional_usd"] = None
    for key, value in liq.extra.items():
        row.setdefault(key, value)
    return row
