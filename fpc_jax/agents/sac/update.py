"""The one jitted SAC update: critic, actor and temperature steps, retention terms, Polyak.

No Python branching on coefficient values: FT, L2, EWC, BC and KS run the same compiled program.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from fpc_jax.agents.sac.anchors import Anchors
from fpc_jax.agents.sac.losses import Batch, make_losses, sample_bc
from fpc_jax.agents.sac.networks import SACConfig, default_target_entropy, make_sac_networks
from fpc_jax.retention.penalties import RetentionCoefs
from fpc_jax.runs_axis import stack as stack_runs  # noqa: F401 (re-exported)

PyTree = Any


@struct.dataclass
class SACHyper:
    """Dynamic SAC hyperparameters (float32 array leaves; sweeping them never recompiles).

    ``lr`` drives all three Adam optimizers; ``init_log_alpha`` is read by ``init_train_state``.
    """

    lr: jax.Array
    gamma: jax.Array
    polyak: jax.Array
    target_entropy: jax.Array
    init_log_alpha: jax.Array

    @classmethod
    def create(
        cls,
        act_dim: int,
        lr: float = 1e-3,
        gamma: float = 0.99,
        polyak: float = 0.995,
        target_entropy: float | None = None,
        init_log_alpha: float = 1.0,
    ) -> SACHyper:
        """Continual World defaults (docs/paper_facts.md section 3); target entropy
        ``act_dim * ln(0.089 sqrt(2 pi e))`` unless given."""
        if target_entropy is None:
            target_entropy = default_target_entropy(act_dim)
        if not lr > 0.0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not 0.0 <= gamma <= 1.0 or not 0.0 <= polyak <= 1.0:
            raise ValueError(f"gamma and polyak must lie in [0, 1], got {gamma!r}, {polyak!r}")
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return cls(
            lr=f32(lr),
            gamma=f32(gamma),
            polyak=f32(polyak),
            target_entropy=f32(target_entropy),
            init_log_alpha=f32(init_log_alpha),
        )


@struct.dataclass
class SACTrainState:
    """Everything one SAC run updates; ``config`` is static (part of the treedef)."""

    actor_params: PyTree
    critic_params: PyTree
    target_critic_params: PyTree
    log_alpha: jax.Array
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    alpha_opt_state: optax.OptState
    step: jax.Array
    config: SACConfig = struct.field(pytree_node=False)


def _optimizer() -> optax.GradientTransformation:
    """Adam (no gradient clipping) with the learning rate as an injected, dynamic leaf."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)


def _with_lr(opt_state: optax.OptState, lr: jax.Array) -> optax.OptState:
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def train_state_from_params(
    config: SACConfig,
    hyper: SACHyper,
    actor_params: PyTree,
    critic_params: PyTree,
    log_alpha: jax.Array | None = None,
) -> SACTrainState:
    """Train state starting from given (e.g. pre-trained) params; fresh optimizers, target =
    critic. ``log_alpha`` defaults to ``hyper.init_log_alpha`` for every stage."""
    if log_alpha is None:
        log_alpha = jnp.full((config.num_heads,), hyper.init_log_alpha, jnp.float32)
    tx = _optimizer()
    return SACTrainState(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=jax.tree_util.tree_map(jnp.asarray, critic_params),
        log_alpha=jnp.asarray(log_alpha, jnp.float32),
        actor_opt_state=_with_lr(tx.init(actor_params), hyper.lr),
        critic_opt_state=_with_lr(tx.init(critic_params), hyper.lr),
        alpha_opt_state=_with_lr(tx.init(log_alpha), hyper.lr),
        step=jnp.zeros((), jnp.int32),
        config=config,
    )


def init_train_state(config: SACConfig, hyper: SACHyper, key: jax.Array) -> SACTrainState:
    """Randomly initialized train state (the from-scratch baseline)."""
    obs_dim, act_dim = config.obs_dim, config.act_dim
    actor_params, critic_params = make_sac_networks(config).init(key, obs_dim, act_dim)
    return train_state_from_params(config, hyper, actor_params, critic_params)


def update_step(
    state: SACTrainState,
    batch: Batch,
    anchors: Anchors,
    coefs: RetentionCoefs,
    hyper: SACHyper,
    key: jax.Array,
) -> tuple[SACTrainState, dict[str, jax.Array]]:
    """One SAC gradient step (unjitted; see ``update``).

    As in Continual World, the critic, actor and temperature gradients are all taken at the
    pre-update parameters, then applied; the target critics move by Polyak averaging
    ``target <- polyak * target + (1 - polyak) * critic`` with the updated critic.
    """
    config = state.config
    coefs = coefs.decayed(state.step)
    critic_loss, actor_loss, alpha_loss = make_losses(config)
    key_critic, key_actor, key_bc = jax.random.split(key, 3)
    bc = sample_bc(anchors, key_bc, batch.obs.shape[0])

    (_, critic_metrics), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(
        state.critic_params,
        state.actor_params,
        state.target_critic_params,
        state.log_alpha,
        batch,
        bc,
        anchors,
        coefs,
        hyper.gamma,
        key_critic,
    )
    (_, actor_metrics), actor_grads = jax.value_and_grad(actor_loss, has_aux=True)(
        state.actor_params,
        state.critic_params,
        state.log_alpha,
        batch,
        bc,
        anchors,
        coefs,
        key_actor,
    )
    logp = actor_metrics.pop("actor/logp")
    (_, alpha_metrics), alpha_grads = jax.value_and_grad(alpha_loss, has_aux=True)(
        state.log_alpha, logp, batch.stage, hyper.target_entropy
    )

    tx = _optimizer()

    def apply(params: PyTree, grads: PyTree, opt_state: optax.OptState) -> tuple[PyTree, Any]:
        updates, opt_state = tx.update(grads, _with_lr(opt_state, hyper.lr), params)
        return optax.apply_updates(params, updates), opt_state

    actor_params, actor_opt_state = apply(state.actor_params, actor_grads, state.actor_opt_state)
    critic_params, critic_opt_state = apply(
        state.critic_params, critic_grads, state.critic_opt_state
    )
    log_alpha, alpha_opt_state = apply(state.log_alpha, alpha_grads, state.alpha_opt_state)
    target_critic_params = jax.tree_util.tree_map(
        lambda t, c: hyper.polyak * t + (1.0 - hyper.polyak) * c,
        state.target_critic_params,
        critic_params,
    )
    new_state = state.replace(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=target_critic_params,
        log_alpha=log_alpha,
        actor_opt_state=actor_opt_state,
        critic_opt_state=critic_opt_state,
        alpha_opt_state=alpha_opt_state,
        step=state.step + 1,
    )
    return new_state, {**critic_metrics, **actor_metrics, **alpha_metrics}


@jax.jit
def update(
    state: SACTrainState,
    batch: Batch,
    anchors: Anchors,
    coefs: RetentionCoefs,
    hyper: SACHyper,
    key: jax.Array,
) -> tuple[SACTrainState, dict[str, jax.Array]]:
    """Jitted ``update_step``; ``jax.vmap`` it over a leading runs axis of every argument."""
    return update_step(state, batch, anchors, coefs, hyper, key)
