"""The one table of knowledge-retention methods and their coefficients (Wolczyk et al. 2023, 2024).

``COEFS`` names every coefficient leaf (what ``RetentionCoefs`` holds, what configs and method
tokens may set); ``METHODS`` names every method, its presets per agent family and its flags.
Adding a retention term is one ``COEFS`` entry (plus a preset here) and its loss term in the agent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType

FAMILIES = ("sac", "ppo")
"""Agent families with their own presets (continuous SAC, discrete on-policy PPO)."""


@dataclasses.dataclass(frozen=True)
class Coef:
    """One coefficient leaf: its default and which values are valid.

    ``kind``: ``"weight"`` (finite, >= 0; a loss weight, 0 = off), ``"direction"`` (0 or 1: which
    KL), ``"flag"`` (0 or 1: a variant of a term off / on), ``"rate"`` (in [0, 1): per-update
    decay rate of a weight, 0 = none). Every default is 0, so FT is all zeros.
    """

    name: str
    help: str
    kind: str = "weight"
    default: float = 0.0
    added_later: bool = False  # after runs were recorded: out of their resume keys at default

    def check(self, value: float) -> str | None:
        """An error message for a bad ``value``, or None."""
        v = float(value)
        if self.kind == "weight" and not (math.isfinite(v) and v >= 0.0):
            return f"{self.name} must be finite and >= 0, got {value!r}"
        if self.kind == "direction" and v not in (0.0, 1.0):
            return f"{self.name} must be 0 (KL(teacher||student)) or 1 (reverse), got {value!r}"
        if self.kind == "flag" and v not in (0.0, 1.0):
            return f"{self.name} must be 0 (off) or 1 (on), got {value!r}"
        if self.kind == "rate" and not (0.0 <= v < 1.0):
            return f"{self.name} must be in [0, 1), got {value!r}"
        return None


COEFS: tuple[Coef, ...] = (
    Coef("l2_actor", "L2 to theta* on the actor trunk (W eq. 1, F = 1)"),
    Coef("l2_critic", "L2 to theta* on the critic trunk"),
    Coef("ewc_actor", "EWC on the actor trunk (Fisher of pi* on Far states)"),
    Coef("ewc_critic", "EWC on the critic trunk"),
    Coef("bc_actor", "BC: KL to pi* on its stored Far states"),
    Coef("bc_critic", "critic distillation on the stored Far states [U]"),
    Coef("ks_actor", "kickstarting: KL(pi* || pi) on the online batch"),
    Coef(
        "ks_decay_rate",
        "ks_actor decays x(1 - rate) per update (I, NetHack: 2e-5)",
        "rate",
        added_later=True,
    ),
    Coef("bc_kl_direction", "0: KL(teacher||student) (I section 2); 1: the reverse", "direction"),
    Coef(
        "bc_squashed",
        "SAC BC KL between Gaussians on tanh(mean) (CW-lineage code) instead of the pre-tanh "
        "mean (I section 2; default 0)",
        "flag",
        added_later=True,
    ),
    Coef(
        "ks_squashed",
        "SAC KS KL on tanh(mean), as bc_squashed (default 0: pre-tanh)",
        "flag",
        added_later=True,
    ),
)
COEF_NAMES: tuple[str, ...] = tuple(c.name for c in COEFS)
WEIGHT_NAMES: tuple[str, ...] = tuple(c.name for c in COEFS if c.kind == "weight")
_BY_NAME = {c.name: c for c in COEFS}


@dataclasses.dataclass(frozen=True)
class Method:
    """A retention method: its preset coefficients per agent family and how a run is built.

    ``reserves_replay``: keeps pi*'s Far transitions in a never-overwritten replay slice (EM);
    ``random_init``: starts from freshly initialised weights instead of theta* (scratch).
    """

    name: str
    help: str
    presets: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    reserves_replay: bool = False
    random_init: bool = False

    def preset(self, family: str) -> dict[str, float]:
        if family not in FAMILIES:
            raise ValueError(f"unknown agent family {family!r}; known: {list(FAMILIES)}")
        return dict(self.presets.get(family, {}))


def _both(**coefs: float) -> Mapping[str, Mapping[str, float]]:
    return MappingProxyType({f: MappingProxyType(dict(coefs)) for f in FAMILIES})


# SAC: I's values, W's in comments. KS is not tuned for SAC in either paper: 1.0, the same scale
# as BC, because both are the same per-state KL (on different states) [U].
# PPO: I's NetHack settings (KS 0.5 decayed x0.99998 per step, i.e. rate 2e-5, BC 2.0, EWC 2e6);
# L2 has no PPO value in the papers and keeps SAC's [U].
METHODS: tuple[Method, ...] = (
    Method("ft", "fine-tuning, no retention term"),
    Method("scratch", "random initialisation, same budget", random_init=True),
    Method(
        "em",
        "episodic memory: pi*'s Far transitions kept in replay (SAC only)",
        reserves_replay=True,
    ),
    Method("l2", "L2 to theta* on the trunk", _both(l2_actor=1000.0)),  # W: actor 1000, critic 0
    Method(
        "ewc",
        "elastic weight consolidation on the trunk",
        MappingProxyType(
            {
                "sac": {"ewc_actor": 100.0},  # I: 100, critic 0 [W: 1 and 100]
                "ppo": {"ewc_actor": 2e6},
            }
        ),
    ),
    Method(
        "bc",
        "behavioural cloning of pi* on its stored Far states",
        MappingProxyType({"sac": {"bc_actor": 1.0}, "ppo": {"bc_actor": 2.0}}),
    ),
    Method(
        "ks",
        "kickstarting: distil pi* on the states the learner visits",
        MappingProxyType(
            {"sac": {"ks_actor": 1.0}, "ppo": {"ks_actor": 0.5, "ks_decay_rate": 2e-5}}
        ),
    ),
)
METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in METHODS)
_METHODS = {m.name: m for m in METHODS}


def coef(name: str) -> Coef:
    """The table entry of coefficient ``name``; ValueError names the known ones."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown retention coefficient {name!r}; known: {list(COEF_NAMES)}")
    return _BY_NAME[name]


def method(name: str) -> Method:
    """The table entry of method ``name``; ValueError names the known ones."""
    if name not in _METHODS:
        raise ValueError(f"unknown retention method {name!r}; choose one of {list(METHOD_NAMES)}")
    return _METHODS[name]


def owner(coef_name: str) -> str:
    """The method a coefficient belongs to (``"bc_kl_direction"`` -> ``"bc"``)."""
    return coef(coef_name).name.split("_")[0]
