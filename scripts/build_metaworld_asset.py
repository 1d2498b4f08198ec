"""Build the packaged pre-trained Far policy of RoboticSequence (heads 2 and 3).

The papers pre-train with multi-task SAC on peg-unplug-side and push-wall (docs/paper_facts.md
section 2); this builds an equivalent start point far more cheaply: behavioural cloning of
Meta-World's scripted experts (DART-style noisy rollouts, Laskey et al. 2017), then a SAC TD
warm-up of the twin critic with the actor frozen. docs/pretrained_asset.md records how and what
it measures.

Rebuild: ``python scripts/build_metaworld_asset.py --out fpc_jax/assets/robotic_sequence_far``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fpc_jax.agents.sac.losses import Batch, make_losses, sample_bc
from fpc_jax.agents.sac.networks import SACConfig, make_sac_networks, tanh_gaussian_log_prob
from fpc_jax.agents.sac.update import SACHyper, SACTrainState, train_state_from_params
from fpc_jax.experiments.evaluate import evaluate_actor, packaged_asset_path

PyTree = Any

TASKS: tuple[str, ...] = ("hammer-v3", "push-v3", "peg-unplug-side-v3", "push-wall-v3")
FAR_STAGES: tuple[int, ...] = (2, 3)
EXPERTS: dict[str, str] = {
    "peg-unplug-side-v3": "SawyerPegUnplugSideV3Policy",
    "push-wall-v3": "SawyerPushWallV3Policy",
}
"""Scripted expert of each Far task (class names in ``metaworld.policies``)."""
METHOD = "bc_scripted_expert+critic_warmup"
LABEL_CLIP = 0.999
TRAINED_LOG_ALPHA = math.log(0.01)
"""Temperature stored for the trained (Far) heads: alpha = 0.01, small against Q values of
O(100-1000), so fine-tuning does not start by randomising the cloned behaviour. Untrained heads
keep Continual World's ``init_log_alpha = 1``."""


@dataclasses.dataclass(frozen=True)
class ExpertData:
    """Transitions of noisy expert rollouts; ``label`` is the clean expert action."""

    obs: np.ndarray  # (N, 40) float32
    label: np.ndarray  # (N, 4) clean expert action, clipped to [-1, 1]
    action: np.ndarray  # (N, 4) executed (noisy, clipped) action
    reward: np.ndarray  # (N,) stitched-env reward (success bonus included)
    next_obs: np.ndarray  # (N, 40)
    discount_mask: np.ndarray  # (N,) 1 - stage_terminal
    stage: np.ndarray  # (N,) int32 global head
    mc_return: np.ndarray  # (N,) discounted return-to-go of the behaviour episode

    def __len__(self) -> int:
        return self.obs.shape[0]

    @staticmethod
    def concat(parts: Sequence[ExpertData]) -> ExpertData:
        fields = [f.name for f in dataclasses.fields(ExpertData)]
        return ExpertData(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in fields})


def collect_expert_data(
    task: str,
    head: int,
    episodes: int,
    noise: float,
    seed: int | np.random.SeedSequence,
    gamma: float = 0.99,
    T: int = 200,
) -> tuple[ExpertData, dict[str, float]]:
    """Roll out the scripted expert of ``task`` alone (one-stage ``MetaWorldSequence``, head
    ``head``). Episode ``e`` adds N(0, sigma_e^2) noise to executed actions, ``sigma_e`` evenly
    spaced in ``[0, noise]`` (DART), so the data covers the expert's recovery states."""
    import metaworld.policies

    from fpc_jax.envs.metaworld_cpu import MetaWorldSequence, MetaWorldSequenceConfig

    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    env_ss, noise_ss = ss.spawn(2)
    expert = getattr(metaworld.policies, EXPERTS[task])()
    env = MetaWorldSequence(MetaWorldSequenceConfig(tasks=(task,), stage_ids=(head,), T=T), env_ss)
    rng = np.random.default_rng(noise_ss)
    sigmas = np.linspace(0.0, noise, episodes)
    cols: dict[str, list[Any]] = {k: [] for k in ("obs", "label", "action", "reward", "next_obs")}
    cols.update(discount_mask=[], mc_return=[])
    successes = []
    for sigma in sigmas:
        obs, done, rewards = env.reset(), False, []
        while not done:
            label = np.clip(expert.get_action(obs[:39].astype(np.float64)), -1.0, 1.0)
            action = np.clip(label + sigma * rng.standard_normal(label.shape), -1.0, 1.0)
            next_obs, reward, terminated, truncated, info = env.step(action)
            for k, v in zip(cols, (obs, label, action, reward, next_obs), strict=False):
                cols[k].append(v)
            cols["discount_mask"].append(1.0 - float(info["stage_terminal"]))
            rewards.append(reward)
            obs, done = next_obs, terminated or truncated
        successes.append(terminated)
        ret, rtg = 0.0, []
        for r in reversed(rewards):
            ret = r + gamma * ret
            rtg.append(ret)
        cols["mc_return"] += rtg[::-1]
    n = len(cols["obs"])
    data = ExpertData(
        obs=np.asarray(cols["obs"], np.float32),
        label=np.asarray(cols["label"], np.float32),
        action=np.asarray(cols["action"], np.float32),
        reward=np.asarray(cols["reward"], np.float32),
        next_obs=np.asarray(cols["next_obs"], np.float32),
        discount_mask=np.asarray(cols["discount_mask"], np.float32),
        stage=np.full((n,), head, np.int32),
        mc_return=np.asarray(cols["mc_return"], np.float32),
    )
    stats = {"transitions": n, "episodes": episodes, "expert_success": float(np.mean(successes))}
    return data, stats


