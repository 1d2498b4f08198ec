"""The SAC FPC study on a pure-JAX stitched env: pre-train on Far, fine-tune every method x seed.

The env is a pure-JAX registry env (the toy ``point_sequence``) or, with ``backend: mjx``, the
Meta-World RoboticSequence on MJX-Warp (docs/mjx_backend.md), so the whole study runs on-device.

``pretrain(cfg, out)``: multi-task SAC on the Far stages (each episode one Far stage alone, with
its head), saved as a policy checkpoint. ``finetune(cfg, out)``: loads it, builds the retention
anchors (theta*, EWC Fisher, BC states, EM transitions) from pi* on the Far stages, and trains all
methods x seeds as one vmapped program, the runs axis sharded over every device. Results are
written after every chunk; an interrupted run resumes from its last run-state checkpoint with
identical results.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.sac.anchors import make_anchors
from fpc_jax.agents.sac.losses import Batch
from fpc_jax.agents.sac.networks import SACConfig, zero_critic_heads
from fpc_jax.agents.sac.train import LoopStatic, init_run_state, make_policy
from fpc_jax.agents.sac.update import SACHyper, init_train_state, train_state_from_params
from fpc_jax.envs import make
from fpc_jax.envs.metaworld_cpu import DEFAULT_TASKS
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams, subsequence_params
from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import results, sharding
from fpc_jax.experiments.chunks import run_chunks
from fpc_jax.experiments.study_config import BACKENDS, SACStudyConfig, parse_method
from fpc_jax.experiments.study_report import SUMMARY_COLUMNS, plot_study, summarize, table
from fpc_jax.retention import terms
from fpc_jax.retention.penalties import RetentionCoefs

TEACHER_ENVS = 100
"""Parallel envs (vmap lanes) of the pi* rollout that collects the anchors' data."""


# ---------------------------------------------------------------------------------------------
# Shared setup


_ENVS: dict[tuple[Any, ...], tuple[SequenceEnv, SequenceParams]] = {}


def build_env(cfg: SACStudyConfig, num_envs: int = 1) -> tuple[SequenceEnv, SequenceParams]:
    """The study's env and default params, memoized per build arguments: the compiled programs
    are cached per env object (``chunks._compiled``), so equal configs share them, and an MJX env
    is built once per process. ``num_envs`` (``env_lanes``) sizes the MJX contact buffer."""
    kw: dict[str, Any] = {"T": cfg.T, "beta": cfg.beta}
    if cfg.backend:
        kw.update(backend=cfg.backend, impl=cfg.mjx_impl, num_envs=num_envs)
        if cfg.tasks:
            kw["tasks"] = tuple(cfg.tasks)
    elif cfg.tasks:
        raise cfglib.ConfigError(f"tasks needs a Meta-World backend; valid: {list(BACKENDS[1:])}")
    spec = (cfg.env, *sorted(kw.items()))
    if spec not in _ENVS:
        env, params = make(cfg.env, **kw)
        if not isinstance(env, SequenceEnv):
            raise cfglib.ConfigError(f"env {cfg.env!r} is not a pure-JAX sequence env")
        _ENVS[spec] = env, params
    return _ENVS[spec]


def env_lanes(cfg: SACStudyConfig, phase: str) -> int:
    """The most vmap lanes of any one env call in the programs of ``phase``.

    The MJX backend needs it: MuJoCo-Warp's contact buffer (``naconmax``) is shared by all lanes
    of one call, so it must hold the contacts of the widest call (too small a buffer silently drops
    contacts). The calls: a training step steps one env per run, vmapped over the runs
    (``runs`` lanes; pre-training has 1 run, fine-tuning methods x seeds); ``make_evaluate``,
    inside every chunk and once at the end, vmapped over the runs, plays ``eval_episodes``
    sequence episodes and ``num_heads x eval_episodes`` single-stage episodes per run (its widest
    call: ``runs x num_heads x eval_episodes`` lanes); fine-tuning's pi* rollout
    (``collect_teacher_data``) steps ``TEACHER_ENVS`` lanes.
    """
    heads = len(cfg.tasks or DEFAULT_TASKS)
    runs = 1 if phase == "pretrain" else len(cfg.methods) * cfg.seeds
    lanes = runs * heads * cfg.eval_episodes
    return lanes if phase == "pretrain" else max(lanes, TEACHER_ENVS)


