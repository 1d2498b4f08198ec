"""Schema of the SAC study configs (``configs/toy``, ``configs/robotic_sequence``) and of the
method tokens (``"bc"``, ``"ewc:ewc_actor=1000"``) that name a retention method's coefficients."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fpc_jax.agents.sac.train import EVAL_POLICIES
from fpc_jax.envs.metaworld_cpu import check_tasks
from fpc_jax.envs.metaworld_mjx import IMPLS
from fpc_jax.experiments import config as cfglib
from fpc_jax.retention import terms
from fpc_jax.retention.fisher import FISHER_MEANS
from fpc_jax.retention.penalties import RetentionCoefs, preset_names

COEF_FIELDS: tuple[str, ...] = tuple(n for n in terms.COEF_NAMES if n != "bc_kl_direction")
"""Per-method coefficient overrides a config may set (from the retention table)."""

BACKENDS: tuple[str, ...] = ("", "mjx")
"""``""``: ``env`` is a registered pure-JAX sequence env, built from ``T`` and ``beta``;
``"mjx"``: ``env`` is ``metaworld/robotic_sequence`` on the MJX backend (docs/mjx_backend.md)."""

MJX_ENVS: tuple[str, ...] = ("metaworld/robotic_sequence",)
"""Envs the ``mjx`` backend serves for this study (the single-task names have no Far stages)."""


def option(default: Any, help: str, **meta: Any) -> Any:
    """A config field with its ``--help`` text (``meta``: e.g. ``resume_omit_default``)."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def _override_field(name: str) -> tuple[str, Any, Any]:
    c = terms.coef(name)
    # fields added after runs were recorded stay out of their resume keys while at the default
    new = {"resume_omit_default": True} if c.added_later else {}
    help_text = f"override the {terms.owner(name)} preset: {c.help}"
    return name, float | None, option(None, help_text, **new)


RetentionOverrides = dataclasses.make_dataclass(
    "RetentionOverrides", [_override_field(n) for n in COEF_FIELDS], frozen=True
)
RetentionOverrides.__doc__ = "One optional override per coefficient of ``terms.COEFS``."


