"""Trunk Fisher of the Meta-World Far asset on its own Far states: squashed vs pre-tanh mean."""
import jax, jax.numpy as jnp, numpy as np
from fpc_jax.experiments import config as cfglib, robotic_sequence as rs
from fpc_jax.agents.sac.networks import make_sac_networks
from fpc_jax.retention.fisher import actor_fisher

cfg = cfglib.build(rs.RoboticSequenceConfig, {"bc_states": 100, "em_transitions": 100, "fisher_states": 1024,
                                              "methods": ["ewc"], "seeds": 1, "buffer_capacity": 1000})
seen = {}
def fake(config, actor, critic, bc_obs, bc_stage, f_obs, f_stage, fisher_mean):
    seen.update(config=config, actor=actor, obs=f_obs, stage=f_stage); return "anchors"
rs.make_anchors = fake
rs.setup_runs(cfg, log=lambda *_: None)
nets = make_sac_networks(seen["config"])
mean, log_std = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(seen["actor"], seen["obs"], seen["stage"])
print("MW Far asset: |tanh(mean)| > 0.95 on", float(jnp.mean(jnp.abs(jnp.tanh(mean)) > 0.95)), "of action dims; mean std", float(jnp.mean(jnp.exp(log_std))))
out = {}
for m in ("squashed", "pre_tanh"):
    f = actor_fisher(nets.actor_apply, seen["actor"], seen["obs"], seen["stage"], mean=m)
    out[m] = np.concatenate([np.ravel(x) for p, x in jax.tree_util.tree_leaves_with_path(f) if p[0].key == "trunk"])
r = out["squashed"] / out["pre_tanh"]
print("trunk Fisher sum squashed / pre_tanh:", out["squashed"].sum() / out["pre_tanh"].sum())
print("per-parameter ratio quantiles (5, 50, 95%):", np.percentile(r, [5, 50, 95]))
