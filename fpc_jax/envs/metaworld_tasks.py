"""Meta-World v3 task names, the stitched-sequence config and one task as a host env.

metaworld is imported when a ``StageEnv`` is built, never when this module is imported.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np

V3_TASKS: tuple[str, ...] = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
)
"""The 50 Meta-World v3 task names (``metaworld.env_dict.ALL_V3_ENVIRONMENTS``, metaworld 3.x)."""

DEFAULT_TASKS: tuple[str, ...] = ("hammer-v3", "push-v3", "peg-unplug-side-v3", "push-wall-v3")
"""RoboticSequence of the papers: Close = first two stages, Far = last two."""

RANDOMIZATIONS: tuple[str, ...] = ("uniform", "mt1")
"""``uniform``: a fresh start/goal vector drawn from the task's reset space at every reset
(Continual World's ``random_init_all``, which the papers' code uses). ``mt1``: one of the 50
goal vectors of ``metaworld.MT1(task, seed)`` per reset (what ``gym.make('Meta-World/MT1')`` does).
"""

OBS_SIZE = 40
ACTION_SIZE = 4


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """Validate Meta-World v3 task names; raises ``ValueError`` listing the valid ones."""
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    if not tasks:
        raise ValueError("a sequence needs at least one task")
    for name in tasks:
        if name not in V3_TASKS:
            close = difflib.get_close_matches(str(name), V3_TASKS, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"unknown Meta-World task {name!r}.{hint} Valid v3 tasks: {', '.join(V3_TASKS)}"
            )
    return tasks


@dataclasses.dataclass(frozen=True)
class MetaWorldSequenceConfig:
    """What defines a stitched Meta-World sequence (the host-env counterpart of env params).

    ``stage_ids[i]`` is the global head index of stage ``i`` (default ``0..K-1``); a single-stage
    evaluation runs ``tasks=(task_k,)`` with ``stage_ids=(k,)``.
    """

    tasks: tuple[str, ...] = DEFAULT_TASKS
    stage_ids: tuple[int, ...] | None = None
    T: int = 200
    beta: float = 1.5
    randomization: str = "uniform"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", check_tasks(self.tasks))
        ids = tuple(range(len(self.tasks))) if self.stage_ids is None else self.stage_ids
        ids = tuple(int(k) for k in ids)
        if len(ids) != len(self.tasks) or min(ids) < 0:
            raise ValueError(f"stage_ids must be {len(self.tasks)} ids >= 0, got {ids}")
        object.__setattr__(self, "stage_ids", ids)
        if int(self.T) != self.T or self.T < 1:
            raise ValueError(f"T must be a positive integer, got {self.T!r}")
        if self.randomization not in RANDOMIZATIONS:
            raise ValueError(
                f"unknown randomization {self.randomization!r}; valid: {', '.join(RANDOMIZATIONS)}"
            )

    @property
    def num_stages(self) -> int:
        return len(self.tasks)


def sequence_config(
    tasks: Sequence[str] = DEFAULT_TASKS,
    stage_ids: Sequence[int] | None = None,
    T: int = 200,
    beta: float = 1.5,
    randomization: str = "uniform",
) -> MetaWorldSequenceConfig:
    """``MetaWorldSequenceConfig`` from any sequences of task names and stage ids."""
    return MetaWorldSequenceConfig(
        tasks=tuple(tasks),
        stage_ids=None if stage_ids is None else tuple(stage_ids),
        T=T,
        beta=beta,
        randomization=randomization,
    )


def single_stage_config(config: MetaWorldSequenceConfig, k: int) -> MetaWorldSequenceConfig:
    """Stage ``k`` of ``config`` run alone with its global head index (per-stage evaluation)."""
    return dataclasses.replace(config, tasks=(config.tasks[k],), stage_ids=(config.stage_ids[k],))


class StageEnv:
    """One Meta-World v3 task with per-reset randomization, seeded from ``seed``.

    Built from the task class directly, with the goal observable (MT1's default,
    ``_partially_observable = False``). Each ``reset`` draws a new start/goal from ``env.np_random``
    (``uniform``) or picks one of MT1's 50 goal vectors (``mt1``), and restarts metaworld's own
    step counter, so its 500-step truncation never fires inside a stage of length ``T <= 500``.
    """

    def __init__(
        self, task: str, seed: int | np.random.SeedSequence, randomization: str = "uniform"
    ) -> None:
        import metaworld

        from fpc_jax.envs import metaworld_compat

        metaworld_compat.apply()
        (task,) = check_tasks([task])
        if randomization not in RANDOMIZATIONS:
            raise ValueError(f"unknown randomization {randomization!r}; valid: {RANDOMIZATIONS}")
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        env_seed, pick_seed = (int(s) for s in ss.generate_state(2))
        self.task = task
        self.randomization = randomization
        env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]()
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # cached for the hidden-goal layout
        env.observation_space = env.sawyer_observation_space
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.seed(env_seed)
        self.env = env
        self._goals: list[Any] = []
        self._rng = np.random.default_rng(pick_seed)
        if randomization == "mt1":
            self._goals = list(metaworld.MT1(task, seed=env_seed).train_tasks)

    def reset(self) -> np.ndarray:
        """New start/goal; returns metaworld's 39-dim observation (float64)."""
        if self._goals:
            self.env.set_task(self._goals[int(self._rng.integers(len(self._goals)))])
        obs, _ = self.env.reset()
        return obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Returns ``(obs, reward, success)`` of metaworld's own step."""
        obs, reward, _, _, info = self.env.step(np.asarray(action, dtype=np.float64))
        return obs, float(reward), bool(info["success"])
