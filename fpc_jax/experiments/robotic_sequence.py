"""RoboticSequence on the real Meta-World (CPU MuJoCo): the paper's fine-tuning study.

Host processes step the physics (``MetaWorldSequenceVec``, one or more envs per run) while one
jitted, vmapped program acts for every run and one jitted, vmapped program does every run's
replay writes and SAC updates (``update_every`` x envs-per-run updates per burst: the paper's one
gradient update per env step per run, whatever the number of envs). Methods x seeds are the runs
axis, exactly as in the pure-JAX study (``sac_study``), whose results and plotting code this reuses.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fpc_jax import runs_axis
from fpc_jax.agents.sac.anchors import make_anchors
from fpc_jax.agents.sac.diagnostics import make_diagnose
from fpc_jax.agents.sac.networks import SACConfig, zero_critic_heads
from fpc_jax.agents.sac.replay import buffer_fill_reserved, buffer_init
from fpc_jax.agents.sac.train import transition_example
from fpc_jax.agents.sac.update import (
    SACHyper,
    init_train_state,
    train_state_from_params,
)
from fpc_jax.envs.metaworld_cpu import (
    DEFAULT_TASKS,
    MetaWorldSequenceConfig,
    check_tasks,
)
from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import chunks, results, sac_study, study, study_config, study_report
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments.host_loop import HostLoop
from fpc_jax.experiments.host_rollouts import (
    ACT_DIM,
    OBS_DIM,
    Acting,
    collect_far_data,
    evaluate_runs,
)
from fpc_jax.retention import terms
from fpc_jax.retention.fisher import fisher_sample


@dataclasses.dataclass(frozen=True)
class RoboticSequenceConfig(study_config.SACStudyConfig):
    """Schema of ``configs/robotic_sequence/*.yaml``: the SAC study fields plus the Meta-World
    sequence. Defaults follow docs/paper_facts.md sections 2-4."""

    name: str = study_config.option("robotic_sequence", "experiment name")
    env: str = study_config.option("metaworld/robotic_sequence", "host env (CPU Meta-World)")
    T: int = study_config.option(200, "stage time limit (steps)")
    tasks: tuple[str, ...] = study_config.option(DEFAULT_TASKS, "the sequence, in order (v3 names)")
    far_tasks: tuple[str, ...] = study_config.option(
        ("peg-unplug-side-v3", "push-wall-v3"), "the pre-trained (Far) tasks"
    )
    checkpoint: str = study_config.option(
        "asset:robotic_sequence_far", "pre-trained Far policy (directory or asset:NAME)"
    )
    envs_per_run: int = study_config.option(1, "Meta-World envs stepped per run")
    workers: int = study_config.option(0, "worker processes stepping physics (0: in-process)")
    randomization: str = study_config.option("uniform", "start/goal randomization (uniform | mt1)")
    eval_episodes: int = study_config.option(5, "episodes per stage and per sequence (per mode)")
    steps_per_chunk: int = study_config.option(10_000, "env steps per run between evaluations")
    pretrain_steps: int = study_config.option(
        0, "unused here (the Far policy is an asset)", resume_extend=True
    )
    finetune_steps: int = study_config.option(
        1_000_000,
        "env steps of fine-tuning per run (raise it to extend a finished run)",
        resume_extend=True,
    )
    finetune_start_steps: int = study_config.option(0, "uniform-random env steps at the start")

    def validate(self) -> None:
        super().validate()
        if self.backend:
            raise cfglib.ConfigError(
                f"backend {self.backend!r}: the sweep steps the real Meta-World on CPU; run the "
                "MJX study with `fpc-jax finetune` (configs/robotic_sequence/mjx.yaml)"
            )
        try:
            tasks = check_tasks(self.tasks)
        except ValueError as e:
            raise cfglib.ConfigError(str(e)) from e
        missing = [t for t in self.far_tasks if t not in tasks]
        if missing:
            raise cfglib.ConfigError(f"far_tasks {missing} are not in tasks {list(tasks)}")
        if self.envs_per_run < 1 or self.workers < 0:
            raise cfglib.ConfigError("envs_per_run must be >= 1 and workers >= 0")

    @property
    def far_stages(self) -> tuple[int, ...]:
        return tuple(self.tasks.index(t) for t in self.far_tasks)


# ---------------------------------------------------------------------------------------------
# Loading the Far policy into a sequence with possibly different heads


def _remap_head(
    leaf: jax.Array, fresh: jax.Array, mapping: dict[int, int], per_head: int, axis: int
) -> jax.Array:
    """Copy head blocks ``old -> new`` along the output ``axis`` (blocks of ``per_head``)."""
    out = np.array(fresh)
    old = np.asarray(leaf)
    for new_i, old_i in mapping.items():
        dst = [slice(None)] * out.ndim
        src = [slice(None)] * out.ndim
        dst[axis] = slice(new_i * per_head, (new_i + 1) * per_head)
        src[axis] = slice(old_i * per_head, (old_i + 1) * per_head)
        out[tuple(dst)] = old[tuple(src)]
    return jnp.asarray(out)


def remap_heads(
    pre: ckpt.PolicyCheckpoint,
    config: SACConfig,
    hyper: SACHyper,
    tasks: tuple[str, ...],
    key: jax.Array,
    new_critic_heads: str = "random",
) -> tuple[Any, Any, Any, jax.Array]:
    """(actor, critic, target critic, log_alpha) for ``tasks``: the shared trunk as pre-trained,
    each head of a task the checkpoint knows copied from it, the other heads freshly initialised
    (critic heads at zero with ``new_critic_heads="zero"``: Q = 0 and no action gradient until
    they learn, instead of a random head's large values on the trained trunk's features; a new
    stage's log-alpha is the run's ``hyper.init_log_alpha``). Lets the 4-task asset start the
    Appendix-F prefix variants (Far pair at other positions)."""
    old_tasks = list(pre.meta.get("tasks", []))
    mapping = {j: old_tasks.index(t) for j, t in enumerate(tasks) if t in old_tasks}
    if not mapping:
        raise ckpt.CheckpointError(f"checkpoint knows none of the tasks {list(tasks)}")
    fresh = init_train_state(config, hyper, key)
    st = pre.state
    # critic heads kept by "zero": the checkpoint's trained ones (not the asset's Close heads)
    trained = {old_tasks[i] for i in pre.meta.get("far_stages", range(len(old_tasks)))}
    keep = [j for j, t in enumerate(tasks) if t in trained]

    def actor(p, f):
        head = {
            k: _remap_head(p["head"][k], f["head"][k], mapping, 2 * ACT_DIM, -1) for k in p["head"]
        }
        return {**p, "head": head}

    def critic(p, f):
        head = {k: _remap_head(p["head"][k], f["head"][k], mapping, 1, -1) for k in p["head"]}
        p = {**p, "head": head}
        return zero_critic_heads(p, keep) if new_critic_heads == "zero" else p

    log_alpha = _remap_head(st.log_alpha, fresh.log_alpha, mapping, 1, 0)
    return (
        actor(st.actor_params, fresh.actor_params),
        critic(st.critic_params, fresh.critic_params),
        critic(st.target_critic_params, fresh.critic_params),
        log_alpha,
    )


# ---------------------------------------------------------------------------------------------
# The study


@dataclasses.dataclass(frozen=True)
class SweepRuns:
    """What ``setup_runs`` builds: the network and sequence, the per-run (stacked) SAC states,
    buffers, coefficients and hypers, the shared anchors, and each run's label and start steps."""

    config: SACConfig
    seq: MetaWorldSequenceConfig
    acting: Acting
    sac: Any
    buf: Any
    anchors: Any
    coefs: Any
    hyp: Any
    key: jax.Array
    labels: list[tuple[str, int]]
    far: tuple[int, ...]
    random_steps: np.ndarray  # (runs,) uniform-random env steps at the start of each run

    @property
    def runs(self) -> int:
        return len(self.labels)


def setup_runs(cfg: RoboticSequenceConfig, log=print) -> SweepRuns:
    """Everything a sweep needs before stepping: the Far policy mapped onto ``cfg.tasks``, pi*'s
    Far data and the retention anchors, and the stacked per-run SAC states, buffers and coefs."""
    k_heads = len(cfg.tasks)
    config = SACConfig(
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        num_heads=k_heads,
        hidden_sizes=tuple(cfg.hidden_sizes),
        first_activation=cfg.first_activation,
        hidden_activation=cfg.hidden_activation,
        batch_size=cfg.batch_size,
    )
    hyper = sac_study.sac_hyper(cfg, ACT_DIM)
    path = study.resolve_checkpoint(cfg.checkpoint, "")
    stored = ckpt.read_meta(path)
    pre = ckpt.load_policy(
        path, expected=dataclasses.replace(config, num_heads=stored["sac_config"]["num_heads"])
    )
    key = jax.random.key(cfg.seed)
    actor0, critic0, target0, log_alpha0 = remap_heads(
        pre, config, hyper, tuple(cfg.tasks), key, cfg.new_critic_heads
    )
    seq = MetaWorldSequenceConfig(
        tasks=tuple(cfg.tasks), T=cfg.T, beta=cfg.beta, randomization=cfg.randomization
    )
    far = cfg.far_stages
    acting = Acting(config)
    n_data = max(cfg.bc_states, cfg.em_transitions, cfg.fisher_states)
    log(f"[sweep] collecting {n_data} pi* transitions on {list(cfg.far_tasks)} ...")
    data = collect_far_data(acting, actor0, seq, far, n_data, cfg.seed, cfg.workers)
    fi = fisher_sample(len(data.obs), cfg.fisher_states, cfg.seed)  # every Far task (CW)
    anchors = make_anchors(
        config,
        actor0,
        critic0,
        data.obs[: cfg.bc_states],
        data.stage[: cfg.bc_states],
        data.obs[fi],
        data.stage[fi],
        fisher_mean=cfg.ewc_fisher_mean,
    )
    em = jax.tree.map(lambda x: x[: cfg.em_transitions], data)
    slots, em_reserved = study_config.replay_layout(cfg)

    def build(method: str, entry: terms.Method, s: int) -> tuple[Any, Any]:
        k = jax.random.fold_in(key, 100 + s)
        if entry.random_init:
            sac = init_train_state(config, hyper, jax.random.fold_in(k, 1))
        else:
            sac = train_state_from_params(config, hyper, actor0, critic0, log_alpha0)
            sac = sac.replace(target_critic_params=target0)
        buf = buffer_init(
            slots,
            transition_example(OBS_DIM, ACT_DIM),
            em_reserved,
            study_config.ring_limit(cfg, method),
        )
        return sac, (buffer_fill_reserved(buf, em) if entry.reserves_replay else buf)

    labels, built, coef_list = study_config.method_grid(cfg, build)
    sacs, bufs = [b[0] for b in built], [b[1] for b in built]
    return SweepRuns(
        config=config,
        seq=seq,
        acting=acting,
        sac=runs_axis.stack(sacs),
        buf=runs_axis.stack(bufs),
        anchors=anchors,
        coefs=runs_axis.stack(coef_list),
        hyp=runs_axis.bcast(hyper, len(labels)),
        key=key,
        labels=labels,
        far=far,
        random_steps=np.array([study_config.start_steps(cfg, m) for m, _ in labels]),
    )


def sweep(cfg: RoboticSequenceConfig, out_dir: str | Path, log=print) -> Path:
    """Fine-tune every method x seed on the real Meta-World sequence; write results in out_dir."""
    n_chunks = cfg.finetune_steps // cfg.steps_per_chunk
    resume_key, extendable = cfglib.resume_key(cfg), cfglib.resume_extendable(cfg)
    chunks.check_resume(Path(out_dir) / "sweep_state", resume_key, n_chunks, extendable)
    r = setup_runs(cfg, log)
    out_dir = results.make_run_dir(out_dir)  # nothing is written before the checks above
    cfglib.dump(cfg, out_dir / "config.yaml")
    config, seq, acting, runs, labels, far = r.config, r.seq, r.acting, r.runs, r.labels, r.far
    sac, buf, anchors, coefs, hyp, key = r.sac, r.buf, r.anchors, r.coefs, r.hyp, r.key
    e = cfg.envs_per_run
    stages = study_report.Stages(tuple(cfg.tasks))
    history: list[dict[str, np.ndarray]] = []
    t0 = time.perf_counter()
    key = jax.random.fold_in(key, 7)
    state_dir, curves_path = out_dir / "sweep_state", out_dir / "sweep_curves.npz"
    start, step = 0, 0
    if state_dir.exists():
        (sac, buf, key), info, history = chunks.resume(
            state_dir, curves_path, (sac, buf, key), resume_key, n_chunks, extendable
        )
        start, step = int(info["chunks_done"]), int(info["step"])
        log(f"[sweep] resuming after chunk {start}/{n_chunks} (episodes in flight restart)")
    log(
        f"[sweep] {runs} runs ({len(cfg.methods)} methods x {cfg.seeds} seeds) x "
        f"{cfg.finetune_steps} env steps on {runs * e} Meta-World envs"
    )
    loop = HostLoop(
        cfg,
        config,
        seq,
        acting,
        sac,
        buf,
        anchors,
        coefs,
        hyp,
        key,
        runs,
        random_steps=r.random_steps,
    )
    diagnose = chunks.compiled_diagnose(make_diagnose, config)
    loop.step = step
    bar = tqdm.tqdm(total=cfg.finetune_steps, unit="step", desc="[sweep] env steps/run")
    bar.update(step)
    try:
        for c in range(start, n_chunks + 1):
            if c > start:
                info = {"chunks_done": c, "step": loop.step, "resume_key": resume_key}
                ckpt.save_runs(state_dir, (loop.sac, loop.buf, loop.key), info)
            ev = evaluate_runs(
                acting,
                loop.sac.actor_params,
                seq,
                runs,
                cfg.eval_episodes,
                seed=10_000 + c,
                workers=cfg.workers,
                policy=cfg.eval_policy,
            )
            diag = jax.device_get(diagnose(loop.sac, anchors, jnp.asarray(far)))
            history.append(
                {f"eval/{k}": v for k, v in ev.items()}
                | {f"diag/{k}": np.asarray(v) for k, v in diag.items()}
            )
            results.savez(curves_path, **chunks.stack_history(history))
            rows = study_report.summarize(labels, chunks.stack_history(history), far, stages)
            results.write_csv(out_dir / "summary.csv", rows, study_report.SUMMARY_COLUMNS)
            bar.set_postfix_str(chunks.stage_note(tuple(cfg.tasks), ev["stage_success"].mean(0)))
            if c == n_chunks:
                break
            for _ in range(cfg.steps_per_chunk // cfg.update_every):
                loop.burst()
                bar.update(cfg.update_every)
            history[-1].update(loop.train_stats())  # this row: eval before the chunk, its training
            results.savez(curves_path, **chunks.stack_history(history))
    except KeyboardInterrupt:
        raise ckpt.RunInterrupted(
            f"interrupted after chunk {c}/{n_chunks}; the same command resumes"
        ) from None
    finally:
        bar.close()
        loop.close()
    curves = chunks.stack_history(history)
    wall = time.perf_counter() - t0
    # pi*'s own Far success: the first evaluation of the runs that start from it
    pre = [
        i
        for i, (m, _) in enumerate(labels)
        if not terms.method(study_config.parse_method(m)[0]).random_init
    ]
    far_pre = curves["eval/stage_success"][0, pre][:, list(far)].mean(0).tolist() if pre else None
    warning = study.weak_pretrain(cfg, far_pre, [cfg.tasks[k] for k in far])
    if warning:
        log(warning)
    info = {"wall_s": wall, "envs_per_run": e, **({"pretrain_warning": warning} if warning else {})}
    study_report.write_finetune(cfg, stages, labels, curves, far, out_dir, info, log)
    return out_dir
