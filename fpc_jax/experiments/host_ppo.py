"""The FPC study with PPO on the real Montezuma's Revenge (ale-py), host-stepped (issue 13).

R runs (methods x seeds) each own ``num_envs`` envs of one ``MontezumaVec``; one jitted program
vmapped over runs acts for all of them (obs ``(R, N, 42)`` RAM features, the CPU-budget deviation
of docs/montezuma.md), the host steps the games, and one jitted, vmapped program computes GAE and
runs the PPO agent's ``update_epochs`` with each run's retention coefficients (ft, bc, ks, ewc,
l2, scratch), as ``robotic_sequence`` does for SAC. ``pretrain(cfg, out)`` trains pi* from the
Far starts (room7-room9); ``finetune(cfg, out)`` fine-tunes every method x seed from the game
start (room1). Metrics (Wolczyk et al. 2024): Far success = per-room success from each Far start,
Close success = per-room success of game-start episodes, full success = reaching a Far room.
No resumable checkpoint yet: curves are written after every chunk, the run state is not.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.ppo.anchors import make_anchors, placeholder_anchors
from fpc_jax.agents.ppo.diagnostics import make_diagnose
from fpc_jax.agents.ppo.losses import PPOBatch, gae
from fpc_jax.agents.ppo.networks import PPOConfig, make_ppo_networks, sample_action
from fpc_jax.agents.ppo.update import (
    PPOHyper,
    init_train_state,
    stack_runs,
    train_state_from_params,
    update_epochs,
)
from fpc_jax.envs import ale_montezuma as mz
from fpc_jax.experiments import chunks, ppo_study, results, study, study_report
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments.checkpoint import CheckpointError
from fpc_jax.experiments.montezuma_config import (  # noqa: F401 (the schema lives there)
    ENV,
    ROUTE,
    MontezumaStudyConfig,
    default_out,
    hyper_kwargs,
    network,
)
from fpc_jax.experiments.study_config import parse_method
from fpc_jax.retention import terms
from fpc_jax.retention.fisher import fisher_sample
from fpc_jax.retention.penalties import RetentionCoefs


def make_vec(cfg: MontezumaStudyConfig, num_envs: int, seed: int):
    vec, _ = mz.make_montezuma(
        num_envs=num_envs, seed=seed, workers=min(cfg.workers, num_envs), obs="ram",
        sticky=cfg.sticky, max_steps=cfg.max_steps, terminal_on_life_loss=cfg.terminal_on_life_loss,
        asset=cfg.asset or None,
    )  # fmt: skip
    return vec


# ---------------------------------------------------------------------------------------------
# The learner: one acting program and one update program, both vmapped over runs


@functools.cache
def make_learner(config: PPOConfig, epochs: int, minibatches: int, clip_value_loss: bool):
    """``(act, update)``, jitted and vmapped over the runs axis.

    ``act(actor (R..), critic (R..), obs (R, N, D), keys (R,)) -> (action, logp, value)`` with
    shapes ``(R, N)``, ``(R, N)``, ``(R, N, 1)``. ``update(states (R..), roll, anchors,
    coefs (R..), hyper, keys (R,))``: GAE over each env's rollout (``roll`` leaves ``(R, T, N,
    ...)``; ``final_obs`` the true next observation of every step) then ``update_epochs``;
    ``anchors`` and ``hyper`` are shared by every run."""
    nets = make_ppo_networks(config)

    def act_one(actor, critic, obs, key):
        stage = jnp.zeros(obs.shape[0], jnp.int32)
        logits = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(actor, obs, stage)
        action, logp = jax.vmap(sample_action)(jax.random.split(key, obs.shape[0]), logits)
        value = jax.vmap(nets.critic_values, in_axes=(None, 0, 0))(critic, obs, stage)
        return action.astype(jnp.int32), logp, value

    def update_one(ts, roll, anchors, coefs, hyper, key):
        t, n = roll["reward"].shape
        stage = jnp.zeros((t, n), jnp.int32)
        values_tn = jax.vmap(jax.vmap(nets.critic_values, in_axes=(None, 0, 0)),
                             in_axes=(None, 0, 0))  # fmt: skip
        next_value = values_tn(ts.critic_params, roll["final_obs"], stage)[..., 0]
        gae_n = jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)
        adv, ret = gae_n(roll["reward"], roll["value"][..., 0], next_value, roll["terminated"],
                         roll["truncated"], hyper.gamma, hyper.gae_lambda)  # fmt: skip
        batch = PPOBatch(obs=roll["obs"], stage=stage, action=roll["action"], logp=roll["logp"],
                         value=roll["value"], returns=ret[..., None], advantage=adv,
                         rnd_obs=roll["final_obs"])  # fmt: skip
        flat = jax.tree.map(lambda x: x.reshape(t * n, *x.shape[2:]), batch)
        return update_epochs(ts, flat, anchors, coefs, hyper, key, epochs=epochs,
                             minibatches=minibatches, clip_value_loss=clip_value_loss)  # fmt: skip

    act = jax.jit(jax.vmap(act_one))
    update = jax.jit(jax.vmap(update_one, in_axes=(0, 0, None, 0, None, 0)))
    return act, update


def _act(act, states, obs, key):
    keys = jax.random.split(key, obs.shape[0])
    return act(states.actor_params, states.critic_params, jnp.asarray(obs), keys)


def evaluate(cfg, act, states, key, far_starts: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per-room success of every run: ``eval/stage_success`` (R, 9) (Far rooms from their own
    start, Close rooms from game-start episodes), ``eval/all_solved`` (R,) (game-start episodes
    that reach a Far room), ``eval/stages_solved_frac`` (R,), ``eval/far_success`` (R,)."""
    starts = mz.load_starts(cfg.asset or None)
    r, e = jax.tree.leaves(states.actor_params)[0].shape[0], cfg.eval_episodes
    vec = make_vec(cfg, r * e, seed=int(jax.random.randint(key, (), 0, 2**30)) + 7)
    ram = {k: starts.get(k).ram_room for k in ROUTE}
    masks = {}
    try:
        for start in (cfg.finetune_start, *far_starts):
            obs, key = vec.reset(start), jax.random.fold_in(key, 1)
            done = np.zeros(r * e, bool)
            visited, succ = np.zeros(r * e, np.int64), np.zeros(r * e, np.int64)
            for t in range(cfg.max_steps):
                a, _, _ = _act(act, states, obs.reshape(r, e, -1), jax.random.fold_in(key, t))
                obs, _, term, trunc, info = vec.step(np.asarray(a).reshape(-1))
                new = (term | trunc) & ~done
                visited[new], succ[new] = info["episode_visited"][new], info["episode_success"][new]
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
        s = masks[name][1] if name in far_starts else game_s
        stage[:, k] = ((s & bit(ram[name])) != 0).mean(-1)
    far_idx = [ROUTE.index(n) for n in far_starts]
    far_bits = sum(bit(ram[n]) for n in starts.far)
    full = ((game_v & far_bits) != 0).mean(-1)
    return {"eval/stage_success": stage, "eval/all_solved": full.astype(np.float32),
            "eval/stages_solved_frac": stage.mean(-1),
            "eval/far_success": stage[:, far_idx].mean(-1)}  # fmt: skip


