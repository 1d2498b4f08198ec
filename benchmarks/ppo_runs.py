"""PPO agent steps/s on key-door-rooms against the number of vmapped runs, with a per-run Python
loop of the same jitted PPO chunk measured in the same process (the baseline).

One chunk = ``steps_per_chunk`` env steps per run: rollouts of ``num_envs x num_steps``, GAE,
``epochs x minibatches`` Adam steps with KS, BC and EWC all active, plus the chunk-start
evaluation. Agent steps/s = runs x steps_per_chunk / steady-state seconds of one chunk.

    python benchmarks/ppo_runs.py --runs 1,5,25,50 --loop-runs 1,5 \
        --out benchmarks/results/ppo_runs_cpu.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness  # benchmarks/harness.py (the script's folder is on sys.path)
import jax
import jax.numpy as jnp

from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import ppo_study, study
from fpc_jax.retention.penalties import RetentionCoefs

CONFIG = Path(__file__).resolve().parents[1] / "configs/key_door/main.yaml"
ACTIVE = dict(ks_actor=0.5, ks_decay_rate=2e-5, bc_actor=2.0, ewc_actor=2e6)


def setup(overrides: dict):
    cfg = cfglib.load(ppo_study.PPOStudyConfig, CONFIG, overrides)
    agent = ppo_study.PPO
    env, params = agent.build_env(cfg, "finetune")
    config = agent.network(cfg, env)
    hyper = agent.hyper(cfg, config)
    static = agent.loop_static(cfg, "finetune")
    state = agent.init_state(config, hyper, jax.random.key(0))
    anchors = agent.null_anchors(config, state)
    anchors = anchors.replace(
        actor_fisher=jax.tree.map(lambda x: x + 1e-3, anchors.actor_fisher),
        bc_obs=jnp.zeros((cfg.bc_states, config.obs_dim)),
        bc_stage=jnp.zeros((cfg.bc_states,), jnp.int32),
        bc_logits=jnp.zeros((cfg.bc_states, config.num_actions)),
        bc_value=jnp.zeros((cfg.bc_states, *anchors.bc_value.shape[1:])),
    )
    pool = jnp.asarray(env.far_stages, jnp.int32)
    chunk, _ = agent.make_chunk(env, static, config)

    def runs(n):
        keys = jax.random.split(jax.random.key(1), n)
        return study.stack([agent.init_run(env, static, state, params, pool, k) for k in keys])

    coefs = RetentionCoefs.create(**ACTIVE)
    return cfg, chunk, runs, anchors, coefs, hyper, params, pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="1,5,25")
    ap.add_argument("--loop-runs", default="1,5", help="run counts of the per-run Python loop")
    ap.add_argument("--steps-per-chunk", type=int, default=16384)
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/ppo_runs_cpu.json")
    args = ap.parse_args()
    overrides = {"steps_per_chunk": args.steps_per_chunk, "eval_episodes": args.eval_episodes}
    cfg, chunk, runs, anchors, coefs, hyper, params, pool = setup(overrides)
    step0 = jnp.int32(0)
    vm = jax.jit(jax.vmap(chunk, in_axes=(0, None, None, 0, 0, None, None)))
    one = jax.jit(chunk)
    rows = []
    for n in [int(x) for x in args.runs.split(",")]:
        r = runs(n)
        t = harness.timed(
            vm,
            r,
            step0,
            anchors,
            study.bcast(coefs, n),
            study.bcast(hyper, n),
            params,
            pool,
            repeats=args.repeats,
        )
        rows.append(
            {
                "mode": "vmap",
                "runs": n,
                **t,
                "agent_steps_per_s": n * cfg.steps_per_chunk / t["steady_s"],
            }
        )
        print(rows[-1], flush=True)
    for n in [int(x) for x in args.loop_runs.split(",")]:
        r = [jax.tree.map(lambda x, i=i: x[i], runs(n)) for i in range(n)]

        def loop(r=r):
            return [one(ri, step0, anchors, coefs, hyper, params, pool) for ri in r]

        t = harness.timed(loop, repeats=args.repeats)
        rows.append(
            {
                "mode": "python_loop",
                "runs": n,
                **t,
                "agent_steps_per_s": n * cfg.steps_per_chunk / t["steady_s"],
            }
        )
        print(rows[-1], flush=True)
    config = {
        "config": "configs/key_door/main.yaml",
        **overrides,
        "num_envs": cfg.num_envs,
        "num_steps": cfg.num_steps,
        "epochs": cfg.epochs,
        "minibatches": cfg.minibatches,
        "hidden_sizes": list(cfg.hidden_sizes),
        "coefs": ACTIVE,
    }
    path = harness.write(args.out, {"benchmark": "ppo_runs", "config": config, "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
