"""The host-env PPO study on the real NetHack (fpc_jax/experiments/nethack_study.py)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

pytest.importorskip("nle")

from fpc_jax import cli
from fpc_jax.envs import nle_nethack as nh
from fpc_jax.envs.nle_prefixes import PrefixSet
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import nethack_report, nethack_study, study_report
from fpc_jax.experiments.checkpoint import CheckpointError

SMOKE = "configs/nethack/smoke.yaml"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("nethack")
    assert cli.main(["pretrain", "--config", SMOKE, "--out", str(out / "pretrain")]) == 0
    assert cli.main(["finetune", "--config", SMOKE, "--out", str(out / "finetune")]) == 0
    return out


def test_smoke_pretrain_finetune_end_to_end(smoke):
    """pi* cloned from the bot, then ft and ks from the game start, through the CLI."""
    assert (smoke / "pretrain" / "policy" / "meta.json").is_file()
    out = smoke / "finetune"
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == study_report.SUMMARY_COLUMNS
    assert [(r["method"], r["seed"]) for r in rows] == [("ft", "0"), ("ks", "0")]
    for r in rows:
        assert r["nonfinite_at"] == ""
        for c in study_report.SUCCESS_COLUMNS:
            assert 0.0 <= float(r[c]) <= 1.0
    with open(out / "scores.csv") as f:
        scores = list(csv.DictReader(f))
    assert list(scores[0]) == nethack_report.SCORE_COLUMNS and len(scores) == 2
    for r in scores:  # a Far start is on Dlvl >= 2, a game start on Dlvl 1
        assert float(r["max_depth_far_final"]) >= 2 and float(r["max_depth_close_final"]) >= 1
    curves = np.load(out / "finetune_curves.npz")
    assert curves["eval__stage_success"].shape == (2, 2, 2)  # evals, runs, (dlvl1, dlvl2)
    assert curves["eval__max_depth_far"].shape == (2, 2, 2)  # evals, runs, episodes
    for name in ("fig_stages.png", "fig_nethack.png"):
        assert (out / name).is_file()


def test_finetune_resumes_and_extends(smoke, tmp_path):
    """A run extended from 1 to 2 chunks restores every run's parameters, optimiser and key: its
    evaluation after chunk 1 equals that of a run that went straight through (the env seeds
    differ after a resume, so later rows may not); another setup or a shorter run is refused."""
    cfg = cfglib.load(nethack_study.NetHackStudyConfig, SMOKE)
    one = dataclasses.replace(cfg, checkpoint=str(smoke / "pretrain" / "policy"))
    two = dataclasses.replace(one, finetune_steps=2 * one.steps_per_chunk)
    quiet, logs = (lambda *_: None), []
    nethack_study.finetune(two, tmp_path / "straight", log=quiet)
    nethack_study.finetune(one, tmp_path / "resumed", log=quiet)
    assert (tmp_path / "resumed" / "finetune_state" / "info.json").is_file()
    nethack_study.finetune(two, tmp_path / "resumed", log=logs.append)
    assert any("resuming after chunk 1/2" in line for line in logs)
    a = np.load(tmp_path / "straight" / "finetune_curves.npz")
    b = np.load(tmp_path / "resumed" / "finetune_curves.npz")
    assert sorted(a.files) == sorted(b.files)
    assert b["eval__stage_success"].shape == (3, 2, 2)
    for k in a.files:
        rows = 2 if k.startswith(("eval__", "diag__")) else 1  # evals: before chunk 1, after it
        np.testing.assert_array_equal(a[k][:rows], b[k][:rows], err_msg=k)
    with pytest.raises(CheckpointError, match="methods"):
        nethack_study.finetune(dataclasses.replace(two, methods=("ft",)), tmp_path / "resumed")
    with pytest.raises(CheckpointError, match="more than"):
        nethack_study.finetune(one, tmp_path / "resumed")


def test_checkpoint_of_another_setup_is_refused(smoke, tmp_path):
    cfg = cfglib.load(nethack_study.NetHackStudyConfig, SMOKE)
    other = dataclasses.replace(cfg, far_depth=3, checkpoint=str(smoke / "pretrain" / "policy"))
    with pytest.raises(CheckpointError, match="far_depth=2"):
        nethack_study.finetune(other, tmp_path / "ft")
    with pytest.raises(CheckpointError, match="no pre-trained policy"):
        nethack_study.finetune(dataclasses.replace(cfg, checkpoint=str(tmp_path)), tmp_path / "x")


def test_discounted_returns_stop_at_episode_ends():
    r = np.array([1.0, 0.0, 2.0, 5.0, 1.0], np.float32)
    ep = np.array([0, 0, 0, 1, 1])
    got = nethack_study.discounted_returns(r, ep, 0.5)
    np.testing.assert_allclose(got, [1.5, 1.0, 2.0, 5.5, 1.0])


def test_evaluation_counts_depth_and_score_per_episode():
    """A policy that only searches never leaves its level: Close and Far success are 0, every
    Far episode ends on the Dlvl it started on, and the stage axis is (dlvl1, dlvl2)."""
    cfg = dataclasses.replace(
        cfglib.load(nethack_study.NetHackStudyConfig, SMOKE), eval_max_steps=20, eval_episodes=2
    )
    game = nethack_study.NetHackGame(cfg.far_depth)
    search = lambda obs, key: np.full(obs.shape[:2], nh.SEARCH)  # noqa: E731
    ev = game.evaluate(cfg, search, 3, __import__("jax").random.key(0))
    assert ev["eval/stage_success"].shape == (3, 2) and not ev["eval/stage_success"].any()
    assert (ev["eval/max_depth_far"] == 2).all() and (ev["eval/max_depth_close"] == 1).all()
    assert ev["eval/score_far"].shape == (3,) and game.stages == ("dlvl1", "dlvl2")


def test_prefix_replay_is_not_cut_by_the_episode_limits():
    """A Far start replays hundreds of actions; an episode limit of 5 steps must not cut it."""
    prefixes = PrefixSet.load()
    entry = int(prefixes.reaching(2)[0])
    game = nh.NetHackGame(nh.NetHackConfig(max_steps=5, stall_limit=5))
    try:
        prefixes.start(game, entry, 2)
        assert game.depth >= 2 and game.steps == 0 and not game.over
        for _ in range(5):
            *_, truncated, _ = game.step(nh.SEARCH)
        assert truncated  # the limit applies from the hand-over on
    finally:
        game.close()


def test_bad_input_clear_errors(tmp_path):
    load = lambda **o: cfglib.load(nethack_study.NetHackStudyConfig, SMOKE, o)  # noqa: E731
    with pytest.raises(cfglib.ConfigError, match="character 'val-hum-law-fem' is not supported"):
        load(character="val-hum-law-fem")
    with pytest.raises(cfglib.ConfigError, match="no stored prefix reaches Dlvl 30"):
        load(far_depth=30)
    with pytest.raises(cfglib.ConfigError, match="no NetHack prefix asset"):
        load(prefixes=str(tmp_path))
    with pytest.raises(cfglib.ConfigError, match="overlap the Far-start asset"):
        load(bot_first_seed=50)
    with pytest.raises(cfglib.ConfigError, match="replay buffer"):
        load(methods=["ft", "em"])
    with pytest.raises(cfglib.ConfigError, match="env must be 'nle/nethack'"):
        load(env="nle/other")
