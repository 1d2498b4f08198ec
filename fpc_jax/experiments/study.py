"""The one study driver: pre-train on the Far stages, then fine-tune every method x seed.

Every agent family (SAC: ``sac_study.SAC``, PPO: ``ppo_study.PPO``) plugs in through a
``StudyAgent``; this module builds the runs (theta* or scratch, EM, anchors, coefficient
variants, read from the retention table ``fpc_jax.retention.terms``), drives the compiled chunks
(``chunks.run_chunks``), and writes the results (``study_report``). Outputs of a fine-tune:
``summary.csv`` (``study_report.SUMMARY_COLUMNS``), ``finetune_curves.npz`` (``CURVES`` keys),
``fig_stages.png``, ``fig_sequence.png``, ``run_info.json``, ``config.yaml``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.envs.sequence import SequenceEnv, SequenceParams, subsequence_params
from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import results, sharding
from fpc_jax.experiments.chunks import check_resume, run_chunks
from fpc_jax.experiments.study_config import method_grid
from fpc_jax.experiments.study_report import SUMMARY_COLUMNS, summarize, write_finetune
from fpc_jax.retention import terms
from fpc_jax.retention.fisher import fisher_sample
from fpc_jax.retention.penalties import RetentionCoefs
from fpc_jax.runs_axis import bcast, stack

TEACHER_ENVS = 100
"""Parallel envs (vmap lanes) of the pi* rollout that collects the anchors' data."""

CURVES: dict[str, str] = {
    "eval/stage_success": "(evals, runs, heads) success of each stage played alone",
    "eval/all_solved": "(evals, runs) fraction of whole-sequence episodes solving every stage",
    "eval/stages_solved_frac": "(evals, runs) mean fraction of stages solved per sequence episode",
    "eval/<mode>/<key>": "SAC: the three eval keys of each recorded evaluation mode, 'stochastic' "
    "and/or 'deterministic' (eval_policy); eval/<key> is the stochastic one when both are",
    "train_episodes": "(evals, runs) training episodes finished in the chunk",
    "train_stages_solved": "(evals, runs) mean stages solved per training episode",
    "train_all_solved": "(evals, runs) fraction of training episodes solving every stage",
    "train/<term>": "(evals, runs) chunk mean of each named loss/statistic term of the agent",
    "train_coverage": "(evals, runs, heads) fraction of the chunk's training env steps spent in "
    "each stage (the state coverage gap)",
    "diag/<name>": "(evals, runs) FPC diagnostics of fine-tuning on pi*'s stored Far states and "
    "theta* (fpc_jax.retention.diagnostics.DIAGNOSTICS; the final row included)",
}
"""The curves contract: every agent's chunk writes these keys (row i = evaluation i; the last row
is the final evaluation, whose training entries are NaN)."""


class StudyAgent(Protocol):
    """What the driver needs of an agent family; ``cfg`` is that family's study config."""

    family: str  # preset family of the retention table ("sac" | "ppo")
    kind: str  # checkpoint kind written into meta.json

    def out_group(self, cfg: Any) -> str: ...
    def build_env(self, cfg: Any, phase: str) -> tuple[SequenceEnv, SequenceParams]: ...
    def network(self, cfg: Any, env: SequenceEnv) -> Any: ...
    def hyper(self, cfg: Any, config: Any) -> Any: ...
    def loop_static(self, cfg: Any, phase: str) -> Any: ...
    def make_chunk(self, env: SequenceEnv, static: Any, config: Any) -> Any: ...
    def make_diagnose(self, config: Any) -> Any: ...
    def make_policy(self, config: Any) -> tuple[Any, Any]: ...
    def init_state(self, config: Any, hyper: Any, key: jax.Array) -> Any: ...
    def start_state(self, cfg: Any, config: Any, hyper: Any, pre: Any, far: tuple) -> Any: ...
    def init_run(
        self, env, static, state, params, pool, key, em=None, cfg=None, method=None
    ) -> Any: ...
    def train_state(self, runs: Any) -> Any: ...
    def make_anchors(self, cfg, config, actor, critic, bc_obs, bc_stage, f_obs, f_stage) -> Any: ...
    def null_anchors(self, config: Any, state: Any) -> Any: ...
    def save_policy(self, path: Path, state: Any, meta: dict[str, Any]) -> Path: ...
    def load_policy(self, path: Path, expected: Any) -> Any: ...


def default_out(cfg: Any, agent: StudyAgent, phase: str) -> str:
    """Where ``fpc-jax pretrain|finetune`` writes without ``--out``."""
    return f"runs/{agent.out_group(cfg)}/{cfg.name}/{phase}"


ASSETS = Path(__file__).resolve().parents[1] / "assets"