def sac_config(cfg: SACStudyConfig, env: SequenceEnv) -> SACConfig:
    return SACConfig(
        obs_dim=env.observation_size,
        act_dim=env.action_size,
        num_heads=env.num_heads,
        hidden_sizes=tuple(cfg.hidden_sizes),
        first_activation=cfg.first_activation,
        hidden_activation=cfg.hidden_activation,
        batch_size=cfg.batch_size,
    )


def sac_hyper(cfg: SACStudyConfig, act_dim: int) -> SACHyper:
    return SACHyper.create(
        act_dim, lr=cfg.lr, gamma=cfg.gamma, polyak=cfg.polyak, init_log_alpha=cfg.init_log_alpha
    )


def loop_static(cfg: SACStudyConfig, phase: str) -> LoopStatic:
    pre = phase == "pretrain"
    return LoopStatic(
        steps_per_chunk=cfg.steps_per_chunk,
        update_every=cfg.update_every,
        update_after=cfg.update_after,
        start_steps=cfg.pretrain_start_steps if pre else cfg.finetune_start_steps,
        buffer_capacity=cfg.buffer_capacity,
        em_reserved=0 if pre or not cfg.uses_em else cfg.em_transitions,
        eval_episodes=cfg.eval_episodes,
        stage_horizon=cfg.T,
        episode_mode="single" if pre else "sequence",
    )


def _bcast(tree: Any, n: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)


# ---------------------------------------------------------------------------------------------
# Pre-training


def pretrain(cfg: SACStudyConfig, out_dir: str | Path, log=print) -> Path:
    """Multi-task SAC on the Far stages; writes ``out_dir/policy`` and the pre-training curves."""
    if cfg.pretrain_steps < 1:
        raise cfglib.ConfigError("pretrain_steps must be >= 1 to pre-train")
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    env, params = build_env(cfg, env_lanes(cfg, "pretrain"))
    config = sac_config(cfg, env)
    hyper = sac_hyper(cfg, config.act_dim)
    static = loop_static(cfg, "pretrain")
    pool = jnp.asarray(env.far_stages, jnp.int32)
    key = jax.random.key(cfg.seed)
    sac = init_train_state(config, hyper, key)
    runs = jax.tree.map(
        lambda x: x[None],
        init_run_state(env, static, sac, params, pool, jax.random.fold_in(key, 1)),
    )
    log(f"[pretrain] multi-task SAC on Far stages {[env.stage_names[k] for k in env.far_stages]}"
        f" for {cfg.pretrain_steps} env steps")  # fmt: skip
    runs, curves, timing = run_chunks(
        env=env, static=static, config=config, runs=runs,
        anchors=_null_anchors(config, sac), coefs=_bcast(RetentionCoefs.create(), 1),
        hyper=_bcast(hyper, 1), params=params, stage_pool=pool,
        total_steps=cfg.pretrain_steps, out_dir=out_dir, tag="pretrain",
        resume_key=cfglib.resume_key(cfg), extendable=cfglib.resume_extendable(cfg),
        checkpoint_every=cfg.checkpoint_every, log=log,
    )  # fmt: skip
    state = jax.tree.map(lambda x: x[0], runs.sac)
    far = curves["eval/stage_success"][-1, 0, list(env.far_stages)]
    backend = {"backend": cfg.backend, "tasks": list(env.stage_names)} if cfg.backend else {}
    policy = ckpt.save_policy(out_dir / "policy", state, {
        "env": cfg.env, **backend,
        "stage_names": list(env.stage_names), "far_stages": list(env.far_stages),
        "T": cfg.T, "pretrain_steps": cfg.pretrain_steps, "seed": cfg.seed,
        "far_success": far.tolist(), "wall_s": timing["wall_s"],
        "device": jax.devices()[0].device_kind,
    })  # fmt: skip
    log(f"[pretrain] Far-stage success alone: {np.round(far, 3).tolist()}; wrote {policy} "
        f"({timing['wall_s']:.0f}s)")  # fmt: skip
    return policy


