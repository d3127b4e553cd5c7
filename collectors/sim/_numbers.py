"""The number helpers every simulated venue uses: prices and sizes with few decimals so that
string → float round trips are exact."""

from __future__ import annotations


def wire(value: float) -> str:
    """A number as an exchange string: at most 8 decimals, no trailing zeros."""
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return text or "0"


def tick(price: float) -> float:
    """A price with few decimals (3 from 10 up, else 6): the model's ticks pass unchanged."""
    return float(wire(round(price, 3 if price >= 10 else 6)))


def lots(amount: float, step: float) -> float:
    """``amount`` rounded to a whole number (≥ 1) of ``step``, as its exact wire value."""
    return float(wire(max(1, round(amount / step)) * step))


def base_step(price: float) -> float:
    """A base-quantity lot that keeps a few significant digits at this price."""
    for floor, step in ((10_000, 0.001), (1_000, 0.01), (10, 0.1)):
        if price >= floor:
            return step
    return 1.0
