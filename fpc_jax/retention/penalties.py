"""Knowledge-retention penalties (L2, EWC, BC, KS) and coefficients (Wolczyk et al. 2023, 2024).

Every penalty is a pure function returning a scalar; coefficients are array leaves so one
compiled update serves every method (FT is all-zero coefficients).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.retention import terms
from fpc_jax.retention.trunk import is_trunk_path

PyTree = Any


@struct.dataclass
class RetentionCoefs:
    """Retention coefficients: one float32 array leaf per entry of ``terms.COEFS`` (vmappable
    over runs; FT is all weights 0). Read them as attributes: ``coefs.bc_actor``.

    ``bc_kl_direction``: 0.0 = KL(teacher || student) (I section 2, the authors' code; default),
    1.0 = KL(student || teacher) (I appendix, W). ``ks_decay_rate``: ``ks_actor`` is multiplied
    by ``(1 - ks_decay_rate) ** update`` (0: no decay).
    """

    values: dict[str, jax.Array]

    def __getattr__(self, name: str) -> jax.Array:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    @classmethod
    def create(cls, **coefs: float) -> RetentionCoefs:
        """Validated coefficients; unnamed ones take their table default. Raises ValueError."""
        for name in coefs:
            terms.coef(name)
        errors = [terms.coef(k).check(v) for k, v in coefs.items()]
        errors = [e for e in errors if e]
        if errors:
            raise ValueError("; ".join(errors))
        values = {c.name: float(coefs.get(c.name, c.default)) for c in terms.COEFS}
        return cls(values={k: jnp.asarray(v, jnp.float32) for k, v in values.items()})

    @property
    def ks_decay(self) -> jax.Array:
        """Per-update multiplier of ``ks_actor``: ``1 - ks_decay_rate``."""
        return 1.0 - self.values["ks_decay_rate"]

    def decayed(self, update: jax.Array) -> RetentionCoefs:
        """The coefficients in force at update ``update`` (0-based): ``ks_actor * ks_decay **
        update`` (I, NetHack: KS 0.5 decayed x0.99998 per step); the others are constant."""
        rate = self.values["ks_decay_rate"]
        ks = self.values["ks_actor"]
        # exp(u log1p(-rate)): exact in float32 where (1 - rate) ** u drifts (3e-3 at 1e5 updates)
        factor = jnp.exp(jnp.asarray(update, jnp.float32) * jnp.log1p(-rate))
        ks = jnp.where(rate > 0.0, ks * factor, ks)  # no decay: ks bit for bit
        return self.replace(values={**self.values, "ks_actor": ks})

    @classmethod
    def preset(cls, method: str, family: str = "sac", **overrides: float) -> RetentionCoefs:
        """The papers' coefficients of ``method`` for agent ``family``, then ``overrides``."""
        return cls.create(**{**terms.method(method).preset(family), **overrides})


def preset_names() -> tuple[str, ...]:
    """Names accepted by ``RetentionCoefs.preset``."""
    return terms.METHOD_NAMES


def _trunk_sum(fn, *trees: PyTree) -> jax.Array:
    terms = jax.tree_util.tree_map_with_path(
        lambda path, *leaves: fn(*leaves) if is_trunk_path(path) else None, *trees
    )
    leaves = [jnp.sum(x) for x in jax.tree_util.tree_leaves(terms)]
    return jnp.sum(jnp.stack(leaves)) if leaves else jnp.zeros((), jnp.float32)


def quadratic_penalty(
    params: PyTree, params_star: PyTree, weights: PyTree | None = None
) -> jax.Array:
    """``sum_i F_i (theta_i - theta*_i)^2`` over the shared trunk (W eq. 1; Kirkpatrick et al.
    2017): EWC with ``weights`` = the Fisher diagonal, L2 with ``weights=None`` (F = 1). Head
    parameters are excluded whatever their weight."""
    if weights is None:
        chex.assert_trees_all_equal_shapes(params, params_star)
        return _trunk_sum(lambda p, s: (p - s) ** 2, params, params_star)
    chex.assert_trees_all_equal_shapes(params, params_star, weights)
    return _trunk_sum(lambda p, s, f: f * (p - s) ** 2, params, params_star, weights)


def l2_penalty(params: PyTree, params_star: PyTree) -> jax.Array:
    """L2 to the pre-trained trunk: ``quadratic_penalty`` with F = 1."""
    return quadratic_penalty(params, params_star)


def ewc_penalty(params: PyTree, params_star: PyTree, fisher: PyTree) -> jax.Array:
    """EWC on the trunk: ``quadratic_penalty`` weighted by the Fisher diagonal."""
    return quadratic_penalty(params, params_star, fisher)


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


def categorical_kl(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
    """``KL(p || q) = sum_a p_a (log p_a - log q_a)`` of two categoricals given by logits (A,)."""
    chex.assert_rank(logits_p, 1)
    chex.assert_equal_shape([logits_p, logits_q])
    log_p = jax.nn.log_softmax(logits_p)
    log_q = jax.nn.log_softmax(logits_q)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q))


def categorical_policy_kl(
    student_logits: jax.Array, teacher_logits: jax.Array, direction: jax.Array
) -> jax.Array:
    """Per-state BC / KS divergence of categorical policies (I section 2; Schmitt et al. 2018).

    ``direction`` 0 -> KL(teacher || student) (default; the cross-entropy to pi* up to pi*'s
    entropy, which has no gradient), 1 -> KL(student || teacher).
    """
    chex.assert_rank(direction, 0)
    forward = categorical_kl(teacher_logits, student_logits)
    reverse = categorical_kl(student_logits, teacher_logits)
    return (1.0 - direction) * forward + direction * reverse
