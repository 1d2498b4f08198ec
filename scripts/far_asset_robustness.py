"""How robust is the packaged Far policy to perturbed actions? Success of each Far task alone under
the deterministic policy ``tanh(mean)``, the SAC policy's own samples ``tanh(mean + std * eps)``,
and the mean plus extra pre-tanh Gaussian noise of fixed std (a stand-in for a drifted policy).

    python scripts/far_asset_robustness.py  # -> benchmarks/results/far_asset_robustness_cpu.json
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from fpc_jax.agents.sac.networks import make_sac_networks
from fpc_jax.envs.metaworld_cpu import MetaWorldSequence, MetaWorldSequenceConfig
from fpc_jax.experiments import results
from fpc_jax.experiments.checkpoint import load_policy, read_meta
from fpc_jax.experiments.evaluate import FAR_TASKS, evaluate_actor, head_of, packaged_asset_path


def perturbed_policy(config, actor_params, mode: str, noise: float | None, seed: int):
    """``mode``: "mean" (tanh(mean + noise * eps)) or "sample" (tanh(mean + std * eps))."""
    apply = jax.jit(jax.vmap(make_sac_networks(config).actor_apply, in_axes=(None, 0, 0)))
    rng = np.random.default_rng(seed)

    def policy(obs, stage):
        mean, log_std = (np.asarray(x) for x in apply(actor_params, obs, stage))
        std = np.exp(log_std) if mode == "sample" else noise
        return np.tanh(mean + std * rng.standard_normal(mean.shape))

    return policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--noises", default="0,0.1,0.2,0.4")
    ap.add_argument("--out", default="benchmarks/results/far_asset_robustness_cpu.json")
    args = ap.parse_args()
    path = packaged_asset_path()
    meta, ckpt = read_meta(path), load_policy(path)
    actor = ckpt.state.actor_params
    net = make_sac_networks(ckpt.config)
    rows, t0 = [], time.perf_counter()
    for task in FAR_TASKS:
        head = head_of(task, meta["tasks"])
        # the policy's own std on its first state, for scale
        env = MetaWorldSequence(MetaWorldSequenceConfig(tasks=(task,), stage_ids=(head,)), seed=0)
        _, log_std = net.actor_apply(actor, jnp.asarray(env.reset()), jnp.int32(head))
        conditions = [("mean", float(n)) for n in args.noises.split(",")] + [("sample", None)]
        for mode, noise in conditions:
            policy = perturbed_policy(ckpt.config, actor, mode, noise, args.seed)
            s = evaluate_actor(
                ckpt.config, actor, task, head, args.episodes, args.seed, policy=policy
            )
            row = {
                "task": task,
                "mode": mode,
                "noise_std": noise,
                "episodes": args.episodes,
                "success": float(np.mean(s)),
                "policy_std_first_state": np.exp(np.asarray(log_std)).round(4).tolist(),
            }
            rows.append(row)
            print(row, flush=True)
    results.write_json(
        args.out,
        {
            "benchmark": "far_asset_robustness",
            "env": results.environment_info(),
            "asset": f"fpc_jax/assets/{path.name}",  # in the package, not this machine's path
            "asset_method": meta.get("method"),
            "seed": args.seed,
            "wall_s": time.perf_counter() - t0,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
