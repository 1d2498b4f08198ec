"""Issue 17, replayed through the CLI as a new user would: nothing lost, nothing silently corrupt.

The cases (``T`` = a tiny toy config file, ``OUT`` = a finished ``fpc-jax finetune`` run):

1. ``fpc-jax finetune --config T --out OUT bc_actor=3.0`` / ``--methods ft`` and ``fpc-jax sweep
   --config configs/robotic_sequence/smoke.yaml --out OUT2 bc_actor=2.0`` / ``--seeds 2`` into a
   finished run: refused, every file of OUT byte-identical (config.yaml was overwritten).
2. ``fpc-jax apple --config configs/apple/fig3a.yaml 'M=[5,10,20]'`` without ``--out`` over
   finished results: refused (they were replaced); an apple run stopped by Ctrl-C writes nothing.
3. 2000 bytes garbled inside a checkpoint data file: refused by the checksums (loaded silently).
4. truncated checkpoint data, garbled ``meta.json``, malformed YAML, ``--help-config | head``, a
   directory as ``--config``: one ``error:`` line, exit 2 (tracebacks).
5. ``--methods`` / ``--seeds`` changed into an existing ``--out``: the field is named (orbax's
   "Requested shape ... is not compatible with the stored shape").
6. Ctrl-C: "interrupted after chunk 1/2; the same command resumes", exit 130, and a partial
   ``summary.csv`` (a KeyboardInterrupt traceback, no summary).
7. A failed pi* (Far success [0, 0]): a warning, recorded in ``run_info.json`` (silent).
8. ``c=-0.5``: refused (accepted).
9. ``--help-config --config F`` shows F's values; ``evaluate --help`` has a description and the
   defaults; the progress postfix names the stages; ``fig_sequence.png`` has y-labels and
   defines K; "1 seed", not "1 seeds".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import yaml

from fpc_jax import cli
from fpc_jax.agents.sac.update import SACHyper, init_train_state
from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import chunks, plotting, results, sac_study, study_report
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments.robotic_sequence import RoboticSequenceConfig
from tests.test_sac_study import TINY, tiny

ROOT = Path(__file__).resolve().parents[1]
APPLE_TINY = ["pretrain_updates=30", "finetune_updates=20", "eval_interval=5", "early_updates=10"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def one_line_error(capsys, rc: int, *words: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    err = "\n".join(ln for ln in lines if not ln.startswith("fpc-jax sweep is an alias"))
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "error:" in err and all(w in err for w in words), err
    return err


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny toy config file, a pi* that failed its pre-training (untrained, Far success [0, 0]),
    and a finished ``fpc-jax finetune`` run from it."""
    root = tmp_path_factory.mktemp("bad_inputs")
    cfg = tiny(methods=["ft", "bc"], seeds=1)
    env, _ = sac_study.build_env(cfg)
    config = sac_study.sac_config(cfg, env)
    state = init_train_state(config, SACHyper.create(config.act_dim), jax.random.key(0))
    policy = ckpt.save_policy(
        root / "policy",
        state,
        {
            "env": cfg.env,
            "stage_names": list(env.stage_names),
            "far_stages": list(env.far_stages),
            "far_success": [0.0, 0.0],
        },
    )
    config_file = root / "tiny.yaml"
    config_file.write_text(
        yaml.safe_dump({**TINY, "methods": ["ft", "bc"], "seeds": 1, "checkpoint": str(policy)})
    )
    out = root / "finished"
    args = ["finetune", "--config", str(config_file), "--out", str(out)]
    assert cli.main(args) == 0
    return SimpleNamespace(config=config_file, policy=policy, out=out, args=args, cfg=cfg)


def test_refused_finetune_reruns_leave_every_file_alone(toy, capsys):
    capsys.readouterr()
    before = snapshot(toy.out)
    for extra, field in (
        (["bc_actor=3.0"], "'bc_actor'"),
        (["--methods", "ft"], "'methods'"),
        (["--seeds", "2"], "'seeds'"),
    ):
        one_line_error(capsys, cli.main([*toy.args, *extra]), "differs in", field)
        assert snapshot(toy.out) == before, extra


