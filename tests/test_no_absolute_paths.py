"""No path of a development machine in the repository: tracked text files name paths relative to
the repo (or to a venv beside it), and recorded results and packaged assets name no temp dir of
the run that made them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# home / work dirs of a dev machine, after a start of line, a space, a quote or a separator
MACHINE_PATH = re.compile(r"""(?:^|[\s"'`(=:,\[])/(?:work|root|home|Users)/""", re.MULTILINE)
# a run's temp dir, in what a run recorded (scripts may default their output dir to one)
TEMP_PATH = re.compile(r"""(?:^|[\s"'`(=:,\[])/tmp/""", re.MULTILINE)
RECORDED = ("benchmarks/results/", "fpc_jax/assets/")
BINARY_SUFFIXES = {".png", ".npz", ".npy", ".pdf", ".jpg", ".gif", ".xz", ".gz", ".whl", ".so"}


def _tracked_text_files() -> list[tuple[str, str]]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if not name or Path(name).suffix.lower() in BINARY_SUFFIXES or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            files.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return files


def _hits(pattern: re.Pattern, name: str, text: str) -> list[str]:
    return [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group().strip()}"
        for m in pattern.finditer(text)
    ]


def test_patterns_catch_what_they_should():
    assert MACHINE_PATH.search('"asset": "/' + 'work/main/fpc_jax/assets"')
    assert MACHINE_PATH.search("run `/" + "root/venv/bin/python`")
    assert not MACHINE_PATH.search("see https://example.org/docs/work/index.html")
    assert TEMP_PATH.search("successful to /" + "tmp/toy/pretrain/policy/state")


def test_no_machine_paths_in_tracked_text_files():
    files = _tracked_text_files()
    assert any(name == "README.md" for name, _ in files)
    hits = [h for name, text in files for h in _hits(MACHINE_PATH, name, text)]
    assert not hits, "absolute paths of a dev machine:\n" + "\n".join(hits)


def test_no_temp_paths_in_recorded_results_and_assets():
    files = [(n, t) for n, t in _tracked_text_files() if n.startswith(RECORDED)]
    assert any(n.endswith("commit_success.txt") for n, _ in files)
    hits = [h for name, text in files for h in _hits(TEMP_PATH, name, text)]
    assert not hits, "temp paths of the run that recorded them:\n" + "\n".join(hits)