def train_runs(cfg, config, states, coefs, anchors, hyper, env_starts, total_steps, key, out_dir,
               tag, far_starts, log=print):  # fmt: skip
    """Train R runs (stacked ``states``) on host-stepped envs (``env_starts``: one start per env
    of one run) for ``total_steps`` env steps per run; evaluate at every chunk start and at the
    end; curves go to ``out_dir/<tag>_curves.npz`` after each chunk. Returns (states, curves)."""
    act, update = make_learner(config, cfg.epochs, cfg.minibatches, cfg.clip_value_loss)
    diagnose = None  # pi*'s diagnostics (agents/ppo/diagnostics.py): fine-tuning only
    if tag == "finetune":
        diagnose = chunks.compiled_diagnose(make_diagnose, config)
        far_pool = jnp.asarray([ROUTE.index(n) for n in far_starts], jnp.int32)
    r, n, t = len(jax.tree.leaves(coefs)[0]), cfg.num_envs, cfg.num_steps
    vec = make_vec(cfg, r * n, seed=cfg.seed)
    curves: dict[str, list] = {}
    obs = vec.reset(list(env_starts) * r).reshape(r, n, -1)
    t0, step = time.perf_counter(), 0
    try:
        while True:
            key, k_eval = jax.random.split(key)
            for name, v in evaluate(cfg, act, states, k_eval, far_starts).items():
                curves.setdefault(name, []).append(v)
            if diagnose is not None:
                for name, v in jax.device_get(diagnose(states, anchors, far_pool)).items():
                    curves.setdefault(f"diag/{name}", []).append(np.asarray(v))
            if step >= total_steps:
                break
            rets, lens = [], []
            for _ in range(cfg.steps_per_chunk // (n * t)):
                roll = {k: [] for k in ("obs", "action", "logp", "value", "reward",
                                        "terminated", "truncated", "final_obs")}  # fmt: skip
                for _ in range(t):
                    key, k = jax.random.split(key)
                    a, logp, value = jax.device_get(_act(act, states, obs, k))
                    nxt, rew, term, trunc, info = vec.step(a.reshape(-1))
                    ends = term | trunc
                    rets += list(info["episode_return"][ends])
                    lens += list(info["episode_length"][ends])
                    host = {
                        "reward": rew * cfg.reward_scale,
                        "terminated": term,
                        "truncated": trunc,
                        "final_obs": info["final_obs"],
                    }
                    step_data = {
                        "obs": obs,
                        "action": a,
                        "logp": logp,
                        "value": value,
                        **{k_: v.reshape(r, n, *v.shape[1:]) for k_, v in host.items()},
                    }
                    for k_, v in step_data.items():
                        roll[k_].append(v)
                    obs = nxt.reshape(r, n, -1)
                batch = {k_: jnp.asarray(np.stack(v, axis=1)) for k_, v in roll.items()}
                key, k = jax.random.split(key)
                states, metrics = update(states, batch, anchors, coefs, hyper,
                                         jax.random.split(k, r))  # fmt: skip
            step += cfg.steps_per_chunk
            m = jax.device_get(metrics)
            curves.setdefault("train/episode_return", []).append(np.mean(rets) if rets else 0.0)
            curves.setdefault("train/episode_length", []).append(np.mean(lens) if lens else 0.0)
            for name, v in m.items():
                curves.setdefault(name, []).append(np.asarray(v))
            far = np.round(curves["eval/far_success"][-1], 2).tolist()
            ret = curves["train/episode_return"][-1]
            log(f"[{tag}] {step}/{total_steps} steps/run, {time.perf_counter() - t0:.0f}s; "
                f"train return {ret:.1f}, Far success at chunk start {far}")  # fmt: skip
            _save_curves(out_dir / f"{tag}_curves.npz", curves, cfg.steps_per_chunk)
    finally:
        vec.close()
    _save_curves(out_dir / f"{tag}_curves.npz", curves, cfg.steps_per_chunk)
    return states, {k: np.stack(v) for k, v in curves.items()}, time.perf_counter() - t0


def _save_curves(path: Path, curves: dict[str, list], every: int) -> None:
    arrays = {k: np.stack(v) for k, v in curves.items()}
    x = np.arange(len(curves["eval/far_success"])) * every
    results.savez(path, env_steps=x, **{k.replace("/", "__"): v for k, v in arrays.items()})


def collect_far_states(cfg, config, state, key, n_states: int) -> np.ndarray:
    """RAM observations pi* visits when started from the Far rooms (BC / Fisher states)."""
    act, _ = make_learner(config, cfg.epochs, cfg.minibatches, cfg.clip_value_loss)
    states = stack_runs([state])
    vec = make_vec(cfg, cfg.num_envs, seed=cfg.seed + 1)
    starts = [cfg.pretrain_starts[i % len(cfg.pretrain_starts)] for i in range(cfg.num_envs)]
    out = []
    try:
        obs = vec.reset(starts)
        for t in range(-(-n_states // cfg.num_envs)):
            out.append(obs)
            a, _, _ = _act(act, states, obs[None], jax.random.fold_in(key, t))
            obs = vec.step(np.asarray(a).reshape(-1))[0]
    finally:
        vec.close()
    return np.concatenate(out)[:n_states]


# ---------------------------------------------------------------------------------------------
# Entry points


def pretrain(cfg: MontezumaStudyConfig, out_dir: str | Path, log=print) -> Path:
    """PPO from the Far starts (envs cycle through ``pretrain_starts``); writes ``out/policy``."""
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    config, hyper = network(cfg), PPOHyper.create(**hyper_kwargs(cfg))
    key = jax.random.key(cfg.seed)
    state = init_train_state(config, hyper, jax.random.fold_in(key, 0))
    coefs = stack_runs([RetentionCoefs.preset("ft", family="ppo")])
    anchors = placeholder_anchors(config, state.actor_params, state.critic_params, 1)
    starts = [cfg.pretrain_starts[i % len(cfg.pretrain_starts)] for i in range(cfg.num_envs)]
    log(f"[pretrain] PPO from {list(cfg.pretrain_starts)}, {cfg.pretrain_steps} env steps")
    states, curves, wall = train_runs(
        cfg, config, stack_runs([state]), coefs, anchors, hyper, starts, cfg.pretrain_steps,
        jax.random.fold_in(key, 1), out_dir, "pretrain", tuple(cfg.pretrain_starts), log,
    )  # fmt: skip
    far = curves["eval/far_success"][:, 0]
    per_room = dict(
        zip(
            cfg.pretrain_starts,
            curves["eval/stage_success"][
                -1, 0, [ROUTE.index(s) for s in cfg.pretrain_starts]
            ].tolist(),
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
    results.write_json(out_dir / "run_info.json", {**results.environment_info(), "wall_s": wall,
                       **meta, "far_success_curve": far.tolist()})  # fmt: skip
    log(f"[pretrain] {wall:.0f}s; pi* Far success {far[-1]:.3f} per room {per_room}")
    return out_dir / "policy"


def finetune(cfg: MontezumaStudyConfig, out_dir: str | Path, log=print) -> Path:
    """Fine-tune every method x seed from the game start; writes summary.csv, curves, plots."""
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    config, hyper = network(cfg), PPOHyper.create(**hyper_kwargs(cfg))
    path = study.resolve_checkpoint(cfg.checkpoint, str(out_dir.parent / "pretrain" / "policy"))
    if not (path / "meta.json").is_file():
        raise CheckpointError(f"no pre-trained policy at {str(path)!r}: run `fpc-jax pretrain` "
                              "first or set checkpoint")  # fmt: skip
    pre = ppo_study.load_policy(path, config)
    far = tuple(pre.meta.get("far_starts", cfg.pretrain_starts))
    key = jax.random.key(cfg.seed)
    n_data = max(cfg.bc_states, cfg.fisher_states)
    log(f"[finetune] collecting {n_data} pi* states from {list(far)} ...")
    data = collect_far_states(cfg, config, pre.state, jax.random.fold_in(key, 0), n_data)
    zeros = np.zeros(n_data, np.int32)
    fi = fisher_sample(len(data), cfg.fisher_states, cfg.seed)  # uniform over all Far states (CW)
    anchors = make_anchors(config, pre.state.actor_params, pre.state.critic_params,
                           data[: cfg.bc_states], zeros[: cfg.bc_states],
                           data[fi], zeros[fi])  # fmt: skip
    labels, states, coefs = [], [], []
    for method in cfg.methods:
        for s in range(cfg.seeds):
            k = jax.random.fold_in(jax.random.fold_in(key, 1), s)
            if terms.method(parse_method(method)[0]).random_init:
                states.append(init_train_state(config, hyper, k))
            else:
                states.append(train_state_from_params(config, hyper, pre.state.actor_params,
                                                      pre.state.critic_params))  # fmt: skip
            labels.append((method, s))
            coefs.append(cfg.coefs(method))
    log(f"[finetune] {len(labels)} runs x {cfg.finetune_steps} env steps from "
        f"{cfg.finetune_start}, {cfg.num_envs} envs each")  # fmt: skip
    _, curves, wall = train_runs(
        cfg, config, stack_runs(states), stack_runs(coefs), anchors, hyper,
        [cfg.finetune_start] * cfg.num_envs, cfg.finetune_steps, jax.random.fold_in(key, 2),
        out_dir, "finetune", far, log,
    )  # fmt: skip
    far_idx = tuple(ROUTE.index(n) for n in far)
    env = SimpleNamespace(num_heads=len(ROUTE), stage_names=ROUTE)
    rows = study_report.summarize(labels, curves, far_idx, env)
    results.write_csv(out_dir / "summary.csv", rows, study_report.SUMMARY_COLUMNS)
    x = np.arange(curves["eval/all_solved"].shape[0]) * cfg.steps_per_chunk
    study_report.plot_study(cfg, env, labels, curves, x, far_idx, out_dir)
    results.write_json(out_dir / "run_info.json", {
        **results.environment_info(), "wall_s": wall, "runs": len(labels), "labels": labels,
        "env_steps_per_run": cfg.finetune_steps, "checkpoint": str(path),
        "far_stages": list(far_idx),
        "agent_steps_per_s": len(labels) * cfg.finetune_steps / wall,
    })  # fmt: skip
    for line in study_report.table(cfg, rows):
        log(line)
    log(f"[finetune] {wall:.0f}s wall; wrote {out_dir}/summary.csv and plots")
    return out_dir