def weak_pretrain(cfg: Any, far_success: Any, names: list[str]) -> str | None:
    """A warning if pi*'s success on any of its own (Far) stages, played alone, is below
    ``cfg.min_pretrain_success``: fine-tuning from a failed pre-training measures no forgetting."""
    threshold = getattr(cfg, "min_pretrain_success", 0.0)
    if far_success is None or not any(s < threshold for s in far_success):
        return None
    got = ", ".join(f"{n} {s:.2f}" for n, s in zip(names, far_success, strict=False))
    return (
        f"WARNING: pi* failed its pre-training: Far-stage success alone {got}, below "
        f"min_pretrain_success={threshold:g}; fine-tuning from it measures no forgetting"
    )


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


# ---------------------------------------------------------------------------------------------
# pi*'s Far-stage data


_ROLLOUTS: dict[Any, Any] = {}


def collect_teacher_data(
    agent: StudyAgent,
    env: SequenceEnv,
    params: SequenceParams,
    config: Any,
    actor_params: Any,
    far_stages: tuple[int, ...],
    n: int,
    key: jax.Array,
    num_envs: int = TEACHER_ENVS,
) -> dict[str, jax.Array]:
    """``n`` transitions of pi* (sampled actions) on the Far stages, played as a sequence of the
    Far stages alone (I: "states from the Far stages collected with pi*"), auto-resetting.
    Keys: obs, action, reward, next_obs, discount_mask, stage (leading axis n)."""
    far_params = subsequence_params(params, far_stages)
    steps = -(-n // num_envs)
    cache = (env, config, steps)
    if cache not in _ROLLOUTS:
        _ROLLOUTS[cache] = _build_teacher_rollout(env, agent.make_policy(config)[0], steps)
    traj = _ROLLOUTS[cache](actor_params, far_params, key, num_envs)
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:])[:n], traj)


def _build_teacher_rollout(env: SequenceEnv, sample: Any, steps: int):
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
            tr = {
                "obs": obs,
                "action": action,
                "reward": reward,
                "next_obs": next_obs,
                "discount_mask": 1.0 - info["stage_terminal"].astype(jnp.float32),
                "stage": info["stage"],
            }
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


# ---------------------------------------------------------------------------------------------
# Pre-training


def pretrain(cfg: Any, agent: StudyAgent, out_dir: str | Path, log=print) -> Path:
    """The agent trained on the Far stages (each episode one Far stage alone); writes
    ``out_dir/policy`` and the pre-training curves."""
    if cfg.pretrain_steps < 1:
        raise cfglib.ConfigError("pretrain_steps must be >= 1 to pre-train")
    static = agent.loop_static(cfg, "pretrain")
    n_chunks, extendable = cfg.pretrain_steps // cfg.steps_per_chunk, cfglib.resume_extendable(cfg)
    check_resume(Path(out_dir) / "pretrain_state", cfglib.resume_key(cfg), n_chunks, extendable)
    out_dir = results.make_run_dir(out_dir)
    cfglib.dump(cfg, out_dir / "config.yaml")
    env, params = agent.build_env(cfg, "pretrain")
    config = agent.network(cfg, env)
    hyper = agent.hyper(cfg, config)
    pool = jnp.asarray(env.far_stages, jnp.int32)
    key = jax.random.key(cfg.seed)
    state = agent.init_state(config, hyper, key)
    runs = jax.tree.map(
        lambda x: x[None],
        agent.init_run(env, static, state, params, pool, jax.random.fold_in(key, 1)),
    )
    far_names = [env.stage_names[k] for k in env.far_stages]
    log(f"[pretrain] {agent.family} on Far stages {far_names} for {cfg.pretrain_steps} env steps")
    runs, curves, timing = run_chunks(
        env=env,
        static=static,
        config=config,
        runs=runs,
        anchors=agent.null_anchors(config, state),
        coefs=bcast(RetentionCoefs.create(), 1),
        hyper=bcast(hyper, 1),
        params=params,
        stage_pool=pool,
        total_steps=cfg.pretrain_steps,
        out_dir=out_dir,
        tag="pretrain",
        resume_key=cfglib.resume_key(cfg),
        extendable=cfglib.resume_extendable(cfg),
        checkpoint_every=cfg.checkpoint_every,
        log=log,
        make_chunk=agent.make_chunk,
    )
    state = jax.tree.map(lambda x: x[0], agent.train_state(runs))
    far = curves["eval/stage_success"][-1, 0, list(env.far_stages)]
    warning = weak_pretrain(cfg, far.tolist(), far_names)
    backend = getattr(cfg, "backend", "")
    backend = {"backend": backend, "tasks": list(env.stage_names)} if backend else {}
    policy = agent.save_policy(
        out_dir / "policy",
        state,
        {
            "env": cfg.env,
            **backend,
            "stage_names": list(env.stage_names),
            "far_stages": list(env.far_stages),
            "T": cfg.T,
            "pretrain_steps": cfg.pretrain_steps,
            "seed": cfg.seed,
            "far_success": far.tolist(),
            "wall_s": timing["wall_s"],
            "device": jax.devices()[0].device_kind,
            **({"warning": warning} if warning else {}),
        },
    )
    log(
        f"[pretrain] Far-stage success alone: {np.round(far, 3).tolist()}; wrote {policy} "
        f"({timing['wall_s']:.0f}s)"
    )
    if warning:
        log(warning)
    return policy


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def load_pretrained(cfg: Any, agent: StudyAgent, env: SequenceEnv, config: Any) -> Any:
    """The checkpoint ``cfg.checkpoint`` names, checked against the env and the network."""
    path = resolve_checkpoint(cfg.checkpoint, default_out(cfg, agent, "pretrain") + "/policy")
    pre = agent.load_policy(path, config)
    if pre.meta.get("env") not in (None, cfg.env):
        raise ckpt.CheckpointError(
            f"{path} was pre-trained on {pre.meta['env']!r}, not {cfg.env!r}"
        )
    if "tasks" in pre.meta and tuple(pre.meta["tasks"]) != env.stage_names:
        raise ckpt.CheckpointError(
            f"{path} was pre-trained on the tasks {pre.meta['tasks']} (one head each), but the "
            f"env's heads are {list(env.stage_names)}"
        )
    return pre


