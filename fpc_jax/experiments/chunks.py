"""The chunk driver shared by the studies: compiled, vmapped training chunks run back to back.

``run_chunks`` drives an agent's ``make_train_chunk(env, static, config) -> (chunk, evaluate)``
(SAC: fpc_jax/agents/sac/train.py, the default; PPO: fpc_jax/agents/ppo/train.py), jitted and
vmapped over the runs axis, for a number of env steps: it writes the curves after every chunk, a
resumable run-state checkpoint every few chunks, and evaluates once more at the end. The compiled
programs are cached, so resuming or running other methods / coefficients reuses them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fpc_jax.agents.sac.train import make_train_chunk as sac_train_chunk
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams
from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import multihost, results, sharding
from fpc_jax.retention.penalties import RetentionCoefs

LAST_CHECKPOINT: dict[str, Any] = {}
"""The run ``run_chunks`` is driving in this process: ``tag``, ``chunks_done`` in its last
run-state checkpoint, ``n_chunks``; what the CLI's Ctrl-C message says (empty once it ends)."""


def stage_note(names: tuple[str, ...], success: np.ndarray) -> str:
    """The progress postfix: each stage's success alone, labelled, e.g. ``far_west 0.50``."""
    return " ".join(f"{n} {s:.2f}" for n, s in zip(names, success, strict=True))


class _Progress:
    def __init__(self, total: int, desc: str) -> None:
        self.bar = tqdm.tqdm(
            total=total, unit="step", desc=desc, dynamic_ncols=True, disable=not multihost.is_main()
        )

    def update(self, n: int, note: str) -> None:
        self.bar.update(n)
        self.bar.set_postfix_str(note)

    def close(self) -> None:
        self.bar.close()


