"""SAC actor and twin critics with one output head per stage (Continual World MLP, Wolczyk et al.).

Parameters are split into a shared ``trunk`` and a per-stage ``head`` so retention penalties can
address the trunk by path. Core functions are unbatched; batch them with ``jax.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.retention.trunk import HEAD, TRUNK, is_trunk_path, trunk_mask

PyTree = Any

__all__ = ["HEAD", "TRUNK", "is_trunk_path", "trunk_mask"]  # re-exported for old imports

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0

# Keras defaults used by Continual World: glorot-uniform kernels, zero biases, LayerNorm eps 1e-3.
_KERNEL_INIT = nn.initializers.xavier_uniform()
_LAYERNORM_EPS = 1e-3

_ELEMENTWISE: dict[str, Callable[[jax.Array], jax.Array]] = {
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "identity": lambda x: x,
}
ACTIVATIONS: tuple[str, ...] = (
    *_ELEMENTWISE,
    *(f"{name}_layernorm" for name in _ELEMENTWISE),
)


def _check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


@struct.dataclass
class SACConfig:
    """Static SAC configuration: shapes and architecture (all ``pytree_node=False``).

    Defaults follow Continual World (docs/paper_facts.md section 3): 4x256 MLP, layer 1 Dense ->
    LayerNorm -> tanh ("tanh_layernorm"), later layers Dense -> leaky_relu(0.2), batch 128.
    """

    obs_dim: int = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)
    num_heads: int = struct.field(pytree_node=False, default=1)
    hidden_sizes: tuple[int, ...] = struct.field(pytree_node=False, default=(256, 256, 256, 256))
    first_activation: str = struct.field(pytree_node=False, default="tanh_layernorm")
    hidden_activation: str = struct.field(pytree_node=False, default="leaky_relu")
    batch_size: int = struct.field(pytree_node=False, default=128)

    def __post_init__(self) -> None:
        for name in ("obs_dim", "act_dim", "num_heads", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SACConfig.{name} must be a positive int, got {value!r}")
        sizes = tuple(self.hidden_sizes)
        if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"SACConfig.hidden_sizes must be positive ints, got {sizes!r}")
        object.__setattr__(self, "hidden_sizes", sizes)
        _check_activation(self.first_activation)
        _check_activation(self.hidden_activation)


def default_target_entropy(act_dim: int) -> float:
    """Continual World target entropy: ``act_dim * ln(0.089 * sqrt(2 pi e))`` (~ -1 per dim)."""
    return act_dim * math.log(0.089 * math.sqrt(2.0 * math.pi * math.e))


class MLPTrunk(nn.Module):
    """Shared trunk: Dense -> ``first_activation``, then Dense -> ``hidden_activation``."""

    hidden_sizes: Sequence[int]
    first_activation: str
    hidden_activation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.hidden_sizes):
            x = nn.Dense(size, kernel_init=_KERNEL_INIT, name=f"dense_{i}")(x)
            name = self.first_activation if i == 0 else self.hidden_activation
            if name.endswith("_layernorm"):
                x = nn.LayerNorm(epsilon=_LAYERNORM_EPS, name=f"layernorm_{i}")(x)
                name = name.removesuffix("_layernorm")
            x = _ELEMENTWISE[name](x)
        return x


class Actor(nn.Module):
    """Unbatched actor: ``(obs (obs_dim,), stage ()) -> (mean, log_std)``, each (act_dim,)."""

    act_dim: int
    num_heads: int
    hidden_sizes: Sequence[int]
    first_activation: str
    hidden_activation: str

    @nn.compact
    def __call__(self, obs: jax.Array, stage: jax.Array) -> tuple[jax.Array, jax.Array]:
        chex.assert_rank(obs, 1)
        chex.assert_rank(stage, 0)
        h = MLPTrunk(self.hidden_sizes, self.first_activation, self.hidden_activation, name=TRUNK)(
            obs
        )
        out = nn.Dense(self.num_heads * 2 * self.act_dim, kernel_init=_KERNEL_INIT, name=HEAD)(h)
        out = out.reshape(self.num_heads, 2 * self.act_dim)[stage]
        mean, log_std = jnp.split(out, 2)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class QNetwork(nn.Module):
    """Unbatched Q: ``(obs, action, stage) -> Q`` scalar, input ``concat(obs, action)``."""

    num_heads: int
    hidden_sizes: Sequence[int]
    first_activation: str
    hidden_activation: str

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array, stage: jax.Array) -> jax.Array:
        chex.assert_rank([obs, action, stage], [1, 1, 0])
        x = jnp.concatenate([obs, action])
        h = MLPTrunk(self.hidden_sizes, self.first_activation, self.hidden_activation, name=TRUNK)(
            x
        )
        return nn.Dense(self.num_heads, kernel_init=_KERNEL_INIT, name=HEAD)(h)[stage]


# Two independent critics stored as one stacked pytree {"trunk": (2, ...), "head": (2, ...)}.
TwinCritic = nn.vmap(
    QNetwork,
    variable_axes={"params": 0},
    split_rngs={"params": True},
    in_axes=None,
    out_axes=0,
    axis_size=2,
)


@dataclass(frozen=True)
class SACNetworks:
    """Pure apply functions (unbatched) for the actor and the twin critic."""

    actor: Actor
    critic: nn.Module

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> tuple[PyTree, PyTree]:
        """Fresh ``(actor_params, critic_params)`` (the inner ``"params"`` collections)."""
        k_actor, k_critic = jax.random.split(key)
        obs = jnp.zeros((obs_dim,), jnp.float32)
        act = jnp.zeros((act_dim,), jnp.float32)
        stage = jnp.zeros((), jnp.int32)

        @jax.jit
        def init(k_actor: jax.Array, k_critic: jax.Array) -> tuple[PyTree, PyTree]:
            actor_params = self.actor.init(k_actor, obs, stage)["params"]
            critic_params = self.critic.init(k_critic, obs, act, stage)["params"]
            return actor_params, critic_params

        return init(k_actor, k_critic)

    def actor_apply(
        self, params: PyTree, obs: jax.Array, stage: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Pre-tanh Gaussian ``(mean, log_std)`` of the head ``stage``."""
        return self.actor.apply({"params": params}, obs, stage)

    def critic_apply(
        self, params: PyTree, obs: jax.Array, action: jax.Array, stage: jax.Array
    ) -> jax.Array:
        """Both critics' Q values, shape (2,)."""
        return self.critic.apply({"params": params}, obs, action, stage)


