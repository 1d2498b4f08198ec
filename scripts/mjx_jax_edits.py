"""What the MJX-JAX model edits alone change, measured on CPU MuJoCo (no MJX involved).

``impl="jax"`` of the MJX backend steps metaworld's models with the edits of
``fpc_jax.envs.mjx_models.JAX_EDITS``. To separate the edits' effect from the engine's, this runs
the real metaworld envs on CPU MuJoCo with three models of each task:

- ``metaworld``: the package's own model (the ground truth);
- ``port``: plus the port's solver options, used by both MJX impls (geom margins 0, solver and
  line-search iterations 6 / 6, native CCD off);
- ``port+jax_edits``: plus ``JAX_EDITS`` (what ``impl="jax"`` steps).

For each task: the scripted policy's success rate and first-success step within ``T`` steps on
the same start states, and, replaying the ``metaworld`` episodes' actions open loop, the max
|hand| and |object| position difference to ``metaworld`` after 50 and 200 steps.

    python scripts/mjx_jax_edits.py --episodes 20 --out benchmarks/results/mjx_jax_edits_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

VARIANTS = ("metaworld", "port", "port+jax_edits")


def _swap_model(stage_env, variant: str) -> None:
    """Replace the env's MjModel / MjData by ``variant`` of the same metaworld model file."""
    import mujoco

    from fpc_jax.envs import mjx_models

    env = stage_env.env
    if variant == "metaworld":
        return
    if variant == "port+jax_edits":
        model = mjx_models.jax_model(env.fullpath)
    else:
        model = mujoco.MjModel.from_xml_path(env.fullpath)
    model.opt.timestep = env.model.opt.timestep
    model.opt.iterations, model.opt.ls_iterations = 6, 6
    model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_NATIVECCD
    model.geom_margin[:] = 0.0
    env.model, env.data = model, mujoco.MjData(model)
    env.reset_mocap_welds()


def _episodes(task: str, variant: str, episodes: int, T: int, seed: int, replay=None):
    from metaworld.policies import ENV_POLICY_MAP

    from fpc_jax.envs.metaworld_cpu import StageEnv

    env = StageEnv(task, seed)
    _swap_model(env, variant)
    policy = ENV_POLICY_MAP[task]()
    first, hand, obj, actions = [], [], [], []
    for e in range(episodes):
        obs = env.reset()
        ep_hand, ep_obj, ep_act, f = [obs[0:3]], [obs[4:7]], [], T + 1
        for t in range(T):
            a = policy.get_action(obs) if replay is None else replay[e][t]
            obs, _, success = env.step(a)
            ep_hand.append(obs[0:3]), ep_obj.append(obs[4:7]), ep_act.append(a)
            if success and f > T:
                f = t + 1
        first.append(f), hand.append(ep_hand), obj.append(ep_obj), actions.append(ep_act)
    return np.array(first), np.array(hand), np.array(obj), np.array(actions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="hammer-v3,push-v3,peg-unplug-side-v3,push-wall-v3")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--T", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/mjx_jax_edits_cpu.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import metaworld
    import mujoco

    from fpc_jax.envs import mjx_models

    rows = []
    t0 = time.perf_counter()
    for task in args.tasks.split(","):
        ref_first, ref_hand, ref_obj, ref_act = _episodes(
            task, "metaworld", args.episodes, args.T, args.seed
        )
        for variant in VARIANTS:
            first = (
                ref_first
                if variant == "metaworld"
                else _episodes(task, variant, args.episodes, args.T, args.seed)[0]
            )
            _, hand, obj, _ = _episodes(
                task, variant, args.episodes, args.T, args.seed, replay=ref_act
            )
            dh, do = np.abs(hand - ref_hand).max(-1), np.abs(obj - ref_obj).max(-1)
            row = {
                "task": task,
                "variant": variant,
                "success": float(np.mean(first <= args.T)),
                "first_success_median": float(np.median(first[first <= args.T]))
                if np.any(first <= args.T)
                else None,
                "open_loop_hand_max_50": float(dh[:, :51].max()),
                "open_loop_obj_max_50": float(do[:, :51].max()),
                "open_loop_hand_max_T": float(dh.max()),
                "open_loop_obj_max_T": float(do.max()),
            }
            rows.append(row)
            print(json.dumps(row))
    edits = {}
    for task in args.tasks.split(","):
        from fpc_jax.envs.metaworld_cpu import StageEnv

        spec = mujoco.MjSpec.from_file(StageEnv(task, 0).env.fullpath)
        edits[task] = mjx_models.edit_spec(spec)
    out = {
        "benchmark": "mjx_jax_edits",
        "device": platform.processor() or platform.machine(),
        "versions": {
            "metaworld": getattr(metaworld, "__version__", "3.0.0"),
            "mujoco": mujoco.__version__,
        },
        "config": vars(args),
        "edits": mjx_models.JAX_EDITS,
        "edited_geoms": edits,
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out} ({out['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()
