"""A tiny name -> object registry, one per kind of plug-in (datasets, corruptions, scores, methods)."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownChoiceError(KeyError, ValueError):
    """A param names something that is not registered. The message names key, value and choices."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps a name to a plug-in.

    ``kind`` is the params key that selects from this registry (for example ``outliers.corruptions``),
    so that an unknown name gives an error a user can act on.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind}: {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownChoiceError(
                f"{self.kind}: unknown value {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
