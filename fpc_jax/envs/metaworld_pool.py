"""``num_envs`` stitched Meta-World episodes, stepped in-process or across worker processes."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from fpc_jax.envs.host_pool import HostPool, PooledVec
from fpc_jax.envs.metaworld_episode import INFO_KEYS, MetaWorldSequence, env_seeds
from fpc_jax.envs.metaworld_tasks import (
    ACTION_SIZE,
    DEFAULT_TASKS,
    MetaWorldSequenceConfig,
    sequence_config,
)


class _Batch:
    """``MetaWorldSequence`` envs stepped in a loop with same-step auto-reset."""

    def __init__(
        self, config: MetaWorldSequenceConfig, seeds: Sequence[np.random.SeedSequence]
    ) -> None:
        self.envs = [MetaWorldSequence(config, seed=s) for s in seeds]

    def reset(self) -> np.ndarray:
        return np.stack([e.reset() for e in self.envs])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        out = [e.step(a) for e, a in zip(self.envs, actions, strict=True)]
        final_obs = np.stack([o[0] for o in out])
        obs = final_obs.copy()
        for i, (e, o) in enumerate(zip(self.envs, out, strict=True)):
            if o[2] or o[3]:
                obs[i] = e.reset()
        reward = np.array([o[1] for o in out], np.float32)
        terminated = np.array([o[2] for o in out], bool)
        truncated = np.array([o[3] for o in out], bool)
        infos = [np.stack([o[4][k] for o in out]) for k in (*INFO_KEYS, "sub_reward")]
        return (obs, reward, terminated, truncated, final_obs, *infos)


class MetaWorldSequenceVec(PooledVec):
    """``num_envs`` stitched Meta-World episodes, stepped in-process or across worker processes.

    ``reset() -> obs (B, 40)``; ``step(actions (B, 4)) -> (obs, reward, terminated, truncated,
    info)``, NumPy arrays, info a dict of ``(B,)`` arrays (``stage``, ``stage_success``,
    ``stage_terminal``, ``stages_solved``, ``sub_reward``) plus ``final_obs (B, 40)``. Finished
    envs auto-reset within the same step: ``obs[i]`` is then the new episode's first observation
    and ``info["final_obs"][i]`` the last one of the finished episode (equal to ``obs[i]``
    elsewhere). Env ``i`` is ``MetaWorldSequence(config, seed=env_seeds(seed, num_envs)[i])``,
    whatever ``workers`` is. ``workers=0`` steps in-process; ``workers=n`` splits the envs over
    ``n`` processes (``start_method`` "forkserver" by default: safe after JAX has started threads).
    A given ``config`` replaces ``tasks``, ``T``, ``beta``, ``stage_ids`` and ``randomization``.
    """

    def __init__(
        self,
        tasks: Sequence[str] = DEFAULT_TASKS,
        num_envs: int = 1,
        seed: int = 0,
        T: int = 200,
        beta: float = 1.5,
        workers: int = 0,
        *,
        stage_ids: Sequence[int] | None = None,
        randomization: str = "uniform",
        config: MetaWorldSequenceConfig | None = None,
        start_method: str = "forkserver",
    ) -> None:
        if config is None:
            config = sequence_config(tasks, stage_ids, T, beta, randomization)
        if num_envs < 1 or not 0 <= workers <= num_envs:
            raise ValueError(
                f"need num_envs >= 1 and 0 <= workers <= num_envs, got {num_envs=}, {workers=}"
            )
        self.config = config
        self.num_envs = num_envs
        self.workers = workers
        self._pool = HostPool(
            functools.partial(_Batch, config),
            env_seeds(seed, num_envs),
            workers,
            name="Meta-World",
            start_method=start_method,
        )

    def reset(self) -> np.ndarray:
        return self._pool.call("reset")

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, ACTION_SIZE):
            raise ValueError(
                f"actions must have shape {(self.num_envs, ACTION_SIZE)}, got {actions.shape}"
            )
        obs, reward, terminated, truncated, final_obs, *infos = self._pool.call("step", actions)
        info = dict(zip((*INFO_KEYS, "sub_reward"), infos, strict=True))
        info["final_obs"] = final_obs
        return obs, reward, terminated, truncated, info
