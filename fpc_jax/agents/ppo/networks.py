"""PPO actor (categorical logits) and critic (state value) MLPs, plus optional RND networks.

Each network's parameters are ``{"trunk": ...}`` (shared output layer, inside the trunk) or
``{"trunk": ..., "head": ...}`` (one output head per stage), so retention penalties address the
shared parameters by path (fpc_jax/retention/trunk.py). Core functions are unbatched; batch them
with ``jax.vmap``. Orthogonal init as in the PPO implementations (Engstrom et al. 2020,
"Implementation Matters"; Huang et al. 2022, "The 37 implementation details of PPO"): hidden
layers gain sqrt(2), policy output 0.01, value output 1, zero biases.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from fpc_jax.retention.trunk import HEAD, TRUNK

PyTree = Any

HEAD_MODES = ("shared", "per_stage")
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "elu": nn.elu,
}
_HIDDEN_GAIN = math.sqrt(2.0)
_POLICY_GAIN = 0.01
_VALUE_GAIN = 1.0


@struct.dataclass
class PPOConfig:
    """Static PPO network configuration (all ``pytree_node=False``; changing it recompiles).

    ``head_mode``: ``"shared"`` (default) has one output layer for every stage, the policy sees
    no task id (Montezuma / NetHack), and that layer is part of the protected ``trunk``;
    ``"per_stage"`` has one output head per stage under ``head``, selected by the stage index as
    in the SAC agent (RoboticSequence). ``rnd`` adds Random Network
    Distillation (Burda et al. 2018): a fixed random target net, a trained predictor, and a second
    (intrinsic) value output on the critic head.
    """

    obs_dim: int = struct.field(pytree_node=False)
    num_actions: int = struct.field(pytree_node=False)
    num_heads: int = struct.field(pytree_node=False, default=1)
    hidden_sizes: tuple[int, ...] = struct.field(pytree_node=False, default=(64, 64))
    activation: str = struct.field(pytree_node=False, default="tanh")
    head_mode: str = struct.field(pytree_node=False, default="shared")
    rnd: bool = struct.field(pytree_node=False, default=False)
    rnd_hidden_sizes: tuple[int, ...] = struct.field(pytree_node=False, default=(64, 64))
    rnd_out_dim: int = struct.field(pytree_node=False, default=32)

    def __post_init__(self) -> None:
        for name in ("obs_dim", "num_actions", "num_heads", "rnd_out_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PPOConfig.{name} must be a positive int, got {value!r}")
        if self.num_actions < 2:
            raise ValueError(f"PPOConfig.num_actions must be >= 2, got {self.num_actions}")
        for name in ("hidden_sizes", "rnd_hidden_sizes"):
            sizes = tuple(getattr(self, name))
            if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes):
                raise ValueError(f"PPOConfig.{name} must be positive ints, got {sizes!r}")
            object.__setattr__(self, name, sizes)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {tuple(ACTIVATIONS)}"
            )
        if self.head_mode not in HEAD_MODES:
            raise ValueError(f"head_mode must be one of {HEAD_MODES}, got {self.head_mode!r}")

    @property
    def num_values(self) -> int:
        """Value outputs per head: extrinsic, plus intrinsic when ``rnd``."""
        return 2 if self.rnd else 1


def _dense(size: int, gain: float, name: str) -> nn.Dense:
    return nn.Dense(
        size,
        kernel_init=nn.initializers.orthogonal(gain),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class MLP(nn.Module):
    """Dense -> activation for each hidden size (orthogonal init, gain sqrt(2)), then, when
    ``out_size`` is set, a linear output layer ``"out"`` with gain ``out_gain``."""

    hidden_sizes: Sequence[int]
    activation: str
    out_size: int = 0
    out_gain: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.hidden_sizes):
            x = ACTIVATIONS[self.activation](_dense(size, _HIDDEN_GAIN, f"dense_{i}")(x))
        if self.out_size:
            x = _dense(self.out_size, self.out_gain, "out")(x)
        return x


def _trunk_and_head(
    x: jax.Array,
    stage: jax.Array,
    out_size: int,
    out_gain: float,
    num_heads: int,
    per_stage: bool,
    hidden_sizes: Sequence[int],
    activation: str,
) -> jax.Array:
    """Shared output (default): the output layer belongs to the trunk, ``{"trunk": {...,
    "out"}}``, so L2/EWC protect it like the hidden layers (it serves every stage). Per-stage:
    one output head per stage under ``"head"``, unprotected like SAC's heads; row ``stage``."""
    if not per_stage:
        return MLP(hidden_sizes, activation, out_size, out_gain, name=TRUNK)(x)
    h = MLP(hidden_sizes, activation, name=TRUNK)(x)
    out = _dense(num_heads * out_size, out_gain, HEAD)(h)
    return out.reshape(num_heads, out_size)[stage]


