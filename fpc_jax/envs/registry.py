"""Name -> env factory registry: ``make(name, **overrides) -> (env, params)``, and the backends
an env family's factories dispatch to (``metaworld/*``: ``"cpu"``, ``"mjx"``)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

_FACTORIES: dict[str, Callable[..., tuple[Any, Any]]] = {}
_BACKENDS: dict[str, dict[str, Callable[..., tuple[Any, Any]]]] = {}


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


def register_backend(family: str, name: str, builder: Callable[..., tuple[Any, Any]]) -> None:
    """Add backend ``name`` of the env family ``family`` (e.g. ``"Meta-World"``):
    ``builder(config, **kw) -> (env, params)``."""
    table = _BACKENDS.setdefault(family, {})
    if name in table:
        raise ValueError(f"{family} backend {name!r} is registered twice")
    table[name] = builder


def make_backend(family: str, name: str, config: Any, **kw: Any) -> tuple[Any, Any]:
    """Build ``(env, params)`` of ``config`` with backend ``name`` of ``family``."""
    table = _BACKENDS.get(family, {})
    if name not in table:
        raise ValueError(f"unknown {family} backend {name!r}; valid: {', '.join(sorted(table))}")
    return table[name](config, **kw)
