"""Collectors: one per venue, public WebSockets → normalized Liquidation → Redis streams.

``VENUES`` maps each venue name (as used by ``liq collect``/``liq parse`` and stored in
``Liquidation.exchange``) to the module that defines its ``VENUE`` spec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from shared.venues import VENUE_NAMES

if TYPE_CHECKING:
    from collectors.venue import VenueSpec

VENUES: dict[str, str] = {name: f"collectors.venues.{name}" for name in VENUE_NAMES}


def load_venue(name: str) -> VenueSpec:
    """The ``VENUE`` spec of a venue module; KeyError names the unknown venue."""
    if name not in VENUES:
        raise KeyError(f"unknown venue {name!r}; choose one of: {', '.join(VENUES)}")
    spec: VenueSpec = importlib.import_module(VENUES[name]).VENUE
    return spec
