"""``MontezumaVec``: many Montezuma's Revenge envs (one ALE each) stepped in-process or across
worker processes, with same-step auto-reset to each env's start (as ``MetaWorldSequenceVec``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from fpc_jax.envs.ale_montezuma import INFO_KEYS, NUM_ACTIONS, MontezumaConfig, MontezumaEnv
from fpc_jax.envs.host_pool import HostPool, PooledVec


def env_seeds(seed: int, num_envs: int) -> list[int]:
    """ALE seeds of the ``num_envs`` envs of ``MontezumaVec(seed=seed)``, in order."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(num_envs)]


class _Batch:
    """``MontezumaEnv`` envs stepped in a loop with same-step auto-reset."""

    def __init__(self, config: MontezumaConfig, seeds: Sequence[int]) -> None:
        self.envs = [MontezumaEnv(config, seed=s) for s in seeds]

    def reset(self, starts: Sequence[str | None]) -> np.ndarray:
        return np.stack([e.reset(s) for e, s in zip(self.envs, starts, strict=True)])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        out = [e.step(int(a)) for e, a in zip(self.envs, actions, strict=True)]
        final_obs = np.stack([o[0] for o in out])
        obs = final_obs.copy()
        for i, (e, o) in enumerate(zip(self.envs, out, strict=True)):
            if o[2] or o[3]:
                obs[i] = e.reset()
        reward = np.array([o[1] for o in out], np.float32)
        terminated = np.array([o[2] for o in out], bool)
        truncated = np.array([o[3] for o in out], bool)
        infos = [np.stack([o[4][k] for o in out]) for k in INFO_KEYS]
        return (obs, reward, terminated, truncated, final_obs, *infos)


class MontezumaVec(PooledVec):
    """``num_envs`` Montezuma envs, in-process (``workers=0``) or over ``workers`` processes.

    ``reset(starts=None) -> obs (B, *config.obs_shape)``: ``starts`` is one start name for all
    envs, one per env, or None (each env's current start, at first ``config.start``); it also
    sets the start that env auto-resets to. ``step(actions (B,) int) -> (obs, reward,
    terminated, truncated, info)``: NumPy arrays, info a dict of ``(B,)`` arrays (``INFO_KEYS``)
    plus ``final_obs``. A finished env resets within the same step: ``obs[i]`` is then the new
    episode's first observation, ``info["final_obs"][i]`` and the ``episode_*`` entries those of
    the finished episode. Env ``i`` is seeded ``env_seeds(seed, num_envs)[i]`` whatever
    ``workers`` is. ``start_method`` "forkserver" by default (safe after JAX started threads).
    """

    def __init__(
        self,
        num_envs: int = 1,
        seed: int = 0,
        workers: int = 0,
        config: MontezumaConfig | None = None,
        *,
        start_method: str = "forkserver",
    ) -> None:
        if num_envs < 1 or not 0 <= workers <= num_envs:
            raise ValueError(
                f"need num_envs >= 1 and 0 <= workers <= num_envs, got {num_envs=}, {workers=}"
            )
        self.config = config or MontezumaConfig()
        self.num_envs = num_envs
        self.workers = workers
        self._pool = HostPool(
            functools.partial(_Batch, self.config),
            env_seeds(seed, num_envs),
            workers,
            name="Montezuma",
            start_method=start_method,
        )

    def reset(self, starts: str | Sequence[str | None] | None = None) -> np.ndarray:
        if starts is None or isinstance(starts, str):
            starts = [starts] * self.num_envs
        starts = list(starts)
        if len(starts) != self.num_envs:
            raise ValueError(f"need one start per env ({self.num_envs}), got {len(starts)}")
        return self._pool.call("reset", starts)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"actions must be integers of shape {(self.num_envs,)}, got {actions.dtype} "
                f"{actions.shape}"
            )
        if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
            raise ValueError(f"actions must be in [0, {NUM_ACTIONS})")
        obs, reward, terminated, truncated, final_obs, *infos = self._pool.call("step", actions)
        info = dict(zip(INFO_KEYS, infos, strict=True))
        info["final_obs"] = final_obs
        return obs, reward, terminated, truncated, info
