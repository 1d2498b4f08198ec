"""Host-side (NumPy) RoboticSequence over the real Meta-World v3 tasks on CPU MuJoCo.

Implements docs/sequence_semantics.md (Algorithm 1 of Wolczyk et al. 2023); metaworld is imported
lazily, so this module (and its registry entries) load without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from fpc_jax.envs.registry import register

V3_TASKS: tuple[str, ...] = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3",
    "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3",
    "door-lock-v3", "door-open-v3", "door-unlock-v3", "hand-insert-v3", "drawer-close-v3",
    "drawer-open-v3", "faucet-open-v3", "faucet-close-v3", "hammer-v3", "handle-press-side-v3",
    "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3",
    "pick-place-wall-v3", "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3",
    "plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3",
    "peg-insert-side-v3", "peg-unplug-side-v3", "soccer-v3", "stick-push-v3", "stick-pull-v3",
    "push-v3", "push-wall-v3", "push-back-v3", "reach-v3", "reach-wall-v3", "shelf-place-v3",
    "sweep-into-v3", "sweep-v3", "window-open-v3", "window-close-v3",
)  # fmt: skip
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
INFO_KEYS: tuple[str, ...] = ("stage", "stage_success", "stage_terminal", "stages_solved")


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


def single_stage_config(config: MetaWorldSequenceConfig, k: int) -> MetaWorldSequenceConfig:
    """Stage ``k`` of ``config`` run alone with its global head index (per-stage evaluation)."""
    return dataclasses.replace(config, tasks=(config.tasks[k],), stage_ids=(config.stage_ids[k],))


def env_seeds(seed: int, num_envs: int) -> list[np.random.SeedSequence]:
    """Seeds of the ``num_envs`` envs of ``MetaWorldSequenceVec(seed=seed)``, in order."""
    return np.random.SeedSequence(seed).spawn(num_envs)


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


def _worker(conn: Connection, config: MetaWorldSequenceConfig, seeds: list[Any]) -> None:
    try:
        batch = _Batch(config, seeds)
        conn.send(("ok", None))
        while True:
            cmd, data = conn.recv()
            if cmd == "close":
                break
            conn.send(("ok", batch.reset() if cmd == "reset" else batch.step(data)))
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:  # reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class MetaWorldSequenceVec:
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
            config = MetaWorldSequenceConfig(
                tasks=tuple(tasks),
                stage_ids=None if stage_ids is None else tuple(stage_ids),
                T=T,
                beta=beta,
                randomization=randomization,
            )
        if num_envs < 1 or not 0 <= workers <= num_envs:
            raise ValueError(
                f"need num_envs >= 1 and 0 <= workers <= num_envs, got {num_envs=}, {workers=}"
            )
        self.config = config
        self.num_envs = num_envs
        self.workers = workers
        seeds = env_seeds(seed, num_envs)
        self._batch: _Batch | None = None
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        if workers == 0:
            self._batch = _Batch(config, seeds)
            return
        ctx = mp.get_context(start_method)
        for chunk in np.array_split(np.arange(num_envs), workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker, args=(child, config, [seeds[i] for i in chunk]), daemon=True
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:
            self._recv(conn)

    def _recv(self, conn: Connection) -> Any:
        status, data = conn.recv()
        if status == "error":
            self.close()
            raise RuntimeError(f"Meta-World worker failed:\n{data}")
        return data

    def _call(self, cmd: str, data: np.ndarray | None = None) -> list[Any]:
        if self._batch is not None:
            return [self._batch.reset() if cmd == "reset" else self._batch.step(data)]
        chunks = np.array_split(data, self.workers) if data is not None else [None] * self.workers
        for conn, chunk in zip(self._conns, chunks, strict=True):
            conn.send((cmd, chunk))
        return [self._recv(conn) for conn in self._conns]

    def reset(self) -> np.ndarray:
        return np.concatenate(self._call("reset"))

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, ACTION_SIZE):
            raise ValueError(
                f"actions must have shape {(self.num_envs, ACTION_SIZE)}, got {actions.shape}"
            )
        parts = self._call("step", actions)
        obs, reward, terminated, truncated, final_obs, *infos = (
            np.concatenate(x) for x in zip(*parts, strict=True)
        )
        info = dict(zip((*INFO_KEYS, "sub_reward"), infos, strict=True))
        info["final_obs"] = final_obs
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        for conn in getattr(self, "_conns", []):
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in getattr(self, "_procs", []):
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> MetaWorldSequenceVec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


# --- registry ---------------------------------------------------------------------------------

HostEnv = MetaWorldSequence | MetaWorldSequenceVec
_BACKENDS: dict[str, Callable[..., tuple[Any, Any]]] = {}


def register_backend(name: str, builder: Callable[..., tuple[Any, Any]]) -> None:
    """Add a backend for the ``metaworld/*`` names: ``builder(config, **kw) -> (env, params)``."""
    if name in _BACKENDS:
        raise ValueError(f"Meta-World backend {name!r} is registered twice")
    _BACKENDS[name] = builder


def _build_cpu(
    config: MetaWorldSequenceConfig, num_envs: int | None = None, seed: int = 0, workers: int = 0
) -> tuple[HostEnv, MetaWorldSequenceConfig]:
    if num_envs is None:
        if workers:
            raise ValueError("workers needs num_envs (a MetaWorldSequenceVec)")
        return MetaWorldSequence(config, seed=seed), config
    return MetaWorldSequenceVec(
        num_envs=num_envs, seed=seed, workers=workers, config=config
    ), config


register_backend("cpu", _build_cpu)


def _dispatch(backend: str, config: MetaWorldSequenceConfig, kw: dict[str, Any]) -> tuple[Any, Any]:
    if backend not in _BACKENDS:
        raise ValueError(
            f"unknown Meta-World backend {backend!r}; valid: {', '.join(sorted(_BACKENDS))}"
        )
    return _BACKENDS[backend](config, **kw)


def make_sequence(
    backend: str = "cpu",
    tasks: Sequence[str] = DEFAULT_TASKS,
    stage_ids: Sequence[int] | None = None,
    T: int = 200,
    beta: float = 1.5,
    randomization: str = "uniform",
    **kw: Any,
) -> tuple[Any, MetaWorldSequenceConfig]:
    """Registry factory for ``metaworld/robotic_sequence``.

    ``backend="cpu"`` returns ``(MetaWorldSequence, config)``, or ``(MetaWorldSequenceVec, config)``
    when ``num_envs`` is given (``seed``, ``workers`` pass through).
    """
    config = MetaWorldSequenceConfig(
        tasks=tuple(tasks),
        stage_ids=None if stage_ids is None else tuple(stage_ids),
        T=T,
        beta=beta,
        randomization=randomization,
    )
    return _dispatch(backend, config, kw)


def _make_single(task: str) -> Callable[..., tuple[Any, MetaWorldSequenceConfig]]:
    def factory(backend: str = "cpu", head: int = 0, **kw: Any) -> tuple[Any, Any]:
        return make_sequence(backend, tasks=(task,), stage_ids=(head,), **kw)

    factory.__doc__ = (
        f"Registry factory for ``metaworld/{task}``: the task as a one-stage sequence "
        "(terminated on success, truncated at T) with global head index ``head``."
    )
    return factory


for _task in V3_TASKS:
    register(f"metaworld/{_task}")(_make_single(_task))
register("metaworld/robotic_sequence")(make_sequence)
