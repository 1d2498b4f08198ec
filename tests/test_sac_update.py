"""The fused SAC update (vmap over runs, no retrace on coefficient values) and the replay buffer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.agents.sac.anchors import make_anchors, placeholder_anchors
from fpc_jax.agents.sac.losses import Batch
from fpc_jax.agents.sac.networks import SACConfig, make_sac_networks, zero_critic_heads
from fpc_jax.agents.sac.replay import buffer_add, buffer_fill_reserved, buffer_init, buffer_sample
from fpc_jax.agents.sac.update import (
    SACHyper,
    init_train_state,
    stack_runs,
    train_state_from_params,
    update,
    update_step,
)
from fpc_jax.retention.penalties import RetentionCoefs

CONFIG = SACConfig(obs_dim=3, act_dim=2, num_heads=3, hidden_sizes=(8, 8), batch_size=4)
HYPER = SACHyper.create(CONFIG.act_dim)


def _batch(seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    b = CONFIG.batch_size
    return Batch(
        obs=rng.normal(size=(b, 3)).astype(np.float32),
        action=np.tanh(rng.normal(size=(b, 2))).astype(np.float32),
        reward=rng.normal(size=b).astype(np.float32),
        next_obs=rng.normal(size=(b, 3)).astype(np.float32),
        discount_mask=np.array([1.0, 0.0, 1.0, 1.0], np.float32),
        stage=np.array([0, 1, 2, 0], np.int32),
    )


@functools.cache
def _runs():
    """Three runs with different keys, lr, coefficients and anchors."""
    states, anchors = [], []
    rng = np.random.default_rng(0)
    for i in range(3):
        state = init_train_state(CONFIG, HYPER, jax.random.PRNGKey(i))
        obs = rng.normal(size=(6, 3)).astype(np.float32)
        stage = rng.integers(0, 3, size=6).astype(np.int32)
        teacher = jax.tree_util.tree_map(lambda x, i=i: x * (1.0 + 0.1 * i), state.actor_params)
        anchors.append(make_anchors(CONFIG, teacher, state.critic_params, obs, stage, obs, stage))
        states.append(state)
    hypers = [SACHyper.create(CONFIG.act_dim, lr=lr) for lr in (1e-3, 3e-4, 1e-2)]
    coefs = [
        RetentionCoefs.preset("ft"),
        RetentionCoefs.preset("bc", ks_actor=0.5, l2_critic=0.1),
        RetentionCoefs.preset("ewc", ewc_critic=1.0, bc_kl_direction=1.0, bc_actor=0.3),
    ]
    batches = [_batch(i) for i in range(3)]
    keys = list(jax.random.split(jax.random.PRNGKey(42), 3))
    return states, batches, anchors, coefs, hypers, keys


def _assert_trees_close(a, b, **tol):
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b), strict=True
    ):
        np.testing.assert_allclose(x, y, err_msg=jax.tree_util.keystr(path), **tol)


def test_vmapped_runs_equal_single_runs():
    states, batches, anchors, coefs, hypers, keys = _runs()
    stacked = [stack_runs(x) for x in (states, batches, anchors, coefs, hypers, keys)]
    v_state, v_metrics = jax.vmap(update)(*stacked)
    for i in range(3):
        s_state, s_metrics = update(states[i], batches[i], anchors[i], coefs[i], hypers[i], keys[i])
        run_i = jax.tree_util.tree_map(lambda x, i=i: x[i], (v_state, v_metrics))
        _assert_trees_close(run_i, (s_state, s_metrics), rtol=1e-5, atol=1e-6)
    # the runs really differ (different coefficients act on the parameters)
    assert not np.allclose(v_metrics["actor/loss"][1], v_metrics["actor/loss"][0])


def test_changing_coefficient_values_does_not_retrace():
    states, batches, anchors, coefs, hypers, keys = _runs()
    traces = []

    def counted(*args):
        traces.append(1)
        return update_step(*args)

    counted_update = jax.jit(counted)
    for c, h in [(coefs[0], hypers[0]), (coefs[1], hypers[1]), (coefs[2], hypers[2])]:
        state, _ = counted_update(states[0], batches[0], anchors[1], c, h, keys[0])
        jax.block_until_ready(state)
    assert len(traces) == 1
    counted_update(states[0], _batch(7), anchors[0], coefs[0], hypers[0], keys[1])
    assert len(traces) == 1  # new data and new anchors, same shapes: still one trace


def test_ft_ignores_anchors_and_lr_is_live():
    states, batches, anchors, coefs, _, keys = _runs()
    holder = placeholder_anchors(CONFIG, states[0].actor_params, states[0].critic_params, 6)
    args = (states[0], batches[0])
    s_real, _ = update(*args, anchors[2], coefs[0], HYPER, keys[0])
    s_holder, _ = update(*args, holder, coefs[0], HYPER, keys[0])
    _assert_trees_close(s_real, s_holder, rtol=1e-6, atol=1e-7)
    s_bc, _ = update(*args, anchors[2], coefs[1], HYPER, keys[0])
    assert not np.allclose(
        s_bc.actor_params["trunk"]["dense_0"]["kernel"],
        s_real.actor_params["trunk"]["dense_0"]["kernel"],
    )
    frozen = SACHyper.create(CONFIG.act_dim, lr=1e-30)
    s_frozen, _ = update(*args, anchors[2], coefs[0], frozen, keys[0])
    _assert_trees_close(s_frozen.actor_params, states[0].actor_params, rtol=0, atol=1e-12)


def test_polyak_target_and_initial_temperature():
    states, batches, anchors, coefs, _, keys = _runs()
    assert states[0].log_alpha.shape == (CONFIG.num_heads,)
    np.testing.assert_array_equal(states[0].log_alpha, 1.0)
    new, metrics = update(states[0], batches[0], anchors[0], coefs[0], HYPER, keys[0])
    expected = jax.tree_util.tree_map(
        lambda t, c: 0.995 * t + 0.005 * c, states[0].target_critic_params, new.critic_params
    )
    _assert_trees_close(new.target_critic_params, expected, rtol=1e-6, atol=1e-7)
    assert int(new.step) == 1
    assert float(metrics["alpha/mean"]) == pytest.approx(np.e, rel=1e-6)
    for name in ("critic/td", "actor/sac", "actor/ewc", "actor/bc", "actor/ks", "alpha/loss"):
        assert np.isfinite(float(metrics[name])), name


def test_train_state_from_params_and_config_validation():
    state = init_train_state(CONFIG, HYPER, jax.random.PRNGKey(0))
    again = train_state_from_params(
        CONFIG, HYPER, state.actor_params, state.critic_params, log_alpha=jnp.zeros(3)
    )
    _assert_trees_close(again.target_critic_params, state.critic_params, rtol=0, atol=0)
    np.testing.assert_array_equal(again.log_alpha, 0.0)
    with pytest.raises(ValueError, match="activation"):
        SACConfig(obs_dim=3, act_dim=2, first_activation="swishy")
    with pytest.raises(ValueError, match="act_dim"):
        SACConfig(obs_dim=3, act_dim=0)


def _transitions(start: int, n: int) -> dict[str, jax.Array]:
    ids = jnp.arange(start, start + n, dtype=jnp.float32)
    return {"id": ids, "obs": jnp.stack([ids, -ids], axis=1)}


def test_replay_reserved_slots_survive_many_adds():
    buf = buffer_init(10, {"id": jnp.zeros(()), "obs": jnp.zeros(2)}, reserved=3)
    buf = buffer_fill_reserved(buf, _transitions(-3, 3))
    add = jax.jit(buffer_add)
    for step in range(5):
        buf = add(buf, _transitions(100 * step, 4))  # a batch of 4, 20 in all on a ring of 7
    buf = buffer_add(buf, {"id": jnp.float32(999.0), "obs": jnp.zeros(2)})  # a single transition
    np.testing.assert_array_equal(buf.data["id"][:3], [-3.0, -2.0, -1.0])
    assert int(buf.size) == 10
    ring = set(np.asarray(buf.data["id"][3:]).tolist())
    assert ring == {302.0, 303.0, 400.0, 401.0, 402.0, 403.0, 999.0}  # the last 7 writes


def test_replay_samples_only_filled_slots_reserved_included():
    buf = buffer_init(20, {"id": jnp.zeros(()), "obs": jnp.zeros(2)}, reserved=5)
    buf = buffer_fill_reserved(buf, _transitions(-2, 2))  # 2 of 5 reserved slots used
    buf = buffer_add(buf, _transitions(1, 3))
    sample = jax.jit(buffer_sample, static_argnums=2)(buf, jax.random.PRNGKey(0), 2000)
    ids = set(np.asarray(sample["id"]).tolist())
    assert ids == {-2.0, -1.0, 1.0, 2.0, 3.0}
    np.testing.assert_array_equal(sample["obs"][:, 0], sample["id"])
    with pytest.raises(ValueError, match="reserved"):
        buffer_fill_reserved(buf, _transitions(0, 6))


def test_replay_ring_limit_keeps_each_runs_own_size_in_one_allocation():
    """Runs of one program with ring limits 4 and 8 in 10 slots: each keeps its last 4 / 8
    online transitions (CW's 1M next to EM's 100k); vmapped, the limit is a per-run leaf."""
    ex = {"id": jnp.zeros(()), "obs": jnp.zeros(2)}
    bufs = [buffer_init(10, ex, reserved=2, ring_limit=n) for n in (4, 8)]
    both = jax.tree.map(lambda *x: jnp.stack(x), *bufs)
    add = jax.jit(jax.vmap(buffer_add, in_axes=(0, None)))
    for step in range(3):
        both = add(both, _transitions(10 * step, 3))  # 9 writes
    small, large = (jax.tree.map(lambda x, i=i: x[i], both) for i in (0, 1))
    assert int(small.size) == 4 and int(large.size) == 8
    assert set(np.asarray(small.data["id"][2:6]).tolist()) == {12.0, 20.0, 21.0, 22.0}
    assert set(np.asarray(small.data["id"][6:]).tolist()) == {0.0}  # never written
    want = {1.0, 2.0, 10.0, 11.0, 12.0, 20.0, 21.0, 22.0}
    assert set(np.asarray(large.data["id"][2:]).tolist()) == want
    with pytest.raises(ValueError, match="ring_limit"):
        buffer_init(10, ex, reserved=2, ring_limit=9)


def test_replay_capacity_beyond_what_a_run_writes_changes_nothing():
    """Issue 16's replay point: below its ring size a buffer samples the same transitions
    whatever its capacity (a 20k-step toy run is the same with 100k or CW's 1M slots)."""
    ex = {"id": jnp.zeros(()), "obs": jnp.zeros(2)}
    samples = []
    for capacity in (64, 4096):
        buf = buffer_add(buffer_init(capacity, ex), _transitions(0, 50))
        samples.append(buffer_sample(buf, jax.random.PRNGKey(3), 256))
    jax.tree.map(np.testing.assert_array_equal, *samples)


def test_zero_critic_heads_keeps_only_the_named_stages():
    state = init_train_state(CONFIG, HYPER, jax.random.PRNGKey(0))
    out = zero_critic_heads(state.critic_params, keep=[1])
    q = jax.vmap(make_sac_networks(CONFIG).critic_apply, in_axes=(None, 0, 0, 0))
    b = _batch(0)
    for stage in (0, 2):  # zeroed heads: Q = 0 for any state and action
        st = np.full(CONFIG.batch_size, stage, np.int32)
        np.testing.assert_array_equal(q(out, b.obs, b.action, st), 0.0)
    st = np.full(CONFIG.batch_size, 1, np.int32)
    np.testing.assert_array_equal(
        q(out, b.obs, b.action, st), q(state.critic_params, b.obs, b.action, st)
    )
    assert np.abs(q(state.critic_params, b.obs, b.action, st)).min() > 0
    _assert_trees_close(out["trunk"], state.critic_params["trunk"], rtol=0, atol=0)
