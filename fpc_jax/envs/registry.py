"""Name -> env factory registry: ``make(name, **overrides) -> (env, params)``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

_FACTORIES: dict[str, Callable[..., tuple[Any, Any]]] = {}


def register(
    name: str,
) -> Callable[[Callable[..., tuple[Any, Any]]], Callable[..., tuple[Any, Any]]]:
    """Decorator registering ``factory(**overrides) -> (env, params)`` under ``name``."""

    def deco(factory: Callable[..., tuple[Any, Any]]) -> Callable[..., tuple[Any, Any]]:
        if name in _FACTORIES:
            raise ValueError(f"env {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return deco


def registered() -> list[str]:
    """All registered env names, sorted."""
    return sorted(_FACTORIES)


def make(name: str, **overrides: Any) -> tuple[Any, Any]:
    """Build ``(env, params)`` for a registered env; ``overrides`` replace default params."""
    if name not in _FACTORIES:
        close = difflib.get_close_matches(name, _FACTORIES, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown env {name!r}.{hint} Registered envs: {', '.join(registered())}")
    return _FACTORIES[name](**overrides)
