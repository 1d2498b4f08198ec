"""Config as data: frozen dataclass schemas from YAML, with validated ``key=value`` overrides.

A schema is a frozen dataclass; each field's ``metadata`` may carry ``help`` (shown in errors and
``--help``), ``sweep=True`` (the field accepts a list, which becomes a sweep axis) and
``resume_omit_default=True`` (see ``resume_key``). Configs are built once and never mutated
(STYLE rule 6).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fpc_jax.experiments import integrity
from fpc_jax.experiments.multihost import main_only

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or override does not match its schema."""


def describe(schema: type, values: Any = None) -> str:
    """One line per field: name, default and help; with ``values`` (a config built from a file),
    that config's value of each field instead of the default."""
    lines = []
    for f in dataclasses.fields(schema):
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        if values is not None:
            default = getattr(values, f.name)
        sweep = " [sweepable: give a list]" if f.metadata.get("sweep") else ""
        lines.append(f"  {f.name} = {default!r}  {f.metadata.get('help', '')}{sweep}")
    return "\n".join(lines)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are YAML (``M=[5,10]``, ``lr=1e-3``, ``name=foo``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
    return out


def _base_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of an annotation like ``float``, ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin in (list, tuple):
        return origin, False
    return tp, False


def _coerce(name: str, value: Any, tp: Any) -> Any:
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: null is not allowed")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError as e:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from e
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if base in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        (elem,) = typing.get_args(tp)[:1] or (Any,)
        if elem is Any or elem is Ellipsis:
            return tuple(value)
        return tuple(_coerce(name, v, elem) for v in value)
    return value


def build(schema: type[C], *layers: Mapping[str, Any]) -> C:
    """Build a frozen config from mappings applied in order (file, then CLI overrides).

    Unknown keys and ill-typed values raise ``ConfigError`` naming the valid fields. Sweep fields
    hold a tuple of values (a scalar becomes a one-element tuple).
    """
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(
                    f"unknown config key {key!r}.{hint} Valid keys for {schema.__name__}:\n"
                    + describe(schema)
                )
            merged[key] = value
    kwargs: dict[str, Any] = {}
    for key, value in merged.items():
        f = fields[key]
        if f.metadata.get("sweep"):
            values = value if isinstance(value, list | tuple) else [value]
            if not values:
                raise ConfigError(f"{key}: a sweep axis needs at least one value")
            (elem,) = typing.get_args(hints[key])[:1]
            kwargs[key] = tuple(_coerce(key, v, elem) for v in values)
        else:
            if isinstance(value, list) and typing.get_origin(hints[key]) not in (list, tuple):
                raise ConfigError(f"{key} is not a sweep axis; give a single value, got {value!r}")
            kwargs[key] = _coerce(key, value, hints[key])
    try:
        cfg = schema(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{schema.__name__}: {e}") from e
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def packaged_configs() -> Path:
    """The experiment configs shipped with the package: an installed wheel's ``fpc_jax/_configs``
    (a copy of the repository's ``configs/``, see setup.py), else a checkout's ``configs/``."""
    package = Path(__file__).resolve().parents[1]
    shipped = package / "_configs"
    return shipped if shipped.is_dir() else package.parent / "configs"


def resolve_path(path: str | Path) -> Path:
    """``path`` if that file exists, else the packaged config it names (``configs/apple/fig3a.yaml``
    or ``apple/fig3a.yaml``), so the repository's config paths work from any directory."""
    path = Path(path)
    if path.is_file() or path.is_absolute():
        return path
    root = packaged_configs()
    rel = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
    return root / rel if (root / rel).is_file() else path


def load(schema: type[C], path: str | Path | None, overrides: Mapping[str, Any] = ()) -> C:
    """Load ``path`` (YAML mapping; see ``resolve_path``) into ``schema``, then ``overrides``."""
    layers: list[Mapping[str, Any]] = []
    if path is not None:
        path = resolve_path(path)
        if path.is_dir():
            raise ConfigError(f"config {str(path)!r} is a directory; give a YAML file in it")
        if not path.is_file():
            root = packaged_configs()
            known = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.yaml"))
            listing = "".join(f"\n  configs/{k}" for k in known) or " (none found)"
            raise ConfigError(
                f"config file {str(path)!r} does not exist here nor among the packaged "
                f"configs ({root}):{listing}"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            where = getattr(e, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"config file {str(path)!r} is not valid YAML{at}: {problem}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of key: value")
        layers.append(data)
    layers.append(dict(overrides))
    return build(schema, *layers)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-YAML-safe dict of a config (tuples become lists)."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, tuple | list) else v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


@main_only
def dump(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (process 0 of a multi-process run)."""
    integrity.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def differing_fields(cfg: Any, path: str | Path) -> list[str]:
    """Fields in which ``cfg`` differs from the config a run wrote to ``path`` (``dump``);
    ``["config.yaml"]`` when that file is missing or unreadable."""
    try:
        saved = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return [Path(path).name]
    if not isinstance(saved, dict):
        return [Path(path).name]
    now = json.loads(json.dumps(to_dict(cfg), default=str))
    return sorted(k for k in {*now, *saved} if now.get(k) != saved.get(k))


def resume_key(cfg: Any) -> dict[str, Any]:
    """``to_dict(cfg)`` as JSON values: what a resumable run checkpoint must match to resume.

    Fields added to a schema after runs were checkpointed carry ``resume_omit_default=True`` and
    are left out while they hold their default, so those runs still resume under the new schema.
    """
    omit = {
        f.name
        for f in dataclasses.fields(cfg)
        if f.metadata.get("resume_omit_default") and getattr(cfg, f.name) == f.default
    }
    key = {k: v for k, v in to_dict(cfg).items() if k not in omit}
    return json.loads(json.dumps(key, default=str))


def resume_extendable(cfg: Any) -> frozenset[str]:
    """Fields marked ``resume_extend=True`` (a run's length in env steps): a checkpoint resumes
    under another value of them, so a finished or interrupted run can be extended. The steps
    already done do not depend on them (no schedule reads the total)."""
    return frozenset(f.name for f in dataclasses.fields(cfg) if f.metadata.get("resume_extend"))
