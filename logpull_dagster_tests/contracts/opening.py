"""What the store suites share: an opener that closes every store it opened when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar


class Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=Closable)


def closing_all(open_store: Callable[[], T]) -> Iterator[Callable[[], T]]:
    """A fixture body: yields ``open_store``, then closes every store it opened."""
    opened: list[T] = []

    def open_one() -> T:
        opened.append(open_store())
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()