def finetune(
    cfg: Any,
    agent: StudyAgent,
    out_dir: str | Path,
    log=print,
    mesh: Any = None,
    stop_after: int | None = None,
) -> Path | None:
    """Fine-tune every method x seed from the pre-trained checkpoint; write results in out_dir."""
    static = agent.loop_static(cfg, "finetune")
    n_chunks, extendable = cfg.finetune_steps // cfg.steps_per_chunk, cfglib.resume_extendable(cfg)
    check_resume(Path(out_dir) / "finetune_state", cfglib.resume_key(cfg), n_chunks, extendable)
    env, params = agent.build_env(cfg, "finetune")
    config = agent.network(cfg, env)
    hyper = agent.hyper(cfg, config)
    pre = load_pretrained(cfg, agent, env, config)
    out_dir = results.make_run_dir(out_dir)  # nothing is written before the checks above
    cfglib.dump(cfg, out_dir / "config.yaml")
    far = tuple(pre.meta.get("far_stages", env.far_stages))
    warning = weak_pretrain(cfg, pre.meta.get("far_success"), [env.stage_names[k] for k in far])
    if warning:
        log(warning)
    key = jax.random.key(cfg.seed)
    k_data, k_runs = jax.random.split(key)
    n_data = max(cfg.bc_states, getattr(cfg, "em_transitions", 0), cfg.fisher_states)
    log(f"[finetune] collecting {n_data} pi* transitions on Far stages {list(far)} ...")
    data = collect_teacher_data(
        agent, env, params, config, pre.state.actor_params, far, n_data, k_data
    )
    fi = fisher_sample(len(data["obs"]), cfg.fisher_states, cfg.seed)  # uniform, all Far (CW)
    anchors = agent.make_anchors(
        cfg,
        config,
        pre.state.actor_params,
        pre.state.critic_params,
        data["obs"][: cfg.bc_states],
        data["stage"][: cfg.bc_states],
        data["obs"][fi],
        data["stage"][fi],
    )
    em = jax.tree.map(lambda x: x[: cfg.em_transitions], data) if cfg.uses_em else None
    pool = jnp.asarray(far, jnp.int32)

    def build(method: str, entry: terms.Method, s: int) -> Any:
        k = jax.random.fold_in(k_runs, s)  # same seed key for every method
        if entry.random_init:
            state = agent.init_state(config, hyper, jax.random.fold_in(k, 1))
        else:
            state = agent.start_state(cfg, config, hyper, pre, far)
        return agent.init_run(
            env,
            static,
            state,
            params,
            pool,
            jax.random.fold_in(k, 2),
            em=em if entry.reserves_replay else None,
            cfg=cfg,
            method=method,
        )

    labels, run_states, coef_list = method_grid(cfg, build)
    n = len(labels)
    if mesh is None:
        mesh = sharding.runs_mesh(n)
    log(
        f"[finetune] {n} runs ({len(cfg.methods)} methods x {cfg.seeds} seeds) x "
        f"{cfg.finetune_steps} env steps, one program on {sharding.describe(mesh)}"
    )
    out = run_chunks(
        env=env,
        static=static,
        config=config,
        runs=stack(run_states),
        anchors=anchors,
        coefs=stack(coef_list),
        hyper=bcast(hyper, n),
        params=params,
        stage_pool=pool,
        total_steps=cfg.finetune_steps,
        out_dir=out_dir,
        tag="finetune",
        resume_key=cfglib.resume_key(cfg),
        extendable=cfglib.resume_extendable(cfg),
        checkpoint_every=cfg.checkpoint_every,
        log=log,
        mesh=mesh,
        stop_after=stop_after,
        make_chunk=agent.make_chunk,
        make_diagnose=agent.make_diagnose,
        on_chunk=lambda curves: results.write_csv(
            out_dir / "summary.csv", summarize(labels, curves, far, env), SUMMARY_COLUMNS
        ),
    )
    if out is None:
        return None
    _, curves, timing = out
    info = {**timing, **({"pretrain_warning": warning} if warning else {})}
    write_finetune(cfg, env, labels, curves, far, out_dir, info, log)
    return out_dir