class Actor(nn.Module):
    """Unbatched policy: ``(obs (obs_dim,), stage ()) -> logits (num_actions,)``."""

    num_actions: int
    num_heads: int
    per_stage: bool
    hidden_sizes: Sequence[int]
    activation: str

    @nn.compact
    def __call__(self, obs: jax.Array, stage: jax.Array) -> jax.Array:
        chex.assert_rank([obs, stage], [1, 0])
        return _trunk_and_head(
            obs,
            stage,
            self.num_actions,
            _POLICY_GAIN,
            self.num_heads,
            self.per_stage,
            self.hidden_sizes,
            self.activation,
        )


class Critic(nn.Module):
    """Unbatched value: ``(obs, stage) -> values (num_values,)`` (extrinsic first)."""

    num_values: int
    num_heads: int
    per_stage: bool
    hidden_sizes: Sequence[int]
    activation: str

    @nn.compact
    def __call__(self, obs: jax.Array, stage: jax.Array) -> jax.Array:
        chex.assert_rank([obs, stage], [1, 0])
        return _trunk_and_head(
            obs,
            stage,
            self.num_values,
            _VALUE_GAIN,
            self.num_heads,
            self.per_stage,
            self.hidden_sizes,
            self.activation,
        )


class RNDNet(nn.Module):
    """Unbatched RND embedding ``obs -> (rnd_out_dim,)`` (target or predictor; Burda et al.)."""

    hidden_sizes: Sequence[int]
    out_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        chex.assert_rank(obs, 1)
        h = MLP(self.hidden_sizes, "relu", name=TRUNK)(obs)
        return _dense(self.out_dim, 1.0, HEAD)(h)


@dataclass(frozen=True)
class PPONetworks:
    """Pure apply functions (unbatched) of the actor, critic and RND nets of one config."""

    config: PPOConfig
    actor: Actor
    critic: Critic
    rnd_net: RNDNet

    def init(self, key: jax.Array) -> tuple[PyTree, PyTree]:
        """Fresh ``(actor_params, critic_params)`` (the inner ``"params"`` collections)."""
        return _init_actor_critic(self.config, key)

    def init_rnd(self, key: jax.Array) -> dict[str, PyTree]:
        """``{"target": ..., "predictor": ...}`` RND params, or ``{}`` when RND is off."""
        if not self.config.rnd:
            return {}
        return _init_rnd(self.config, key)

    def actor_apply(self, params: PyTree, obs: jax.Array, stage: jax.Array) -> jax.Array:
        """Logits (num_actions,) of the policy at ``obs`` (head ``stage`` if per-stage)."""
        return self.actor.apply({"params": params}, obs, stage)

    def critic_values(self, params: PyTree, obs: jax.Array, stage: jax.Array) -> jax.Array:
        """All value outputs (num_values,): ``[V_ext]`` or ``[V_ext, V_int]``."""
        return self.critic.apply({"params": params}, obs, stage)

    def critic_apply(self, params: PyTree, obs: jax.Array, stage: jax.Array) -> jax.Array:
        """Extrinsic value V(obs), a scalar."""
        return self.critic_values(params, obs, stage)[0]

    def rnd_apply(self, params: PyTree, obs: jax.Array) -> jax.Array:
        """RND embedding (rnd_out_dim,) of a (normalised) observation."""
        return self.rnd_net.apply({"params": params}, obs)


