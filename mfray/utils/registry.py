"""Named registries for extension points (featurisers, sources, splitters, readouts, ...).

A registry maps a name to a factory. It refuses duplicate names, resolves by name or passes an
instance through, and checks keyword arguments against the factory's signature so that a typo in a
spec is an error that lists the accepted arguments instead of being silently dropped.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from mfray.utils.errors import MfrayError

T = TypeVar("T")


class RegistryError(MfrayError, ValueError):
    """A name or argument could not be resolved in a registry (a user-facing error: the CLI prints it)."""


class Registry(Generic[T]):
    """A mapping from names to factories of one kind of extension.

    Args:
        kind: what the registry holds, used in error messages (e.g. ``"readout"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or factory function under ``name`` (default: its own name)."""

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            key = (name or getattr(obj, "__name__", "")).lower()
            if not key:
                raise RegistryError(f"cannot register an unnamed {self.kind}")
            if key in self._items and self._items[key] is not obj:
                raise RegistryError(
                    f"{self.kind} {key!r} is already registered (by {self._items[key]!r}); "
                    "choose another name"
                )
            self._items[key] = obj
            return obj

        return deco

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> Callable[..., T]:
        key = name.lower()
        if key not in self._items:
            close = difflib.get_close_matches(key, self._items, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RegistryError(
                f"could not resolve {self.kind} {name!r} among choices {self.names()}{hint}"
            )
        return self._items[key]

    def build(self, name_or_obj: str | T, **kwargs: Any) -> T:
        """Instantiate ``name`` with ``kwargs``; an instance (not a string) is returned unchanged."""
        if not isinstance(name_or_obj, str):
            if kwargs:
                raise RegistryError(f"cannot apply arguments {sorted(kwargs)} to an instance")
            return name_or_obj
        factory = self.get(name_or_obj)
        check_kwargs(factory, kwargs, what=f"{self.kind} {name_or_obj!r}")
        return factory(**kwargs)


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise :class:`RegistryError` if ``factory`` does not accept every key of ``kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = {
        n for n, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise RegistryError(f"unknown argument(s) {unknown} for {what}; accepted: {sorted(allowed)}")
