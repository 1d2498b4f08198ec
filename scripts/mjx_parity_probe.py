# ruff: noqa: B023  (closures below are built and used within one loop iteration)
"""Parity probe: ``mtcworldmjx`` (MJX-Warp port of Meta-World v3) against the real metaworld.

Not run by the test suite. Two phases, exchanging ``.npz`` files so that the reference and the
port may live in different venvs (see docs/mjx_evaluation.md):

``ref``  (needs metaworld 3.0.0 + any mujoco it runs with) -- per task, ``E`` episodes of
         metaworld's scripted policy on the real env (goal observable, like MT1): the sampled
         ``_last_rand_vec``, obs, actions, rewards, info, and the raw MuJoCo state per step.
``mjx``  (needs ``mtcworldmjx``) -- on the port, batched over ``2E`` lanes reset with the SAME
         rand vecs: lanes ``0..E-1`` replay the recorded actions open loop, lanes ``E..2E-1`` run
         the scripted policy closed loop on the port's own observations. Then, for episode 0,
         the recorded real MuJoCo states are teleported into the port (``qpos/qvel/mocap``,
         ``mjx.forward``) and the port's observation / reward / success functions evaluated at
         the identical states. Also static checks (frame skip, dt, action scale, reset bounds).
``compare`` -- prints the tables (and writes ``summary.json``).

Usage (each under ``nice -n 19``)::

    python scripts/mjx_parity_probe.py ref --out OUT [--tasks ...] [--episodes 5] [--steps 150]
    python scripts/mjx_parity_probe.py mjx --out OUT [--tasks ...]
    python scripts/mjx_parity_probe.py compare --out OUT [--ref-tag ref]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

TASKS = ("push-v3", "hammer-v3", "peg-unplug-side-v3", "push-wall-v3")
POLICIES = {
    "push-v3": "SawyerPushV3Policy",
    "hammer-v3": "SawyerHammerV3Policy",
    "peg-unplug-side-v3": "SawyerPegUnplugSideV3Policy",
    "push-wall-v3": "SawyerPushWallV3Policy",
}
INFO_KEYS = (
    "success",
    "near_object",
    "grasp_success",
    "grasp_reward",
    "in_place_reward",
    "obj_to_target",
    "unscaled_reward",
)


def _policy(task: str):
    import metaworld.policies as P

    return getattr(P, POLICIES[task])()


# ------------------------------------------------------------------------------------- ref phase


def make_real(task: str, seed: int):
    """The real env set up like fpc_jax.envs.metaworld_cpu.StageEnv (uniform randomization)."""
    import metaworld

    try:  # our runtime patch for mujoco >= 3.17 when fpc_jax is importable
        from fpc_jax.envs import metaworld_compat

        metaworld_compat.apply()
    except ImportError:
        pass
    env = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task]()
    env._partially_observable = False
    env.__dict__.pop("sawyer_observation_space", None)
    env.observation_space = env.sawyer_observation_space
    env._set_task_called = True
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env.seed(seed)
    return env


def run_ref(
    out: Path,
    tasks,
    episodes: int,
    steps: int,
    seed: int,
    tag: str,
    replay: str | None = None,
    port_settings: str = "",
) -> None:
    """``replay``: a tag of earlier ref files; reuse their rand vecs and actions (open loop)."""
    import metaworld
    import mujoco

    for task in tasks:
        env = make_real(task, seed)
        edits = set(port_settings.split(",")) if port_settings else set()
        if "nomulticcd" in edits:  # what mujoco-warp needs to keep the XML margins
            env.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_MULTICCD
        if edits - {"iters", "margins", "ccd", "nomulticcd"}:
            raise ValueError(f"unknown --port-settings {port_settings!r}")
        # mtcworldmjx's load_mj_model edits, applied to CPU MuJoCo
        if "iters" in edits:
            env.model.opt.iterations = 6
            env.model.opt.ls_iterations = 6
        if "ccd" in edits:
            env.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_NATIVECCD
        if "margins" in edits:
            env.model.geom_margin[:] = 0.0
        pol = _policy(task)
        src = np.load(out / f"{replay}_{task}.npz") if replay else None
        if src is not None:
            episodes, steps = src["act"].shape[:2]
        rec = {
            k: []
            for k in (
                "rand_vec",
                "obs",
                "act",
                "rew",
                "qpos",
                "qvel",
                "mocap_pos",
                "mocap_quat",
                "init_tcp",
                "obj_init_pos",
                "target_pos",
                "init_left_pad",
                "init_right_pad",
                *INFO_KEYS,
            )
        }
        t_step, n_step = 0.0, 0
        for e in range(episodes):
            if src is not None:
                env._freeze_rand_vec = True
                env._last_rand_vec = src["rand_vec"][e].copy()
            obs, _ = env.reset()
            ep = {k: [] for k in rec}
            ep["rand_vec"] = np.array(env._last_rand_vec, np.float64)
            ep["init_tcp"] = np.array(env.init_tcp)
            ep["obj_init_pos"] = np.array(env.obj_init_pos, np.float64)
            ep["target_pos"] = np.array(env._target_pos, np.float64)
            ep["init_left_pad"] = np.array(env.init_left_pad)
            ep["init_right_pad"] = np.array(env.init_right_pad)
            obs_l, act_l, rew_l = [obs], [], []
            qpos_l, qvel_l = [env.data.qpos.copy()], [env.data.qvel.copy()]
            mp_l, mq_l = [env.data.mocap_pos.copy()], [env.data.mocap_quat.copy()]
            inf = {k: [] for k in INFO_KEYS}
            for _t in range(steps):
                a = src["act"][e, _t] if src is not None else np.clip(pol.get_action(obs), -1, 1)
                t0 = time.perf_counter()
                obs, r, _, _, info = env.step(a)
                t_step += time.perf_counter() - t0
                n_step += 1
                obs_l.append(obs)
                act_l.append(a)
                rew_l.append(r)
                qpos_l.append(env.data.qpos.copy())
                qvel_l.append(env.data.qvel.copy())
                mp_l.append(env.data.mocap_pos.copy())
                mq_l.append(env.data.mocap_quat.copy())
                for k in INFO_KEYS:
                    inf[k].append(float(info[k]))
            ep.update(
                obs=np.array(obs_l),
                act=np.array(act_l),
                rew=np.array(rew_l),
                qpos=np.array(qpos_l),
                qvel=np.array(qvel_l),
                mocap_pos=np.array(mp_l),
                mocap_quat=np.array(mq_l),
                **{k: np.array(v) for k, v in inf.items()},
            )
            for k in rec:
                rec[k].append(ep[k])
        arrs = {k: np.stack(v) for k, v in rec.items()}
        consts = {
            "frame_skip": env.frame_skip,
            "timestep": float(env.model.opt.timestep),
            "dt": float(env.dt),
            "action_scale": float(env.action_scale),
            "mocap_low": np.asarray(env.mocap_low).tolist(),
            "mocap_high": np.asarray(env.mocap_high).tolist(),
            "hand_init_pos": np.asarray(env.hand_init_pos).tolist(),
            "rand_low": np.asarray(env._random_reset_space.low).tolist(),
            "rand_high": np.asarray(env._random_reset_space.high).tolist(),
            "solver_iterations": int(env.model.opt.iterations),
            "ls_iterations": int(env.model.opt.ls_iterations),
            "max_geom_margin": float(np.max(env.model.geom_margin)),
            "versions": {
                "metaworld": metaworld.__version__ if hasattr(metaworld, "__version__") else "3.x",
                "mujoco": mujoco.__version__,
            },
            "steps_per_s": n_step / t_step,
        }
        np.savez(out / f"{tag}_{task}.npz", **arrs, consts=json.dumps(consts))
        first = [int(np.argmax(s > 0)) + 1 if s.any() else -1 for s in arrs["success"]]
        print(
            f"[{tag}] {task}: success {sum(f > 0 for f in first)}/{episodes} first={first} "
            f"{consts['steps_per_s']:.0f} steps/s mujoco {mujoco.__version__}",
            flush=True,
        )


# ------------------------------------------------------------------------------------- mjx phase


def run_mjx(
    out: Path, tasks, tag: str, ref_tag: str, iterations: int = 6, keep_margins: bool = False
) -> None:
    import jax
    import jax.numpy as jnp
    from mujoco import mjx

    jax.config.update("jax_compilation_cache_dir", str(out / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from MTCWorldMJX import make
    from MTCWorldMJX.envs.sawyer_xyz import SawyerXYZConfig

    for task in tasks:
        ref = np.load(out / f"{ref_tag}_{task}.npz")
        rv = ref["rand_vec"]
        E, T = ref["act"].shape[:2]
        B = 2 * E
        pol = _policy(task)
        res: dict[str, float | list] = {}
        t0 = time.perf_counter()
        cfg = SawyerXYZConfig(
            partially_observable=False,
            naconmax=max(2000, 256 * B),
            solver_iterations=iterations,
            ls_iterations=iterations,
            zero_geom_margins=not keep_margins,
        )
        env = make(task, config=cfg)
        res["build_s"] = time.perf_counter() - t0
        res["config"] = {
            k: getattr(cfg, k)
            for k in (
                "frame_skip",
                "sim_dt",
                "ctrl_dt",
                "action_scale",
                "hand_reset_steps",
                "solver_iterations",
                "ls_iterations",
                "zero_geom_margins",
                "naconmax",
                "njmax",
                "impl",
            )
        }
        res["mj_model"] = {
            "timestep": float(env.mj_model.opt.timestep),
            "iterations": int(env.mj_model.opt.iterations),
            "ls_iterations": int(env.mj_model.opt.ls_iterations),
            "max_geom_margin": float(np.max(env.mj_model.geom_margin)),
            "disableflags": int(env.mj_model.opt.disableflags),
        }
        lo, hi = env.random_reset_bounds()
        res["rand_low"], res["rand_high"] = np.asarray(lo).tolist(), np.asarray(hi).tolist()
        res["mocap_low"] = np.asarray(env.mocap_low()).tolist()
        res["mocap_high"] = np.asarray(env.mocap_high()).tolist()
        res["hand_init_pos"] = np.asarray(env.hand_init_pos()).tolist()

        reset_b = jax.jit(jax.vmap(lambda k, v: env.reset(k, rand_vec=v)))
        step_b = jax.jit(jax.vmap(env.step))
        keys = jax.random.split(jax.random.PRNGKey(0), B)
        vecs = jnp.asarray(np.concatenate([rv, rv]), jnp.float32)
        t0 = time.perf_counter()
        state = reset_b(keys, vecs)
        jax.block_until_ready(state.obs)
        res["reset_compile_s"] = time.perf_counter() - t0
        # sampled-reset check: what the port's own sampler draws (range check)
        samp = jax.jit(jax.vmap(env.sample_reset_state))(
            jax.random.split(jax.random.PRNGKey(1), 64)
        )
        res["sampled_rand_vec_min"] = (
            np.asarray(samp["rand_vec"]).min(0).tolist() if "rand_vec" in samp else None
        )
        res["sampled_rand_vec_max"] = (
            np.asarray(samp["rand_vec"]).max(0).tolist() if "rand_vec" in samp else None
        )

        obs = np.asarray(state.obs, np.float64)
        obs_l = [obs]
        rew_l, succ_l, act_l = [], [], []
        qpos0 = np.asarray(state.data.qpos)
        t_compile = None
        t_loop = 0.0
        for t in range(T):
            a_cl = np.stack([np.clip(pol.get_action(obs[E + i]), -1, 1) for i in range(E)])
            a = np.concatenate([ref["act"][:, t], a_cl]).astype(np.float32)
            t1 = time.perf_counter()
            state = step_b(state, jnp.asarray(a))
            jax.block_until_ready(state.obs)
            dt = time.perf_counter() - t1
            if t == 0:
                t_compile = dt
            else:
                t_loop += dt
            obs = np.asarray(state.obs, np.float64)
            obs_l.append(obs)
            act_l.append(a)
            rew_l.append(np.asarray(state.reward))
            succ_l.append(np.asarray(state.metrics["success"]))
            if t % 25 == 0:
                print(f"  {task} step {t}/{T} ({dt:.2f}s)", flush=True)
        res["step_compile_s"] = t_compile
        res["env_steps_per_s_batch"] = B * (T - 1) / t_loop
        res["batch"] = B
        mj_obs, mj_rew, mj_succ = np.stack(obs_l, 1), np.stack(rew_l, 1), np.stack(succ_l, 1)

        # teleport: the port's obs/reward/success functions at the real env's exact states
        from MTCWorldMJX import mjx_env as menv

        np.savez(
            out / f"{tag}_{task}.npz",
            obs=mj_obs,
            rew=mj_rew,
            success=mj_succ,
            act=np.stack(act_l, 1),
            qpos0=qpos0,
            res=json.dumps(res),
        )

        def lane0(x):  # leaves vmap left unbatched (warp-only fields) stay as they are
            return x[0] if hasattr(x, "shape") and x.ndim > 0 and x.shape[0] == B else x

        try:
            s0 = jax.tree_util.tree_map(lane0, state)  # lane 0 (episode 0): its model and info
            info = dict(s0.info)
            info.update(
                goal_pos=jnp.asarray(ref["target_pos"][0], jnp.float32),
                obj_init_pos=jnp.asarray(ref["obj_init_pos"][0], jnp.float32),
                init_tcp=jnp.asarray(ref["init_tcp"][0], jnp.float32),
                init_left_pad=jnp.asarray(ref["init_left_pad"][0], jnp.float32),
                init_right_pad=jnp.asarray(ref["init_right_pad"][0], jnp.float32),
            )

            def at_state(qpos, qvel, mp, mq, act):
                data = menv.make_data(
                    env.mj_model,
                    env.mjx_model,
                    qpos=qpos,
                    qvel=qvel,
                    mocap_pos=mp,
                    mocap_quat=mq,
                    naconmax=cfg.naconmax,
                )
                data = env._static_geoms.refresh(s0.model, data)
                data = mjx.forward(s0.model, data)
                r, m = env.compute_reward(data, act, info)
                return env._get_curr_obs_no_goal(data), r, m["success"]

            f = jax.jit(jax.vmap(at_state))
            n = min(T, 100)
            cur, r_tp, s_tp = f(
                *(
                    jnp.asarray(ref[k][0, 1 : n + 1], jnp.float32)
                    for k in ("qpos", "qvel", "mocap_pos", "mocap_quat")
                ),
                jnp.asarray(ref["act"][0, :n], jnp.float32),
            )
            np.savez(
                out / f"{tag}_{task}.npz",
                obs=mj_obs,
                rew=mj_rew,
                success=mj_succ,
                act=np.stack(act_l, 1),
                qpos0=qpos0,
                tp_obs=np.asarray(cur),
                tp_rew=np.asarray(r_tp),
                tp_success=np.asarray(s_tp),
                res=json.dumps(res),
            )
        except Exception:  # keep the rollout results
            import traceback

            traceback.print_exc()
        print(
            f"[{tag}] {task}: build {res['build_s']:.1f}s reset-compile "
            f"{res['reset_compile_s']:.1f}s step-compile {t_compile:.1f}s "
            f"{res['env_steps_per_s_batch']:.1f} env steps/s (batch {B})",
            flush=True,
        )


# --------------------------------------------------------------------------------- compare phase


def _first(s):
    return [int(np.argmax(x > 0)) + 1 if (x > 0).any() else -1 for x in s]


def compare(out: Path, tasks, tag: str, ref_tag: str) -> dict:
    summary = {}
    for task in tasks:
        ref = np.load(out / f"{ref_tag}_{task}.npz")
        if not (out / f"{tag}_{task}.npz").exists():
            continue
        m = np.load(out / f"{tag}_{task}.npz")
        res = json.loads(str(m["res"]))
        consts = json.loads(str(ref["consts"]))
        E, T = ref["act"].shape[:2]
        ro, mo = ref["obs"], m["obs"]  # (E, T+1, 39) / (2E, T+1, 39)
        ol = mo[:E]
        d = np.abs(ol - ro)
        s = {
            "E": E,
            "T": T,
            "reset_obs_maxdiff": {
                "hand": float(d[:, 0, 0:3].max()),
                "grip": float(d[:, 0, 3].max()),
                "obj_pos": float(d[:, 0, 4:7].max()),
                "obj_quat": float(d[:, 0, 7:11].max()),
                "goal": float(d[:, 0, 36:39].max()),
            },
            "reset_qpos_maxdiff": float(np.abs(m["qpos0"][:E] - ref["qpos"][:, 0]).max()),
        }
        for k in (10, 25, 50, 100, T):
            if k <= T:
                s[f"ol_step{k}"] = {
                    "hand": float(d[:, k, 0:3].max()),
                    "obj_pos": float(d[:, k, 4:7].max()),
                    "obj_quat": float(d[:, k, 7:11].max()),
                    "goal": float(d[:, k, 36:39].max()),
                    "rew": float(np.abs(m["rew"][:E, k - 1] - ref["rew"][:, k - 1]).max()),
                }
        s["ol_max_over_steps"] = {
            "hand": float(d[:, :, 0:3].max()),
            "obj_pos": float(d[:, :, 4:7].max()),
            "goal": float(d[:, :, 36:39].max()),
            "rew": float(np.abs(m["rew"][:E] - ref["rew"]).max()),
        }
        fs = _first(ref["success"])
        upto = [f if f > 0 else T for f in fs]
        s["ol_max_until_ref_success"] = {
            part: float(max(d[e, : upto[e] + 1, sl].max() for e in range(E)))
            for part, sl in (
                ("hand", slice(0, 3)),
                ("obj_pos", slice(4, 7)),
                ("goal", slice(36, 39)),
            )
        }
        s["ol_max_until_ref_success"]["rew"] = float(
            max(np.abs(m["rew"][e, : upto[e]] - ref["rew"][e, : upto[e]]).max() for e in range(E))
        )
        s["ol_success_agree_frac"] = float(((m["success"][:E] > 0) == (ref["success"] > 0)).mean())
        s["ref_first_success"] = _first(ref["success"])
        s["mjx_openloop_first_success"] = _first(m["success"][:E])
        s["mjx_closedloop_first_success"] = _first(m["success"][E:])
        s["ref_success"] = sum(f > 0 for f in s["ref_first_success"])
        s["mjx_openloop_success"] = sum(f > 0 for f in s["mjx_openloop_first_success"])
        s["mjx_closedloop_success"] = sum(f > 0 for f in s["mjx_closedloop_first_success"])
        n = m["tp_obs"].shape[0] if "tp_obs" in m else 0
        if n:
            tpd = np.abs(m["tp_obs"] - ro[0, 1 : n + 1, :18])
            s["teleport"] = {
                "n": n,
                "hand": float(tpd[:, 0:3].max()),
                "grip": float(tpd[:, 3].max()),
                "obj_pos": float(tpd[:, 4:7].max()),
                "obj_quat": float(tpd[:, 7:18].max()),
                "rew_maxdiff": float(np.abs(m["tp_rew"] - ref["rew"][0, :n]).max()),
                "rew_mean_ref": float(ref["rew"][0, :n].mean()),
                "success_agree": float(
                    ((m["tp_success"] > 0) == (ref["success"][0, :n] > 0)).mean()
                ),
            }
        s["static"] = {
            "frame_skip": (consts["frame_skip"], res["config"]["frame_skip"]),
            "timestep": (consts["timestep"], res["mj_model"]["timestep"]),
            "action_scale": (consts["action_scale"], res["config"]["action_scale"]),
            "solver_iterations": (consts["solver_iterations"], res["mj_model"]["iterations"]),
            "ls_iterations": (consts["ls_iterations"], res["mj_model"]["ls_iterations"]),
            "max_geom_margin": (consts["max_geom_margin"], res["mj_model"]["max_geom_margin"]),
            "hand_init_pos": (consts["hand_init_pos"], res["hand_init_pos"]),
            "mocap_low": (consts["mocap_low"], res["mocap_low"]),
            "mocap_high": (consts["mocap_high"], res["mocap_high"]),
            "rand_low": (consts["rand_low"], res["rand_low"]),
            "rand_high": (consts["rand_high"], res["rand_high"]),
            "sampled_min": res["sampled_rand_vec_min"],
            "sampled_max": res["sampled_rand_vec_max"],
        }
        s["speed"] = {
            k: res[k]
            for k in (
                "build_s",
                "reset_compile_s",
                "step_compile_s",
                "env_steps_per_s_batch",
                "batch",
            )
        }
        s["ref_steps_per_s"] = consts["steps_per_s"]
        s["ref_versions"] = consts["versions"]
        summary[task] = s
    (out / f"summary_{tag}_vs_{ref_tag}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


def floor(out: Path, tasks, tag: str, ref_tag: str) -> dict:
    """CPU-vs-CPU noise floor: an open-loop ``ref --replay`` run against the run it replays."""
    summary = {}
    for task in tasks:
        a, b = np.load(out / f"{ref_tag}_{task}.npz"), np.load(out / f"{tag}_{task}.npz")
        d = np.abs(a["obs"] - b["obs"])
        E, T = a["act"].shape[:2]
        upto = [f if f > 0 else T for f in _first(a["success"])]
        s = {
            f"step{k}": {
                "hand": float(d[:, k, 0:3].max()),
                "obj_pos": float(d[:, k, 4:7].max()),
                "rew": float(np.abs(a["rew"][:, k - 1] - b["rew"][:, k - 1]).max()),
            }
            for k in (10, 25, 50, 100, T)
        }
        s["until_ref_success"] = {
            "hand": float(max(d[e, : upto[e] + 1, 0:3].max() for e in range(E))),
            "obj_pos": float(max(d[e, : upto[e] + 1, 4:7].max() for e in range(E))),
            "rew": float(
                max(np.abs(a["rew"][e, : upto[e]] - b["rew"][e, : upto[e]]).max() for e in range(E))
            ),
        }
        s["first_success"] = (_first(a["success"]), _first(b["success"]))
        s["versions"] = (
            json.loads(str(a["consts"]))["versions"],
            json.loads(str(b["consts"]))["versions"],
        )
        summary[task] = s
    (out / f"floor_{tag}_vs_{ref_tag}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=("ref", "mjx", "compare", "floor"))
    p.add_argument(
        "--out", type=Path, default=Path(os.environ.get("MJX_PROBE_OUT", "/tmp/mjx_probe"))
    )
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default=None)
    p.add_argument("--ref-tag", default="ref")
    p.add_argument("--replay", default=None, help="ref: replay this tag's rand vecs + actions")
    p.add_argument("--iterations", type=int, default=6, help="mjx: solver/ls iterations")
    p.add_argument("--keep-margins", action="store_true", help="mjx: keep the XML geom margins")
    p.add_argument(
        "--port-settings",
        default="",
        help="ref: CPU MuJoCo with mtcworldmjx's edits, a subset of iters,margins,ccd",
    )
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.phase == "ref":
        run_ref(
            a.out, a.tasks, a.episodes, a.steps, a.seed, a.tag or "ref", a.replay, a.port_settings
        )
    elif a.phase == "mjx":
        run_mjx(a.out, a.tasks, a.tag or "mjx", a.ref_tag, a.iterations, a.keep_margins)
    elif a.phase == "floor":
        floor(a.out, a.tasks, a.tag or "cpu316replay", a.ref_tag)
    else:
        compare(a.out, a.tasks, a.tag or "mjx", a.ref_tag)


if __name__ == "__main__":
    main()
