"""KeyDoorRooms throughput: env steps/s of the stitched 4-room env vs batch size.

One ``jit(vmap(step))`` inside ``lax.scan`` per batch size, random one-hot actions and an auto-reset
of finished episodes (as a training loop does). Compilation (lower + compile) is timed apart from
steady state (best of ``--repeats`` calls of the compiled function, ``block_until_ready``).

    python benchmarks/key_door_throughput.py --out benchmarks/results/key_door_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from fpc_jax.envs import make
from fpc_jax.experiments import results

REPO = Path(__file__).resolve().parents[1]


def _select(pred, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def env_steps_per_second(batch: int, steps: int, repeats: int) -> dict:
    env, params = make("key_door_rooms")
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def run(key):
        _, state = reset(jax.random.split(key, batch), params)

        def body(state, key):
            key_act, key_step, key_reset = jax.random.split(key, 3)
            a = jax.random.randint(key_act, (batch,), 0, env.action_size)
            action = jax.nn.one_hot(a, env.action_size)
            keys = jax.random.split(key_step, batch)
            _, state, r, term, trunc, _ = step(keys, state, action, params)
            _, fresh = reset(jax.random.split(key_reset, batch), params)
            state = jax.vmap(_select)(term | trunc, fresh, state)
            return state, (r.sum(), (term | trunc).sum())

        _, (rs, ends) = jax.lax.scan(body, state, jax.random.split(key, steps))
        return rs.sum(), ends.sum()

    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(key).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        _, ends = jax.block_until_ready(compiled(jax.random.key(i + 1)))
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "batch": batch,
        "steps": steps,
        "compile_s": compile_s,
        "run_s": times,
        "episodes_ended": int(ends),
        "steps_per_s": batch * steps / best,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/key_door_throughput_cpu.json")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 256, 1024, 4096])
    ap.add_argument("--steps", type=int, default=1000, help="scan length per call")
    ap.add_argument("--repeats", type=int, default=3, help="steady-state calls; the best is kept")
    args = ap.parse_args()
    env, params = make("key_door_rooms")
    out = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
    report: dict = {
        "env": results.environment_info(),
        "script": "benchmarks/key_door_throughput.py",
        "out": os.path.relpath(out.resolve(), REPO),
        "config": {
            "env": "key_door_rooms",
            "num_rooms": env.num_heads,
            "T": int(params.T),
            "observation_size": env.observation_size,
            "action_size": env.action_size,
            "policy": "uniform random one-hot",
            "auto_reset": True,
            "steps": args.steps,
            "repeats": args.repeats,
        },
        "env_steps": [],
    }
    for b in args.batches:
        r = env_steps_per_second(b, args.steps, args.repeats)
        report["env_steps"].append(r)
        print(f"batch {b:5d}: {r['steps_per_s']:.3g} env steps/s (compile {r['compile_s']:.2f} s)")
    results.write_json(out, report)


if __name__ == "__main__":
    main()
