"""Per-stage evaluation of a SAC policy on real Meta-World tasks (each stage run alone, its head).

The deterministic policy ``tanh(mean)`` of the task's global head acts in a one-stage
``MetaWorldSequence`` (docs/sequence_semantics.md, "per-stage evaluation"); an episode succeeds
when the task reports success before the stage timer reaches ``T``.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.sac.networks import SACConfig, deterministic_action, make_sac_networks

PyTree = Any
FAR_TASKS: tuple[str, ...] = ("peg-unplug-side-v3", "push-wall-v3")
"""The pre-trained (Far) stages of RoboticSequence."""
CSV_COLUMNS: tuple[str, ...] = ("task", "episode", "success")


def packaged_asset_path() -> Path:
    """Directory of the packaged pre-trained Far policy, ``fpc_jax/assets/robotic_sequence_far``."""
    return Path(__file__).resolve().parent.parent / "assets" / "robotic_sequence_far"


@functools.partial(jax.jit, static_argnums=0)
def _act(config: SACConfig, actor_params: PyTree, obs: jax.Array, stage: jax.Array) -> jax.Array:
    mean, _ = jax.vmap(make_sac_networks(config).actor_apply, in_axes=(None, 0, 0))(
        actor_params, obs, stage
    )
    return deterministic_action(mean)


def head_of(task: str, tasks: Sequence[str]) -> int:
    """Global head index of ``task`` in the sequence ``tasks``; ``ValueError`` if absent."""
    tasks = list(tasks)
    if task not in tasks:
        raise ValueError(
            f"task {task!r} is not a stage of this checkpoint; its stages (head order) are "
            f"{', '.join(repr(t) for t in tasks)}"
        )
    return tasks.index(task)


def evaluate_actor(
    config: SACConfig,
    actor_params: PyTree,
    task: str,
    head: int,
    episodes: int = 10,
    seed: int = 0,
    workers: int = 0,
    T: int = 200,
    policy: Callable[[jax.Array, jax.Array], Any] | None = None,
) -> list[bool]:
    """Success of ``episodes`` deterministic episodes of ``task`` run alone with head ``head``.

    ``policy(obs (B, obs_dim), stage (B,)) -> actions (B, act_dim)`` replaces the deterministic
    ``tanh(mean)`` of ``actor_params`` (a perturbed one: scripts/far_asset_robustness.py).

    Episode ``i`` runs in ``MetaWorldSequence(config, seed=env_seeds(seed, episodes)[i])`` (the
    same starts whatever ``workers`` is); one jitted policy call per step acts for all episodes.
    """
    from fpc_jax.envs.metaworld_cpu import MetaWorldSequenceConfig
    from fpc_jax.experiments.host_rollouts import play_episodes

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env_config = MetaWorldSequenceConfig(tasks=(task,), stage_ids=(head,), T=T)
    if policy is None:
        policy = functools.partial(_act, config, actor_params)
    stage = jnp.full((episodes,), head, jnp.int32)
    solved = play_episodes(env_config, episodes, seed, workers, lambda o, _: policy(o, stage), T)
    return (solved >= 1).tolist()


def evaluate_policy(
    checkpoint: str | Path | None = None,
    tasks: Sequence[str] = FAR_TASKS,
    episodes: int = 10,
    seed: int = 0,
    workers: int = 0,
) -> list[dict[str, Any]]:
    """Evaluate a policy checkpoint on each of ``tasks`` alone; rows ``{task, episode, success}``.

    ``checkpoint`` defaults to the packaged Far asset. Each task uses its global head, found by
    its position in the checkpoint meta's ``tasks`` list (``ValueError`` if it is not there).
    """
    from fpc_jax.experiments.checkpoint import load_policy, read_meta

    path = packaged_asset_path() if checkpoint is None else Path(checkpoint)
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    meta = read_meta(path)
    if "tasks" not in meta:
        raise ValueError(f"checkpoint {str(path)!r} has no 'tasks' list in meta.json")
    heads = [head_of(task, meta["tasks"]) for task in tasks]
    ckpt = load_policy(path)
    T = int(meta.get("T", 200))
    rows: list[dict[str, Any]] = []
    for task, head in zip(tasks, heads, strict=True):
        success = evaluate_actor(
            ckpt.config, ckpt.state.actor_params, task, head, episodes, seed, workers, T
        )
        rows += [{"task": task, "episode": i, "success": int(s)} for i, s in enumerate(success)]
    return rows


def success_rates(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean success per task of ``evaluate_policy`` rows."""
    by_task: dict[str, list[float]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(float(row["success"]))
    return {task: float(np.mean(s)) for task, s in by_task.items()}


def write_eval_csv(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> Path:
    """Write ``out_dir/eval.csv`` with columns ``task,episode,success``; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
