"""Trunk Fisher of the toy pi* (asset point_sequence_far) and of the Meta-World Far asset, squashed vs pre-tanh."""
import jax, jax.numpy as jnp, numpy as np, sys
from fpc_jax.experiments import config as cfglib, sac_study, study, study_config
from fpc_jax.retention.fisher import actor_fisher, fisher_sample
from fpc_jax.agents.sac.networks import make_sac_networks
cfg = cfglib.load(study_config.SACStudyConfig, "configs/toy/point_sequence.yaml", {})
agent = sac_study.SAC
env, params = agent.build_env(cfg, "finetune")
config = agent.network(cfg, env)
pre = study.load_pretrained(cfg, agent, env, config)
far = tuple(pre.meta["far_stages"])
data = study.collect_teacher_data(agent, env, params, config, pre.state.actor_params, far, 10000, jax.random.key(0))
fi = fisher_sample(len(data["obs"]), 2560, 0)
nets = make_sac_networks(config)
obs, st = data["obs"][fi], data["stage"][fi]
mean, log_std = jax.vmap(nets.actor_apply, in_axes=(None, 0, 0))(pre.state.actor_params, obs, st)
print("toy pi*: |tanh(mean)| > 0.95 on", float(jnp.mean(jnp.abs(jnp.tanh(mean)) > 0.95)), "of action dims; mean std", float(jnp.mean(jnp.exp(log_std))))
out = {}
for m in ("squashed", "pre_tanh"):
    f = actor_fisher(nets.actor_apply, pre.state.actor_params, obs, st, mean=m)
    out[m] = np.concatenate([np.ravel(x) for p, x in jax.tree_util.tree_leaves_with_path(f) if p[0].key == "trunk"])
r = out["squashed"] / out["pre_tanh"]
print("trunk Fisher sum squashed / pre_tanh:", out["squashed"].sum() / out["pre_tanh"].sum())
print("per-parameter ratio quantiles (5, 50, 95%):", np.percentile(r, [5, 50, 95]))
