"""NetHack backend (NLE 1.3.0): replay determinism, observations, the reduced action set, the bot's
descent and prompt handling, Far starts from the packaged prefixes, BC data, and bad input."""

import numpy as np
import pytest

pytest.importorskip("nle")

from nle import nethack

from fpc_jax.envs import nle_nethack as nh
from fpc_jax.envs.nle_bot import NetHackBot, bot_dataset, play_bot
from fpc_jax.envs.nle_prefixes import PrefixSet, screen_hash
from fpc_jax.envs.nle_vec import NetHackVec, make_nethack

SEED = (1, 1_000_001)  # the packaged asset's entry 0: the bot is first on Dlvl 2 after 129 actions


@pytest.fixture(scope="module")
def game():
    g = nh.NetHackGame()
    yield g
    g.close()


def test_action_mapping_round_trips():
    nle_keys = [int(a) for a in nethack.ACTIONS]
    assert nh.NUM_ACTIONS == len(nh.ACTION_NAMES) == len(set(nh.ACTION_KEYS)) == 15
    for a in range(nh.NUM_ACTIONS):
        assert nh.action_from_key(nh.action_key(a)) == a
        assert nle_keys[nh.nle_action_index(a)] == nh.action_key(a)
    assert [nh.action_key(a) for a in range(8)] == [int(d) for d in nethack.CompassDirection]
    with pytest.raises(ValueError, match="action must be in"):
        nh.action_key(nh.NUM_ACTIONS)
    with pytest.raises(ValueError, match="not in the reduced action set"):
        nh.action_from_key(ord("q"))


def test_observation_shapes_and_dtypes(game):
    obs = game.reset(*SEED)
    assert obs["glyphs"].shape == (9, 9) and obs["glyphs"].dtype == np.int16
    assert obs["classes"].shape == (9, 9) and obs["classes"].dtype == np.uint8
    assert obs["stats"].shape == (nh.NUM_STATS,) and obs["stats"].dtype == np.float32
    assert obs["classes"][4, 4] == nh.GLYPH_CLASSES.index("self")
    bl = game.raw["blstats"]
    assert obs["glyphs"][4, 4] == game.raw["glyphs"][bl[nh.BL_Y], bl[nh.BL_X]]
    stats = dict(zip(nh.STAT_NAMES, obs["stats"], strict=True))
    assert stats["hp_frac"] == 1.0 and stats["depth"] == pytest.approx(0.1)
    assert obs["glyphs"].max() <= nh.PAD_GLYPH and obs["classes"].max() < nh.NUM_GLYPH_CLASSES
    flat = nh.NetHackGame(crop=15, obs_mode="flat")
    try:
        x = flat.reset(*SEED)
        assert x.shape == (flat.config.obs_size,) == (15 * 15 * nh.NUM_GLYPH_CLASSES + 19,)
        assert x.dtype == np.float32 and x[: 15 * 15 * nh.NUM_GLYPH_CLASSES].sum() == 15 * 15
    finally:
        flat.close()


def test_replay_reproduces_depth_and_screen(game):
    run = play_bot(game, *SEED, max_steps=400, stop_depth=3)
    depth, screen = game.depth, screen_hash(game.raw)
    assert depth >= 3
    fresh = nh.NetHackGame()
    try:
        fresh.replay(*SEED, run["actions"])
        assert fresh.depth == depth and screen_hash(fresh.raw) == screen
        assert np.array_equal(fresh.raw["tty_chars"], game.raw["tty_chars"])
        prefixes = PrefixSet.load()  # the packaged asset, checked against its stored screens
        obs = prefixes.start(fresh, 0, 2, verify=True)
        assert fresh.depth == fresh.start_depth == 2 and fresh.steps == 0
        assert obs["stats"][nh.STAT_NAMES.index("depth")] == pytest.approx(0.2)
    finally:
        fresh.close()


def test_bot_descends_on_a_fixed_seed(game):
    run = play_bot(game, *SEED, max_steps=300, stop_depth=2)
    assert run["max_depth"] >= 2 and run["first_step"][2] == 129
    assert run["actions"].dtype == np.uint8 and run["actions"].max() < nh.NUM_ACTIONS
    down = int(np.flatnonzero(run["actions"] == nh.DOWN)[-1])  # the '>' that took it down
    stats = game.replay(*SEED, run["actions"][:down])["stats"]
    assert stats[nh.STAT_NAMES.index("on_stairs")] == stats[nh.STAT_NAMES.index("stairs_seen")] == 1


