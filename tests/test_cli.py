"""The fpc-jax command line: outputs on disk and error messages."""

import csv
from pathlib import Path

import numpy as np
import yaml

from fpc_jax import cli

COLUMNS = [
    "M",
    "c",
    "seed",
    "final_success",
    "phase2_success_pretrained",
    "phase2_success_min",
    "forgetting",
    "reach_phase2_early",
]


def test_apple_cli_writes_results(tmp_path, capsys):
    rc = cli.main(
        [
            "apple",
            "--config",
            "configs/apple/fig3a.yaml",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
            "M=[5,9]",
            "pretrain_updates=30",
            "finetune_updates=20",
            "eval_interval=5",
            "early_updates=10",
        ]
    )
    assert rc == 0
    for name in ("config.yaml", "summary.csv", "curves.npz", "fig3.png", "run_info.json"):
        assert (tmp_path / name).is_file(), name
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and set(COLUMNS) <= set(rows[0])
    assert {(r["M"], r["seed"]) for r in rows} == {("5", "0"), ("5", "1"), ("9", "0"), ("9", "1")}
    for r in rows:
        f = float(r["forgetting"])
        assert 0.0 <= f <= 1.0
        assert np.isclose(
            f, float(r["phase2_success_pretrained"]) - float(r["phase2_success_min"]), atol=1e-5
        )
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert resolved["M"] == [5, 9] and resolved["seeds"] == 2 and resolved["c"] == [0.5]
    assert "compiled" in capsys.readouterr().out


def test_apple_cli_unknown_key_is_error(tmp_path, capsys):
    rc = cli.main(["apple", "--out", str(tmp_path), "MM=3"])
    assert rc == 2
    assert "unknown config key 'MM'" in capsys.readouterr().err


def test_apple_cli_missing_config(tmp_path, capsys):
    rc = cli.main(["apple", "--config", str(tmp_path / "nope.yaml")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_methods_option_keeps_coefficient_overrides_with_their_method():
    parse = cli._parse_methods
    assert parse("ft, bc ,ewc") == ["ft", "bc", "ewc"]
    assert parse("ft,bc:bc_actor=10,bc_kl_direction=1,ewc:ewc_actor=5") == [
        "ft",
        "bc:bc_actor=10,bc_kl_direction=1",
        "ewc:ewc_actor=5",
    ]


def test_finetune_picks_the_study_from_the_config():
    from fpc_jax import cli

    assert cli._study_schema(Path("configs/key_door/main.yaml"), {}) == cli._PPO_SCHEMA
    assert cli._study_schema(Path("configs/robotic_sequence/main.yaml"), {}) == cli._RS_SCHEMA
    assert cli._study_schema(Path("configs/robotic_sequence/mjx.yaml"), {}) == cli._SAC_SCHEMA
    assert cli._study_schema(Path("configs/toy/point_sequence.yaml"), {}) == cli._SAC_SCHEMA
    assert cli._study_schema(None, {"env": "key_door_rooms"}) == cli._PPO_SCHEMA