def run_chunks(
    *,
    env: SequenceEnv,
    static: Any,
    config: Any,
    runs: Any,
    anchors: Any,
    coefs: RetentionCoefs,
    hyper: Any,
    params: SequenceParams,
    stage_pool: jax.Array,
    total_steps: int,
    out_dir: Path,
    tag: str,
    resume_key: dict[str, Any],
    checkpoint_every: int,
    extendable: frozenset[str] = frozenset(),
    log=print,
    mesh: Any = None,
    stop_after: int | None = None,
    make_chunk: MakeChunk = sac_train_chunk,
    make_diagnose: Callable[[Any], Callable[..., Any]] | None = None,
    on_chunk: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> tuple[Any, dict[str, np.ndarray], dict[str, float]] | None:
    """Drive the compiled chunk over ``total_steps`` env steps for all runs, writing curves after
    every chunk and a resumable checkpoint every ``checkpoint_every`` chunks. ``stop_after``
    chunks (total, counting resumed ones) stops early like an interruption and returns None.
    ``make_chunk``: the agent's chunk builder; its run state has an ``actor_params`` property.
    ``make_diagnose(config) -> diagnose(run, anchors, stage_pool)``: the agent's FPC diagnostics
    (fpc_jax/retention/diagnostics.py), computed at every evaluation into ``diag/<name>``.
    ``on_chunk(curves)``: called after each chunk's curves are written (e.g. a partial summary)."""
    chunk_fn, eval_fn = _compiled(make_chunk, env, static, config)
    diag_fn = compiled_diagnose(make_diagnose, config) if make_diagnose else None
    n_chunks = total_steps // static.steps_per_chunk
    ckpt_dir = out_dir / f"{tag}_state"
    curves_path = out_dir / f"{tag}_curves.npz"
    history: list[dict[str, np.ndarray]] = []
    start = 0
    if ckpt_dir.exists():
        runs, info, history = resume(ckpt_dir, curves_path, runs, resume_key, n_chunks, extendable)
        start = int(info["chunks_done"])
        log(f"[{tag}] resuming after chunk {start}/{n_chunks} from {ckpt_dir}")
    multihost.check_same(start, f"the chunks done in {ckpt_dir}", ckpt.SHARED_FS_HINT)
    LAST_CHECKPOINT.update(tag=tag, chunks_done=start, n_chunks=n_chunks)
    eval_keys = jax.random.split(jax.random.key(12345), _num_runs(runs))
    if mesh is not None:
        runs, coefs, hyper, eval_keys = sharding.shard_runs(mesh, (runs, coefs, hyper, eval_keys))
        anchors, params, stage_pool = sharding.replicate(mesh, (anchors, params, stage_pool))
    t0 = time.perf_counter()
    compile_s = 0.0
    progress = _Progress(total_steps, f"[{tag}] env steps/run")
    progress.update(start * static.steps_per_chunk, "")
    for c in range(start, n_chunks):
        tc = time.perf_counter()
        step0 = jnp.int32(c * static.steps_per_chunk)
        if mesh is not None:
            step0 = sharding.replicate(mesh, step0)
        diag = diag_fn(runs, anchors, stage_pool) if diag_fn else None  # before donation
        runs, out = chunk_fn(runs, step0, anchors, coefs, hyper, params, stage_pool)
        if diag is not None:
            out = {**out, "diag": diag}
        out = multihost.fetch(out)
        if c == start:
            compile_s = time.perf_counter() - tc
        history.append(_flatten(out))
        _log_physics(history[-1], c + 1, n_chunks, tag, log)
        curves = stack_history(history)
        results.savez(curves_path, **curves)
        if on_chunk is not None:
            on_chunk(curves)
        if (c + 1) % checkpoint_every == 0 or c + 1 == n_chunks:
            ckpt.save_runs(ckpt_dir, runs, {"chunks_done": c + 1, "resume_key": resume_key})
            LAST_CHECKPOINT["chunks_done"] = c + 1
        stage = np.asarray(out["eval"]["stage_success"]).mean(0)
        progress.update(static.steps_per_chunk, stage_note(env.stage_names, stage))
        if stop_after is not None and c + 1 >= stop_after and c + 1 < n_chunks:
            progress.close()
            log(f"[{tag}] stopped after chunk {c + 1}/{n_chunks}; run again to resume")
            LAST_CHECKPOINT.clear()
            return None
    progress.close()
    final = {"eval": eval_fn(runs.actor_params, params, eval_keys)}
    if diag_fn:
        final["diag"] = diag_fn(runs, anchors, stage_pool)
    history.append(_flatten(multihost.fetch(final)))  # no training statistics: NaN in the curves
    curves = stack_history(history)
    results.savez(curves_path, **curves)
    LAST_CHECKPOINT.clear()
    wall = time.perf_counter() - t0
    return runs, curves, {"wall_s": wall, "first_chunk_s": compile_s}


def resume(
    state_dir: Path,
    curves_path: Path,
    target: Any,
    resume_key: dict[str, Any],
    n_chunks: int,
    extendable: frozenset[str] = frozenset(),
) -> tuple[Any, dict[str, Any], list[dict[str, np.ndarray]]]:
    """Restore a run-state checkpoint written with ``info["resume_key"]`` (``cfglib.resume_key``)
    and ``info["chunks_done"]``: ``(state, info, curves history of the chunks done)``. A
    checkpoint of another configuration, the ``extendable`` fields aside (a longer run continues
    a shorter one), or with more than ``n_chunks`` chunks done is a ``CheckpointError``, raised
    before any array is restored (``check_resume``)."""
    check_resume(state_dir, resume_key, n_chunks, extendable)
    state, info = ckpt.load_runs(state_dir, target)
    done = int(info["chunks_done"])
    history = []
    if curves_path.exists():
        curves = np.load(curves_path)
        history = [{k: curves[k][i] for k in curves.files} for i in range(done)]
    return state, info, history


def check_resume(
    state_dir: Path,
    resume_key: dict[str, Any],
    n_chunks: int,
    extendable: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """The ``info.json`` of the run-state checkpoint ``state_dir`` (None if there is none) once
    it is known to resume under ``resume_key`` with ``n_chunks`` chunks; else a
    ``CheckpointError`` naming the differing fields (``methods``, ``seeds``, ...). Reads no
    arrays, so a study calls it before it writes anything into its output directory."""
    if not state_dir.exists():
        return None
    info = ckpt.read_run_info(state_dir)

    def fixed(key: dict[str, Any]) -> dict[str, Any]:
        key = json.loads(json.dumps(key, default=str))
        return {k: v for k, v in key.items() if k not in extendable}

    saved, asked = fixed(info.get("resume_key") or {}), fixed(resume_key)
    if saved != asked:
        diff = sorted(k for k in {*saved, *asked} if saved.get(k) != asked.get(k))
        raise ckpt.CheckpointError(
            f"{state_dir} belongs to a different configuration (differs in {diff}); use another "
            "--out or delete it"
        )
    done = int(info["chunks_done"])
    if done > n_chunks:
        raise ckpt.CheckpointError(
            f"{state_dir} has {done} chunks done, more than the {n_chunks} asked for; ask for at "
            "least as many env steps, or use another --out"
        )
    return info


MakeChunk = Callable[[SequenceEnv, Any, Any], tuple[Callable[..., Any], Callable[..., Any]]]
_COMPILED: dict[Any, Any] = {}
_DIAGNOSE: dict[Any, Any] = {}  # the agents' diagnostics, per (make_diagnose, config)


def _compiled(make_chunk: MakeChunk, env: SequenceEnv, static: Any, config: Any) -> tuple[Any, Any]:
    """Jitted, vmapped chunk and evaluation programs, cached so that resuming, re-running or
    running another method/coefficient set reuses the compiled executables. Cached per env
    object, not per name: two envs of one name can differ (an MJX env's tasks and contact buffer);
    ``study`` builders memoize envs, so equal configs get the same object."""
    key = (env, make_chunk, static, config)
    if key not in _COMPILED:
        chunk, evaluate = make_chunk(env, static, config)
        in_axes = (0, None, None, 0, 0, None, None)
        _COMPILED[key] = (
            jax.jit(jax.vmap(chunk, in_axes=in_axes), donate_argnums=(0,)),
            jax.jit(jax.vmap(evaluate, in_axes=(0, None, 0))),
        )
    return _COMPILED[key]


def _log_physics(row: dict[str, np.ndarray], c: int, n: int, tag: str, log) -> None:
    """One line per chunk for an env that counts physics events (MJX: ``physics/<name>``, the
    fraction of training steps with a solver-limit hit or a contact overflow), mean over runs."""
    parts = [
        f"{k.removeprefix('train/physics/')} {100 * float(np.mean(v)):.1f}%"
        for k, v in row.items()
        if k.startswith("train/physics/")
    ]
    if parts:
        log(f"[{tag}] chunk {c}/{n}: steps with " + ", ".join(parts))


def compiled_diagnose(make_diagnose: Callable[[Any], Any], config: Any) -> Any:
    """``make_diagnose(config)``'s diagnostics jitted and vmapped over the runs axis of its first
    argument (anchors and Far stages shared), cached per ``(make_diagnose, config)``; used by
    ``run_chunks`` and by the host-env studies (Meta-World CPU sweep, Montezuma)."""
    key = (make_diagnose, config)
    if key not in _DIAGNOSE:
        _DIAGNOSE[key] = jax.jit(jax.vmap(make_diagnose(config), in_axes=(0, None, None)))
    return _DIAGNOSE[key]


def _num_runs(runs: Any) -> int:
    return int(jax.tree.leaves(runs.key)[0].shape[0])


def _flatten(out: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for k, v in out.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                flat[f"{k}/{kk}"] = np.asarray(vv)
        else:
            flat[k] = np.asarray(v)
    return flat


def stack_history(history: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Curves with shape (evaluations, runs, ...). A key some rows lack (the final evaluation's
    training statistics, or rows of a run resumed from an older version) is NaN there."""
    like = {k: v for h in history for k, v in h.items()}
    nan = lambda v: np.full(np.shape(v), np.nan)  # noqa: E731
    return {k: np.stack([h[k] if k in h else nan(v) for h in history]) for k, v in like.items()}
