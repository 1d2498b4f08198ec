"""End-to-end RoboticSequence throughput on the real Meta-World: physics + acting + SAC updates.

For R in --runs, R runs (FT, 4 x 256 CW networks, batch 128, one update per env step per run) are
trained together by ``HostLoop`` (one jitted policy call per vector step, one jitted replay+update
call per burst); the first bursts (compilation) are timed apart from the steady state. The
baseline, measured in the same invocation: R = 1 per process, ``--baseline-procs`` processes at
once (the original study's one-run-per-process layout), aggregate agent steps/s.

    python benchmarks/robotic_sequence_throughput.py --runs 1,8,32
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import results
from fpc_jax.experiments.robotic_sequence import HostLoop, RoboticSequenceConfig, setup_runs


def measure(runs: int, bursts: int, workers: int, warmup: int = 2) -> dict:
    cfg = cfglib.build(RoboticSequenceConfig, {
        "methods": ["ft"], "seeds": runs, "bc_states": 256, "em_transitions": 256,
        "fisher_states": 64, "buffer_capacity": 20_000, "update_after": 0, "workers": workers,
        "finetune_steps": 100_000, "steps_per_chunk": 100_000,
    })  # fmt: skip
    r = setup_runs(cfg, log=lambda *_: None)
    loop = HostLoop(cfg, r.config, r.seq, r.acting, r.sac, r.buf, r.anchors, r.coefs, r.hyp,
                    r.key, r.runs)  # fmt: skip
    try:
        t0 = time.perf_counter()
        for _ in range(warmup):
            loop.burst()
        t1 = time.perf_counter()
        for _ in range(bursts):
            loop.burst()
        t2 = time.perf_counter()
    finally:
        loop.close()
    steps = bursts * cfg.update_every
    return {"runs": runs, "workers": workers, "warmup_s": t1 - t0, "timed_env_steps_per_run": steps,
            "steady_s": t2 - t1, "agent_steps_per_s": runs * steps / (t2 - t1),
            "updates_per_s": runs * steps / (t2 - t1)}  # fmt: skip


def _baseline_proc(bursts: int, q) -> None:
    q.put(measure(1, bursts, 0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="1,8,32")
    ap.add_argument("--bursts", type=int, default=4, help="timed bursts of update_every steps")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--baseline-procs", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/robotic_sequence_cpu.json")
    args = ap.parse_args()
    report: dict = {"env": results.environment_info(), "vectorized": [], "config": vars(args)}
    for r in (int(x) for x in args.runs.split(",")):
        m = measure(r, args.bursts, args.workers)
        report["vectorized"].append(m)
        results.write_json(args.out, report)  # kept if a time limit stops the rest
        print(f"{r:3d} runs: {m['agent_steps_per_s']:.1f} agent steps/s "
              f"(warm-up {m['warmup_s']:.0f}s)")  # fmt: skip
    ctx = mp.get_context("forkserver")
    q = ctx.Queue()
    procs = [ctx.Process(target=_baseline_proc, args=(args.bursts, q))
             for _ in range(args.baseline_procs)]  # fmt: skip
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    outs = [q.get() for _ in procs]
    for p in procs:
        p.join()
    total = sum(o["agent_steps_per_s"] for o in outs)
    report["baseline_one_run_per_process"] = {"procs": args.baseline_procs, "per_proc": outs,
                                              "aggregate_agent_steps_per_s": total,
                                              "wall_s": time.perf_counter() - t0}  # fmt: skip
    print(f"baseline: {args.baseline_procs} processes x 1 run: {total:.1f} agent steps/s")
    results.write_json(args.out, report)


if __name__ == "__main__":
    main()
