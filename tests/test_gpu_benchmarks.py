"""The GPU benchmark harness without a GPU: the MJX throughput rollout, contact counting, and
``benchmarks/gpu_session.sh``'s usage and offline install from the two wheelhouse parts of
benchmarks/make_wheelhouse.sh."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import lzma
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fpc_jax.envs import make

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    if str(ROOT / "benchmarks") not in sys.path:  # as when run as a script: its helpers import
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "mjx_throughput", ROOT / "benchmarks/mjx_throughput.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rollout_auto_resets_finished_lanes():
    bench = _bench()
    env, params = make("point_sequence", T=3)
    batch, steps = 4, 7
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    run = jax.jit(bench.make_rollout(env, batch, steps))
    state, _, done = run(state, jax.random.PRNGKey(1), params)
    # each lane ends an episode at least every T = 3 steps: >= 2 per lane in 7 steps
    assert int(done) >= 2 * batch
    assert not bool(state.done.any())  # finished lanes were replaced by a fresh reset
    assert bool((state.t < 3).all())


def test_contact_counts_splits_the_shared_warp_buffer():
    bench = _bench()
    world = jnp.array([0, 2, 2, 1, 2, 0, 0, 0], jnp.int32)  # 5 live contacts, then stale slots
    warp = SimpleNamespace(
        nacon=jnp.array([5]),
        contact__worldid=world,
        nefc=jnp.array([4, 9, 16]),
        overflow=jnp.array([0, 512, 1]),
    )
    c = bench.contact_counts(SimpleNamespace(_impl=warp), 3)
    np.testing.assert_array_equal(c["per_lane"], [1, 1, 3])
    assert int(c["total"]) == 5
    np.testing.assert_array_equal(c["nefc"], [4, 9, 16])
    dist = jnp.array([[-0.1, 0.2, -0.01], [0.3, 0.3, 0.3]])
    jax_data = SimpleNamespace(_impl=SimpleNamespace(contact=SimpleNamespace(dist=dist), nefc=12))
    c = bench.contact_counts(jax_data, 2)
    np.testing.assert_array_equal(c["per_lane"], [2, 0])


def test_sizing_takes_the_peak_over_tasks_with_headroom():
    bench = _bench()

    def row(task, contacts, nefc, overflow=()):
        return {
            "impl": "warp",
            "task": task,
            "contacts_per_lane": {"max": contacts},
            "nefc_per_lane": {"max": nefc},
            "overflow": list(overflow),
        }

    s = bench.sizing([row("push-v3", 6, 40), row("hammer-v3", 11, 70, ["ITERATIONS"])])["warp"]
    assert s["peak_contacts_per_lane"] == 11 and s["peak_nefc_per_lane"] == 70
    assert s["suggested_naconmax_per_env"] == 22 and s["suggested_njmax"] == 144
    assert s["overflow_seen"] == ["ITERATIONS"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheelhouse(root: Path, so: bytes) -> None:
    """A miniature of make_wheelhouse.sh's output: one package, warp.so split over two parts."""
    (root / "part1").mkdir(parents=True)
    (root / "part2").mkdir()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:xz") as tar:
        for name, text in (("./tinypkg/__init__.py", b"X = 1\n"), ("./warp/__init__.py", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    packed = lzma.compress(so)
    files = {
        "part1/base.tar.xz": tar_bytes.getvalue(),
        "part1/warp.so.xz.00": packed[: len(packed) // 2],
        "part2/warp.so.xz.01": packed[len(packed) // 2 :],
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    manifest = [f"sha256 warp/bin/warp.so {_sha(so)}"]
    manifest += [f"sha256 {name} {_sha(data)}" for name, data in files.items()]
    for part in ("part1", "part2"):
        (root / part / "MANIFEST").write_text("\n".join(manifest) + "\n")


def _session(mode: str, tmp_path: Path, wheelhouse: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PY": sys.executable,
        "WHEELHOUSE": str(wheelhouse),
        "SITE": str(tmp_path / "site"),
        "OUT": str(tmp_path / "out"),
    }
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_session.sh"), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gpu_session_assembles_warp_from_the_two_parts(tmp_path):
    so = np.random.default_rng(0).bytes(200_000)
    full = tmp_path / "built"
    _wheelhouse(full, so)
    call1, call2 = tmp_path / "call1", tmp_path / "call2"  # each part arrives alone
    (call1 / "part1").mkdir(parents=True)
    (call2 / "part2").mkdir(parents=True)
    for f in (full / "part1").iterdir():
        (call1 / "part1" / f.name).write_bytes(f.read_bytes())
    for f in (full / "part2").iterdir():
        (call2 / "part2" / f.name).write_bytes(f.read_bytes())

    early = _session("install", tmp_path, call2)  # part2 before part1: refused
    assert early.returncode != 0 and "run unpack first" in early.stdout
    done = _session("unpack", tmp_path, call1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site/tinypkg/__init__.py").read_text() == "X = 1\n"
    done = _session("install", tmp_path, call2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site/warp/bin/warp.so").read_bytes() == so

    (tmp_path / "site/warp/bin/warp.so").unlink()
    bad = call2 / "part2/warp.so.xz.01"
    bad.write_bytes(bad.read_bytes()[:-1] + b"\0")
    broken = _session("install", tmp_path, call2)
    assert broken.returncode != 0 and "MANIFEST wants" in broken.stdout


@pytest.mark.parametrize("mode", ["", "nonsense"])
def test_gpu_session_without_a_mode_prints_its_usage(tmp_path, mode):
    out = _session(mode, tmp_path, tmp_path / "none")
    assert out.returncode == 2 and "gpu_session.sh MODE [OUT_DIR]" in out.stdout
    assert not (tmp_path / "out").exists()  # nothing run, no log
