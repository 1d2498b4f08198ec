"""Knowledge-retention penalties (L2, EWC, BC, KS) and coefficients (Wolczyk et al. 2023, 2024).

Every penalty is a pure function returning a scalar; coefficients are array leaves so one
compiled update serves every method (FT is all-zero coefficients).
"""

from __future__ import annotations

import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.agents.sac.networks import is_trunk_path

PyTree = Any

_COEF_FIELDS = (
    "l2_actor",
    "l2_critic",
    "ewc_actor",
    "ewc_critic",
    "bc_actor",
    "bc_critic",
    "ks_actor",
)

# ICML 2024 (I) values, W's in comments; KS is not tuned in either paper for SAC: we use 1.0,
# the same scale as BC, because both are the same per-state KL (on different states).
_PRESETS: dict[str, dict[str, float]] = {
    "ft": {},
    "scratch": {},
    "em": {},  # episodic memory acts through the replay buffer, not through a loss term
    "l2": {"l2_actor": 1000.0},  # W: actor 1000, critic 0
    "ewc": {"ewc_actor": 100.0},  # I: actor 100, critic 0 [W: actor 1, critic 100]
    "bc": {"bc_actor": 1.0},  # I and W: actor 1, critic 0
    "ks": {"ks_actor": 1.0},  # [U] chosen, see module comment
}


@struct.dataclass
class RetentionCoefs:
    """Retention coefficients, all float32 array leaves (vmappable over runs).

    ``bc_kl_direction``: 0.0 = KL(teacher || student) (I section 2, the authors' code; default),
    1.0 = KL(student || teacher) (I appendix, W). Values in between interpolate linearly.
    """

    l2_actor: jax.Array
    l2_critic: jax.Array
    ewc_actor: jax.Array
    ewc_critic: jax.Array
    bc_actor: jax.Array
    bc_critic: jax.Array
    ks_actor: jax.Array
    bc_kl_direction: jax.Array

    @classmethod
    def create(cls, bc_kl_direction: float = 0.0, **coefs: float) -> RetentionCoefs:
        """Validated coefficients; unnamed ones are 0. Raises ValueError on bad values."""
        unknown = set(coefs) - set(_COEF_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown retention coefficient(s) {sorted(unknown)}; known: {_COEF_FIELDS}"
            )
        values = {name: float(coefs.get(name, 0.0)) for name in _COEF_FIELDS}
        for name, value in values.items():
            if not math.isfinite(value) or value < 0.0:
                raise ValueError(
                    f"retention coefficient {name} must be finite and >= 0, got {value!r}"
                )
        if float(bc_kl_direction) not in (0.0, 1.0):
            raise ValueError(
                "bc_kl_direction must be 0.0 (KL(teacher||student)) or 1.0 (KL(student||teacher)),"
                f" got {bc_kl_direction!r}"
            )
        leaves = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
        return cls(bc_kl_direction=jnp.asarray(bc_kl_direction, jnp.float32), **leaves)

    @classmethod
    def preset(cls, method: str, **overrides: float) -> RetentionCoefs:
        """Paper defaults for ``method`` in ft|scratch|em|l2|ewc|bc|ks, with optional overrides."""
        if method not in _PRESETS:
            raise ValueError(f"unknown retention method {method!r}; choose one of {list(_PRESETS)}")
        return cls.create(**{**_PRESETS[method], **overrides})


def preset_names() -> tuple[str, ...]:
    """Names accepted by ``RetentionCoefs.preset``."""
    return tuple(_PRESETS)


def stack_coefs(coefs: list[RetentionCoefs]) -> RetentionCoefs:
    """Stack coefficient sets along a new leading runs axis (for ``jax.vmap``)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *coefs)


def _trunk_sum(fn, *trees: PyTree) -> jax.Array:
    terms = jax.tree_util.tree_map_with_path(
        lambda path, *leaves: fn(*leaves) if is_trunk_path(path) else None, *trees
    )
    leaves = [jnp.sum(x) for x in jax.tree_util.tree_leaves(terms)]
    return jnp.sum(jnp.stack(leaves)) if leaves else jnp.zeros((), jnp.float32)


def l2_penalty(params: PyTree, params_star: PyTree) -> jax.Array:
    """L2 to the pre-trained weights on the shared trunk: ``sum_i (theta_i - theta*_i)^2`` (W eq. 1,
    F = 1). Head parameters are excluded."""
    chex.assert_trees_all_equal_shapes(params, params_star)
    return _trunk_sum(lambda p, s: (p - s) ** 2, params, params_star)


def ewc_penalty(params: PyTree, params_star: PyTree, fisher: PyTree) -> jax.Array:
    """EWC on the shared trunk: ``sum_i F_i (theta_i - theta*_i)^2`` (W eq. 1; Kirkpatrick et al.
    2017). Head parameters are excluded whatever their Fisher value."""
    chex.assert_trees_all_equal_shapes(params, params_star, fisher)
    return _trunk_sum(lambda p, s, f: f * (p - s) ** 2, params, params_star, fisher)


def gaussian_kl(
    mean_p: jax.Array, log_std_p: jax.Array, mean_q: jax.Array, log_std_q: jax.Array
) -> jax.Array:
    """Closed-form ``KL(N(mean_p, std_p^2) || N(mean_q, std_q^2))`` of diagonal Gaussians, summed
    over dims: ``sum log(std_q/std_p) + (std_p^2 + (mean_p - mean_q)^2) / (2 std_q^2) - 1/2``."""
    chex.assert_rank(mean_p, 1)
    chex.assert_equal_shape([mean_p, log_std_p, mean_q, log_std_q])
    var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
    mahalanobis = ((mean_p - mean_q) * jnp.exp(-log_std_q)) ** 2
    return jnp.sum(log_std_q - log_std_p + 0.5 * (var_ratio + mahalanobis) - 0.5)


def policy_kl(
    student_mean: jax.Array,
    student_log_std: jax.Array,
    teacher_mean: jax.Array,
    teacher_log_std: jax.Array,
    direction: jax.Array,
) -> jax.Array:
    """Per-state BC / KS divergence between pre-tanh Gaussians (I section 2; Schmitt et al. 2018).

    ``direction`` 0 -> KL(teacher || student) (default), 1 -> KL(student || teacher).
    """
    chex.assert_rank(direction, 0)
    forward = gaussian_kl(teacher_mean, teacher_log_std, student_mean, student_log_std)
    reverse = gaussian_kl(student_mean, student_log_std, teacher_mean, teacher_log_std)
    return (1.0 - direction) * forward + direction * reverse


def critic_bc_penalty(q: jax.Array, q_teacher: jax.Array) -> jax.Array:
    """Critic distillation for one state: ``sum_j (Q_j(s, a*) - Q*(s, a*))^2`` over the twin
    critics, ``a* = tanh(teacher mean)`` [U: neither paper specifies the critic BC target]."""
    chex.assert_shape(q, (2,))
    chex.assert_rank(q_teacher, 0)
    return jnp.sum((q - q_teacher) ** 2)
