"""How often MJX-Warp's constraint solver hits its iteration limits on Meta-World (issue 14).

The port runs the solver at 6 iterations / 6 line-search iterations (real metaworld: 50 / 50;
docs/mjx_backend.md). mujoco_warp used to print a warning per hit; fpc_jax now counts them per env
step (``info["physics/solver_limit"]``; contact/constraint buffer overflows separately,
``physics/contact_overflow``). This plays metaworld's scripted policy on each task's MJX env and
records the fraction of steps with a hit, next to the episode's success.

    python scripts/mjx_solver_limits.py --out docs/results/mjx_solver_limits.json [--episodes 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mjx_parity_probe import POLICIES, TASKS  # scripts/: the same tasks and scripted policies


def run_task(task: str, episodes: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    from metaworld import policies

    from fpc_jax.envs import make

    env, params = make(f"metaworld/{task}", backend="mjx", num_envs=1)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    policy = getattr(policies, POLICIES[task])()
    limit, overflow, success, lengths = [], [], [], []
    for e in range(episodes):
        obs, state = reset(jax.random.key(e), params)
        solved = False
        for t in range(steps):
            action = jnp.asarray(np.clip(policy.get_action(np.asarray(obs)[:39]), -1, 1))
            obs, state, _, term, trunc, info = step(jax.random.key(t), state, action, params)
            limit.append(bool(info["physics/solver_limit"]))
            overflow.append(bool(info["physics/contact_overflow"]))
            solved = solved or bool(info["stage_success"])
            if term or trunc:
                break
        success.append(solved)
        lengths.append(t + 1)
    return {
        "episodes": episodes,
        "steps": len(limit),
        "solver_limit_frac": float(np.mean(limit)),
        "contact_overflow_frac": float(np.mean(overflow)),
        "success_rate": float(np.mean(success)),
        "episode_lengths": lengths,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    import jax

    from fpc_jax.experiments import results

    out = {"environment": results.environment_info(), "tasks": {}}
    for task in args.tasks:
        t0 = time.perf_counter()
        out["tasks"][task] = run_task(task, args.episodes, args.steps)
        out["tasks"][task]["wall_s"] = time.perf_counter() - t0
        print(task, out["tasks"][task], flush=True)
    out["device"] = jax.devices()[0].device_kind
    results.write_json(args.out, out)


if __name__ == "__main__":
    main()
