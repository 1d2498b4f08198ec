"""Montezuma's Revenge on the real game (ale-py): RAM map, start states, room success, the pool."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fpc_jax.envs.ale_montezuma as mz

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ale():
    return pytest.importorskip("ale_py")


@pytest.fixture(scope="module")
def route(ale) -> bytes:
    return np.load(mz.ASSET_DIR / "route.npy").tobytes()


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((mz.ASSET_DIR / "meta.json").read_text())


def _build_script():
    spec = importlib.util.spec_from_file_location(
        "build_mz", ROOT / "scripts/build_montezuma_starts.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_imports_without_ale_py():
    code = "import sys, fpc_jax.envs.ale_montezuma, fpc_jax.envs.ale_workers; "
    code += "assert 'ale_py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- pure parts: geometry, tracker, preprocessing ----------------------------------------------


def test_exit_side_follows_the_pyramid():
    assert mz.exit_side(1, 2) == "right" and mz.exit_side(1, 0) == "left"
    assert mz.exit_side(2, 6) == "bottom" and mz.exit_side(6, 2) == "top"
    assert mz.exit_side(13, 21) == "bottom" and mz.exit_side(21, 22) == "right"
    assert mz.exit_side(1, 6) == "other" and mz.exit_side(1, 99) == "other"


def test_room_tracker_on_a_hand_made_sequence():
    tr = mz.RoomTracker()
    tr.reset(2, "left", 0)
    assert tr.update(2, 0, 0.0) == -1
    assert tr.update(1, 0, 0.0) == -1  # back out through the entrance: no success in room 2
    assert tr.entrance == "right"
    assert tr.update(2, 0, 0.0) == -1  # room 1 entered from its right and left by its right
    tr.reset(2, "left", 0)
    assert tr.update(6, 0, 0.0) == 2  # entered left, left through the bottom: success in room 2
    assert tr.entrance == "top" and tr.room == 6
    assert tr.update(6, 0b10, 0.0) == 6  # a new item
    assert tr.update(6, 0, 300.0) == 6  # a reward (the key used at a door)
    assert tr.update(6, 0, 0.0) == -1  # an item lost without reward is no success
    assert tr.visited == (1 << 2) | (1 << 6) and tr.succeeded == (1 << 2) | (1 << 6)
    tr.reset(1, "start", 0)
    assert tr.update(0, 0, 0.0) == 1  # the game-start room: any exit counts


def test_room_tracker_same_exit_is_not_a_success():
    tr = mz.RoomTracker()
    tr.reset(1, "right", 0)
    assert tr.update(2, 0, 0.0) == -1
    assert tr.succeeded == 0
    assert mz.room_success_rate(np.array([tr.visited]), np.array([tr.succeeded]), 1) == 0.0
    assert np.isnan(mz.room_success_rate(np.array([tr.visited]), np.array([0]), 5))


def test_area_resize_weights():
    m = mz._area_matrix(210, 84)
    np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(m.sum(0), 84 / 210, rtol=1e-5)  # every input pixel weighs the same
    two = mz._area_matrix(168, 84)
    x = np.arange(168, dtype=np.float32)
    np.testing.assert_allclose(two @ x, x.reshape(84, 2).mean(1))
    frame = np.full(mz.FRAME_SHAPE, 77, np.uint8)
    assert (mz.preprocess(frame, frame // 2) == 77).all()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, *mz.FRAME_SHAPE)).astype(np.uint8)
    ref = m.astype(np.float64) @ np.maximum(a, b) @ mz._area_matrix(160, 84).astype(np.float64).T
    out = mz.preprocess(a, b)
    assert out.shape == (84, 84) and out.dtype == np.uint8
    assert np.abs(out - ref).max() <= 0.5 + 1e-3


# --- the real game -------------------------------------------------------------------------------


def test_ram_at_game_start(ale):
    game = mz.MontezumaGame(seed=0, sticky=0.0)
    ram = game.ram()
    assert int(ram[mz.RAM_ROOM]) == 1 and int(ram[mz.RAM_LEVEL]) == 0
    assert (int(ram[mz.RAM_X]), int(ram[mz.RAM_Y])) == (77, 235)
    assert int(ram[mz.RAM_LIVES]) == 5 and game.ale.lives() == 6  # ALE counts ram[58] + 1
    assert int(ram[mz.RAM_INVENTORY]) == 0 and int(ram[mz.RAM_DYING]) == 0
    f = mz.ram_features(ram)
    assert f.shape == (mz.RAM_SIZE,) and f.dtype == np.float32
    named = dict(zip(mz.RAM_FEATURES, f, strict=True))
    assert named["room_1"] == 1.0 and f[: mz.NUM_ROOMS].sum() == 1.0
    assert named["x"] == pytest.approx(77 / 152) and named["y"] == pytest.approx(107 / 128)
    assert named["lives"] == 1.0 and named["dying"] == 0.0
    assert sum(named[f"item_bit_{b}"] for b in range(8)) == 0.0
    game.step(4, frames=False)  # LEFT: x down by 4 per agent step, facing left (72)
    assert (int(game.ram()[mz.RAM_X]), int(game.ram()[mz.RAM_FACING])) == (73, 72)
    game.step(3, frames=False)  # RIGHT: facing right (128), the feature's 1
    assert (int(game.ram()[mz.RAM_X]), int(game.ram()[mz.RAM_FACING])) == (77, 128)
    assert mz.ram_features(game.ram())[mz.RAM_FEATURES.index("facing_right")] == 1.0


def test_stepping_matches_gymnasium_v5(ale, route):
    import gymnasium as gym

    gym.register_envs(ale)
    env = gym.make("ALE/MontezumaRevenge-v5", repeat_action_probability=0.0)
    env.reset(seed=0)
    game = mz.MontezumaGame(seed=0, sticky=0.0)
    for a in route[:450]:
        _, r_ref, *_ = env.step(a)
        r, _ = game.step(a, frames=False)
        assert r == r_ref
        np.testing.assert_array_equal(game.ram(), env.unwrapped.ale.getRAM())
    env.close()


def test_route_replay_fires_the_successes_of_the_asset(ale, route, meta):
    """Replay the route (sticky off) in the env: the key, the door and leaving room 1 are room
    successes at the recorded steps, and rooms change where the asset says."""
    env = mz.MontezumaEnv(mz.MontezumaConfig(obs="ram", sticky=0.0, max_steps=10_000))
    env.reset()
    events, changes = [], []
    n = meta["ram_room_changes"][3][0]  # through the first few room changes
    for t, a in enumerate(route[:n], 1):
        _, _, term, trunc, info = env.step(a)
        assert not (term or trunc) and not info["life_lost"]
        if info["room_changed"]:
            changes.append([t, int(info["room"])])
        if int(info["success_room"]) >= 0:
            events.append((t, int(info["success_room"])))
    assert changes == [c for c in meta["ram_room_changes"][1:] if c[0] <= n]
    key = meta["route_events"][0]
    assert key["ram_room"] == 1 and key["new_items"] == 0b10  # the key is inventory bit 1
    assert (key["step"], 1) in events and (meta["route_events"][1]["step"], 1) in events
    first_exit = meta["ram_room_changes"][1][0]
    assert (first_exit, 1) in events  # room 1 (entered at the start) left through a door
    assert info["episode_success"] & (1 << 1) and info["episode_visited"] & (1 << 2)
    assert info["route_room"] == meta["ram_to_route"][str(int(info["room"]))]


def test_build_replay_reproduces_the_asset(ale, route, meta):
    rep = _build_script().replay(route)
    assert list(rep["rooms"]) == meta["route_ram_rooms"]
    for s in meta["starts"]:
        assert rep["log"][s["step"]][0] == s["ram_room"]


def test_asset_is_small_and_complete(ale, meta):
    size = sum(p.stat().st_size for p in mz.ASSET_DIR.iterdir())
    assert size < 2 * 2**20
    starts = mz.load_starts()
    assert meta["num_states"] == len(starts.starts) - 1 == len(meta["starts"])
    assert starts.close[0] == mz.GAME_START and starts.far[0] == "room7"
    assert set(starts.close) | set(starts.far) == set(starts.starts)
    assert meta["ale_py"] == ale.__version__ and meta["preprocessing"] == mz.PREPROCESSING


def test_every_start_restores_in_its_room_alive(ale):
    starts = mz.load_starts()
    env = mz.MontezumaEnv(mz.MontezumaConfig(obs="frames"), seed=3)
    for name, s in starts.starts.items():
        obs = env.reset(name)
        ram = env.game.ram()
        assert int(ram[mz.RAM_ROOM]) == s.ram_room, name
        assert env.game.ale.lives() == 6 and int(ram[mz.RAM_DYING]) == 0, name
        assert not env.game.ale.game_over()
        assert obs.shape == (mz.STACK, mz.SIZE, mz.SIZE) and obs.dtype == np.uint8
        if s.frame is not None:
            assert (obs == s.frame).all()
        _, _, term, _, info = env.step(0)
        assert not term and int(info["start"]) == s.route_index
        assert int(info["route_room"]) == s.route_index or info["room_changed"]


def test_life_loss_terminal_option(ale):
    """From the game start, walking left off the top platform falls to death (sticky off)."""
    actions = [0] * 10 + [4] * 30
    for terminal in (False, True):
        cfg = mz.MontezumaConfig(obs="ram", sticky=0.0, terminal_on_life_loss=terminal)
        env = mz.MontezumaEnv(cfg)
        env.reset()
        for a in actions:
            _, _, term, trunc, info = env.step(a)
            if info["life_lost"]:
                break
        assert info["life_lost"] and int(info["episode_length"]) < len(actions)
        assert int(info["lives"]) == 5 and int(env.game.ram()[mz.RAM_LIVES]) == 4
        assert int(env.game.ram()[mz.RAM_DYING]) == 12  # the death timer starts
        assert term == terminal and not trunc


def test_vec_shapes_and_same_step_auto_reset(ale):
    cfg = mz.MontezumaConfig(obs="frames", max_steps=3)
    with mz.make_montezuma(num_envs=3, seed=1, obs="frames", max_steps=3)[0] as vec:
        assert vec.config == cfg
        obs = vec.reset(["room1", "room7", "room8"])
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8
        first = obs.copy()
        for _ in range(3):
            obs, reward, term, trunc, info = vec.step(np.zeros(3, np.int64))
        assert reward.shape == (3,) and reward.dtype == np.float32
        assert trunc.all() and not term.any()
        assert info["final_obs"].shape == obs.shape and info["episode_length"].tolist() == [3] * 3
        assert info["start"].tolist() == [1, 7, 8]
        np.testing.assert_array_equal(obs[1:], first[1:])  # reset to the same start state
        assert set(mz.INFO_KEYS) | {"final_obs"} == set(info)
    vec, cfg = mz.make_montezuma(num_envs=2, obs="ram")
    with vec:
        assert vec.reset("room7").shape == (2, mz.RAM_SIZE)
        with pytest.raises(ValueError, match="actions must be"):
            vec.step(np.zeros((2, 1), np.int64))
        with pytest.raises(ValueError, match="actions must be"):
            vec.step(np.full(2, 18))


def test_worker_pool_matches_in_process_and_shuts_down(ale):
    rng = np.random.default_rng(0)
    actions = rng.integers(0, mz.NUM_ACTIONS, (40, 4))
    starts = ["room1", "room7", "room8", "room9"]
    out = []
    for workers in (0, 2):
        vec, _ = mz.make_montezuma(num_envs=4, seed=5, workers=workers, obs="ram")
        try:
            obs = [vec.reset(starts)]
            for a in actions:
                obs.append(vec.step(a)[0])
            out.append(np.stack(obs))
            procs = list(vec._pool.processes)
        finally:
            vec.close()
        assert all(not p.is_alive() and p.exitcode == 0 for p in procs)
    np.testing.assert_array_equal(out[0], out[1])


def test_clear_errors(ale, tmp_path):
    with pytest.raises(ValueError, match=r"unknown Montezuma room 'room77'.*room7"):
        mz.make_montezuma(start="room77")
    env = mz.MontezumaEnv(mz.MontezumaConfig(obs="ram"))
    with pytest.raises(ValueError, match="Far"):
        env.reset("kitchen")
    with pytest.raises(FileNotFoundError, match=r"build_montezuma_starts\.py"):
        mz.make_montezuma(asset=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown obs"):
        mz.MontezumaConfig(obs="pixels")
    with pytest.raises(ValueError, match="workers needs num_envs"):
        mz.make_montezuma(workers=2)
    with pytest.raises(RuntimeError, match="reset"):
        mz.MontezumaEnv(mz.MontezumaConfig(obs="ram")).step(0)