def test_refused_sweep_reruns_leave_every_file_alone(tmp_path, capsys):
    """The sweep refuses before it loads Meta-World or the Far policy."""
    smoke = cfglib.load(RoboticSequenceConfig, "configs/robotic_sequence/smoke.yaml")
    cfglib.dump(smoke, tmp_path / "config.yaml")
    info = {"chunks_done": 1, "step": 0, "resume_key": cfglib.resume_key(smoke)}
    ckpt.save_runs(tmp_path / "sweep_state", {"x": np.zeros(3)}, info)
    before = snapshot(tmp_path)
    base = ["sweep", "--config", "configs/robotic_sequence/smoke.yaml", "--out", str(tmp_path)]
    for extra, field in ((["bc_actor=2.0"], "'bc_actor'"), (["--seeds", "2"], "'seeds'")):
        one_line_error(capsys, cli.main([*base, *extra]), "differs in", field)
        assert snapshot(tmp_path) == before, extra


def test_apple_refuses_to_replace_finished_results_and_an_interrupt_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the default --out, runs/apple/fig3a, is relative
    args = ["apple", "--config", "configs/apple/fig3a.yaml", "--seeds", "2", *APPLE_TINY]
    assert cli.main([*args, "M=[5,9,13,17]"]) == 0
    out = tmp_path / "runs/apple/fig3a"
    before = snapshot(out)
    capsys.readouterr()
    one_line_error(capsys, cli.main([*args, "M=[5,10,20]"]), "differs in ['M']")
    assert snapshot(out) == before

    from fpc_jax.experiments import apple

    def ctrl_c(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(apple, "run", ctrl_c)
    assert cli.main([*args, "M=[5,9,13,17]", "lr=0.002"]) == 2  # refused before it runs
    assert cli.main([*args, "M=[5,9,13,17]"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert snapshot(out) == before


def _data_file(state_dir: Path) -> Path:
    """The largest array data file of an orbax checkpoint."""
    files = [p for p in (state_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


def test_corrupted_checkpoints_are_refused_with_one_line(toy, tmp_path, capsys):
    capsys.readouterr()
    run = ["finetune", "--config", str(toy.config), "--out", str(tmp_path / "o")]
    garbled = _copy(toy.policy, tmp_path / "garbled")
    data = _data_file(garbled)
    raw = bytearray(data.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 2000] = os.urandom(min(2000, len(raw) - mid))
    data.write_bytes(bytes(raw))
    one_line_error(capsys, cli.main([*run, f"checkpoint={garbled}"]), "corrupted", data.name)

    one_byte = _copy(toy.policy, tmp_path / "one_byte")
    data = _data_file(one_byte)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match="corrupted"):
        ckpt.load_policy(one_byte)

    truncated = _copy(toy.policy, tmp_path / "truncated")
    data = _data_file(truncated)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    one_line_error(capsys, cli.main([*run, f"checkpoint={truncated}"]), "corrupted")

    bad_meta = _copy(toy.policy, tmp_path / "bad_meta")
    (bad_meta / "meta.json").write_text('{"format_version": 1, "kind": ')
    one_line_error(capsys, cli.main([*run, f"checkpoint={bad_meta}"]), "meta.json")
    (bad_meta / ckpt.integrity.CHECKSUMS).unlink()  # an older checkpoint: no checksums
    with pytest.raises(ckpt.CheckpointError, match=r"corrupted: meta\.json"):
        ckpt.read_meta(bad_meta)
    assert "no checksums.json" in capsys.readouterr().err  # a one-line warning
    assert not (tmp_path / "o").exists()  # nothing written by the refused runs

    finished = _copy(toy.out, tmp_path / "finished")  # a garbled run-state checkpoint
    data = _data_file(finished / "finetune_state")
    data.write_bytes(data.read_bytes()[:-10] + os.urandom(10))
    before = snapshot(finished)
    extend = ["finetune", "--config", str(toy.config), "--out", str(finished), "finetune_steps=300"]
    one_line_error(capsys, cli.main(extend), "corrupted")
    assert snapshot(finished) == before


def test_bad_config_inputs_give_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nM: [5, 10\nc: 0.5\n")
    one_line_error(capsys, cli.main(["apple", "--config", str(bad)]), "not valid YAML", "line")
    one_line_error(capsys, cli.main(["apple", "--config", str(tmp_path)]), "is a directory")
    one_line_error(capsys, cli.main(["apple", "c=-0.5"]), "c is a magnitude")
    one_line_error(
        capsys, cli.main(["finetune", "--config", str(tmp_path), "--help-config"]), "is a directory"
    )
    # issue 16's options: bad values, and the SAC-only squashing asked of PPO
    toy, kd = "configs/toy/point_sequence.yaml", "configs/key_door/main.yaml"
    for arg, msg in (
        ("eval_policy=greedy", "eval_policy"),
        ("ewc_fisher_mean=mu", "ewc_fisher_mean"),
        ("scratch_start_steps=-1", "scratch_start_steps"),
        ("bc_squashed=0.5", "0 (off) or 1"),
    ):
        one_line_error(capsys, cli.main(["finetune", "--config", toy, arg]), msg)
    squashed_ppo = ["finetune", "--config", kd, "--methods", "ft,bc:bc_squashed=1"]
    one_line_error(capsys, cli.main(squashed_ppo), "SAC's tanh-Gaussian")


def test_help_config_into_a_closed_pipe_is_quiet():
    """``fpc-jax apple --help-config | head``: the reader is gone before the command writes."""
    cmd = [sys.executable, "-m", "fpc_jax.cli", "apple", "--help-config"]
    p = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 2 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_ctrl_c_says_where_it_stopped_and_keeps_a_partial_summary(
    toy, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "o"
    args = ["finetune", "--config", str(toy.config), "--out", str(out)]
    calls = []
    update = chunks._Progress.update

    def ctrl_c_after_chunk_1(self, n, note):
        calls.append(note)
        if len(calls) == 2:  # the first call is the start position; the second ends chunk 1
            raise KeyboardInterrupt
        update(self, n, note)

    monkeypatch.setattr(chunks._Progress, "update", ctrl_c_after_chunk_1)
    capsys.readouterr()
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted after chunk 1/2; the same command resumes" in err, err
    assert "Traceback" not in err
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("method,seed") and len(rows) == 3  # a partial summary, 2 runs
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind
    # the progress postfix names every stage
    assert calls[1].split()[::2] == ["close_east", "close_north", "far_west", "far_south"]
    monkeypatch.undo()
    assert cli.main(args) == 0
    assert (out / "summary.csv").read_bytes() == (toy.out / "summary.csv").read_bytes()


def test_a_failed_pretraining_is_flagged(toy):
    info = json.loads((toy.out / "run_info.json").read_text())
    assert "min_pretrain_success=0.5" in info["pretrain_warning"]
    assert "far_west 0.00" in info["pretrain_warning"]
    with pytest.raises(cfglib.ConfigError, match="min_pretrain_success"):
        tiny(min_pretrain_success=1.5)


def test_help_texts(capsys):
    assert cli.main(["apple", "--help-config", "--config", "configs/apple/fig3a.yaml"]) == 0
    out = capsys.readouterr().out
    assert "name = 'fig3a'" in out and "M = (5, 10, 15, 20, 25, 30, 35, 40)" in out
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "deterministic" in out.split("options:")[0] and "(default: 10)" in out


def test_study_figures_label_their_axes(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plotting, "save", lambda fig, path: figs.append((Path(path).name, fig)))
    env = SimpleNamespace(num_heads=4, stage_names=("a", "b", "c", "d"))
    cfg = SimpleNamespace(methods=("ft",), seeds=1, name="toy")
    curves = {
        "eval/all_solved": np.zeros((3, 1)),
        "eval/stages_solved_frac": np.zeros((3, 1)),
        "eval/stage_success": np.zeros((3, 1, 4)),
    }
    study_report.plot_study(cfg, env, [("ft", 0)], curves, np.arange(3), (2, 3), tmp_path)
    (_, seq), (_, stages) = figs
    assert all(ax.get_ylabel() for ax in seq.axes)
    assert "K = 4" in seq.axes[1].get_title()
    assert "(1 seed)" in stages._suptitle.get_text()


def test_result_writes_are_atomic(tmp_path):
    csv_path = tmp_path / "summary.csv"
    results.write_csv(csv_path, [{"a": 1}], ["a"])
    with pytest.raises(KeyError):  # the second row fails mid-write
        results.write_csv(csv_path, [{"a": 2}, {}], ["a"])
    assert csv_path.read_text().splitlines() == ["a", "1"]
    csv_path.unlink()
    path = tmp_path / "curves.npz"
    results.savez(path, a=np.arange(3))
    before = path.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("fails mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        results.savez(path, a=np.arange(5), b=np.array([Unsaveable()], dtype=object))
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["curves.npz"]
