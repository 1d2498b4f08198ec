"""Batches of host-stepped NetHack games (``NetHackVec``, in-process or over worker processes)
and the registry factory ``make_nethack`` ("nle/nethack"). The single game: ``nle_nethack``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from fpc_jax.envs.host_pool import HostPool, PooledVec
from fpc_jax.envs.nle_nethack import NUM_ACTIONS, NetHackConfig, NetHackGame
from fpc_jax.envs.registry import register


def _stack(parts: list[Any]) -> Any:
    """Per-game observations (arrays, or dicts of them) stacked into one batch."""
    if isinstance(parts[0], dict):
        return {k: _stack([p[k] for p in parts]) for k in parts[0]}
    return np.stack(parts)


class _Games:
    """``NetHackGame`` games stepped in a loop with same-step auto-reset (a ``HostPool`` batch);
    game ``i`` draws its seeds and Far prefixes from ``default_rng(seeds[i])``."""

    def __init__(self, config: NetHackConfig, seeds: list[np.random.SeedSequence]) -> None:
        self.config = config
        self.games = [NetHackGame(config) for _ in seeds]
        self._rngs = [np.random.default_rng(s) for s in seeds]
        if config.start == "far":
            from fpc_jax.envs.nle_prefixes import PrefixSet

            try:
                self.prefixes = PrefixSet.load(config.prefixes)
                self._far = self.prefixes.reaching(config.far_depth)
            except BaseException:
                self.close()
                raise

    def _begin(self, i: int) -> Any:
        rng, game = self._rngs[i], self.games[i]
        if self.config.start == "close":
            return game.reset(*(int(s) for s in rng.integers(1, 2**31, size=2)))
        return self.prefixes.start(game, int(rng.choice(self._far)), self.config.far_depth)

    def reset(self) -> Any:
        return _stack([self._begin(i) for i in range(len(self.games))])

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        out = [g.step(a) for g, a in zip(self.games, actions, strict=True)]
        info = {k: np.stack([o[4][k] for o in out]) for k in out[0][4]}
        info["start_depth"] = np.array([g.start_depth for g in self.games], np.int32)
        info["final_obs"] = _stack([o[0] for o in out])
        obs = _stack([self._begin(i) if o[2] or o[3] else o[0] for i, o in enumerate(out)])
        reward, term, trunc = (np.array([o[j] for o in out]) for j in (1, 2, 3))
        return obs, reward.astype(np.float32), term, trunc, info

    def close(self) -> None:
        for game in self.games:
            game.close()
        self.games = []


class NetHackVec(PooledVec):
    """``num_envs`` NetHack games, stepped in-process (``workers=0``) or over worker processes.

    ``reset() -> obs``; ``step(actions (B,)) -> (obs, reward, terminated, truncated, info)``; obs
    is a dict of ``(B, ...)`` arrays (``obs_mode="dict"``) or ``(B, obs_size)`` float32. Finished
    games auto-reset in the same step; ``info["final_obs"]`` holds the finished episode's last
    observation; info also has ``depth``, ``max_depth``, ``score``, ``turn``, ``start_depth``.
    Env ``i`` draws its games from ``SeedSequence(seed).spawn(num_envs)[i]`` whatever ``workers``;
    a Far start replays a prefix drawn from the asset's entries reaching ``far_depth``.
    """

    def __init__(
        self,
        config: NetHackConfig,
        num_envs: int = 1,
        seed: int = 0,
        workers: int = 0,
        start_method: str = "forkserver",
        seeds: list[np.random.SeedSequence] | None = None,
    ) -> None:
        seeds = np.random.SeedSequence(seed).spawn(num_envs) if seeds is None else seeds
        if not seeds or not 0 <= workers <= len(seeds):
            raise ValueError(f"need num_envs >= 1, 0 <= workers <= num_envs: {num_envs}, {workers}")
        self.config, self.num_envs, self.workers = config, len(seeds), workers
        self._pool = HostPool(
            functools.partial(_Games, config),
            seeds,
            workers,
            name="NetHack",
            start_method=start_method,
        )

    def reset(self) -> Any:
        return self._pool.call("reset")

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or ((actions < 0) | (actions >= NUM_ACTIONS)).any():
            raise ValueError(f"actions must be ({self.num_envs},) ints in [0, {NUM_ACTIONS})")
        return self._pool.call("step", actions)


@register("nle/nethack")
def make_nethack(
    num_envs: int | None = None, seed: int = 0, workers: int = 0, **config: Any
) -> tuple[NetHackGame | NetHackVec, NetHackConfig]:
    """Registry factory for ``nle/nethack``: ``(NetHackGame, config)``, or ``(NetHackVec, config)``
    when ``num_envs`` is given; ``config`` keys are ``NetHackConfig`` fields (bad ones raise)."""
    fields = sorted(f.name for f in dataclasses.fields(NetHackConfig))
    if unknown := sorted(set(config) - set(fields)):
        raise ValueError(f"unknown NetHack option(s) {unknown}; valid: {', '.join(fields)}")
    cfg = NetHackConfig(**config)
    if num_envs is None:
        if workers:
            raise ValueError("workers needs num_envs (a NetHackVec)")
        return NetHackGame(cfg), cfg
    return NetHackVec(cfg, num_envs=num_envs, seed=seed, workers=workers), cfg
