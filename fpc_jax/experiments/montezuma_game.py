"""The ``HostGame`` of Montezuma's Revenge (ale-py) for the host PPO loop (``host_ppo``)."""

from __future__ import annotations

import jax
import numpy as np

from fpc_jax.envs import ale_montezuma as mz
from fpc_jax.experiments.montezuma_config import ROUTE, MontezumaStudyConfig


class MontezumaGame:
    """``HostGame`` of Montezuma's Revenge: start specs are route-room names, one per env; the
    stage axis is the route (room1..room9); ``far_starts`` are evaluated from their own start."""

    stages = ROUTE

    def __init__(self, far_starts: tuple[str, ...]) -> None:
        self.far_starts = tuple(far_starts)
        self.far_idx = tuple(ROUTE.index(n) for n in self.far_starts)

    @staticmethod
    def make_vec(cfg: MontezumaStudyConfig, num_envs: int, seed: int):
        vec, _ = mz.make_montezuma(
            num_envs=num_envs, seed=seed, workers=min(cfg.workers, num_envs), obs="ram",
            sticky=cfg.sticky, max_steps=cfg.max_steps,
            terminal_on_life_loss=cfg.terminal_on_life_loss, asset=cfg.asset or None,
        )  # fmt: skip
        return vec

    def open(self, cfg, num_envs, seed, start):
        starts = [start] * num_envs if isinstance(start, str) else list(start)
        starts = [starts[i % len(starts)] for i in range(num_envs)]  # cycle a shorter list
        vec = self.make_vec(cfg, num_envs, seed)
        try:
            return vec, vec.reset(starts)
        except BaseException:
            vec.close()
            raise

    def evaluate(self, cfg, policy, runs, key) -> dict[str, np.ndarray]:
        """Per-room success of every run: ``eval/stage_success`` (R, 9) (Far rooms from their
        own start, Close rooms from game-start episodes), ``eval/all_solved`` (R,) (game-start
        episodes that reach a Far room), ``eval/stages_solved_frac``, ``eval/far_success``."""
        starts = mz.load_starts(cfg.asset or None)
        r, e = runs, cfg.eval_episodes
        vec = self.make_vec(cfg, r * e, seed=int(jax.random.randint(key, (), 0, 2**30)) + 7)
        ram = {k: starts.get(k).ram_room for k in ROUTE}
        masks = {}
        try:
            for start in (cfg.finetune_start, *self.far_starts):
                obs, key = vec.reset(start), jax.random.fold_in(key, 1)
                done = np.zeros(r * e, bool)
                visited, succ = np.zeros(r * e, np.int64), np.zeros(r * e, np.int64)
                for t in range(cfg.max_steps):
                    a = policy(obs.reshape(r, e, -1), jax.random.fold_in(key, t))
                    obs, _, term, trunc, info = vec.step(a.reshape(-1))
                    new = (term | trunc) & ~done
                    visited[new] = info["episode_visited"][new]
                    succ[new] = info["episode_success"][new]
                    done |= new
                    if done.all():
                        break
                masks[start] = (visited.reshape(r, e), succ.reshape(r, e))
        finally:
            vec.close()
        bit = lambda room: 1 << (room % mz.NUM_ROOMS)  # noqa: E731
        game_v, game_s = masks[cfg.finetune_start]
        stage = np.zeros((r, len(ROUTE)), np.float32)
        for k, name in enumerate(ROUTE):
            s = masks[name][1] if name in self.far_starts else game_s
            stage[:, k] = ((s & bit(ram[name])) != 0).mean(-1)
        far_bits = sum(bit(ram[n]) for n in starts.far)
        full = ((game_v & far_bits) != 0).mean(-1)
        return {"eval/stage_success": stage, "eval/all_solved": full.astype(np.float32),
                "eval/stages_solved_frac": stage.mean(-1),
                "eval/far_success": stage[:, list(self.far_idx)].mean(-1)}  # fmt: skip
