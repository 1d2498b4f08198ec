"""SAC gradient updates/s with all retention terms active: vmapped runs vs a per-run Python loop.

python benchmarks/sac_updates.py --runs 1,8,64,256 --out benchmarks/results/sac_updates_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any

import harness  # benchmarks/harness.py (the script's folder is on sys.path)
import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.sac.anchors import Anchors, placeholder_anchors
from fpc_jax.agents.sac.losses import Batch
from fpc_jax.agents.sac.networks import SACConfig
from fpc_jax.agents.sac.update import SACHyper, init_train_state, stack_runs, update, update_step
from fpc_jax.retention.penalties import RetentionCoefs

CONFIG = SACConfig(obs_dim=40, act_dim=4, num_heads=4, hidden_sizes=(256,) * 4, batch_size=128)
NUM_BC_STATES = 10_000
ALL_ACTIVE = dict(
    l2_actor=1.0,
    l2_critic=1.0,
    ewc_actor=1.0,
    ewc_critic=1.0,
    bc_actor=1.0,
    bc_critic=1.0,
    ks_actor=1.0,
)


def _run_inputs(seed: int) -> tuple[Any, Batch, Anchors, RetentionCoefs, SACHyper, jax.Array]:
    """One run's state, a fixed batch, anchors with non-trivial values (timing equals real
    anchors: the Fisher only changes values), all-active coefficients, hyper and key."""
    hyper = SACHyper.create(CONFIG.act_dim)
    state = init_train_state(CONFIG, hyper, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    b, o, a = CONFIG.batch_size, CONFIG.obs_dim, CONFIG.act_dim
    batch = Batch(
        obs=rng.normal(size=(b, o)).astype(np.float32),
        action=np.tanh(rng.normal(size=(b, a))).astype(np.float32),
        reward=rng.normal(size=b).astype(np.float32),
        next_obs=rng.normal(size=(b, o)).astype(np.float32),
        discount_mask=np.ones(b, np.float32),
        stage=rng.integers(0, CONFIG.num_heads, size=b).astype(np.int32),
    )
    anchors = placeholder_anchors(CONFIG, state.actor_params, state.critic_params, NUM_BC_STATES)
    anchors = jax.tree_util.tree_map(lambda x: x + jnp.asarray(0.01, x.dtype), anchors)
    anchors = anchors.replace(
        bc_obs=jnp.asarray(rng.normal(size=(NUM_BC_STATES, o)), jnp.float32),
        bc_stage=jnp.asarray(rng.integers(0, CONFIG.num_heads, NUM_BC_STATES), jnp.int32),
    )
    coefs = RetentionCoefs.create(**ALL_ACTIVE)
    return state, batch, anchors, coefs, hyper, jax.random.PRNGKey(1000 + seed)


def _make_scan(num_steps: int):
    def run(state, batch, anchors, coefs, hyper, key):
        def body(s, k):
            s, metrics = update_step(s, batch, anchors, coefs, hyper, k)
            return s, metrics["critic/td"]

        return jax.lax.scan(body, state, jax.random.split(key, num_steps))

    return jax.jit(jax.vmap(run))


def bench_vmapped(num_runs: int, num_steps: int, reps: int) -> dict[str, float]:
    """``num_runs`` runs x ``num_steps`` updates in one jitted ``vmap(scan(update))``: lower +
    compile timed alone, then a warm-up call and the best of ``reps`` calls (``harness.timed``)."""
    base = [_run_inputs(i % 8) for i in range(min(num_runs, 8))]
    args = stack_runs([base[i % len(base)] for i in range(num_runs)])
    fn = _make_scan(num_steps)
    compiled, compile_s = harness.clocked(lambda: fn.lower(*args).compile())
    t = harness.timed(compiled, *args, repeats=reps)
    return {
        "runs": num_runs,
        "steps_per_call": num_steps,
        "timed_calls": reps,
        "compile_s": compile_s,
        "first_call_s": t["first_call_s"],
        "steady_s": t["steady_s"],
        **_rates(num_runs, num_steps, t["steady_s"]),
    }


def bench_python_loop(num_runs: int, num_steps: int) -> dict[str, float]:
    """CleanRL/SBX style: one jitted update per Python call, runs looped in Python."""
    runs = [list(_run_inputs(i)) for i in range(num_runs)]
    _, compile_s = harness.clocked(update, *runs[0])

    def loop() -> list[Any]:
        for step in range(num_steps):
            for r in runs:
                r[0], _ = update(r[0], *r[1:5], jax.random.fold_in(r[5], step))
        return [r[0] for r in runs]

    _, steady_s = harness.clocked(loop)
    return {
        "runs": num_runs,
        "steps": num_steps,
        "compile_plus_first_s": compile_s,
        "steady_s": steady_s,
        **_rates(num_runs, num_steps, steady_s),
    }


def _rates(num_runs: int, updates_per_run: int, seconds: float) -> dict[str, float]:
    total = num_runs * updates_per_run / seconds
    return {"updates_per_s_total": total, "updates_per_s_per_run": total / num_runs}


def _schedule(num_runs: int) -> tuple[int, int]:
    """(scan steps per call, timed calls): fewer for large run counts to bound the runtime."""
    if num_runs <= 1:
        return 20, 3
    if num_runs <= 8:
        return 5, 2
    return 1, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default="1,8,64,256")
    parser.add_argument("--out", default="benchmarks/results/sac_updates_cpu.json")
    parser.add_argument("--baseline-runs", type=int, default=4)
    parser.add_argument("--baseline-steps", type=int, default=5)
    parser.add_argument(
        "--budget-s", type=float, default=150.0, help="skip run counts predicted to exceed this"
    )
    args = parser.parse_args()
    start = time.perf_counter()

    baseline = bench_python_loop(args.baseline_runs, args.baseline_steps)
    print(f"python loop: {baseline}", flush=True)
    results, skipped = [], []
    per_update_s = 1.0 / baseline["updates_per_s_total"]
    for num_runs in [int(r) for r in args.runs.split(",")]:
        steps, reps = _schedule(num_runs)
        predicted = per_update_s * num_runs * steps * (reps + 1) * 1.2
        elapsed = time.perf_counter() - start
        if elapsed + predicted > args.budget_s:
            skipped.append({"runs": num_runs, "predicted_s": predicted, "elapsed_s": elapsed})
            print(f"skip {num_runs} runs: predicted {predicted:.0f}s", flush=True)
            continue
        res = bench_vmapped(num_runs, steps, reps)
        res["speedup_vs_python_loop"] = res["updates_per_s_total"] / baseline["updates_per_s_total"]
        per_update_s = 1.0 / res["updates_per_s_total"]
        results.append(res)
        print(res, flush=True)

    record = {  # device, platform, cpu, cpu_count, versions: harness.environment(), merged in
        "benchmark": "sac_updates",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "config": {
            "obs_dim": CONFIG.obs_dim,
            "act_dim": CONFIG.act_dim,
            "num_heads": CONFIG.num_heads,
            "hidden_sizes": list(CONFIG.hidden_sizes),
            "batch_size": CONFIG.batch_size,
            "num_bc_states": NUM_BC_STATES,
            "coefs": ALL_ACTIVE,
            "data": "one fixed batch per run (replay sampling not included)",
            "timing": "vmapped: compile_s = lower + compile; steady_s = the best of timed_calls "
            "calls, each blocked on; python loop: steady_s = all steps of all runs, blocked on",
        },
        "python_loop_baseline": baseline,
        "vmapped": results,
        "skipped": skipped,
        "total_wall_s": time.perf_counter() - start,
    }
    print(f"wrote {harness.write(args.out, record, key=None)}")


if __name__ == "__main__":
    main()
