"""One stitched RoboticSequence episode over real Meta-World tasks (host-side NumPy).

Implements docs/sequence_semantics.md (Algorithm 1 of Wolczyk et al. 2023) over
``fpc_jax.envs.metaworld_tasks.StageEnv``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fpc_jax.envs.metaworld_tasks import MetaWorldSequenceConfig, StageEnv

INFO_KEYS: tuple[str, ...] = ("stage", "stage_success", "stage_terminal", "stages_solved")


def env_seeds(seed: int, num_envs: int) -> list[np.random.SeedSequence]:
    """Seeds of the ``num_envs`` envs of ``MetaWorldSequenceVec(seed=seed)``, in order."""
    return np.random.SeedSequence(seed).spawn(num_envs)


class MetaWorldSequence:
    """One stitched episode over real Meta-World tasks (docs/sequence_semantics.md).

    ``reset() -> obs`` and ``step(action) -> (obs, reward, terminated, truncated, info)``; obs is
    float32 ``[metaworld obs (39), t / T]``; info holds 0-d arrays ``stage`` (the global head index
    of the stage acted in), ``stage_success``, ``stage_terminal``, ``stages_solved`` and
    ``sub_reward`` (the task's own reward before the success bonus). No auto-reset.
    """

    def __init__(
        self,
        config: MetaWorldSequenceConfig | None = None,
        seed: int | np.random.SeedSequence = 0,
        **overrides: Any,
    ) -> None:
        if config is None:
            config = MetaWorldSequenceConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self.stage_envs = [
            StageEnv(task, s, self.config.randomization)
            for task, s in zip(self.config.tasks, ss.spawn(self.config.num_stages), strict=True)
        ]
        for e in self.stage_envs:
            e.env.max_path_length = max(e.env.max_path_length, self.config.T)
        self.pos = 0
        self.t = 0
        self.stages_solved = 0
        self.done = True

    @property
    def stage(self) -> int:
        """Global head index of the current stage."""
        return self.config.stage_ids[self.pos]

    def _obs(self, sub_obs: np.ndarray) -> np.ndarray:
        return np.append(sub_obs, self.t / self.config.T).astype(np.float32)

    def reset(self) -> np.ndarray:
        self.pos, self.t, self.stages_solved, self.done = 0, 0, 0, False
        return self._obs(self.stage_envs[0].reset())

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.done:
            raise RuntimeError("episode is over: call reset()")
        cfg = self.config
        stage = self.stage
        sub_obs, r, success = self.stage_envs[self.pos].step(action)
        self.t += 1
        reward = cfg.beta * r * (cfg.T - self.t) if success else r
        is_last = self.pos == cfg.num_stages - 1
        terminated = success and is_last
        truncated = not success and self.t >= cfg.T
        if success:
            self.stages_solved += 1
            if not is_last:
                self.pos += 1
                self.t = 0
                sub_obs = self.stage_envs[self.pos].reset()
        self.done = terminated or truncated
        info = {
            "stage": np.int32(stage),
            "stage_success": np.bool_(success),
            "stage_terminal": np.bool_(success or truncated),
            "stages_solved": np.int32(self.stages_solved),
            "sub_reward": np.float32(r),
        }
        return self._obs(sub_obs), float(np.float32(reward)), terminated, truncated, info