def make_ppo_networks(config: PPOConfig) -> PPONetworks:
    """Actor, critic and RND nets for ``config`` (brax ``make_ppo_networks`` analogue)."""
    arch = dict(
        num_heads=config.num_heads,
        per_stage=config.head_mode == "per_stage",
        hidden_sizes=config.hidden_sizes,
        activation=config.activation,
    )
    return PPONetworks(
        config=config,
        actor=Actor(num_actions=config.num_actions, **arch),
        critic=Critic(num_values=config.num_values, **arch),
        rnd_net=RNDNet(hidden_sizes=config.rnd_hidden_sizes, out_dim=config.rnd_out_dim),
    )


@functools.partial(jax.jit, static_argnums=0)
def _init_actor_critic(config: PPOConfig, key: jax.Array) -> tuple[PyTree, PyTree]:
    nets = make_ppo_networks(config)
    k_actor, k_critic = jax.random.split(key)
    obs = jnp.zeros((config.obs_dim,), jnp.float32)
    stage = jnp.zeros((), jnp.int32)
    return (
        nets.actor.init(k_actor, obs, stage)["params"],
        nets.critic.init(k_critic, obs, stage)["params"],
    )


@functools.partial(jax.jit, static_argnums=0)
def _init_rnd(config: PPOConfig, key: jax.Array) -> dict[str, PyTree]:
    net = make_ppo_networks(config).rnd_net
    obs = jnp.zeros((config.obs_dim,), jnp.float32)
    k_target, k_pred = jax.random.split(key)
    return {
        "target": net.init(k_target, obs)["params"],
        "predictor": net.init(k_pred, obs)["params"],
    }


def sample_action(key: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sample an action index from ``softmax(logits)`` and return ``(index, log pi(index))``."""
    chex.assert_rank(logits, 1)
    action = jax.random.categorical(key, logits)
    return action, jax.nn.log_softmax(logits)[action]


def log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """``log pi(action)`` of one categorical given by ``logits`` (A,)."""
    chex.assert_rank([logits, action], [1, 0])
    return jax.nn.log_softmax(logits)[action]


def entropy(logits: jax.Array) -> jax.Array:
    """Entropy ``-sum_a pi(a) log pi(a)`` of one categorical."""
    chex.assert_rank(logits, 1)
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p)


def make_policy(
    config: PPOConfig,
) -> tuple[Callable[..., jax.Array], Callable[..., jax.Array]]:
    """``(sample, greedy)`` acting functions returning the env's ONE-HOT float action (A,):
    ``sample(actor_params, obs, stage, key)`` draws from pi, ``greedy(actor_params, obs, stage)``
    takes its argmax. Usable by a teacher-data rollout."""
    nets = make_ppo_networks(config)
    n = config.num_actions

    def sample(actor_params: PyTree, obs: jax.Array, stage: jax.Array, key: jax.Array):
        action, _ = sample_action(key, nets.actor_apply(actor_params, obs, stage))
        return jax.nn.one_hot(action, n, dtype=jnp.float32)

    def greedy(actor_params: PyTree, obs: jax.Array, stage: jax.Array):
        logits = nets.actor_apply(actor_params, obs, stage)
        return jax.nn.one_hot(jnp.argmax(logits), n, dtype=jnp.float32)

    return sample, greedy


__all__ = [
    "HEAD",
    "TRUNK",
    "PPOConfig",
    "PPONetworks",
    "entropy",
    "log_prob",
    "make_policy",
    "make_ppo_networks",
    "sample_action",
]