def bc_loss(
    config: SACConfig,
    actor_params: PyTree,
    obs: jax.Array,
    label: jax.Array,
    stage: jax.Array,
    min_log_std: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Negative log-likelihood of the expert actions under the tanh-Gaussian of head ``stage``
    (SAC appendix C eq. 21 at ``u = atanh(clip(label, +-0.999))``), plus a hinge
    ``mean(relu(min_log_std - log_std)^2)`` that keeps the policy stochastic enough for SAC."""
    actor = jax.vmap(make_sac_networks(config).actor_apply, in_axes=(None, 0, 0))
    mean, log_std = actor(actor_params, obs, stage)
    pre_tanh = jnp.arctanh(jnp.clip(label, -LABEL_CLIP, LABEL_CLIP))
    nll = -jnp.mean(jax.vmap(tanh_gaussian_log_prob)(mean, log_std, pre_tanh))
    floor = jnp.mean(jax.nn.relu(min_log_std - log_std) ** 2)
    mse = jnp.mean((jnp.tanh(mean) - label) ** 2)
    metrics = {"bc/nll": nll, "bc/floor": floor, "bc/mse": mse, "bc/log_std": jnp.mean(log_std)}
    return nll + 10.0 * floor, metrics


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _bc_chunk(
    config: SACConfig,
    num_steps: int,
    batch_size: int,
    min_log_std: float,
    actor_params: PyTree,
    opt_state: optax.OptState,
    obs: jax.Array,
    label: jax.Array,
    stage: jax.Array,
    lr: jax.Array,
    key: jax.Array,
) -> tuple[PyTree, optax.OptState, dict[str, jax.Array]]:
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=lr)

    def step(carry: tuple[PyTree, Any], k: jax.Array) -> tuple[tuple[PyTree, Any], Any]:
        params, opt = carry
        idx = jax.random.randint(k, (batch_size,), 0, obs.shape[0])
        grads, metrics = jax.grad(
            lambda p: bc_loss(config, p, obs[idx], label[idx], stage[idx], min_log_std),
            has_aux=True,
        )(params)
        opt = opt._replace(hyperparams={**opt.hyperparams, "learning_rate": lr})
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), opt), metrics

    (actor_params, opt_state), metrics = jax.lax.scan(
        step, (actor_params, opt_state), jax.random.split(key, num_steps)
    )
    return actor_params, opt_state, jax.tree.map(jnp.mean, metrics)


def train_bc(
    config: SACConfig,
    actor_params: PyTree,
    data: ExpertData,
    steps: int,
    key: jax.Array,
    batch_size: int = 256,
    lr: float = 1e-3,
    min_log_std: float = -2.5,
    chunk: int = 2000,
    log: Callable[[str], None] = print,
) -> tuple[PyTree, dict[str, float]]:
    """Behavioural cloning of the actor (``bc_loss``), Adam with cosine decay from ``lr``."""
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    opt_state = tx.init(actor_params)
    arrays = jnp.asarray(data.obs), jnp.asarray(data.label), jnp.asarray(data.stage)
    schedule = optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.05)
    metrics: dict[str, float] = {}
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        key, k = jax.random.split(key)
        lr_now = jnp.asarray(schedule(done), jnp.float32)
        actor_params, opt_state, m = _bc_chunk(
            config, n, batch_size, min_log_std, actor_params, opt_state, *arrays, lr_now, k
        )
        done += n
        metrics = {k: float(v) for k, v in m.items()}
        log(f"  bc step {done}/{steps}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return actor_params, metrics


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _critic_chunk(
    config: SACConfig,
    num_steps: int,
    batch_size: int,
    state: SACTrainState,
    data: Batch,
    hyper: SACHyper,
    key: jax.Array,
) -> tuple[SACTrainState, dict[str, jax.Array]]:
    from fpc_jax.agents.sac.anchors import placeholder_anchors
    from fpc_jax.retention.penalties import RetentionCoefs

    critic_loss, _, _ = make_losses(config)
    anchors = placeholder_anchors(config, state.actor_params, state.critic_params, 1)
    coefs = RetentionCoefs.create()
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=hyper.lr)
    bc = sample_bc(anchors, jax.random.key(0), batch_size)

    def step(s: SACTrainState, k: jax.Array) -> tuple[SACTrainState, Any]:
        k_idx, k_loss = jax.random.split(k)
        idx = jax.random.randint(k_idx, (batch_size,), 0, data.obs.shape[0])
        batch = jax.tree.map(lambda x: x[idx], data)
        grads, metrics = jax.grad(critic_loss, has_aux=True)(
            s.critic_params,
            s.actor_params,
            s.target_critic_params,
            s.log_alpha,
            batch,
            bc,
            anchors,
            coefs,
            hyper.gamma,
            k_loss,
        )
        opt = s.critic_opt_state._replace(
            hyperparams={**s.critic_opt_state.hyperparams, "learning_rate": hyper.lr}
        )
        updates, opt = tx.update(grads, opt, s.critic_params)
        critic = optax.apply_updates(s.critic_params, updates)
        target = jax.tree.map(
            lambda t, c: hyper.polyak * t + (1.0 - hyper.polyak) * c, s.target_critic_params, critic
        )
        s = s.replace(critic_params=critic, target_critic_params=target, critic_opt_state=opt)
        return s, metrics

    state, metrics = jax.lax.scan(step, state, jax.random.split(key, num_steps))
    return state, jax.tree.map(jnp.mean, metrics)


def warmup_critic(
    state: SACTrainState,
    data: ExpertData,
    steps: int,
    key: jax.Array,
    lr: float = 1e-3,
    gamma: float = 0.99,
    polyak: float = 0.97,
    chunk: int = 2000,
    log: Callable[[str], None] = print,
) -> tuple[SACTrainState, dict[str, float]]:
    """SAC TD warm-up of the twin critic on ``data`` with the actor and log-alphas frozen
    (``make_losses`` critic loss, Adam), target critic Polyak-averaged each step."""
    config = state.config
    hyper = SACHyper.create(config.act_dim, lr=lr, gamma=gamma, polyak=polyak)
    batch = Batch(
        obs=jnp.asarray(data.obs),
        action=jnp.asarray(data.action),
        reward=jnp.asarray(data.reward),
        next_obs=jnp.asarray(data.next_obs),
        discount_mask=jnp.asarray(data.discount_mask),
        stage=jnp.asarray(data.stage),
    )
    metrics: dict[str, float] = {}
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        key, k = jax.random.split(key)
        state, m = _critic_chunk(config, n, config.batch_size, state, batch, hyper, k)
        done += n
        metrics = {k: float(v) for k, v in m.items() if k in ("critic/td", "critic/q_mean")}
        log(
            f"  critic step {done}/{steps}: "
            + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items())
        )
    return state, metrics


def critic_fit(state: SACTrainState, data: ExpertData) -> dict[str, float]:
    """How the warmed critic's ``min_j Q_j(s, a)`` compares with the behaviour episodes'
    discounted Monte Carlo returns on the collected (s, a): correlation and mean values."""
    nets = make_sac_networks(state.config)
    q_fn = jax.jit(jax.vmap(nets.critic_apply, in_axes=(None, 0, 0, 0)))
    q = np.concatenate(
        [
            np.min(
                np.asarray(
                    q_fn(
                        state.critic_params,
                        data.obs[i : i + 4096],
                        data.action[i : i + 4096],
                        data.stage[i : i + 4096],
                    )
                ),
                axis=-1,
            )
            for i in range(0, len(data), 4096)
        ]
    )
    return {
        "q_mc_corr": float(np.corrcoef(q, data.mc_return)[0, 1]),
        "q_mean": float(q.mean()),
        "mc_return_mean": float(data.mc_return.mean()),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "orbax-checkpoint",
        "numpy",
        "metaworld",
        "mujoco",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _device() -> str:
    d = jax.devices()[0]
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"jax {d.platform}:{d.device_kind}; host {cpu}, {os.cpu_count()} cores visible"


def build_far_asset(
    out_dir: str | Path,
    episodes_per_task: int = 100,
    noise: float = 0.3,
    bc_steps: int = 10_000,
    critic_steps: int = 10_000,
    seed: int = 0,
    eval_episodes: int = 50,
    critic_polyak: float = 0.97,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Collect expert data on the Far stages, clone it into the CW actor, warm up the critic,
    evaluate each Far task alone and write the policy checkpoint to ``out_dir``; returns meta.

    Seeds: data collection uses ``SeedSequence(seed)`` (one child per task), network init and
    minibatches ``jax.random.key(seed)``, evaluation ``seed + 1000`` (starts unseen in training).
    """
    t0 = time.time()
    config = SACConfig(obs_dim=40, act_dim=4, num_heads=len(TASKS))
    task_seeds = np.random.SeedSequence(seed).spawn(len(FAR_STAGES))
    parts, data_stats = [], {}
    for k, ss in zip(FAR_STAGES, task_seeds, strict=True):
        t = time.time()
        part, stats = collect_expert_data(TASKS[k], k, episodes_per_task, noise, ss)
        parts.append(part)
        data_stats[TASKS[k]] = stats
        log(f"collected {TASKS[k]}: {stats} in {time.time() - t:.1f}s")
    data = ExpertData.concat(parts)

    key_init, key_bc, key_critic = jax.random.split(jax.random.key(seed), 3)
    actor_params, critic_params = make_sac_networks(config).init(key_init, 40, 4)
    t = time.time()
    actor_params, bc_metrics = train_bc(config, actor_params, data, bc_steps, key_bc, log=log)
    log(f"bc done in {time.time() - t:.1f}s")

    log_alpha = jnp.ones((config.num_heads,), jnp.float32)
    log_alpha = log_alpha.at[jnp.asarray(FAR_STAGES)].set(TRAINED_LOG_ALPHA)
    hyper = SACHyper.create(config.act_dim)
    state = train_state_from_params(config, hyper, actor_params, critic_params, log_alpha)
    t = time.time()
    state, critic_metrics = warmup_critic(
        state, data, critic_steps, key_critic, polyak=critic_polyak, log=log
    )
    state = train_state_from_params(
        config, hyper, state.actor_params, state.critic_params, state.log_alpha
    )
    fit = critic_fit(state, data)
    log(f"critic warm-up done in {time.time() - t:.1f}s: {fit}")

    eval_success = {}
    for k in FAR_STAGES:
        success = evaluate_actor(
            config, state.actor_params, TASKS[k], k, eval_episodes, seed + 1000
        )
        eval_success[TASKS[k]] = {
            "success_rate": float(np.mean(success)),
            "episodes": eval_episodes,
            "seed": seed + 1000,
            "deterministic": True,
        }
        log(f"eval {TASKS[k]}: {eval_success[TASKS[k]]}")

    command = (
        f"python scripts/build_metaworld_asset.py --out {out_dir} "
        f"--episodes {episodes_per_task} --noise {noise} --bc-steps {bc_steps} "
        f"--critic-steps {critic_steps} --critic-polyak {critic_polyak} --seed {seed} "
        f"--eval-episodes {eval_episodes}"
    )
    meta = {
        "method": METHOD,
        "tasks": list(TASKS),
        "far_stages": list(FAR_STAGES),
        "T": 200,
        "beta": 1.5,
        "command": command,
        "episodes": episodes_per_task,
        "noise": noise,
        "transitions": len(data),
        "data": data_stats,
        "bc_steps": bc_steps,
        "bc_batch_size": 256,
        "bc_final": bc_metrics,
        "critic_steps": critic_steps,
        "critic_batch_size": config.batch_size,
        "critic_polyak": critic_polyak,
        "critic_final": {**critic_metrics, **fit},
        "log_alpha": [float(x) for x in state.log_alpha],
        "seed": seed,
        "wall_time_s": round(time.time() - t0, 1),
        "device": _device(),
        "versions": _versions(),
        "eval_success": eval_success,
    }
    from fpc_jax.experiments.checkpoint import save_policy

    save_policy(out_dir, state, meta)
    log(f"wrote {out_dir} in {meta['wall_time_s']}s total")
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=packaged_asset_path())
    p.add_argument("--episodes", type=int, default=100, help="expert episodes per Far task")
    p.add_argument("--noise", type=float, default=0.3, help="max DART action-noise std")
    p.add_argument("--bc-steps", type=int, default=10_000)
    p.add_argument("--critic-steps", type=int, default=10_000)
    p.add_argument("--critic-polyak", type=float, default=0.97)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=50)
    a = p.parse_args(argv)
    build_far_asset(
        a.out,
        episodes_per_task=a.episodes,
        noise=a.noise,
        bc_steps=a.bc_steps,
        critic_steps=a.critic_steps,
        critic_polyak=a.critic_polyak,
        seed=a.seed,
        eval_episodes=a.eval_episodes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
