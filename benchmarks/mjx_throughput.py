"""Env steps/s of the Meta-World MJX backend vs batch size, the real metaworld on CPU beside it.

Three measurements in one process, each row written to the JSON as soon as it is taken:

1. MJX throughput per (impl, task, batch): ``jit(scan(vmap(step)))`` of --steps env steps with
   uniform random actions and auto-reset (a reset computed at every step and selected per lane, as
   the SAC loop does). Env build, XLA compile and the first call (which builds the Warp kernels)
   are timed apart from the steady state: the median of --repeats calls, each ending in
   ``block_until_ready``. An impl whose env fails to build or run is recorded with its error.
2. Contact buffers per (impl, task): the port env (``MTCWorldMJX``) as our wrapper builds it,
   rolled out with random and with metaworld's scripted actions; per step, the contacts of each
   lane (``nacon`` split by ``contact__worldid``), its constraint rows (``nefc``) and Warp's
   overflow flags, read after the last substep of each env step. This sizes ``naconmax`` (all
   lanes of one Warp call) and ``njmax`` (per lane) from data.
3. CPU baseline: the real metaworld through fpc_jax's CPU backend, one env per task and the
   stitched sequence's vector env with ``os.cpu_count()`` worker processes.

    python benchmarks/mjx_throughput.py   # -> benchmarks/results/mjx_throughput_<device>.json
    python benchmarks/mjx_throughput.py --batches 1,4 --steps 20 --tasks push-v3,robotic_sequence \
        --task-batches robotic_sequence=2 --repeats 2 --contact-batch 2 --contact-steps 20
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import re
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.envs import make, metaworld_cpu, metaworld_mjx
from fpc_jax.experiments import results

SEQUENCE = "robotic_sequence"
DEFAULT_TASKS = (SEQUENCE, *metaworld_cpu.DEFAULT_TASKS)
DISTRIBUTIONS = (
    "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "numpy", "mujoco",
    "mujoco-mjx", "mujoco-warp", "warp-lang", "metaworld", "mtcworldmjx", "gymnasium",
)  # fmt: skip
OVERFLOW_BITS = (
    "NEFC", "NJMAX_NNZ", "BROADPHASE", "NARROWPHASE", "CCD", "HFIELD", "CONTACT_MATCH", "NVMAX",
    "EPA_HORIZON", "ITERATIONS", "LS_ITERATIONS", "TACTILE",
)  # fmt: skip
"""``mujoco_warp.OverflowType`` bits, lowest first (mujoco-warp 3.16)."""
HEADROOM = 2.0
"""Suggested buffer = HEADROOM x measured peak (contacts are read once per env step, i.e. after
the last of its 5 substeps, so brief peaks inside a step are not seen)."""


def registry_name(task: str) -> str:
    return f"metaworld/{task}"


def versions() -> dict[str, str | None]:
    """Installed versions of the distributions that decide these numbers (None: absent)."""
    out: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def device_slug() -> str:
    """``jax.devices()[0].device_kind`` as a file-name part, e.g. ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", jax.devices()[0].device_kind.lower()).strip("-") or "unknown"