def make_sac_networks(config: SACConfig) -> SACNetworks:
    """Actor and twin critic for ``config`` (brax ``make_sac_networks`` analogue)."""
    arch = dict(
        hidden_sizes=config.hidden_sizes,
        first_activation=config.first_activation,
        hidden_activation=config.hidden_activation,
    )
    return SACNetworks(
        actor=Actor(act_dim=config.act_dim, num_heads=config.num_heads, **arch),
        critic=TwinCritic(num_heads=config.num_heads, **arch),
    )


def zero_critic_heads(critic_params: PyTree, keep: Sequence[int]) -> PyTree:
    """Critic params with every stage head's kernel and bias at zero except the stages ``keep``:
    Q = 0 and no action gradient on those stages until they learn (instead of a random head's
    large values on a pre-trained trunk's features). The head's last axis is the stage."""
    num_heads = critic_params[HEAD]["bias"].shape[-1]
    mask = jnp.isin(jnp.arange(num_heads), jnp.asarray(list(keep), jnp.int32))
    head = jax.tree.map(lambda x: jnp.where(mask, x, 0.0).astype(x.dtype), critic_params[HEAD])
    return {**critic_params, HEAD: head}


def _log1m_tanh_sq(u: jax.Array) -> jax.Array:
    """``log(1 - tanh(u)^2)`` computed stably as ``2 (log 2 - u - softplus(-2u))``."""
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, pre_tanh: jax.Array) -> jax.Array:
    """Log-density of ``tanh(u)``, ``u ~ N(mean, exp(log_std)^2)``, at ``u = pre_tanh``.

    SAC appendix C (Haarnoja et al. 2018), eq. 21: ``log N(u) - sum log(1 - tanh(u)^2)``.
    """
    chex.assert_equal_shape([mean, log_std, pre_tanh])
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    normal = -0.5 * z**2 - log_std - 0.5 * math.log(2.0 * math.pi)
    return jnp.sum(normal - _log1m_tanh_sq(pre_tanh), axis=-1)


def sample_tanh_gaussian(
    key: jax.Array, mean: jax.Array, log_std: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reparameterized sample ``a = tanh(mean + std * eps)`` and its log-prob."""
    chex.assert_equal_shape([mean, log_std])
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(mean, log_std, pre_tanh)


def deterministic_action(mean: jax.Array) -> jax.Array:
    """Evaluation action ``tanh(mean)``."""
    return jnp.tanh(mean)
