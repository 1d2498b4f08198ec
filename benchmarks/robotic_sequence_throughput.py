"""End-to-end RoboticSequence throughput on the real Meta-World: physics + acting + SAC updates.

For R in --runs, R runs (FT, 4 x 256 CW networks, batch 128, one update per env step per run) are
trained together by ``HostLoop`` (one jitted policy call per vector step, one jitted replay+update
call per burst); the first bursts (compilation) are timed apart from the steady state. The
baseline, measured in the same invocation: R = 1 per process, ``--baseline-procs`` processes at
once (the original study's one-run-per-process layout), aggregate agent steps/s. Each timed span
ends when the runs' SAC states and buffers are ready (``harness.block``), not at the last dispatch.

    python benchmarks/robotic_sequence_throughput.py --runs 1,8,32
"""

from __future__ import annotations

import argparse
import multiprocessing as mp

import harness  # benchmarks/harness.py (the script's folder is on sys.path)

from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments.robotic_sequence import HostLoop, RoboticSequenceConfig, setup_runs


def measure(runs: int, bursts: int, workers: int, warmup: int = 2) -> dict:
    cfg = cfglib.build(
        RoboticSequenceConfig,
        {
            "methods": ["ft"],
            "seeds": runs,
            "bc_states": 256,
            "em_transitions": 256,
            "fisher_states": 64,
            "buffer_capacity": 20_000,
            "update_after": 0,
            "workers": workers,
            "finetune_steps": 100_000,
            "steps_per_chunk": 100_000,
        },
    )
    r = setup_runs(cfg, log=lambda *_: None)
    loop = HostLoop(
        cfg, r.config, r.seq, r.acting, r.sac, r.buf, r.anchors, r.coefs, r.hyp, r.key, r.runs
    )

    def run(n: int) -> tuple:
        for _ in range(n):
            loop.burst()
        return loop.sac, loop.buf  # the last burst's update, blocked on by harness.clocked

    try:
        _, warmup_s = harness.clocked(run, warmup)
        _, steady_s = harness.clocked(run, bursts)
    finally:
        loop.close()
    steps = bursts * cfg.update_every
    return {
        "runs": runs,
        "workers": workers,
        "warmup_s": warmup_s,
        "timed_env_steps_per_run": steps,
        "steady_s": steady_s,
        "agent_steps_per_s": runs * steps / steady_s,
        "updates_per_s": runs * steps / steady_s,
    }


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
    report: dict = {"env": harness.environment(), "vectorized": [], "config": vars(args)}
    for r in (int(x) for x in args.runs.split(",")):
        m = measure(r, args.bursts, args.workers)
        report["vectorized"].append(m)
        harness.write(args.out, report, key="env")  # kept if a time limit stops the rest
        print(
            f"{r:3d} runs: {m['agent_steps_per_s']:.1f} agent steps/s "
            f"(warm-up {m['warmup_s']:.0f}s)"
        )
    ctx = mp.get_context("forkserver")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_baseline_proc, args=(args.bursts, q))
        for _ in range(args.baseline_procs)
    ]

    def baseline() -> list[dict]:
        for p in procs:
            p.start()
        outs = [q.get() for _ in procs]
        for p in procs:
            p.join()
        return outs

    outs, wall_s = harness.clocked(baseline)
    total = sum(o["agent_steps_per_s"] for o in outs)
    report["baseline_one_run_per_process"] = {
        "procs": args.baseline_procs,
        "per_proc": outs,
        "aggregate_agent_steps_per_s": total,
        "wall_s": wall_s,
    }
    print(f"baseline: {args.baseline_procs} processes x 1 run: {total:.1f} agent steps/s")
    harness.write(args.out, report, key="env")


if __name__ == "__main__":
    main()
