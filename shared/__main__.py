"""``python -m shared …`` is the ``liq`` command (used by ``liq up`` to start children)."""

from shared.cli import cli

cli()
