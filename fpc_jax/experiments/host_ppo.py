"""The FPC study with PPO on host-stepped real games (issue 13): Montezuma's Revenge (ale-py,
``montezuma_study``) and NetHack (NLE, ``nethack_study``) share this engine.

R runs (methods x seeds) each own ``num_envs`` envs of one host vector env; one jitted program
vmapped over runs acts for all of them (obs ``(R, N, D)``), the host steps the games, and one
jitted, vmapped program computes GAE and runs the PPO agent's ``update_epochs`` with each run's
retention coefficients (ft, bc, ks, ewc, l2, scratch), as ``robotic_sequence`` does for SAC. What
differs between games is a ``HostGame``: how to open envs at a start, and how to evaluate.

Runs resume: after every chunk the curves (``<tag>_curves.npz``) and then the run state
(``<tag>_state/``: every run's parameters and optimiser, the PRNG key) are written, so the same
command continues an interrupted run, or extends a finished one to more env steps. Env states
are not saved (a real game cannot be): the envs reopen on fresh seeds, episodes in flight
restart.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.ppo.advantages import make_batch_builder
from fpc_jax.agents.ppo.anchors import make_anchors
from fpc_jax.agents.ppo.diagnostics import make_diagnose
from fpc_jax.agents.ppo.networks import PPOConfig, make_ppo_networks, sample_action
from fpc_jax.agents.ppo.rollout import Rollout, init_rnd_stats
from fpc_jax.agents.ppo.update import (
    init_train_state,
    stack_runs,
    train_state_from_params,
    update_epochs,
)
from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import chunks, ppo_study, results, study, study_report
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments.checkpoint import CheckpointError
from fpc_jax.experiments.study_config import method_grid
from fpc_jax.retention import terms
from fpc_jax.retention.fisher import fisher_sample

Policy = Callable[[np.ndarray, jax.Array], np.ndarray]
"""``policy(obs (R, E, D), key) -> actions (R, E)``: every run's sampled actions."""


class HostGame(Protocol):
    """What the host PPO loop needs from a game.

    ``stages``: names of the stage axis of ``eval/stage_success``; ``far_idx``: its Far stages.
    ``open(cfg, num_envs, seed, start) -> (vec, obs (num_envs, D))``: a host vector env with
    same-step auto-reset (``step(actions) -> obs, reward, terminated, truncated, info`` with
    ``info["final_obs"]``) whose envs all begin at ``start`` (a game's start spec: one per env
    or one for all). ``evaluate(cfg, policy, runs, key) -> curves``: ``eval/stage_success``
    ``(R, S)``, ``eval/all_solved``, ``eval/stages_solved_frac``, ``eval/far_success`` ``(R,)``,
    and any game-specific ``eval/*`` arrays with a leading runs axis."""

    stages: tuple[str, ...]
    far_idx: tuple[int, ...]

    def open(self, cfg: Any, num_envs: int, seed: int, start: Any) -> tuple[Any, np.ndarray]: ...

    def evaluate(self, cfg: Any, policy: Policy, runs: int, key: jax.Array) -> dict: ...


# ---------------------------------------------------------------------------------------------
# The learner: one acting program and one update program, both vmapped over runs


@functools.cache
def make_learner(config: PPOConfig, epochs: int, minibatches: int, clip_value_loss: bool):
    """``(act, update)``, jitted and vmapped over the runs axis.

    ``act(actor (R..), critic (R..), obs (R, N, D), keys (R,)) -> (action, logp, value)`` with
    shapes ``(R, N)``, ``(R, N)``, ``(R, N, V)`` (V = 2 with RND). ``update(states (R..), rnd
    (R..), roll, anchors, coefs (R..), hyper, keys (R,)) -> (states, rnd, metrics)``: the batch
    of each env's rollout (``agents/ppo/advantages.py``: GAE, plus RND's intrinsic stream when
    ``config.rnd``; ``roll`` leaves ``(R, T, N, ...)``, ``final_obs`` the true next observation
    of every step, ``last_obs`` ``(R, N, D)`` the observation after the rollout) then
    ``update_epochs``; ``anchors`` and ``hyper`` are shared by every run."""
    nets = make_ppo_networks(config)
    build_batch = make_batch_builder(config)

    def act_one(actor, critic, obs, key):
        stage = jnp.zeros(obs.shape[0], jnp.int32)
        logits = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(actor, obs, stage)
        action, logp = jax.vmap(sample_action)(jax.random.split(key, obs.shape[0]), logits)
        value = jax.vmap(nets.critic_values, in_axes=(None, 0, 0))(critic, obs, stage)
        return action.astype(jnp.int32), logp, value

    def update_one(ts, rnd, roll, anchors, coefs, hyper, key):
        t, n = roll["reward"].shape
        stage = jnp.zeros((t, n), jnp.int32)
        rollout = Rollout(
            obs=roll["obs"],
            stage=stage,
            action=roll["action"],
            logp=roll["logp"],
            value=roll["value"],
            reward=roll["reward"],
            terminated=roll["terminated"],
            truncated=roll["truncated"],
            next_obs=roll["final_obs"],
            next_stage=stage,
        )
        batch, rnd, metrics = build_batch(ts, rnd, rollout, roll["last_obs"], stage[0], hyper)
        flat = jax.tree.map(lambda x: x.reshape(t * n, *x.shape[2:]), batch)
        ts, upd = update_epochs(
            ts,
            flat,
            anchors,
            coefs,
            hyper,
            key,
            epochs=epochs,
            minibatches=minibatches,
            clip_value_loss=clip_value_loss,
        )
        return ts, rnd, {**upd, **{k if "/" in k else f"ppo/{k}": v for k, v in metrics.items()}}

    act = jax.jit(jax.vmap(act_one))
    update = jax.jit(jax.vmap(update_one, in_axes=(0, 0, 0, None, 0, None, 0)))
    return act, update