def test_bot_answers_prompts(game):
    bot = NetHackBot()
    game.reset(*SEED)
    game.step(nh.KICK)  # "In what direction?" with no kick planned: the bot escapes it
    assert game.raw["internal"][nh.IN_YN] and b"direction" in nh.message(game.raw)
    assert bot.act(game.raw) == nh.ESC
    game.step(nh.ESC)
    assert not game.raw["internal"][nh.IN_YN]
    game.reset(*SEED)
    for _ in range(2):  # seed 1: "There's some graffiti on the floor here.--More--" at step 2
        game.step(bot.act(game.raw))
    assert game.raw["internal"][nh.MORE_WAIT]
    assert game.observe()["stats"][nh.STAT_NAMES.index("prompt_more")] == 1.0
    assert bot.act(game.raw) == nh.MORE
    game.step(nh.MORE)
    assert not game.raw["internal"][nh.MORE_WAIT]


def test_eat_macro_eats_from_the_inventory(game):
    game.reset(*SEED)
    assert b"5 uncursed food rations" in bytes(game.raw["inv_strs"][5])
    _, _, _, _, info = game.step(nh.EAT)
    assert not game.raw["internal"][nh.IN_YN] and info["turn"] > 1
    assert b"4 uncursed food rations" in bytes(game.raw["inv_strs"][5])


def test_vec_auto_reset_far_start_and_workers():
    with NetHackVec(nh.NetHackConfig(max_steps=5), num_envs=2, seed=3) as vec:
        vec.reset()
        for _ in range(5):
            obs, _, term, trunc, info = vec.step(np.full(2, nh.SEARCH))
        assert trunc.all() and not term.any()
        assert not np.array_equal(obs["stats"], info["final_obs"]["stats"])  # turn 1 again
    cfg = nh.NetHackConfig(start="far", far_depth=3, obs_mode="flat")
    with NetHackVec(cfg, num_envs=2, seed=0) as a, NetHackVec(cfg, 2, 0, workers=2) as b:
        assert np.array_equal(a.reset(), b.reset())
        for t in range(30):
            act = np.array([t % 8, nh.SEARCH])
            out_a, out_b = a.step(act), b.step(act)
            for x, y in zip(out_a[:4], out_b[:4], strict=True):
                assert np.array_equal(x, y)
            assert all(np.array_equal(out_a[4][k], out_b[4][k]) for k in out_a[4])
        assert (out_a[4]["start_depth"] >= 3).all() and (out_a[4]["max_depth"] >= 3).all()


def test_bot_dataset_is_in_the_reduced_action_space():
    data = bot_dataset([SEED, (2, 1_000_002)], max_steps=40)
    n = len(data["action"])
    assert n == 80 and data["obs"]["glyphs"].shape == (n, 9, 9)
    assert data["obs"]["stats"].shape == (n, nh.NUM_STATS)
    assert data["action"].dtype == np.int32 and data["action"].min() >= 0
    assert data["action"].max() < nh.NUM_ACTIONS
    assert np.array_equal(np.bincount(data["episode"]), [40, 40])
    assert (data["depth"] == 1).all()


def test_bad_input_raises_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"not supported.*mon-hum-neu-mal"):
        make_nethack(character="val-dwa-law-fem")
    with pytest.raises(ValueError, match="unknown NetHack option"):
        make_nethack(actions="full")
    with pytest.raises(ValueError, match="far_depth must be"):
        nh.NetHackConfig(far_depth=1)
    with pytest.raises(ValueError, match="crop must be"):
        nh.NetHackConfig(crop=8)
    with pytest.raises(FileNotFoundError, match="build_nethack_prefixes"):
        NetHackVec(nh.NetHackConfig(start="far", prefixes=str(tmp_path)))
    with pytest.raises(ValueError, match="no stored prefix reaches Dlvl 9"):
        NetHackVec(nh.NetHackConfig(start="far", far_depth=9))
    g = nh.NetHackGame()
    try:
        with pytest.raises(RuntimeError, match="call reset"):
            g.step(0)
        g.reset(*SEED)
        with pytest.raises(ValueError, match="action must be in"):
            g.step(nh.NUM_ACTIONS)
    finally:
        g.close()
    with NetHackVec(nh.NetHackConfig()) as vec, pytest.raises(ValueError, match="actions must"):
        vec.step(np.array([0, 1]))
