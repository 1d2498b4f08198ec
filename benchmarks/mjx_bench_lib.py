"""The measurements of benchmarks/mjx_throughput.py: MJX env steps/s per (impl, task, batch), the
contact buffers of the port env, and the real metaworld on CPU beside them. Each function returns
rows for the driver's JSON; timings go through ``harness`` (every output blocked on)."""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from harness import clocked  # benchmarks/harness.py (the script's folder is on sys.path)

from fpc_jax.envs import make, metaworld_mjx

SEQUENCE = "robotic_sequence"
OVERFLOW_BITS = (
    "NEFC",
    "NJMAX_NNZ",
    "BROADPHASE",
    "NARROWPHASE",
    "CCD",
    "HFIELD",
    "CONTACT_MATCH",
    "NVMAX",
    "EPA_HORIZON",
    "ITERATIONS",
    "LS_ITERATIONS",
    "TACTILE",
)
"""``mujoco_warp.OverflowType`` bits, lowest first (mujoco-warp 3.16)."""
HEADROOM = 2.0
"""Suggested buffer = HEADROOM x measured peak (contacts are read once per env step, i.e. after
the last of its 5 substeps, so brief peaks inside a step are not seen)."""


def registry_name(task: str) -> str:
    return f"metaworld/{task}"


def device_slug() -> str:
    """``jax.devices()[0].device_kind`` as a file-name part, e.g. ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", jax.devices()[0].device_kind.lower()).strip("-") or "unknown"


def memory_stats() -> dict[str, int]:
    stats = jax.devices()[0].memory_stats() or {}
    return {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use") if k in stats}


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
    (env, params), build_s = clocked(
        make, registry_name(task), backend="mjx", impl=impl, num_envs=batch
    )
    key = jax.random.PRNGKey(0)
    phase["name"] = "reset"
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    (_, state), reset_first_s = clocked(reset, jax.random.split(key, batch), params)
    phase["name"] = "compile"
    run = jax.jit(make_rollout(env, batch, steps))
    compiled, compile_s = clocked(lambda: run.lower(state, key, params).compile())
    phase["name"] = "first call"
    (state, _, _), first_call_s = clocked(compiled, state, jax.random.fold_in(key, 0), params)
    phase["name"] = "steady state"
    call_s, done = [], 0
    for i in range(repeats):
        (state, _, d), dt = clocked(compiled, state, jax.random.fold_in(key, i + 1), params)
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
    (env, _), build_s = clocked(metaworld_mjx._port_env, task, impl, naconmax, njmax)
    reset = jax.jit(jax.vmap(env.reset))

    @jax.jit
    def step(state: Any, action: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        nxt = jax.vmap(env.step)(state, action)
        return nxt, contact_counts(nxt.data, batch)

    rows = []
    for policy in ("random", "scripted"):
        rng = np.random.default_rng(seed)
        state, reset_s = clocked(reset, jax.random.split(jax.random.PRNGKey(seed), batch))
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
        rows.append(
            {
                "impl": impl,
                "task": task,
                "policy": policy,
                "batch": batch,
                "steps": steps,
                "naconmax": naconmax,
                "njmax": njmax,
                "build_s": build_s,
                "reset_s": reset_s,
                "rollout_s": rollout_s,
                "contacts_per_lane": _quantiles(per_lane),
                "contacts_total_max": int(total.max()),
                "contacts_total_max_per_lane": float(total.max() / batch),
                "nefc_per_lane": _quantiles(nefc),
                "overflow": [n for i, n in enumerate(OVERFLOW_BITS) if flags >> i & 1],
                "success_fraction": float(success.mean()),
            }
        )
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
    (env, _), build_s = clocked(make, registry_name(task), backend="cpu", seed=seed)
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
    return {
        "task": task,
        "num_envs": 1,
        "workers": 0,
        "steps": steps,
        "build_s": build_s,
        "resets": resets,
        "wall_s": dt,
        "steps_per_s": steps / dt,
    }


def cpu_vector(num_envs: int, workers: int, steps: int, seed: int) -> dict[str, Any]:
    """The stitched sequence's ``MetaWorldSequenceVec`` (auto-reset) over worker processes."""
    (env, _), build_s = clocked(
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
    return {
        "task": SEQUENCE,
        "num_envs": num_envs,
        "workers": workers,
        "steps": steps,
        "build_s": build_s,
        "wall_s": dt,
        "steps_per_s": num_envs * steps / dt,
    }
