"""A rollout into the PPO update's batch: GAE of the extrinsic stream, plus RND's intrinsic
stream when ``PPOConfig.rnd`` is on (Burda et al. 2018: normalised next observations, the
predictor's error as reward scaled by the std of its running discounted return, a
non-episodic intrinsic GAE). One builder for the on-device training program (``train.py``) and
the host-stepped loop (``fpc_jax/experiments/host_ppo.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fpc_jax.agents.ppo.losses import PPOBatch, gae, rnd_error
from fpc_jax.agents.ppo.networks import PPOConfig, make_ppo_networks
from fpc_jax.agents.ppo.rollout import RNDStats, Rollout
from fpc_jax.agents.ppo.update import PPOHyper, PPOTrainState

RND_OBS_CLIP = 5.0
"""RND's observation clip after normalisation (Burda et al. 2018, as in their code)."""


def make_batch_builder(
    config: PPOConfig,
) -> Callable[..., tuple[PPOBatch, RNDStats, dict[str, Any]]]:
    """``build(ts, rnd, roll, last_obs, last_stage, hyper) -> (batch, rnd, metrics)``: the
    (T, N) ``PPOBatch`` of one run's ``Rollout`` (``roll.terminated`` / ``roll.truncated`` are
    the GAE end flags), the updated RND normalisers (unchanged when RND is off), and metrics.
    ``last_obs`` / ``last_stage`` (N, ...) are the envs' observations after the rollout (after
    any auto-reset): the intrinsic stream, which ignores episode ends, bootstraps from them."""
    nets = make_ppo_networks(config)
    critic_tn = jax.vmap(jax.vmap(nets.critic_values, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))
    rnd_tn = jax.vmap(jax.vmap(nets.rnd_apply, in_axes=(None, 0)), in_axes=(None, 0))
    gae_n = jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)

    def intrinsic(ts: PPOTrainState, rnd: RNDStats, roll: Rollout, hyper: PPOHyper):
        """Normalised intrinsic rewards (T, N) of the rollout, the RND inputs, new stats."""
        obs_stats = rnd.obs.update(roll.next_obs.reshape(-1, config.obs_dim))
        rnd_obs = jnp.clip(
            (roll.next_obs - obs_stats.mean) / jnp.sqrt(obs_stats.var + 1e-8),
            -RND_OBS_CLIP,
            RND_OBS_CLIP,
        )
        raw = rnd_error(rnd_tn(ts.rnd_predictor, rnd_obs), rnd_tn(ts.rnd_target, rnd_obs))

        def filt(f, r):
            f = f * hyper.gamma_int + r
            return f, f

        return_filter, returns = jax.lax.scan(filt, rnd.return_filter, raw)
        ret_stats = rnd.int_return.update(returns.reshape(-1))
        reward = raw / jnp.sqrt(ret_stats.var + 1e-8)
        return reward, rnd_obs, RNDStats(obs_stats, ret_stats, return_filter)

    def build(ts: PPOTrainState, rnd: RNDStats, roll: Rollout, last_obs, last_stage, hyper):
        next_values = critic_tn(ts.critic_params, roll.next_obs, roll.next_stage)
        adv, ret = gae_n(
            roll.reward,
            roll.value[..., 0],
            next_values[..., 0],
            roll.terminated,
            roll.truncated,
            hyper.gamma,
            hyper.gae_lambda,
        )
        metrics = {"reward": jnp.mean(roll.reward)}
        if config.rnd:
            r_int, rnd_obs, rnd = intrinsic(ts, rnd, roll, hyper)
            last_v = jax.vmap(nets.critic_values, in_axes=(None, 0, 0))(
                ts.critic_params, last_obs, last_stage
            )
            v_int = roll.value[..., 1]
            next_v_int = jnp.concatenate([v_int[1:], last_v[None, :, 1]])
            never = jnp.zeros_like(roll.terminated)
            adv_int, ret_int = gae_n(
                r_int, v_int, next_v_int, never, never, hyper.gamma_int, hyper.gae_lambda
            )
            advantage = hyper.ext_coef * adv + hyper.int_coef * adv_int
            returns = jnp.stack([ret, ret_int], axis=-1)
            metrics["rnd/int_reward"] = jnp.mean(r_int)
        else:
            rnd_obs = roll.next_obs
            advantage = adv
            returns = ret[..., None]
        batch = PPOBatch(
            obs=roll.obs,
            stage=roll.stage,
            action=roll.action,
            logp=roll.logp,
            value=roll.value,
            returns=returns,
            advantage=advantage,
            rnd_obs=rnd_obs,
        )
        return batch, rnd, metrics

    return build