def _null_anchors(config: SACConfig, sac) -> Any:
    from fpc_jax.agents.sac.anchors import placeholder_anchors

    return placeholder_anchors(config, sac.actor_params, sac.critic_params, 1)


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def collect_teacher_data(
    env: SequenceEnv,
    params: SequenceParams,
    config: SACConfig,
    actor_params: Any,
    far_stages: tuple[int, ...],
    n: int,
    key: jax.Array,
    num_envs: int = TEACHER_ENVS,
) -> Batch:
    """``n`` transitions of pi* (sampled actions) on the Far stages, played as a sequence of the
    Far stages alone (I: "states from the Far stages collected with pi*"), auto-resetting."""
    far_params = subsequence_params(params, far_stages)
    steps = -(-n // num_envs)
    traj = _teacher_rollout(env, config, steps)(actor_params, far_params, key, num_envs)
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:])[:n], traj)


_ROLLOUTS: dict[Any, Any] = {}


def _teacher_rollout(env: SequenceEnv, config: SACConfig, steps: int):
    """Jitted pi* rollouts, cached per (env, network, length)."""
    key = (env, config, steps)
    if key not in _ROLLOUTS:
        _ROLLOUTS[key] = _build_teacher_rollout(env, config, steps)
    return _ROLLOUTS[key]


def _build_teacher_rollout(env: SequenceEnv, config: SACConfig, steps: int):
    sample, _ = make_policy(config)

    @functools.partial(jax.jit, static_argnums=(3,))
    def rollouts(actor_params, far_params, key, num_envs):
        return jax.vmap(lambda k: run(k, actor_params, far_params))(jax.random.split(key, num_envs))

    def run(key, actor_params, far_params):
        def body(carry, k):
            obs, state = carry
            k_act, k_env, k_reset = jax.random.split(k, 3)
            action = sample(actor_params, obs, state.stage, k_act)
            next_obs, next_state, reward, term, trunc, info = env.step(
                k_env, state, action, far_params
            )
            tr = Batch(obs=obs, action=action, reward=reward, next_obs=next_obs,
                       discount_mask=1.0 - info["stage_terminal"].astype(jnp.float32),
                       stage=info["stage"])  # fmt: skip
            r_obs, r_state = env.reset(k_reset, far_params)
            done = term | trunc
            carry = jax.tree.map(
                lambda a, b: jnp.where(done, a, b), (r_obs, r_state), (next_obs, next_state)
            )
            return carry, tr

        k0, k1 = jax.random.split(key)
        init = env.reset(k0, far_params)
        _, traj = jax.lax.scan(body, init, jax.random.split(k1, steps))
        return traj

    return rollouts


ASSETS = Path(__file__).resolve().parents[1] / "assets"


def resolve_checkpoint(spec: str, default: str) -> Path:
    """``''``: ``default``; ``asset:NAME``: the packaged ``fpc_jax/assets/NAME``; else a path."""
    if not spec:
        return Path(default)
    if spec.startswith("asset:"):
        name = spec.removeprefix("asset:")
        path = ASSETS / name
        if not path.is_dir():
            have = sorted(p.name for p in ASSETS.iterdir() if p.is_dir()) if ASSETS.is_dir() else []
            raise ckpt.CheckpointError(f"no packaged asset {name!r}; packaged: {have}")
        return path
    return Path(spec)


