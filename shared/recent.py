"""A bounded memory of recently seen keys: an insertion-ordered set that forgets its oldest."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class RecentKeys(Generic[K]):
    """Insertion-ordered set with a capacity; the oldest key is forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[K, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: K) -> bool:
        """Remember ``key``; True when it was already there."""
        if key in self._keys:
            return True
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return False

    def update(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.add(key)

    def clear(self) -> None:
        self._keys.clear()
