"""AppleRetrieval throughput: env steps/s and the two-panel Fig. 3 sweep, JAX vs a NumPy loop.

Measured in one process: (1) raw env steps/s of the jitted, vmapped env; (2) wall time of the whole
fig3a + fig3b sweep (compile apart from steady state); (3) the same REINFORCE written as a plain
NumPy per-episode loop, timed on a subset of runs and extrapolated per run (stated as such).

    python benchmarks/apple_throughput.py --out benchmarks/results/apple_cpu.json
"""

from __future__ import annotations

import argparse
import time

import harness  # benchmarks/harness.py (the script's folder is on sys.path)
import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.envs import make
from fpc_jax.experiments import apple
from fpc_jax.experiments import config as cfglib


def env_steps_per_second(batch: int, steps: int = 1000, repeats: int = 2) -> dict:
    env, params = make("apple_retrieval", M=30)

    def run(key):
        keys = jax.random.split(key, batch)
        _, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)

        def body(carry, k):
            state = carry
            a = jax.random.bernoulli(k, 0.5, (batch,)).astype(jnp.int32)
            _, state, r, *_ = jax.vmap(env.step, in_axes=(None, 0, 0, None))(k, state, a, params)
            return state, r.sum()

        _, rs = jax.lax.scan(body, state, jax.random.split(key, steps))
        return rs.sum()

    t = harness.timed(jax.jit(run), jax.random.key(0), repeats=repeats)
    return {"batch": batch, "steps": steps, **t, "steps_per_s": batch * steps / t["steady_s"]}


def numpy_reinforce_run(cfg: apple.AppleConfig, m: int, c: float, seed: int) -> float:
    """Plain NumPy REINFORCE, one episode at a time (the way the original study ran)."""
    rng = np.random.default_rng(seed)
    w = np.zeros(2)

    def episode(w, start_phase):
        x, phase = (m, 2) if start_phase == 2 else (0, 1)
        obs_l, act_l, rew_l = [], [], []
        for _ in range(cfg.T):
            s = np.array([1.0, c if phase == 2 else -c])
            a = int(rng.random() < 1 / (1 + np.exp(-w @ s)))
            correct = (a == 1) if phase == 1 else (a == 0)
            obs_l.append(s)
            act_l.append(a)
            rew_l.append(1.0 if correct else -1.0)
            x = min(max(x + 2 * a - 1, 0), m)
            prev_phase = phase
            if phase == 1 and x == m:
                phase = 2
            if prev_phase == 2 and x == 0:
                break
        return np.array(obs_l), np.array(act_l), np.array(rew_l)

    def update(w, start_phase):
        eps = [episode(w, start_phase) for _ in range(cfg.episodes_per_update)]
        gs = [np.cumsum(r[::-1])[::-1] * 1.0 for _, _, r in eps]
        horizon = max(len(g) for g in gs)
        base = np.zeros(horizon)
        cnt = np.zeros(horizon)
        for g in gs:
            base[: len(g)] += g
            cnt[: len(g)] += 1
        base /= np.maximum(cnt, 1)
        grad = np.zeros(2)
        for (s, a, _), g in zip(eps, gs, strict=True):
            p = 1 / (1 + np.exp(-s @ w))
            grad += ((a - p)[:, None] * s * (g - base[: len(g)])[:, None]).sum(0)
        return w + cfg.lr * grad / len(eps)

    for _ in range(cfg.pretrain_updates):
        w = update(w, 2)
    for _ in range(cfg.finetune_updates):
        w = update(w, 1)
    return float(w[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/apple_cpu.json")
    ap.add_argument("--numpy-runs", type=int, default=3, help="NumPy runs timed (extrapolated)")
    ap.add_argument("--repeats", type=int, default=2, help="steady env-step calls; best is kept")
    args = ap.parse_args()
    report: dict = {"env_steps": [], "sweeps": {}}
    for b in (1, 64, 1024, 16384):
        r = env_steps_per_second(b, repeats=args.repeats)
        report["env_steps"].append(r)
        print(f"env batch {b:6d}: {r['steps_per_s']:.3g} steps/s (compile {r['compile_s']:.2f}s)")
    total_runs = 0
    jax_total = 0.0
    for fig in ("fig3a", "fig3b"):
        cfg = cfglib.load(apple.AppleConfig, f"configs/apple/{fig}.yaml")
        apple._COMPILED.clear()
        out = apple.run(cfg, log=lambda *_: None)
        out2 = apple.run(cfg, log=lambda *_: None)  # cached executable: steady state
        n = len(cfg.grid) * cfg.seeds
        total_runs += n
        jax_total += float(out2["run_seconds"])
        report["sweeps"][fig] = {
            "runs": n,
            "compile_s": float(out["compile_seconds"]),
            "first_run_s": float(out["run_seconds"]),
            "steady_run_s": float(out2["run_seconds"]),
        }
        print(
            f"{fig}: {n} runs, compile {out['compile_seconds']:.1f}s, "
            f"run {out2['run_seconds']:.2f}s"
        )
    cfg = cfglib.load(apple.AppleConfig, "configs/apple/fig3a.yaml")
    grid = cfg.grid
    picks = [
        grid[i * (len(grid) - 1) // max(1, args.numpy_runs - 1)] for i in range(args.numpy_runs)
    ]
    t0 = time.perf_counter()
    for i, (m, c) in enumerate(picks):
        numpy_reinforce_run(cfg, m, c, i)
    per_run = (time.perf_counter() - t0) / len(picks)
    numpy_total = per_run * total_runs
    report["numpy_baseline"] = {
        "runs_timed": len(picks),
        "grid_points_timed": picks,
        "seconds_per_run": per_run,
        "extrapolated_total_s_for_both_sweeps": numpy_total,
    }
    report["speedup_steady_state"] = numpy_total / jax_total
    print(
        f"NumPy loop: {per_run:.2f}s per run -> {numpy_total:.0f}s for {total_runs} runs; "
        f"JAX steady {jax_total:.2f}s -> speed-up x{numpy_total / jax_total:.0f}"
    )
    harness.write(args.out, report, key="env")


if __name__ == "__main__":
    main()