def memory_stats() -> dict[str, int]:
    stats = jax.devices()[0].memory_stats() or {}
    return {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use") if k in stats}


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``, the output blocked on."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - t0


# --- 1. MJX throughput ------------------------------------------------------------------------


def make_rollout(env: Any, batch: int, steps: int) -> Callable:
    """``run(state, key, params) -> (state, reward_sum, episodes_done)``: ``steps`` vmapped steps,
    uniform random actions in [-1, 1], finished lanes replaced by a fresh reset."""

    def lane(key: jax.Array, state: Any, params: Any) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        k_act, k_step, k_reset = jax.random.split(key, 3)
        action = jax.random.uniform(k_act, (env.action_size,), minval=-1.0, maxval=1.0)
        _, nxt, reward, terminated, truncated, _ = env.step(k_step, state, action, params)
        _, fresh = env.reset(k_reset, params)
        done = terminated | truncated
        state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, nxt)
        return state, (reward, done)

    def run(state: Any, key: jax.Array, params: Any) -> tuple[Any, jax.Array, jax.Array]:
        def body(s: Any, k: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
            s, (r, d) = jax.vmap(lane, in_axes=(0, 0, None))(jax.random.split(k, batch), s, params)
            return s, (r.sum(), d.sum())

        state, (r, d) = jax.lax.scan(body, state, jax.random.split(key, steps))
        return state, r.sum(), d.sum()

    return run


def bench_mjx(
    impl: str, task: str, batch: int, steps: int, repeats: int, phase: dict[str, str]
) -> dict[str, Any]:
    """Steps/s of ``make(metaworld/<task>, backend="mjx", impl=impl, num_envs=batch)``."""
    phase["name"] = "build"
    (env, params), build_s = _timed(
        make, registry_name(task), backend="mjx", impl=impl, num_envs=batch
    )
    key = jax.random.PRNGKey(0)
    phase["name"] = "reset"
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    (_, state), reset_first_s = _timed(reset, jax.random.split(key, batch), params)
    phase["name"] = "compile"
    run = jax.jit(make_rollout(env, batch, steps))
    compiled, compile_s = _timed(lambda: run.lower(state, key, params).compile())
    phase["name"] = "first call"
    (state, _, _), first_call_s = _timed(compiled, state, jax.random.fold_in(key, 0), params)
    phase["name"] = "steady state"
    call_s, done = [], 0
    for i in range(repeats):
        (state, _, d), dt = _timed(compiled, state, jax.random.fold_in(key, i + 1), params)
        call_s.append(dt)
        done += int(d)
    median_s = statistics.median(call_s)
    sub = env.subtask
    return {
        "impl": impl,
        "task": task,
        "batch": batch,
        "steps_per_call": steps,
        "timed_calls": repeats,
        "naconmax": sub.naconmax,
        "njmax": sub.njmax,
        "dispatch": sub.dispatch,
        "num_tasks_stepped": len(sub.tasks),
        "build_s": build_s,
        "reset_compile_and_first_s": reset_first_s,
        "compile_s": compile_s,
        "first_call_s": first_call_s,
        "call_s": call_s,
        "median_call_s": median_s,
        "steps_per_s": batch * steps / median_s,
        "episodes_finished_in_timed_calls": done,
        "memory": memory_stats(),
    }


# --- 2. contact buffers -----------------------------------------------------------------------


def contact_counts(data: Any, batch: int) -> dict[str, jax.Array]:
    """Per-lane contacts, constraint rows and overflow bits of a vmapped ``mjx.Data``."""
    impl = data._impl
    if hasattr(impl, "nacon"):  # MuJoCo Warp: one contact buffer for all lanes of the call
        total = impl.nacon.reshape(-1)[0]
        world = impl.contact__worldid
        live = jnp.arange(world.shape[0]) < total
        lane = jnp.where(live, world, batch)
        per_lane = jnp.zeros(batch, jnp.int32).at[lane].add(1, mode="drop")
        nefc = impl.nefc.reshape(batch)
        overflow = impl.overflow.reshape(batch)
    else:  # MJX-JAX: every candidate contact is allocated; count the penetrating ones
        per_lane = (impl.contact.dist < 0).sum(-1).astype(jnp.int32).reshape(batch)
        total = per_lane.sum()
        nefc = jnp.full(batch, impl.nefc, jnp.int32)
        overflow = jnp.zeros(batch, jnp.int32)
    return {"total": total, "per_lane": per_lane, "nefc": nefc, "overflow": overflow}


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {
        "max": int(x.max()),
        "p99": float(np.percentile(x, 99)),
        "mean": float(x.mean()),
    }


def contact_probe(
    impl: str, task: str, batch: int, steps: int, naconmax: int, njmax: int, seed: int
) -> list[dict[str, Any]]:
    """Random- and scripted-action rollouts of the port env; contact statistics of each."""
    from metaworld.policies import ENV_POLICY_MAP

    # The port env exactly as the wrapper builds it (model files, impl edits, cached hand settle);
    # the wrapper itself keeps no contact fields between steps.
    (env, _), build_s = _timed(metaworld_mjx._port_env, task, impl, naconmax, njmax)
    reset = jax.jit(jax.vmap(env.reset))

    @jax.jit
    def step(state: Any, action: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        nxt = jax.vmap(env.step)(state, action)
        return nxt, contact_counts(nxt.data, batch)

    rows = []
    for policy in ("random", "scripted"):
        rng = np.random.default_rng(seed)
        state, reset_s = _timed(reset, jax.random.split(jax.random.PRNGKey(seed), batch))
        scripts = [ENV_POLICY_MAP[task]() for _ in range(batch)]
        counts, success = [], np.zeros(batch, bool)
        t0 = time.perf_counter()
        for _ in range(steps):
            if policy == "random":
                action = rng.uniform(-1.0, 1.0, (batch, 4))
            else:
                obs = np.asarray(state.obs, np.float64)
                action = np.stack([p.get_action(o) for p, o in zip(scripts, obs, strict=True)])
            state, c = step(state, jnp.asarray(action, jnp.float32))
            counts.append(jax.device_get(c))
            success |= np.asarray(state.metrics["success"]) > 0.5
        rollout_s = time.perf_counter() - t0
        per_lane = np.stack([c["per_lane"] for c in counts])
        nefc = np.stack([c["nefc"] for c in counts])
        total = np.array([c["total"] for c in counts])
        flags = int(np.bitwise_or.reduce(np.stack([c["overflow"] for c in counts]), axis=None))
        rows.append({
            "impl": impl, "task": task, "policy": policy, "batch": batch, "steps": steps,
            "naconmax": naconmax, "njmax": njmax, "build_s": build_s, "reset_s": reset_s,
            "rollout_s": rollout_s, "contacts_per_lane": _quantiles(per_lane),
            "contacts_total_max": int(total.max()),
            "contacts_total_max_per_lane": float(total.max() / batch),
            "nefc_per_lane": _quantiles(nefc),
            "overflow": [n for i, n in enumerate(OVERFLOW_BITS) if flags >> i & 1],
            "success_fraction": float(success.mean()),
        })  # fmt: skip
    return rows


def sizing(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Peaks over all contact rows of each impl, and buffers with ``HEADROOM`` over them."""
    out: dict[str, Any] = {}
    for impl in sorted({r["impl"] for r in rows}):
        mine = [r for r in rows if r["impl"] == impl]
        contacts = max(r["contacts_per_lane"]["max"] for r in mine)
        nefc = max(r["nefc_per_lane"]["max"] for r in mine)
        out[impl] = {
            "peak_contacts_per_lane": contacts,
            "peak_nefc_per_lane": nefc,
            "overflow_seen": sorted({f for r in mine for f in r["overflow"]}),
            "suggested_naconmax_per_env": math.ceil(HEADROOM * contacts),
            "suggested_njmax": 8 * math.ceil(HEADROOM * nefc / 8),
            "current": {
                "naconmax": f"max({metaworld_mjx.NACONMAX_MIN}, "
                f"{metaworld_mjx.NACONMAX_PER_ENV} x num_envs)",
                "njmax": metaworld_mjx.NJMAX,
            },
            "rule": f"{HEADROOM} x the peak over tasks, random and scripted actions",
        }
    return out


# --- 3. CPU baseline --------------------------------------------------------------------------


def cpu_single(task: str, steps: int, seed: int) -> dict[str, Any]:
    """One real metaworld env (fpc_jax's CPU backend) stepped with random actions."""
    (env, _), build_s = _timed(make, registry_name(task), backend="cpu", seed=seed)
    rng = np.random.default_rng(seed)
    env.reset()
    resets = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1.0, 1.0, 4))
        if terminated or truncated:
            env.reset()
            resets += 1
    dt = time.perf_counter() - t0
    return {"task": task, "num_envs": 1, "workers": 0, "steps": steps, "build_s": build_s,
            "resets": resets, "wall_s": dt, "steps_per_s": steps / dt}  # fmt: skip


def cpu_vector(num_envs: int, workers: int, steps: int, seed: int) -> dict[str, Any]:
    """The stitched sequence's ``MetaWorldSequenceVec`` (auto-reset) over worker processes."""
    (env, _), build_s = _timed(
        make, registry_name(SEQUENCE), backend="cpu", num_envs=num_envs, workers=workers, seed=seed
    )
    rng = np.random.default_rng(seed)
    try:
        env.reset()
        for _ in range(5):
            env.step(rng.uniform(-1.0, 1.0, (num_envs, 4)))
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(rng.uniform(-1.0, 1.0, (num_envs, 4)))
        dt = time.perf_counter() - t0
    finally:
        env.close()
    return {"task": SEQUENCE, "num_envs": num_envs, "workers": workers, "steps": steps,
            "build_s": build_s, "wall_s": dt, "steps_per_s": num_envs * steps / dt}  # fmt: skip


# --- driver -----------------------------------------------------------------------------------


class Recorder:
    """The report, written to ``out`` after every row; the time budget; what is already done."""

    def __init__(self, out: Path, report: dict[str, Any], budget_s: float) -> None:
        self.out, self.report, self.budget_s = out, report, budget_s
        self.start = time.perf_counter()
        self.earlier_s = report.get("total_wall_s", 0.0)  # of the runs this one resumes

    def taken(self, where: dict[str, Any]) -> bool:
        """Whether ``where`` failed, or for contacts was measured, in the run this one resumes."""
        part = where["part"]
        rows = [e for e in self.report["errors"] if e.get("part") == part]
        rows += self.report["contacts"] if part == "contacts" else []
        return any(all(r.get(k) == v for k, v in where.items() if k != "part") for r in rows)

    def over_budget(self, predicted_s: float = 0.0) -> bool:
        return time.perf_counter() - self.start + predicted_s > self.budget_s

    def add(self, section: str, *rows: dict[str, Any]) -> None:
        self.report[section].extend(rows)
        self.save()

    def error(self, where: dict[str, Any], exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        print(f"FAILED {where}: {msg[:300]}", flush=True)
        self.add(
            "errors", {**where, "error": msg[:2000], "traceback": traceback.format_exc()[-4000:]}
        )

    def save(self) -> None:
        self.report["total_wall_s"] = self.earlier_s + time.perf_counter() - self.start
        self.report["load_average_at_end"] = os.getloadavg()
        results.write_json(self.out, self.report)


def run_cpu_baseline(rec: Recorder, tasks: Sequence[str], steps: int, envs: int, seed: int) -> None:
    workers = os.cpu_count() or 1
    for task in tasks:
        try:
            row = cpu_single(task, steps, seed)
        except Exception as e:  # recorded; the rest still runs
            rec.error({"part": "cpu", "task": task}, e)
            continue
        rec.add("cpu_baseline", row)
        print(f"cpu {task}: {row['steps_per_s']:.0f} env steps/s (1 env)", flush=True)
    try:
        row = cpu_vector(envs, workers, steps, seed)
    except Exception as e:
        rec.error({"part": "cpu", "task": SEQUENCE, "num_envs": envs}, e)
        return
    rec.add("cpu_baseline", row)
    print(f"cpu {SEQUENCE}: {row['steps_per_s']:.0f} env steps/s ({envs} envs, {workers} workers)")


def run_contacts(rec: Recorder, impls: Sequence[str], tasks: Sequence[str], args: Any) -> None:
    subtasks = [metaworld_cpu.DEFAULT_TASKS if t == SEQUENCE else (t,) for t in tasks]
    naconmax = max(metaworld_mjx.NACONMAX_MIN, args.contact_naconmax_per_env * args.contact_batch)
    for impl in impls:
        for task in dict.fromkeys(t for group in subtasks for t in group):
            where = {"part": "contacts", "impl": impl, "task": task}
            if rec.taken(where):
                continue
            if rec.over_budget():
                rec.add("skipped", {**where, "reason": "budget"})
                continue
            try:
                rows = contact_probe(
                    impl, task, args.contact_batch, args.contact_steps, naconmax,
                    metaworld_mjx.NJMAX, args.seed,
                )  # fmt: skip
            except Exception as e:
                rec.error(where, e)
                continue
            rec.report["sizing"] = sizing([*rec.report["contacts"], *rows])
            rec.add("contacts", *rows)
            for r in rows:
                print(f"contacts {impl} {task} {r['policy']}: per lane max "
                      f"{r['contacts_per_lane']['max']}, nefc max {r['nefc_per_lane']['max']}, "
                      f"overflow {r['overflow']}", flush=True)  # fmt: skip


def run_mjx(
    rec: Recorder, impls: Sequence[str], tasks: Sequence[str], batches: dict[str, list[int]],
    steps: int, repeats: int,
) -> None:  # fmt: skip
    def once(row: dict[str, Any]) -> float:
        return row["build_s"] + row["compile_s"] + row["first_call_s"]

    for impl in impls:
        for task in tasks:
            if rec.taken({"part": "mjx", "impl": impl, "task": task}):
                continue  # failed in the run this one resumes
            last: dict[str, Any] | None = None
            for batch in batches[task]:
                where = {"part": "mjx", "impl": impl, "task": task, "batch": batch}
                key = (impl, task, batch)
                done = [r for r in rec.report["mjx"] if (r["impl"], r["task"], r["batch"]) == key]
                if done:  # in the run this one resumes
                    last = done[-1]
                    continue
                # the one-off costs again, the steady state linear in the batch; for a first
                # batch, the largest one-off cost so far
                predicted = max((once(r) for r in rec.report["mjx"]), default=0.0)
                if last is not None:
                    predicted = once(last) + repeats * last["median_call_s"] * batch / last["batch"]
                if rec.over_budget(predicted):
                    rec.add("skipped", {**where, "reason": "budget", "predicted_s": predicted})
                    print(f"skip {impl} {task} B={batch}: over budget", flush=True)
                    continue
                phase = {"name": "build"}
                try:
                    row = bench_mjx(impl, task, batch, steps, repeats, phase)
                except Exception as e:  # an impl that does not build or run is recorded
                    rec.error({**where, "phase": phase["name"]}, e)
                    break  # larger batches of this (impl, task) would fail the same way
                rec.add("mjx", row)
                last = row
                print(f"mjx {impl} {task} B={batch}: {row['steps_per_s']:.1f} env steps/s "
                      f"(build {row['build_s']:.0f}s, compile {row['compile_s']:.0f}s, "
                      f"first call {row['first_call_s']:.0f}s)", flush=True)  # fmt: skip


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", default="1,16,64,256,1024,4096")
    ap.add_argument(
        "--task-batches",
        action="append",
        default=[],
        metavar="TASK=B1,B2",
        help="batches of one task instead of --batches (repeatable)",
    )
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    ap.add_argument("--impls", default="warp,jax")
    ap.add_argument("--steps", type=int, default=100, help="env steps per timed call (scan)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="start nothing predicted to end after this many seconds",
    )
    ap.add_argument("--contact-impls", default="warp")
    ap.add_argument("--contact-batch", type=int, default=64)
    ap.add_argument("--contact-steps", type=int, default=200, help="0: no contact probe")
    ap.add_argument(
        "--contact-naconmax-per-env",
        type=int,
        default=128,
        help="roomy probe buffers, so that nothing overflows",
    )
    ap.add_argument("--cpu-steps", type=int, default=300, help="0: no CPU baseline")
    ap.add_argument("--cpu-envs", type=int, default=0, help="vector env size (0: 4 x workers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows of an existing --out; measure only what it lacks",
    )
    ap.add_argument("--out", help="default benchmarks/results/mjx_throughput_<device kind>.json")
    return ap.parse_args()  # fmt: skip


def main() -> None:
    args = parse_args()
    tasks, impls = _csv(args.tasks), _csv(args.impls)
    batches = {t: [int(b) for b in _csv(args.batches)] for t in tasks}
    for item in args.task_batches:
        task, _, sizes = item.partition("=")
        batches[task.strip()] = [int(b) for b in _csv(sizes)]
    cpu_envs = args.cpu_envs or 4 * (os.cpu_count() or 1)
    out = Path(args.out or f"benchmarks/results/mjx_throughput_{device_slug()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    resumed = json.loads(out.read_text()) if args.resume and out.exists() else None
    report: dict[str, Any] = {
        "benchmark": "mjx_throughput",
        "env": results.environment_info(),
        "device": str(jax.devices()[0]),
        "device_kind": jax.devices()[0].device_kind,
        "load_average_at_start": os.getloadavg(),  # other work on the host skews CPU numbers
        "versions": versions(),
        "config": {
            **vars(args), "tasks": tasks, "impls": impls, "batches": batches,
            "cpu_workers": os.cpu_count(), "cpu_envs": cpu_envs,
            "env_vars": {k: os.environ.get(k) for k in (
                "XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION")},
            "actions": "uniform in [-1, 1]",
            "auto_reset": "a reset computed at every step, selected per lane where done "
                          "(as fpc_jax.agents.sac.train)",
            "timing": "compile_s = lower + compile; first_call_s includes the Warp kernel build; "
                      "steps_per_s from the median of the timed calls (block_until_ready each)",
        },
        "cpu_baseline": [], "contacts": [], "sizing": {}, "mjx": [], "errors": [], "skipped": [],
    }  # fmt: skip
    if resumed is not None:  # keep its rows; this run's own settings go beside them
        resumed.setdefault("resumed_by", []).append(
            {k: report[k] for k in ("env", "load_average_at_start", "versions", "config")}
        )
        report = {**resumed, "skipped": []}
    rec = Recorder(out, report, args.budget_s)
    rec.save()
    # Most wanted first, so that the budget cuts the least wanted: the CPU baseline (cheap), the
    # first impl on the stitched sequence, the contact peaks, its single tasks, the other impls.
    if args.cpu_steps > 0 and not report["cpu_baseline"]:
        run_cpu_baseline(rec, tasks, args.cpu_steps, cpu_envs, args.seed)
    first, others = impls[:1], impls[1:]
    run_mjx(rec, first, [t for t in tasks if t == SEQUENCE], batches, args.steps, args.repeats)
    if args.contact_steps > 0:
        run_contacts(rec, _csv(args.contact_impls), tasks, args)
    run_mjx(rec, first, [t for t in tasks if t != SEQUENCE], batches, args.steps, args.repeats)
    run_mjx(rec, others, tasks, batches, args.steps, args.repeats)
    rec.save()
    print(f"wrote {out} ({report['total_wall_s']:.0f}s)")


if __name__ == "__main__":
    main()
