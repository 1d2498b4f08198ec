"""KeyDoorRooms: hand-built moves, doors, key pickup, window cells, oracle, stitching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.envs import key_door_rooms as kd
from fpc_jax.envs import make, registered
from fpc_jax.envs.sequence import single_stage_params

F, W, K, D = kd.FLOOR, kd.WALL, kd.KEY, kd.DOOR


@pytest.fixture(scope="module")
def env_params():
    return make("key_door_rooms")


def _act(a: int) -> jax.Array:
    return jax.nn.one_hot(a, kd.ACTION_SIZE)


def _room_state(pos, key_pos, room=0, has_key=False, door_row=None) -> kd.RoomState:
    door_row = (1 if room < 2 else 5) if door_row is None else door_row
    return kd.RoomState(
        pos=jnp.asarray(pos, jnp.int32),
        key_pos=jnp.asarray(key_pos, jnp.int32),
        door=jnp.asarray([door_row, 8], jnp.int32),
        has_key=jnp.bool_(has_key),
        room=jnp.int32(room),
    )


def _sub_step(env, params, state, a):
    return env.subtask.step(jax.random.PRNGKey(0), state, _act(a), params.sub, state.room)


def test_registered_and_metadata(env_params):
    env, params = env_params
    assert "key_door_rooms" in registered()
    assert env.subtask.observation_size == 5 * 5 * 4 + 2 == 102
    assert env.observation_size == 103 and env.action_size == 4 and env.num_heads == 4
    assert env.stage_names == ("close_a", "close_b", "far_a", "far_b")
    assert env.close_stages == (0, 1) and env.far_stages == (2, 3)
    assert int(params.T) == kd.DEFAULT_T == 50 and float(params.beta) == pytest.approx(0.1)
    np.testing.assert_array_equal(params.stage_ids, [0, 1, 2, 3])
    env5, params5 = make("key_door_rooms", num_rooms=5, view=3, height=7, width=9)
    assert env5.stage_names == ("close_a", "close_b", "close_c", "far_a", "far_b")
    assert env5.close_stages == (0, 1, 2) and env5.far_stages == (3, 4)
    assert env5.observation_size == 3 * 3 * 4 + 3 and params5.sub.start.shape == (5, 2)
    np.testing.assert_array_equal(params5.sub.door_row, [1, 1, 1, 7, 7])
    np.testing.assert_array_equal(params5.sub.start[0], [4, 1])


def test_door_blocks_without_key_and_opens_with_it(env_params):
    env, params = env_params
    _, st, r, success = _sub_step(env, params, _room_state([1, 7], [2, 3]), kd.RIGHT)
    np.testing.assert_array_equal(st.pos, [1, 7])
    assert not bool(success) and float(r) == 0.0
    _, st, r, success = _sub_step(env, params, _room_state([1, 7], [2, 3], has_key=True), kd.RIGHT)
    np.testing.assert_array_equal(st.pos, [1, 8])
    assert bool(success) and float(r) == 1.0
    # a Far room's door is at the bottom: the top-right move is a wall there even with the key
    far = _room_state([1, 7], [4, 3], room=2, has_key=True)
    _, st, _, success = _sub_step(env, params, far, kd.RIGHT)
    assert not bool(success) and st.pos.tolist() == [1, 7]
    _, _, _, success = _sub_step(env, params, far.replace(pos=jnp.array([5, 7])), kd.RIGHT)
    assert bool(success)


@pytest.mark.parametrize(
    ("pos", "a"),
    [([3, 1], kd.LEFT), ([1, 4], kd.UP), ([5, 4], kd.DOWN), ([3, 7], kd.RIGHT), ([5, 7], kd.RIGHT)],
)
def test_walls_block(env_params, pos, a):
    env, params = env_params
    _, st, r, success = _sub_step(env, params, _room_state(pos, [2, 3], has_key=True), a)
    np.testing.assert_array_equal(st.pos, pos)
    assert not bool(success) and float(r) == 0.0


def test_free_moves(env_params):
    env, params = env_params
    for a, expected in [(kd.UP, [2, 4]), (kd.DOWN, [4, 4]), (kd.LEFT, [3, 3]), (kd.RIGHT, [3, 5])]:
        _, st, _, _ = _sub_step(env, params, _room_state([3, 4], [1, 6]), a)
        np.testing.assert_array_equal(st.pos, expected)
    # the action is the argmax of the vector, so logits act like their one-hot
    st0 = _room_state([3, 4], [1, 6])
    logits = jnp.array([0.1, -2.0, 0.3, 0.2])
    _, st, _, _ = env.subtask.step(jax.random.PRNGKey(0), st0, logits, params.sub, st0.room)
    np.testing.assert_array_equal(st.pos, [3, 3])


def test_key_pickup_once(env_params):
    env, params = env_params
    st = _room_state([2, 2], [2, 3])
    obs, st, r, _ = _sub_step(env, params, st, kd.RIGHT)
    assert bool(st.has_key) and float(r) == pytest.approx(0.2) and float(obs[100]) == 1.0
    assert not bool(jnp.any(kd.window_cells(st, 5, 7, 5) == K))  # the key is gone from the room
    rewards = []
    for a in (kd.LEFT, kd.RIGHT, kd.DOWN, kd.UP):
        _, st, r, _ = _sub_step(env, params, st, a)
        rewards.append(float(r))
    assert rewards == [0.0, 0.0, 0.0, 0.0] and bool(st.has_key)
    _, p2 = make("key_door_rooms", key_reward=0.5)
    _, _, r, _ = _sub_step(env, p2, _room_state([2, 2], [2, 3]), kd.RIGHT)
    assert float(r) == 0.5


def test_reset_start_key_and_door_regions(env_params):
    env, params = env_params
    keys = jax.random.split(jax.random.PRNGKey(1), 512)
    for k in range(4):
        _, st = jax.vmap(lambda key, k=k: env.subtask.reset(key, params.sub, jnp.int32(k)))(keys)
        assert bool(jnp.all(st.pos == jnp.array([3, 1]))) and not bool(jnp.any(st.has_key))
        rows = {1, 2} if k in env.close_stages else {4, 5}
        door = [1, 8] if k in env.close_stages else [5, 8]
        assert bool(jnp.all(st.door == jnp.array(door))) and bool(jnp.all(st.room == k))
        cells = {tuple(c) for c in np.asarray(st.key_pos).tolist()}
        assert cells == {(r, c) for r in rows for c in range(3, 7)}  # every cell, and only these


def test_window_contents_at_hand_built_position(env_params):
    env, params = env_params
    st = _room_state([1, 7], [2, 6])  # top-right corner of a Close room, next to its door
    expected = np.array(
        [
            [W, W, W, W, W],  # row -1 (outside)
            [W, W, W, W, W],  # row 0 (top wall)
            [F, F, F, D, W],  # row 1: cols 5..7 floor, door at col 8, outside at col 9
            [F, K, F, W, W],  # row 2: key at col 6
            [F, F, F, W, W],  # row 3
        ]
    )
    np.testing.assert_array_equal(kd.window_cells(st, 5, 7, 5), expected)
    obs = env.subtask.observe(st, params.sub)
    assert obs.shape == (102,) and obs.dtype == jnp.float32
    onehot = np.asarray(obs[:100]).reshape(5, 5, 4)
    np.testing.assert_array_equal(onehot.argmax(-1), expected)
    assert (onehot.sum(-1) == 1).all()
    assert float(obs[100]) == 0.0 and float(obs[101]) == pytest.approx(0.5)
    far = env.subtask.observe(st.replace(room=jnp.int32(3)), params.sub)
    assert float(far[101]) == pytest.approx(-0.5)


def test_close_far_observations_differ_only_by_cue(env_params):
    env, params = env_params
    # at the entry cell with the key out of view (cols > 3) both rooms look the same
    for key_col in (5, 6):
        close = env.subtask.observe(_room_state([3, 1], [1, key_col], room=0), params.sub)
        far = env.subtask.observe(_room_state([3, 1], [5, key_col], room=2), params.sub)
        diff = np.flatnonzero(np.asarray(close != far))
        np.testing.assert_array_equal(diff, [101])
    # mirrored geometry: every position and key of a Far room is the flipped Close window
    for r in range(1, 6):
        for c in range(1, 8):
            for key in ([1, 3], [2, 5], [2, 6]):
                cw = kd.window_cells(_room_state([r, c], key, room=1), 5, 7, 5)
                far_st = _room_state([6 - r, c], [6 - key[0], key[1]], room=2)
                np.testing.assert_array_equal(kd.window_cells(far_st, 5, 7, 5), cw[::-1])


def _rollout(env, params, key, policy, steps):
    key_reset, key_run = jax.random.split(key)
    _, state = env.reset(key_reset, params)

    def body(state, key):
        key_act, key_step = jax.random.split(key)
        action = policy(key_act, state, params)
        _, state, r, term, trunc, info = env.step(key_step, state, action, params)
        return state, (r, term, trunc, info)

    return jax.lax.scan(body, state, jax.random.split(key_run, steps))


def _oracle(key, state, params):
    return kd.oracle_policy(state, params)


def _random(key, state, params):
    return jax.nn.one_hot(jax.random.randint(key, (), 0, 4), 4)


def test_oracle_solves_each_room_alone(env_params):
    env, params = env_params

    def run(k, key):
        return _rollout(env, single_stage_params(params, k), key, _oracle, kd.DEFAULT_T)

    keys = jax.random.split(jax.random.PRNGKey(2), 256)
    rooms = jnp.repeat(jnp.arange(4), 64)
    state, (r, term, trunc, info) = jax.jit(jax.vmap(run))(rooms, keys)
    assert bool(jnp.all(state.stages_solved == 1)) and not bool(jnp.any(trunc))
    assert bool(jnp.all(info["stage"] == rooms[:, None]))
    # shortest path: 2 rows to the key band and door row + 6 cols to the door = 9 steps, any key
    np.testing.assert_array_equal(np.asarray(term).argmax(1), 8)
    np.testing.assert_allclose(np.asarray(r).sum(1), 0.2 + 0.1 * (50 - 9), rtol=1e-5)


def test_oracle_solves_full_sequence(env_params):
    env, params = env_params
    keys = jax.random.split(jax.random.PRNGKey(3), 256)
    state, (r, term, trunc, info) = jax.jit(
        jax.vmap(lambda k: _rollout(env, params, k, _oracle, 4 * kd.DEFAULT_T))
    )(keys)
    assert bool(jnp.all(state.stages_solved == 4)) and bool(jnp.all(term.sum(1) == 1))
    assert not bool(jnp.any(trunc))
    succ = np.asarray(info["stage_success"])
    for i in range(256):
        at = np.flatnonzero(succ[i])
        np.testing.assert_array_equal(np.diff(np.concatenate([[-1], at])), [9, 9, 9, 9])
        np.testing.assert_array_equal(np.asarray(info["stage"][i])[at], range(4))
    np.testing.assert_allclose(np.asarray(r[:, succ[0]]), 0.1 * (50 - 9), rtol=1e-5)


def test_random_policy_rarely_reaches_far(env_params):
    env, params = env_params
    keys = jax.random.split(jax.random.PRNGKey(4), 1024)
    state, _ = jax.jit(jax.vmap(lambda k: _rollout(env, params, k, _random, 4 * kd.DEFAULT_T)))(
        keys
    )
    assert 0.01 < float(jnp.mean(state.stages_solved >= 1)) < 0.15
    assert float(jnp.mean(state.stages_solved >= 2)) <= 0.01


def test_stage_advance_via_sequence_env(env_params):
    env, params = env_params
    _, state = env.reset(jax.random.PRNGKey(5), params)
    state = state.replace(t=jnp.int32(6), sub=_room_state([1, 7], [2, 3], has_key=True))
    obs, state, r, term, trunc, info = env.step(jax.random.PRNGKey(6), state, _act(3), params)
    assert bool(info["stage_success"]) and int(info["stage"]) == 0
    assert not bool(term) and not bool(trunc) and float(r) == pytest.approx(0.1 * (50 - 7))
    assert int(state.stage) == 1 and int(state.t) == 0 and int(state.sub.room) == 1
    np.testing.assert_array_equal(state.sub.pos, [3, 1])
    assert not bool(state.sub.has_key) and float(obs[101]) == 0.5 and float(obs[102]) == 0.0
    # room 1 -> room 2: the next room is Far (cue flips, door at the bottom)
    state = state.replace(sub=state.sub.replace(pos=jnp.array([1, 7]), has_key=jnp.bool_(True)))
    obs, state, *_ = env.step(jax.random.PRNGKey(7), state, _act(3), params)
    assert int(state.stage) == 2 and float(obs[101]) == -0.5
    np.testing.assert_array_equal(state.sub.door, [5, 8])
    assert 4 <= int(state.sub.key_pos[0]) <= 5


def test_jit_vmap_batch_matches_single_runs():
    env, params = make("key_door_rooms", T=20, cue=0.25)
    keys = jax.random.split(jax.random.PRNGKey(8), 64)
    run = jax.jit(jax.vmap(lambda k: _rollout(env, params, k, _random, 40)))
    state, (r, *_rest) = run(keys)
    assert r.shape == (64, 40) and state.obs.shape == (64, 103)
    single = jax.jit(lambda k: _rollout(env, params, k, _random, 40))
    for i in (0, 17, 63):
        s_i, (r_i, *_rest) = single(keys[i])
        np.testing.assert_array_equal(r[i], r_i)
        np.testing.assert_array_equal(state.obs[i], s_i.obs)
    # vmap over env variants: one cue magnitude per key
    cues = jnp.linspace(0.0, 1.0, 64)
    batched = jax.vmap(lambda c: params.replace(sub=params.sub.replace(cue=c)))(cues)
    obs, _ = jax.jit(jax.vmap(env.reset))(keys, batched)
    np.testing.assert_allclose(obs[:, 101], cues)


def test_overrides_and_validation():
    _, params = make("key_door_rooms", T=30, beta=0.5, cue=0.1, stage_ids=(2, 3))
    assert int(params.T) == 30 and float(params.beta) == 0.5
    assert float(params.sub.cue) == pytest.approx(0.1)
    assert int(params.num_stages) == 2 and params.stage_ids[:2].tolist() == [2, 3]
    _, params = make("key_door_rooms", door_row=3)
    np.testing.assert_array_equal(params.sub.door_row, [3, 3, 3, 3])
    with pytest.raises(ValueError, match=r"valid:.*cue_code"):
        make("key_door_rooms", cue_typo=1.0)
    with pytest.raises(ValueError, match="shape"):
        make("key_door_rooms", cue_code=[1.0, -1.0])
    with pytest.raises(ValueError, match="outside the key region"):
        make("key_door_rooms", key_lo=[[1, 1]] * 4, key_hi=[[5, 7]] * 4)
    with pytest.raises(ValueError, match="door_row"):
        make("key_door_rooms", door_row=6)
    with pytest.raises(ValueError, match="num_rooms"):
        make("key_door_rooms", num_rooms=2)
    with pytest.raises(ValueError, match="view"):
        make("key_door_rooms", view=4)
