"""``num_envs`` stitched Meta-World episodes, stepped in-process or across worker processes."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

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
            config = sequence_config(tasks, stage_ids, T, beta, randomization)
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
