"""The PPO update: ``epochs`` x ``minibatches`` Adam steps on one rollout, retention terms fused.

No Python branching on coefficient values: FT, L2, EWC, BC and KS run the same compiled program.
One Adam optimizer over ``{"actor", "critic", "rnd"}`` with global grad-norm clipping, as in the
PPO implementations (cleanrl ``ppo.py``, Huang et al. 2022).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from fpc_jax.agents.ppo.anchors import PPOAnchors
from fpc_jax.agents.ppo.losses import PPOBatch, make_ppo_loss, sample_bc
from fpc_jax.agents.ppo.networks import PPOConfig, make_ppo_networks
from fpc_jax.retention.penalties import RetentionCoefs
from fpc_jax.runs_axis import stack as stack_runs  # noqa: F401 (re-exported)

PyTree = Any

ADAM_EPS = 1e-5


@struct.dataclass
class PPOHyper:
    """Dynamic PPO hyperparameters (float32 array leaves; sweeping them never recompiles).

    ``ext_coef`` / ``int_coef`` weight the extrinsic / intrinsic advantages (RND; the intrinsic
    stream exists only when ``PPOConfig.rnd``), ``rnd_coef`` the RND predictor loss.
    ``max_grad_norm = inf`` disables gradient clipping.
    """

    lr: jax.Array
    gamma: jax.Array
    gae_lambda: jax.Array
    clip_eps: jax.Array
    ent_coef: jax.Array
    vf_coef: jax.Array
    max_grad_norm: jax.Array
    gamma_int: jax.Array
    ext_coef: jax.Array
    int_coef: jax.Array
    rnd_coef: jax.Array

    @classmethod
    def create(
        cls,
        lr: float = 2.5e-4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_eps: float = 0.2,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        gamma_int: float = 0.99,
        ext_coef: float = 1.0,
        int_coef: float = 1.0,
        rnd_coef: float = 1.0,
    ) -> PPOHyper:
        """CPU-scale defaults (cleanrl's PPO); ``montezuma`` gives the paper's RND settings.
        Raises ValueError on out-of-range values."""
        errors = []
        if not lr > 0.0:
            errors.append(f"lr must be > 0, got {lr!r}")
        for name, v in (("gamma", gamma), ("gae_lambda", gae_lambda), ("gamma_int", gamma_int)):
            if not 0.0 <= v <= 1.0:
                errors.append(f"{name} must lie in [0, 1], got {v!r}")
        if not clip_eps > 0.0:
            errors.append(f"clip_eps must be > 0, got {clip_eps!r}")
        if not max_grad_norm > 0.0:
            errors.append(f"max_grad_norm must be > 0 (inf: no clipping), got {max_grad_norm!r}")
        for name, v in (
            ("ent_coef", ent_coef),
            ("vf_coef", vf_coef),
            ("ext_coef", ext_coef),
            ("int_coef", int_coef),
            ("rnd_coef", rnd_coef),
        ):
            if not v >= 0.0:
                errors.append(f"{name} must be >= 0, got {v!r}")
        if errors:
            raise ValueError("; ".join(errors))
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return cls(
            lr=f32(lr),
            gamma=f32(gamma),
            gae_lambda=f32(gae_lambda),
            clip_eps=f32(clip_eps),
            ent_coef=f32(ent_coef),
            vf_coef=f32(vf_coef),
            max_grad_norm=f32(max_grad_norm),
            gamma_int=f32(gamma_int),
            ext_coef=f32(ext_coef),
            int_coef=f32(int_coef),
            rnd_coef=f32(rnd_coef),
        )

    @classmethod
    def montezuma(cls, **overrides: float) -> PPOHyper:
        """The paper's Montezuma PPO+RND settings (I appendix; Burda et al. 2018): lr 1e-4,
        gamma_ext 0.999, gamma_int 0.99, lambda 0.95, clip 0.1, ext/int coefs 2/1, entropy 0.001
        and value weight 1 as in RND's code; grad-norm clip 0.5 [U] (docs/ppo_design.md)."""
        settings = dict(
            lr=1e-4,
            gamma=0.999,
            gamma_int=0.99,
            gae_lambda=0.95,
            clip_eps=0.1,
            ext_coef=2.0,
            int_coef=1.0,
            ent_coef=0.001,
            vf_coef=1.0,
            max_grad_norm=0.5,
        )
        return cls.create(**{**settings, **overrides})


@struct.dataclass
class PPOTrainState:
    """Everything one PPO learner updates; ``config`` is static (part of the treedef).

    ``rnd_predictor`` is trained, ``rnd_target`` stays at its random init (both ``{}`` without
    RND); ``step`` counts optimizer updates (the KS decay exponent).
    """

    actor_params: PyTree
    critic_params: PyTree
    rnd_predictor: PyTree
    rnd_target: PyTree
    opt_state: optax.OptState
    step: jax.Array
    config: PPOConfig = struct.field(pytree_node=False)

    def trainable(self) -> dict[str, PyTree]:
        return {"actor": self.actor_params, "critic": self.critic_params, "rnd": self.rnd_predictor}


def _optimizer() -> optax.GradientTransformation:
    """Adam (eps 1e-5, as PPO implementations) with the learning rate an injected, dynamic leaf."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=2.5e-4, eps=ADAM_EPS)


def _with_lr(opt_state: optax.OptState, lr: jax.Array) -> optax.OptState:
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def train_state_from_params(
    config: PPOConfig,
    hyper: PPOHyper,
    actor_params: PyTree,
    critic_params: PyTree,
    rnd_params: dict[str, PyTree] | None = None,
    key: jax.Array | None = None,
) -> PPOTrainState:
    """Train state starting from given (e.g. pre-trained) params, fresh optimizer, step 0.

    ``rnd_params`` ``{"target", "predictor"}`` (e.g. from a checkpoint); when RND is on and
    none are given, fresh ones from ``key`` (default ``PRNGKey(0)``)."""
    if rnd_params is None:
        key = jax.random.PRNGKey(0) if key is None else key
        rnd_params = make_ppo_networks(config).init_rnd(key)
    predictor, target = rnd_params.get("predictor", {}), rnd_params.get("target", {})
    trainable = {"actor": actor_params, "critic": critic_params, "rnd": predictor}
    return PPOTrainState(
        actor_params=actor_params,
        critic_params=critic_params,
        rnd_predictor=predictor,
        rnd_target=target,
        opt_state=_with_lr(_optimizer().init(trainable), hyper.lr),
        step=jnp.zeros((), jnp.int32),
        config=config,
    )


def init_train_state(config: PPOConfig, hyper: PPOHyper, key: jax.Array) -> PPOTrainState:
    """Randomly initialized train state (the from-scratch baseline)."""
    k_net, k_rnd = jax.random.split(key)
    nets = make_ppo_networks(config)
    actor_params, critic_params = nets.init(k_net)
    return train_state_from_params(config, hyper, actor_params, critic_params, nets.init_rnd(k_rnd))


def clip_by_global_norm(grads: PyTree, max_norm: jax.Array) -> tuple[PyTree, jax.Array]:
    """``grads * min(1, max_norm / ||grads||)`` with a dynamic ``max_norm``; also the norm."""
    norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))
    return jax.tree_util.tree_map(lambda g: g * scale, grads), norm


def minibatch_step(
    state: PPOTrainState,
    batch: PPOBatch,
    anchors: PPOAnchors,
    coefs: RetentionCoefs,
    hyper: PPOHyper,
    key: jax.Array,
    *,
    normalize_advantages: bool = True,
    clip_value_loss: bool = True,
) -> tuple[PPOTrainState, dict[str, jax.Array]]:
    """One Adam step on one minibatch (its own BC minibatch of the same size from ``key``)."""
    config = state.config
    loss_fn = make_ppo_loss(
        config, normalize_advantages=normalize_advantages, clip_value_loss=clip_value_loss
    )
    bc = sample_bc(anchors, key, batch.obs.shape[0])
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.trainable(), state.rnd_target, batch, bc, anchors, coefs, hyper, state.step
    )
    grads, grad_norm = clip_by_global_norm(grads, hyper.max_grad_norm)
    tx = _optimizer()
    params = state.trainable()
    updates, opt_state = tx.update(grads, _with_lr(state.opt_state, hyper.lr), params)
    params = optax.apply_updates(params, updates)
    new_state = state.replace(
        actor_params=params["actor"],
        critic_params=params["critic"],
        rnd_predictor=params["rnd"],
        opt_state=opt_state,
        step=state.step + 1,
    )
    return new_state, {**metrics, "ppo/grad_norm": grad_norm}


def update_epochs(
    state: PPOTrainState,
    batch: PPOBatch,
    anchors: PPOAnchors,
    coefs: RetentionCoefs,
    hyper: PPOHyper,
    key: jax.Array,
    *,
    epochs: int,
    minibatches: int,
    normalize_advantages: bool = True,
    clip_value_loss: bool = True,
) -> tuple[PPOTrainState, dict[str, jax.Array]]:
    """``epochs`` passes over a flat batch (leading axis N, a multiple of ``minibatches``), each
    a fresh permutation split into ``minibatches`` minibatches; metrics averaged over all steps."""
    n = batch.obs.shape[0]
    if n % minibatches:
        raise ValueError(f"batch of {n} samples does not split into {minibatches} minibatches")
    size = n // minibatches

    def epoch(state: PPOTrainState, keys: jax.Array):
        perm = jax.random.permutation(keys[0], n)
        mbs = jax.tree_util.tree_map(
            lambda x: jnp.take(x, perm, axis=0).reshape(minibatches, size, *x.shape[1:]), batch
        )

        def step(state, xs):
            mb, km = xs
            return minibatch_step(
                state,
                mb,
                anchors,
                coefs,
                hyper,
                km,
                normalize_advantages=normalize_advantages,
                clip_value_loss=clip_value_loss,
            )

        return jax.lax.scan(step, state, (mbs, keys[1:]))

    state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, (epochs, 1 + minibatches)))
    return state, jax.tree_util.tree_map(jnp.mean, metrics)
