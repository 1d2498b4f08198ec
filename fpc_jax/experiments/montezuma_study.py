"""The FPC study with PPO on the real Montezuma's Revenge (ale-py), on the host PPO engine
(``host_ppo``), with obs ``(R, N, 42)`` RAM features (the CPU-budget deviation of
docs/montezuma.md). ``pretrain(cfg, out)`` trains pi* from the Far starts (room7-room9);
``finetune(cfg, out)`` fine-tunes every method x seed from the game start (room1). Metrics
(Wolczyk et al. 2024): Far success = per-room success from each Far start, Close success =
per-room success of game-start episodes, full success = reaching a Far room.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from fpc_jax.agents.ppo.anchors import placeholder_anchors
from fpc_jax.agents.ppo.update import PPOHyper, init_train_state, stack_runs
from fpc_jax.envs import ale_montezuma as mz
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import ppo_study, results
from fpc_jax.experiments.host_ppo import (
    check_resume,
    far_states,
    finetune_study,
    load_pretrained,
    train_runs,
)
from fpc_jax.experiments.montezuma_config import (  # noqa: F401 (the schema lives there)
    ENV,
    ROUTE,
    MontezumaStudyConfig,
    default_out,
    network,
)
from fpc_jax.retention.penalties import RetentionCoefs


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
            num_envs=num_envs,
            seed=seed,
            workers=min(cfg.workers, num_envs),
            obs="ram",
            sticky=cfg.sticky,
            max_steps=cfg.max_steps,
            terminal_on_life_loss=cfg.terminal_on_life_loss,
            asset=cfg.asset or None,
        )
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
        return {
            "eval/stage_success": stage,
            "eval/all_solved": full.astype(np.float32),
            "eval/stages_solved_frac": stage.mean(-1),
            "eval/far_success": stage[:, list(self.far_idx)].mean(-1),
        }


# ---------------------------------------------------------------------------------------------
# Entry points


def pretrain(cfg: MontezumaStudyConfig, out_dir: str | Path, log=print) -> Path:
    """PPO from the Far starts (envs cycle through ``pretrain_starts``); writes ``out/policy``.
    Resumes (or extends) the run in ``out_dir`` if there is one."""
    check_resume(cfg, out_dir, "pretrain", cfg.pretrain_steps)  # before any write
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    config, hyper = network(cfg), PPOHyper.create(**cfg.hyper_kwargs())
    game = MontezumaGame(tuple(cfg.pretrain_starts))
    key = jax.random.key(cfg.seed)
    state = init_train_state(config, hyper, jax.random.fold_in(key, 0))
    coefs = stack_runs([RetentionCoefs.preset("ft", family="ppo")])
    anchors = placeholder_anchors(config, state.actor_params, state.critic_params, 1)
    log(f"[pretrain] PPO from {list(cfg.pretrain_starts)}, {cfg.pretrain_steps} env steps")
    states, curves, wall = train_runs(
        cfg,
        game,
        config,
        stack_runs([state]),
        coefs,
        anchors,
        hyper,
        cfg.pretrain_starts,
        cfg.pretrain_steps,
        jax.random.fold_in(key, 1),
        out_dir,
        "pretrain",
        log,
    )
    far = curves["eval/far_success"][:, 0]
    per_room = dict(
        zip(
            cfg.pretrain_starts,
            curves["eval/stage_success"][-1, 0, list(game.far_idx)].tolist(),
            strict=True,
        )
    )
    meta = {
        "env": ENV,
        "far_starts": list(cfg.pretrain_starts),
        "pretrain_steps": cfg.pretrain_steps,
        "far_success_final": float(far[-1]),
        "far_success": per_room,
    }
    ppo_study.save_policy(out_dir / "policy", jax.tree.map(lambda x: x[0], states), meta)
    results.write_json(
        out_dir / "run_info.json",
        {**results.environment_info(), "wall_s": wall, **meta, "far_success_curve": far.tolist()},
    )
    log(f"[pretrain] {wall:.0f}s; pi* Far success {far[-1]:.3f} per room {per_room}")
    return out_dir / "policy"


def finetune(cfg: MontezumaStudyConfig, out_dir: str | Path, log=print) -> Path:
    """Fine-tune every method x seed from the game start; writes summary.csv, curves, plots.
    Resumes (or extends) the run in ``out_dir`` if there is one."""
    check_resume(cfg, out_dir, "finetune", cfg.finetune_steps)  # before any write
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    config, hyper = network(cfg), PPOHyper.create(**cfg.hyper_kwargs())
    path, pre = load_pretrained(cfg, config, out_dir)
    game = MontezumaGame(tuple(pre.meta.get("far_starts", cfg.pretrain_starts)))
    data = far_states(cfg, game, config, pre.state, game.far_starts, out_dir, log)
    finetune_study(
        cfg,
        game,
        config,
        hyper,
        pre.state,
        data,
        cfg.finetune_start,
        out_dir,
        log,
        {"checkpoint": str(path)},
    )
    return out_dir
