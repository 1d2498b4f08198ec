"""The packaged pre-trained Far policy: loads with the CW SAC network and solves each Far task."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.metaworld
pytest.importorskip("metaworld")

from fpc_jax.agents.sac.networks import SACConfig, make_sac_networks  # noqa: E402
from fpc_jax.envs.metaworld_cpu import MetaWorldSequence  # noqa: E402
from fpc_jax.experiments.checkpoint import load_policy  # noqa: E402
from fpc_jax.experiments.evaluate import (  # noqa: E402
    evaluate_policy,
    packaged_asset_path,
    success_rates,
    write_eval_csv,
)

TASKS = ("hammer-v3", "push-v3", "peg-unplug-side-v3", "push-wall-v3")
FAR = {"peg-unplug-side-v3": 2, "push-wall-v3": 3}


@pytest.fixture(scope="module")
def checkpoint():
    config = SACConfig(obs_dim=40, act_dim=4, num_heads=4)
    return load_policy(packaged_asset_path(), expected=config)


def test_asset_meta_and_sac_start_point(checkpoint):
    meta = checkpoint.meta
    assert meta["method"] == "bc_scripted_expert+critic_warmup"
    assert meta["tasks"] == list(TASKS)
    assert meta["far_stages"] == [2, 3]
    assert meta["T"] == 200
    log_alpha = np.asarray(checkpoint.state.log_alpha)
    assert log_alpha.shape == (4,) and np.all(np.isfinite(log_alpha))
    nets = make_sac_networks(checkpoint.config)
    for task, head in FAR.items():
        obs = MetaWorldSequence(tasks=(task,), stage_ids=(head,), seed=0).reset()
        mean, log_std = nets.actor_apply(checkpoint.state.actor_params, jnp.asarray(obs), head)
        assert np.all(np.isfinite(np.asarray(mean)))
        assert -6.0 < float(jnp.mean(log_std)) < 0.0, "log-std collapsed or untrained"
        action = jnp.tanh(mean)
        q = nets.critic_apply(checkpoint.state.critic_params, jnp.asarray(obs), action, head)
        assert np.all(np.isfinite(np.asarray(q))) and float(jnp.min(q)) > 0.0
    same = jax.tree.map(
        lambda a, b: bool(jnp.all(a == b)),
        checkpoint.state.critic_params,
        checkpoint.state.target_critic_params,
    )
    assert all(jax.tree.leaves(same))


@pytest.mark.parametrize("task", sorted(FAR))
def test_asset_solves_far_task_alone(task):
    rows = evaluate_policy(tasks=(task,), episodes=20, seed=123)
    assert [r["episode"] for r in rows] == list(range(20))
    assert success_rates(rows)[task] >= 0.9


def test_unknown_task_is_rejected():
    with pytest.raises(ValueError, match="not a stage of this checkpoint"):
        evaluate_policy(tasks=("reach-v3",), episodes=1)


def test_workers_give_the_same_episodes_and_csv_columns(tmp_path):
    rows = evaluate_policy(tasks=("push-wall-v3",), episodes=3, seed=7)
    assert evaluate_policy(tasks=("push-wall-v3",), episodes=3, seed=7, workers=1) == rows
    path = write_eval_csv(rows, tmp_path / "out")
    with path.open() as f:
        read = list(csv.DictReader(f))
    assert path.name == "eval.csv"
    assert list(read[0]) == ["task", "episode", "success"]
    assert [(r["task"], int(r["episode"]), int(r["success"])) for r in read] == [
        (r["task"], r["episode"], r["success"]) for r in rows
    ]