def finetune(
    cfg: SACStudyConfig,
    out_dir: str | Path,
    log=print,
    mesh: Any = None,
    stop_after: int | None = None,
) -> Path | None:
    """Fine-tune every method x seed from the pre-trained checkpoint; write results in out_dir."""
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    env, params = build_env(cfg, env_lanes(cfg, "finetune"))
    config = sac_config(cfg, env)
    hyper = sac_hyper(cfg, config.act_dim)
    static = loop_static(cfg, "finetune")
    default = f"runs/{cfg.backend or 'toy'}/{cfg.name}/pretrain/policy"  # cli.py's pretrain --out
    path = resolve_checkpoint(cfg.checkpoint, default)
    pre = ckpt.load_policy(path, expected=config)
    if pre.meta.get("env") not in (None, cfg.env):
        raise ckpt.CheckpointError(
            f"{path} was pre-trained on {pre.meta['env']!r}, not {cfg.env!r}"
        )
    if "tasks" in pre.meta and tuple(pre.meta["tasks"]) != env.stage_names:
        raise ckpt.CheckpointError(
            f"{path} was pre-trained on the tasks {pre.meta['tasks']} (one head each), but the "
            f"env's heads are {list(env.stage_names)}"
        )
    far = tuple(pre.meta.get("far_stages", env.far_stages))
    key = jax.random.key(cfg.seed)
    k_data, k_runs = jax.random.split(key)
    n_data = max(cfg.bc_states, cfg.em_transitions, cfg.fisher_states)
    log(f"[finetune] collecting {n_data} pi* transitions on Far stages {list(far)} ...")
    data = collect_teacher_data(env, params, config, pre.state.actor_params, far, n_data, k_data)
    anchors = make_anchors(
        config, pre.state.actor_params, pre.state.critic_params,
        data.obs[: cfg.bc_states], data.stage[: cfg.bc_states],
        data.obs[: cfg.fisher_states], data.stage[: cfg.fisher_states],
    )  # fmt: skip
    em = jax.tree.map(lambda x: x[: cfg.em_transitions], data)
    pool = jnp.asarray(far, jnp.int32)
    labels, run_states, coef_list = [], [], []
    for method in cfg.methods:
        for s in range(cfg.seeds):
            k = jax.random.fold_in(k_runs, s)  # same seed key for every method
            base = parse_method(method)[0]
            if terms.method(base).random_init:
                sac = init_train_state(config, hyper, jax.random.fold_in(k, 1))
            else:
                sac = train_state_from_params(
                    config, hyper, pre.state.actor_params, pre.state.critic_params,
                    log_alpha=pre.state.log_alpha,
                )  # fmt: skip
                sac = sac.replace(target_critic_params=pre.state.target_critic_params)
                if cfg.new_critic_heads == "zero":
                    sac = sac.replace(
                        critic_params=zero_critic_heads(sac.critic_params, far),
                        target_critic_params=zero_critic_heads(sac.target_critic_params, far),
                    )
            run = init_run_state(
                env, static, sac, params, pool, jax.random.fold_in(k, 2),
                em_transitions=em if terms.method(base).reserves_replay else None,
            )  # fmt: skip
            labels.append((method, s))
            run_states.append(run)
            coef_list.append(cfg.coefs(method))
    n = len(labels)
    runs = jax.tree.map(lambda *xs: jnp.stack(xs), *run_states)
    coefs = jax.tree.map(lambda *xs: jnp.stack(xs), *coef_list)
    hyp = _bcast(hyper, n)
    if mesh is None:
        mesh = sharding.runs_mesh(n)
    log(f"[finetune] {n} runs ({len(cfg.methods)} methods x {cfg.seeds} seeds) x "
        f"{cfg.finetune_steps} env steps, one program on {sharding.describe(mesh)}")  # fmt: skip
    out = run_chunks(
        env=env, static=static, config=config, runs=runs, anchors=anchors, coefs=coefs,
        hyper=hyp, params=params, stage_pool=pool, total_steps=cfg.finetune_steps,
        out_dir=out_dir, tag="finetune", resume_key=cfglib.resume_key(cfg),
        extendable=cfglib.resume_extendable(cfg),
        checkpoint_every=cfg.checkpoint_every, log=log, mesh=mesh, stop_after=stop_after,
    )  # fmt: skip
    if out is None:
        return None
    runs, curves, timing = out
    rows = summarize(labels, curves, far, env)
    results.write_csv(out_dir / "summary.csv", rows, SUMMARY_COLUMNS)
    x = np.arange(curves["eval/all_solved"].shape[0]) * cfg.steps_per_chunk
    plot_study(cfg, env, labels, curves, x, far, out_dir)
    results.write_json(out_dir / "run_info.json", {
        **results.environment_info(), **timing, "runs": n, "labels": labels,
        "env_steps_per_run": cfg.finetune_steps,
        "agent_steps_per_s": n * cfg.finetune_steps / timing["wall_s"],
    })  # fmt: skip
    for line in table(cfg, rows):
        log(line)
    log(f"[finetune] {timing['wall_s']:.0f}s wall; wrote {out_dir}/summary.csv and plots")
    return out_dir
