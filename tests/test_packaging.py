"""The wheel ships the experiment configs (as ``fpc_jax/_configs``, setup.py) and
``fpc-jax CMD --config configs/...`` finds them outside a checkout."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fpc_jax.experiments import apple
from fpc_jax.experiments import config as cfglib

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(ROOT / "configs").as_posix() for p in ROOT.glob("configs/**/*.yaml"))
OFFLINE = ("Could not find a version that satisfies the requirement setuptools",)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps`` of a copy of this checkout's files (tracked and untracked, not
    ignored), so that no stale build/ of the working tree leaks in."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 and any(s in done.stdout + done.stderr for s in OFFLINE):
        pytest.skip("no package index for the build requirements (offline)")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("fpc_jax-*.whl")
    return path


def test_wheel_holds_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert CONFIGS and "apple/fig3a.yaml" in CONFIGS
    missing = [c for c in CONFIGS if f"fpc_jax/_configs/{c}" not in names]
    assert not missing, f"configs not in {wheel.name}: {missing}"
    for c in CONFIGS:
        packed = zipfile.ZipFile(wheel).read(f"fpc_jax/_configs/{c}")
        assert packed == (ROOT / "configs" / c).read_bytes(), c
    assert "fpc_jax/cli.py" in names
    assert any(n.startswith("fpc_jax/assets/robotic_sequence_far/state/") for n in names)


def test_config_paths_resolve_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cfglib.load(apple.AppleConfig, "configs/apple/fig3a.yaml").name == "fig3a"
    (tmp_path / "configs/apple").mkdir(parents=True)  # a file in the cwd wins
    (tmp_path / "configs/apple/fig3a.yaml").write_text("name: mine\n")
    assert cfglib.load(apple.AppleConfig, "configs/apple/fig3a.yaml").name == "mine"
    with pytest.raises(
        cfglib.ConfigError, match=r"(?s)packaged configs.*configs/apple/fig3b\.yaml"
    ):
        cfglib.load(apple.AppleConfig, "configs/apple/fig3c.yaml")


@pytest.mark.slow
def test_installed_wheel_runs_a_packaged_config_from_another_directory(wheel, tmp_path):
    """``pip install`` of the wheel (not editable) into a venv that reuses this environment's
    dependencies; then ``fpc-jax apple --config configs/apple/fig3a.yaml`` (shrunk) in an empty
    directory writes summary.csv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py, exe = venv / "bin" / "python", venv / "bin" / "fpc-jax"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [py, "-c", "import fpc_jax; print(fpc_jax.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's copy, not this checkout
    run = subprocess.run(
        [
            exe,
            "apple",
            "--config",
            "configs/apple/fig3a.yaml",
            "--seeds",
            "1",
            "--out",
            "out",
            "M=[5]",
            "T=20",
            "pretrain_updates=2",
            "finetune_updates=2",
            "eval_interval=1",
            "early_updates=1",
            "episodes_per_update=1",
        ],
        cwd=work,
        env={**env, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(work / "out" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["M"] == "5"