@dataclasses.dataclass(frozen=True)
class SACStudyConfig(RetentionOverrides):
    """Schema of ``configs/toy/*.yaml`` (pre-training and fine-tuning share one file)."""

    name: str = option("toy", "experiment name")
    env: str = option(
        "point_sequence", "registered pure-JAX sequence env, or metaworld/* (backend)"
    )
    backend: str = option(
        "",
        "'' (env is a pure-JAX registry env) or 'mjx' (Meta-World on MJX-Warp)",
        resume_omit_default=True,
    )
    tasks: tuple[str, ...] = option(
        (),
        "Meta-World v3 tasks of the sequence, in order (backend mjx; empty: the env default)",
        resume_omit_default=True,
    )
    mjx_impl: str = option("warp", "MJX implementation (backend mjx)", resume_omit_default=True)
    T: int = option(100, "stage time limit (steps)")
    beta: float = option(1.5, "success bonus factor")
    hidden_sizes: tuple[int, ...] = option((256, 256, 256, 256), "MLP widths (CW: 4 x 256)")
    first_activation: str = option("tanh_layernorm", "layer-1 activation (CW code)")
    hidden_activation: str = option("leaky_relu", "later layers' activation")
    batch_size: int = option(128, "SAC batch size")
    lr: float = option(1e-3, "Adam learning rate")
    gamma: float = option(0.99, "discount")
    polyak: float = option(0.995, "target-network Polyak factor")
    init_log_alpha: float = option(1.0, "initial log temperature (per stage)")
    update_every: int = option(50, "env steps between update bursts (= updates per burst)")
    update_after: int = option(1000, "env steps before the first update")
    buffer_capacity: int = option(
        1_000_000, "replay capacity of a run (CW: 1M); EM runs use em_buffer_capacity"
    )
    em_buffer_capacity: int = option(
        100_000, "replay capacity of an EM run, its em_transitions included (I: 100k)"
    )
    eval_episodes: int = option(10, "evaluation episodes per stage and per sequence (per mode)")
    eval_policy: str = option(
        "both",
        "evaluation: 'both' (eval/* = stochastic, as CW's plots; plus "
        "eval/deterministic/*), 'stochastic' or 'deterministic'",
    )
    steps_per_chunk: int = option(5_000, "env steps per compiled chunk (= evaluation interval)")
    # pre-training
    pretrain_steps: int = option(
        50_000, "env steps of multi-task SAC on the Far stages", resume_extend=True
    )
    pretrain_start_steps: int = option(
        5_000, "uniform-random env steps at the start of pre-training"
    )
    # fine-tuning
    checkpoint: str = option(
        "", "pre-trained policy: a directory, 'asset:NAME' (packaged), or '' (<pretrain out>)"
    )
    finetune_steps: int = option(
        50_000,
        "env steps of fine-tuning per run (raise it to extend a finished run)",
        resume_extend=True,
    )
    finetune_start_steps: int = option(
        0, "uniform-random env steps at the start of fine-tuning from pi* [U]"
    )
    scratch_start_steps: int = option(
        10_000, "uniform-random env steps at the start of a scratch run (CW start_steps: 10k)"
    )
    methods: tuple[str, ...] = option(
        ("ft", "l2", "ewc", "bc", "ks", "em", "scratch"), "retention methods (see presets)"
    )
    seeds: int = option(3, "seeds per method")
    seed: int = option(0, "base PRNG seed")
    bc_states: int = option(10_000, "stored Far states for BC (I: 10k)")
    em_transitions: int = option(10_000, "Far transitions kept by EM (I: 10k of 100k)")
    fisher_states: int = option(2_560, "states for the EWC Fisher (I: 10 batches x 256)")
    bc_kl_direction: float = option(0.0, "0: KL(teacher||student) (default); 1: reverse")
    ewc_fisher_mean: str = option(
        "squashed", "actor EWC Fisher on tanh(mean) ('squashed', CW's code) or 'pre_tanh'"
    )
    new_critic_heads: str = option(
        "random",
        "critic heads of the stages the checkpoint did not train: random (the papers) "
        "or zero (Q = 0 until learnt)",
        resume_omit_default=True,
    )
    checkpoint_every: int = option(1, "chunks between resumable run-state checkpoints")
    min_pretrain_success: float = option(
        0.5,
        "warn (and record it) when pi*'s success on a Far stage alone is below this",
        resume_omit_default=True,
    )

    def validate(self) -> None:
        bad = check_methods_and_coefs(self)
        if self.backend not in BACKENDS:
            bad.append(f"unknown backend {self.backend!r}; valid: {list(BACKENDS)}")
        elif self.backend and self.env not in MJX_ENVS:
            bad.append(f"backend {self.backend!r} serves env {list(MJX_ENVS)}, not {self.env!r}")
        if self.eval_policy not in EVAL_POLICIES:
            bad.append(f"eval_policy {self.eval_policy!r}: expected one of {list(EVAL_POLICIES)}")
        if self.ewc_fisher_mean not in FISHER_MEANS:
            bad.append(f"ewc_fisher_mean {self.ewc_fisher_mean!r}: expected one of {FISHER_MEANS}")
        if self.finetune_start_steps < 0 or self.scratch_start_steps < 0:
            bad.append("finetune_start_steps and scratch_start_steps must be >= 0")
        if self.new_critic_heads not in ("random", "zero"):
            bad.append(f"new_critic_heads {self.new_critic_heads!r}: expected 'random' or 'zero'")
        if self.mjx_impl not in IMPLS:
            bad.append(f"unknown mjx_impl {self.mjx_impl!r}; valid: {list(IMPLS)}")
        if self.tasks:
            try:
                check_tasks(self.tasks)
            except ValueError as e:
                bad.append(str(e))
        for k in ("T", "batch_size", "seeds", "update_every", "steps_per_chunk", "eval_episodes"):
            if getattr(self, k) < 1:
                bad.append(f"{k} must be >= 1")
        if self.finetune_steps < 1 or self.finetune_steps % self.steps_per_chunk:
            bad.append("finetune_steps must be a positive multiple of steps_per_chunk")
        if self.pretrain_steps < 0 or self.pretrain_steps % self.steps_per_chunk:
            bad.append("pretrain_steps must be a multiple of steps_per_chunk (0: no pre-training)")
        if self.steps_per_chunk % self.update_every:
            bad.append("steps_per_chunk must be a multiple of update_every")
        if not self.lr > 0 or not 0 <= self.gamma <= 1 or not 0 <= self.polyak <= 1:
            bad.append("need lr > 0 and gamma, polyak in [0, 1]")
        if bad:  # uses_em below parses the method tokens
            raise cfglib.ConfigError("invalid SAC study config: " + "; ".join(bad))
        if self.buffer_capacity < self.update_every:
            bad.append("buffer_capacity must be >= update_every")
        if self.uses_em and not 0 < self.em_transitions < self.em_buffer_capacity:
            bad.append("em_transitions must be in (0, em_buffer_capacity)")
        elif self.uses_em and self.em_buffer_capacity - self.em_transitions < self.update_every:
            bad.append("em_buffer_capacity - em_transitions must be >= update_every")
        if bad:
            raise cfglib.ConfigError("invalid SAC study config: " + "; ".join(bad))

    @property
    def uses_em(self) -> bool:
        return any(terms.method(parse_method(m)[0]).reserves_replay for m in self.methods)

    def coefs(self, method: str) -> RetentionCoefs:
        """Coefficients of a method token: the preset, then this config's ``<method>_*`` fields,
        then the token's own ``name:key=value,...`` overrides."""
        return method_coefs(self, method, "sac")


