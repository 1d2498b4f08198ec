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
import json
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness  # benchmarks/harness.py (the script's folder is on sys.path)
from mjx_bench_lib import (  # noqa: F401  (make_rollout, contact_counts, sizing: tested here)
    SEQUENCE,
    bench_mjx,
    contact_counts,
    contact_probe,
    cpu_single,
    cpu_vector,
    device_slug,
    make_rollout,
    sizing,
)

from fpc_jax.envs import metaworld_cpu, metaworld_mjx

DEFAULT_TASKS = (SEQUENCE, *metaworld_cpu.DEFAULT_TASKS)
DISTRIBUTIONS = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "flax",
    "numpy",
    "mujoco",
    "mujoco-mjx",
    "mujoco-warp",
    "warp-lang",
    "metaworld",
    "mtcworldmjx",
    "gymnasium",
)


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
        harness.write(self.out, self.report, key="env")


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
                    impl,
                    task,
                    args.contact_batch,
                    args.contact_steps,
                    naconmax,
                    metaworld_mjx.NJMAX,
                    args.seed,
                )
            except Exception as e:
                rec.error(where, e)
                continue
            rec.report["sizing"] = sizing([*rec.report["contacts"], *rows])
            rec.add("contacts", *rows)
            for r in rows:
                print(
                    f"contacts {impl} {task} {r['policy']}: per lane max "
                    f"{r['contacts_per_lane']['max']}, nefc max {r['nefc_per_lane']['max']}, "
                    f"overflow {r['overflow']}",
                    flush=True,
                )


def run_mjx(
    rec: Recorder,
    impls: Sequence[str],
    tasks: Sequence[str],
    batches: dict[str, list[int]],
    steps: int,
    repeats: int,
) -> None:
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
                print(
                    f"mjx {impl} {task} B={batch}: {row['steps_per_s']:.1f} env steps/s "
                    f"(build {row['build_s']:.0f}s, compile {row['compile_s']:.0f}s, "
                    f"first call {row['first_call_s']:.0f}s)",
                    flush=True,
                )


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
    return ap.parse_args()


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
    env = harness.environment(DISTRIBUTIONS)
    report: dict[str, Any] = {
        "benchmark": "mjx_throughput",
        "env": env,
        "device": env["device"],
        "device_kind": env["device_kind"],
        "load_average_at_start": os.getloadavg(),  # other work on the host skews CPU numbers
        "versions": env["versions"],
        "config": {
            **vars(args),
            "tasks": tasks,
            "impls": impls,
            "batches": batches,
            "cpu_workers": os.cpu_count(),
            "cpu_envs": cpu_envs,
            "env_vars": {
                k: os.environ.get(k)
                for k in (
                    "XLA_FLAGS",
                    "XLA_PYTHON_CLIENT_PREALLOCATE",
                    "XLA_PYTHON_CLIENT_MEM_FRACTION",
                )
            },
            "actions": "uniform in [-1, 1]",
            "auto_reset": "a reset computed at every step, selected per lane where done "
            "(as fpc_jax.agents.sac.train)",
            "timing": "compile_s = lower + compile; first_call_s includes the Warp kernel build; "
            "steps_per_s from the median of the timed calls (block_until_ready each)",
        },
        "cpu_baseline": [],
        "contacts": [],
        "sizing": {},
        "mjx": [],
        "errors": [],
        "skipped": [],
    }
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