def _act(act, states, obs, key):
    keys = jax.random.split(key, obs.shape[0])
    return act(states.actor_params, states.critic_params, jnp.asarray(obs), keys)


def make_policy(act, states) -> Policy:
    """Sampled actions of every run of the stacked ``states``, as NumPy."""
    return lambda obs, key: np.asarray(_act(act, states, obs, key)[0])


def train_runs(
    cfg,
    game: HostGame,
    config,
    states,
    coefs,
    anchors,
    hyper,
    start,
    total_steps,
    key,
    out_dir,
    tag,
    log=print,
):
    """Train R runs (stacked ``states``) on host-stepped envs of ``game`` (every env of every
    run begins at ``start``) for ``total_steps`` env steps per run; evaluate at every chunk
    start and at the end; curves go to ``out_dir/<tag>_curves.npz`` after each chunk. Returns
    (states, curves, wall seconds). Episode returns (unscaled) and lengths are counted here.
    Resumes from ``out_dir/<tag>_state`` when there is one (see the module docstring)."""
    act, update = make_learner(config, cfg.epochs, cfg.minibatches, cfg.clip_value_loss)
    diagnose = None  # pi*'s diagnostics (agents/ppo/diagnostics.py): fine-tuning only
    if tag == "finetune":
        diagnose = chunks.compiled_diagnose(make_diagnose, config)
        far_pool = jnp.asarray(game.far_idx, jnp.int32)
    r, n, t = len(jax.tree.leaves(coefs)[0]), cfg.num_envs, cfg.num_steps
    n_chunks, out_dir = total_steps // cfg.steps_per_chunk, Path(out_dir)
    state_dir, curves_path = _state_dir(out_dir, tag), out_dir / f"{tag}_curves.npz"
    curves: dict[str, list] = {}
    done = 0
    rnd = stack_runs([init_rnd_stats(config.obs_dim, n)] * r)  # RND normalisers per run
    if check_resume(cfg, out_dir, tag, total_steps) is not None:
        (states, rnd, raw), info = ckpt.load_runs(
            state_dir, (states, rnd, jax.random.key_data(key))
        )
        key, done = jax.random.wrap_key_data(raw), int(info["chunks_done"])
        curves = _load_curves(curves_path, done)
        log(f"[{tag}] resuming after chunk {done}/{n_chunks} (episodes in flight restart)")
    vec, obs = game.open(cfg, r * n, cfg.seed + 1009 * done, start)
    obs = obs.reshape(r, n, -1)
    ep_ret, ep_len = np.zeros(r * n), np.zeros(r * n, np.int64)
    t0, step = time.perf_counter(), done * cfg.steps_per_chunk
    try:
        while True:
            key, k_eval = jax.random.split(key)
            for name, v in game.evaluate(cfg, make_policy(act, states), r, k_eval).items():
                curves.setdefault(name, []).append(v)
            if diagnose is not None:
                for name, v in jax.device_get(diagnose(states, anchors, far_pool)).items():
                    curves.setdefault(f"diag/{name}", []).append(np.asarray(v))
            if step >= total_steps:
                break
            rets, lens, eps = np.zeros(r), np.zeros(r), np.zeros(r)  # per run
            for _ in range(cfg.steps_per_chunk // (n * t)):
                roll: dict[str, list] = {}
                for _ in range(t):
                    key, k = jax.random.split(key)
                    a, logp, value = jax.device_get(_act(act, states, obs, k))
                    nxt, rew, term, trunc, info = vec.step(a.reshape(-1))
                    ep_ret, ep_len = ep_ret + rew, ep_len + 1
                    ends = term | trunc
                    run_of = np.flatnonzero(ends) // n
                    np.add.at(rets, run_of, ep_ret[ends])
                    np.add.at(lens, run_of, ep_len[ends])
                    np.add.at(eps, run_of, 1)
                    ep_ret[ends], ep_len[ends] = 0.0, 0
                    host = {
                        "reward": rew * cfg.reward_scale,
                        "terminated": term,
                        "truncated": trunc,
                        "final_obs": info["final_obs"],
                    }
                    host = {k_: v.reshape(r, n, *v.shape[1:]) for k_, v in host.items()}
                    step_data = {"obs": obs, "action": a, "logp": logp, "value": value, **host}
                    for k_, v in step_data.items():
                        roll.setdefault(k_, []).append(v)
                    obs = nxt.reshape(r, n, -1)
                batch = {k_: jnp.asarray(np.stack(v, axis=1)) for k_, v in roll.items()}
                key, k = jax.random.split(key)
                batch["last_obs"] = jnp.asarray(obs)
                states, rnd, metrics = update(
                    states, rnd, batch, anchors, coefs, hyper, jax.random.split(k, r)
                )
            step += cfg.steps_per_chunk
            with np.errstate(invalid="ignore"):  # NaN: no episode of that run ended
                curves.setdefault("train/episode_return", []).append(rets / eps)
                curves.setdefault("train/episode_length", []).append(lens / eps)
                curves.setdefault("train/episodes", []).append(eps)
            for name, v in jax.device_get(metrics).items():
                curves.setdefault(name, []).append(np.asarray(v))
            far = " ".join(f"{v:.2f}" for v in np.asarray(curves["eval/far_success"][-1]))
            ret = rets.sum() / eps.sum() if eps.sum() else float("nan")
            log(
                f"[{tag}] {step}/{total_steps} steps/run, {time.perf_counter() - t0:.0f}s; "
                f"train return {ret:.1f} ({int(eps.sum())} episodes), Far success at chunk "
                f"start [{far}]"
            )
            _save_curves(curves_path, curves, cfg.steps_per_chunk)  # then the state: see _load
            info = {"chunks_done": step // cfg.steps_per_chunk, "step": step, "tag": tag}
            ckpt.save_runs(
                state_dir,
                (states, rnd, jax.random.key_data(key)),
                {**info, "resume_key": cfglib.resume_key(cfg)},
            )
    except KeyboardInterrupt:
        raise ckpt.RunInterrupted(
            f"interrupted at {step}/{total_steps} env steps per run; the same command resumes "
            "from the last finished chunk"
        ) from None
    finally:
        vec.close()
    _save_curves(curves_path, curves, cfg.steps_per_chunk)
    return states, {k: np.stack(v) for k, v in curves.items()}, time.perf_counter() - t0


def _state_dir(out_dir: str | Path, tag: str) -> Path:
    return Path(out_dir) / f"{tag}_state"


def check_resume(cfg, out_dir: str | Path, tag: str, total_steps: int) -> dict[str, Any] | None:
    """The run-state checkpoint's info when ``out_dir`` has one this config may resume (None:
    none); a ``CheckpointError`` for one of another configuration (the run lengths aside) or
    with more chunks done than ``total_steps`` asks for. Entry points call it before they write."""
    return chunks.check_resume(
        _state_dir(out_dir, tag),
        cfglib.resume_key(cfg),
        total_steps // cfg.steps_per_chunk,
        cfglib.resume_extendable(cfg),
    )


def _load_curves(path: Path, done: int) -> dict[str, list]:
    """The first ``done`` rows of every curve (a later row: the evaluation after the last saved
    state, redone on resume). The curves are written before the state, so they have them all."""
    if not path.is_file():
        raise ckpt.CheckpointError(f"{path} is missing: the run state cannot be resumed")
    with np.load(path) as z:
        curves = {k.replace("__", "/"): list(z[k][:done]) for k in z.files if k != "env_steps"}
    if any(len(v) < done for v in curves.values()):
        raise ckpt.CheckpointError(f"{path} has fewer than the {done} chunks of the run state")
    return curves


def _save_curves(path: Path, curves: dict[str, list], every: int) -> None:
    arrays = {k: np.stack(v) for k, v in curves.items()}
    x = np.arange(len(curves["eval/far_success"])) * every
    results.savez(path, env_steps=x, **{k.replace("/", "__"): v for k, v in arrays.items()})


def collect_states(cfg, game: HostGame, config, state, start, key, n_states: int) -> np.ndarray:
    """Observations pi* (one unstacked ``state``) visits from ``start`` (BC / Fisher states)."""
    act, _ = make_learner(config, cfg.epochs, cfg.minibatches, cfg.clip_value_loss)
    policy = make_policy(act, stack_runs([state]))
    vec, obs = game.open(cfg, cfg.num_envs, cfg.seed + 1, start)
    out = []
    try:
        for t in range(-(-n_states // cfg.num_envs)):
            out.append(obs)
            obs = vec.step(policy(obs[None], jax.random.fold_in(key, t)).reshape(-1))[0]
    finally:
        vec.close()
    return np.concatenate(out)[:n_states]


def run_grid(cfg, config, hyper, pre, key) -> tuple[list, Any, Any]:
    """``(labels, states, coefs)`` of every method x seed: ``(method, seed)`` labels, train
    states (pi*'s parameters, or a fresh init for ``random_init`` methods) and coefficients,
    stacked on the runs axis."""

    def build(method: str, entry: terms.Method, s: int) -> Any:
        if entry.random_init:
            return init_train_state(config, hyper, jax.random.fold_in(key, s))
        return train_state_from_params(config, hyper, pre.actor_params, pre.critic_params)

    labels, states, coefs = method_grid(cfg, build)
    return labels, stack_runs(states), stack_runs(coefs)


def far_states(cfg, game: HostGame, config, state, start, out_dir: Path, log) -> np.ndarray:
    """pi*'s Far states for the anchors (``collect_states``), kept in ``out_dir/far_states.npz``
    and reused when the fine-tuning resumes (so the anchors stay those of the first chunk)."""
    path, n = Path(out_dir) / "far_states.npz", max(cfg.bc_states, cfg.fisher_states)
    if _state_dir(out_dir, "finetune").exists() and path.is_file():
        with np.load(path) as z:
            data = z["obs"]
        if len(data) == n:
            return data
    log(f"[finetune] collecting {n} pi* states from {start} ...")
    data = collect_states(
        cfg, game, config, state, start, jax.random.fold_in(jax.random.key(cfg.seed), 0), n
    )
    results.savez(path, obs=data)
    return data


def far_anchors(cfg, config, pre, data: np.ndarray):
    """BC targets on the first ``bc_states`` of ``data`` (pi*'s Far states) and the EWC Fisher on
    ``fisher_states`` drawn uniformly from all of them (as Continual World samples its buffer)."""
    zeros = np.zeros(len(data), np.int32)
    fi = fisher_sample(len(data), cfg.fisher_states, cfg.seed)
    return make_anchors(
        config,
        pre.actor_params,
        pre.critic_params,
        data[: cfg.bc_states],
        zeros[: cfg.bc_states],
        data[fi],
        zeros[fi],
    )


def finetune_study(
    cfg, game: HostGame, config, hyper, pre, data, start, out_dir, log, info: dict[str, Any]
) -> tuple[list, dict[str, np.ndarray]]:
    """Fine-tune every method x seed from ``start`` with anchors on pi*'s Far states ``data``;
    writes ``finetune_curves.npz``, ``summary.csv``, the plots and ``run_info.json``. Returns
    the ``(method, seed)`` labels and the curves."""
    key = jax.random.key(cfg.seed)
    anchors = far_anchors(cfg, config, pre, data)
    labels, states, coefs = run_grid(cfg, config, hyper, pre, jax.random.fold_in(key, 1))
    log(
        f"[finetune] {len(labels)} runs x {cfg.finetune_steps} env steps from {start}, "
        f"{cfg.num_envs} envs each"
    )
    _, curves, wall = train_runs(
        cfg,
        game,
        config,
        states,
        coefs,
        anchors,
        hyper,
        start,
        cfg.finetune_steps,
        jax.random.fold_in(key, 2),
        out_dir,
        "finetune",
        log,
    )
    env = study_report.Stages(tuple(game.stages))
    info = {"wall_s": wall, **info}
    study_report.write_finetune(cfg, env, labels, curves, game.far_idx, out_dir, info, log)
    return labels, curves


def load_pretrained(cfg, config, out_dir: Path):
    """(path, checkpoint) of the pre-trained PPO policy: ``cfg.checkpoint`` or
    ``<out>/../pretrain/policy`` (a pre-train run folder stands for its ``policy``); a clear error
    when there is none."""
    path = study.resolve_checkpoint(cfg.checkpoint, str(out_dir.parent / "pretrain" / "policy"))
    if not (path / "meta.json").is_file() and (path / "policy" / "meta.json").is_file():
        path = path / "policy"
    if not (path / "meta.json").is_file():
        raise CheckpointError(
            f"no pre-trained policy at {str(path)!r}: run `fpc-jax pretrain` "
            "first or set checkpoint"
        )
    return path, ppo_study.load_policy(path, config)