def replay_layout(cfg: Any) -> tuple[int, int]:
    """``(slots, reserved)`` of the fine-tuning replay every run of one program allocates: EM
    runs keep ``em_transitions`` in ``[0, reserved)`` and ring the next
    ``em_buffer_capacity - em_transitions`` slots; the others leave the reserved slice empty and
    ring ``buffer_capacity`` slots after it (``ring_limit``)."""
    reserved = cfg.em_transitions if cfg.uses_em else 0
    slots = cfg.buffer_capacity + reserved
    return (max(slots, cfg.em_buffer_capacity) if cfg.uses_em else slots), reserved


def ring_limit(cfg: Any, method: str) -> int:
    """Ring slots of a run of ``method`` (a method token) in ``replay_layout``."""
    if terms.method(parse_method(method)[0]).reserves_replay:
        return cfg.em_buffer_capacity - cfg.em_transitions
    return cfg.buffer_capacity


def start_steps(cfg: Any, method: str) -> int:
    """Uniform-random env steps at the start of a fine-tuning run of ``method``: scratch as CW
    (``scratch_start_steps``), the methods starting from pi* ``finetune_start_steps``."""
    if terms.method(parse_method(method)[0]).random_init:
        return cfg.scratch_start_steps
    return cfg.finetune_start_steps


def check_methods_and_coefs(cfg: Any, *, has_replay: bool = True) -> list[str]:
    """Errors in a study config's ``methods`` (unknown tokens, repeats, a method that keeps
    transitions in replay when the agent has none), its coefficient overrides and
    ``min_pretrain_success``."""
    bad = []
    for m in cfg.methods:
        try:
            base = parse_method(m)[0]
        except ValueError as e:
            bad.append(str(e))
            continue
        if not has_replay and terms.method(base).reserves_replay:
            bad.append(f"method {base!r} keeps transitions in a replay buffer; PPO has none")
    if not 0.0 <= getattr(cfg, "min_pretrain_success", 0.0) <= 1.0:
        bad.append(f"min_pretrain_success must be in [0, 1], got {cfg.min_pretrain_success}")
    if len(set(cfg.methods)) != len(cfg.methods):
        bad.append(f"methods must be distinct, got {list(cfg.methods)}")
    for k in (*COEF_FIELDS, "bc_kl_direction"):
        v = getattr(cfg, k)
        if v is not None and (error := terms.coef(k).check(v)):
            bad.append(error)
    if not has_replay and not bad:  # PPO: a categorical policy, nothing to squash
        for m in cfg.methods:
            values = method_coefs(cfg, m, "ppo").values
            if any(float(values[k]) for k in ("bc_squashed", "ks_squashed")):
                bad.append(f"{m!r}: bc_squashed / ks_squashed are for SAC's tanh-Gaussian policy")
    return bad


def method_coefs(cfg: Any, method: str, family: str) -> RetentionCoefs:
    """Coefficients of a method token: the ``family`` preset, then ``cfg``'s ``<method>_*``
    override fields, then the token's own ``name:key=value,...`` overrides."""
    base, extra = parse_method(method)
    own = {k: getattr(cfg, k) for k in COEF_FIELDS if terms.owner(k) == base}
    own = {k: v for k, v in own.items() if v is not None}
    return RetentionCoefs.preset(
        base, family=family, **{"bc_kl_direction": cfg.bc_kl_direction, **own, **extra}
    )


def parse_method(token: str) -> tuple[str, dict[str, float]]:
    """``"ewc"`` -> ("ewc", {}); ``"ewc:ewc_actor=1000"`` -> ("ewc", {"ewc_actor": 1000.0}).

    Variants of one method with other coefficients are separate runs of the same compiled
    program (coefficients are array leaves), so a coefficient sweep is just more tokens."""
    base, _, rest = token.partition(":")
    if base not in preset_names():
        raise ValueError(
            f"unknown method {base!r} in {token!r}; choose from {list(preset_names())}"
        )
    extra: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in (*COEF_FIELDS, "bc_kl_direction"):
            raise ValueError(
                f"bad method override {item!r} in {token!r}; use key=value with key in "
                f"{[*COEF_FIELDS, 'bc_kl_direction']}"
            )
        try:
            extra[key] = float(value)
        except ValueError as e:
            raise ValueError(f"{token!r}: {key} must be a number, got {value!r}") from e
        if error := terms.coef(key).check(extra[key]):
            raise ValueError(f"{token!r}: {error}")
    return base, extra


def method_grid(
    cfg: Any, build: Callable[[str, terms.Method, int], Any]
) -> tuple[list[tuple[str, int]], list[Any], list[Any]]:
    """The runs of a study, every method x seed of ``cfg`` in that order: ``(method, seed)``
    labels, ``build(method, table entry, seed)`` per run (theta* or a fresh init as the entry's
    ``random_init`` says, EM's reserved replay as ``reserves_replay`` says) and each run's
    coefficients (``cfg.coefs(method)``). Every study driver (on-device, Meta-World CPU, host
    PPO) builds its runs with it."""
    labels, runs, coefs = [], [], []
    for method in cfg.methods:
        entry = terms.method(parse_method(method)[0])
        for s in range(cfg.seeds):
            labels.append((method, s))
            runs.append(build(method, entry, s))
            coefs.append(cfg.coefs(method))
    return labels, runs, coefs
