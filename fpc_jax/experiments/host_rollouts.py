"""Host-side rollouts of Meta-World sequences for many runs at once: one jitted, vmapped policy
call per vector step (``Acting``), the per-run evaluation (``evaluate_runs``) and
pi*'s Far-stage data for the retention anchors (``collect_far_data``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.sac.losses import Batch
from fpc_jax.agents.sac.networks import SACConfig
from fpc_jax.agents.sac.train import EVAL_POLICIES, make_policy
from fpc_jax.envs.metaworld_cpu import (
    MetaWorldSequenceConfig,
    MetaWorldSequenceVec,
    single_stage_config,
)

OBS_DIM, ACT_DIM = 40, 4


class Acting:
    """Jitted policy calls for all runs: params (R, ...), obs (R, E, 40), stage (R, E)."""

    def __init__(self, config: SACConfig) -> None:
        sample, greedy = make_policy(config)
        per_env = jax.vmap(sample, in_axes=(None, 0, 0, 0))
        self.sample = jax.jit(jax.vmap(per_env, in_axes=(0, 0, 0, 0)))
        self.greedy = jax.jit(jax.vmap(jax.vmap(greedy, in_axes=(None, 0, 0)), in_axes=(0, 0, 0)))


def next_stage(stage_ids: np.ndarray, pos: np.ndarray, info: dict, done: np.ndarray):
    """Host tracking of the head for the next action (the env reports the stage acted in)."""
    advance = info["stage_success"].astype(bool) & ~done
    pos = np.where(done, 0, pos + advance)
    return stage_ids[np.minimum(pos, len(stage_ids) - 1)], pos


def play_episodes(
    cfg: MetaWorldSequenceConfig,
    n: int,
    seed: int,
    workers: int,
    act: Callable[[np.ndarray, np.ndarray], Any],
    max_steps: int,
) -> np.ndarray:
    """Stages solved in each of ``n`` episodes of the sequence ``cfg``, the one host evaluation
    loop of Meta-World: env ``i`` seeded as ``MetaWorldSequenceVec(seed=seed)`` seeds it (the
    same starts whatever ``workers``), ``act(obs (n, 40), stage (n,)) -> actions (n, 4)`` acting
    with each env's current head; stops when every episode has ended, or after ``max_steps``."""
    vec = MetaWorldSequenceVec(config=cfg, num_envs=n, seed=seed, workers=min(workers, n))
    try:
        obs = vec.reset()
        ids = np.asarray(cfg.stage_ids)
        stage, pos = np.full(n, ids[0]), np.zeros(n, int)
        solved = np.zeros(n)
        finished = np.zeros(n, bool)
        for _ in range(max_steps):
            obs, _, term, trunc, info = vec.step(np.asarray(act(obs, stage)).reshape(n, ACT_DIM))
            done = term | trunc
            solved = np.where(done & ~finished, info["stages_solved"], solved)
            finished |= done
            stage, pos = next_stage(ids, pos, info, done)
            if finished.all():
                break
        return solved
    finally:
        vec.close()


def evaluate_runs(
    acting: Acting,
    actor_params: Any,
    seq: MetaWorldSequenceConfig,
    runs: int,
    episodes: int,
    seed: int,
    workers: int = 0,
    policy: str = "deterministic",
) -> dict[str, np.ndarray]:
    """Success of every run: each stage alone (its head), and the whole sequence, for the
    ``policy`` of ``sac.train.EVAL_POLICIES`` (the same keys as ``sac.train.make_evaluate``)."""
    if policy not in EVAL_POLICIES:
        raise ValueError(f"policy must be one of {EVAL_POLICIES}, got {policy!r}")
    k = seq.num_stages

    n = runs * episodes

    def play(cfg: MetaWorldSequenceConfig, max_steps: int, key: jax.Array | None) -> np.ndarray:
        def act(obs: np.ndarray, stage: np.ndarray) -> jax.Array:
            nonlocal key
            o, st = obs.reshape(runs, episodes, OBS_DIM), stage.reshape(runs, episodes)
            if key is None:
                return acting.greedy(actor_params, o, st)
            key, k_act = jax.random.split(key)
            return acting.sample(
                actor_params, o, st, jax.random.split(k_act, n).reshape(o.shape[:2])
            )

        return play_episodes(cfg, n, seed, workers, act, max_steps).reshape(runs, episodes)

    def one_mode(key: jax.Array | None) -> dict[str, np.ndarray]:
        keys = [None] * (k + 1) if key is None else list(jax.random.split(key, k + 1))
        alone = np.stack(
            [(play(single_stage_config(seq, s), seq.T, keys[s]) >= 1).mean(1) for s in range(k)],
            axis=1,
        )
        full = play(seq, k * seq.T, keys[k])
        return {
            "stage_success": alone,
            "all_solved": (full >= k).mean(1),
            "stages_solved_frac": (full / k).mean(1),
        }

    if policy == "deterministic":
        det = one_mode(None)
        return {**det, **{f"deterministic/{n}": v for n, v in det.items()}}
    sto = one_mode(jax.random.key(seed))
    out = {**sto, **{f"stochastic/{n}": v for n, v in sto.items()}}
    if policy == "both":
        out |= {f"deterministic/{n}": v for n, v in one_mode(None).items()}
    return out


FIELDS = tuple(Batch.__dataclass_fields__)


def record(store: dict[str, list[np.ndarray]], obs, action, reward, info, shape) -> None:
    """Append one vector step's transitions; ``shape`` reshapes the leading env axis."""
    values = (obs, action, reward, info["final_obs"], 1.0 - info["stage_terminal"], info["stage"])
    for f, v in zip(FIELDS, values, strict=True):
        v = np.asarray(v)
        store[f].append(v.reshape(*shape, *v.shape[1:]))


def to_batch(data: dict[str, np.ndarray]) -> Batch:
    return Batch(
        **{f: jnp.asarray(data[f], jnp.int32 if f == "stage" else jnp.float32) for f in FIELDS}
    )


def collect_far_data(
    acting: Acting,
    actor_params: Any,
    seq: MetaWorldSequenceConfig,
    far: tuple[int, ...],
    n: int,
    seed: int,
    workers: int = 0,
    num_envs: int = 10,
) -> Batch:
    """``n`` transitions of pi* (sampled actions) on each Far stage run alone (equal shares)."""
    parts = []
    key = jax.random.key(seed)
    for j, s in enumerate(far):
        cfg = single_stage_config(seq, s)
        vec = MetaWorldSequenceVec(
            config=cfg,
            num_envs=num_envs,
            seed=seed + 1000 * (j + 1),
            workers=min(workers, num_envs),
        )
        want = -(-n // len(far))
        buf: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
        try:
            obs = vec.reset()
            stage = np.full(num_envs, cfg.stage_ids[0])
            while sum(len(x) for x in buf["obs"]) < want:
                key, k = jax.random.split(key)
                a = np.asarray(
                    acting.sample(
                        jax.tree.map(lambda x: x[None], actor_params),
                        obs[None],
                        stage[None],
                        jax.random.split(k, num_envs)[None],
                    )
                )[0]
                nxt, r, _, _, info = vec.step(a)
                record(buf, obs, a, r, info, (num_envs,))
                obs = nxt
        finally:
            vec.close()
        parts.append({f: np.concatenate(v)[:want] for f, v in buf.items()})
    return to_batch({f: np.concatenate([p[f] for p in parts])[:n] for f in parts[0]})
