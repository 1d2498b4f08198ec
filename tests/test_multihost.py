"""Multi-process runs on one CPU: 2 JAX processes x 2 forced host devices on 127.0.0.1 give the
same outputs as 1 process x 4 devices, written once by process 0; a dead peer or an unreachable
coordinator stops a process with an error instead of a hang (docs/multihost.md)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from fpc_jax.experiments import multihost, sharding

ROOT = Path(__file__).resolve().parents[1]
# Both sides of every comparison use the same XLA flags; the cheaper CPU backend passes keep the
# compile time of the 2 + 1 processes small.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
FINETUNE = [
    "finetune",
    "--config",
    "configs/toy/point_sequence.yaml",
    "--methods",
    "ft,bc",
    "--seeds",
    "2",
    "steps_per_chunk=200",
    "finetune_steps=400",
    "checkpoint_every=1",
    "eval_episodes=2",
    "bc_states=256",
    "em_transitions=256",
    "fisher_states=64",
    "buffer_capacity=2000",
    "update_after=100",
    "batch_size=32",
]
APPLE = [
    "apple",
    "--config",
    "configs/apple/fig3a.yaml",
    "--seeds",
    "2",
    "M=[5,10]",
    "pretrain_updates=20",
    "finetune_updates=20",
    "eval_interval=5",
    "early_updates=5",
]

# Runs fpc-jax's main; on a process other than 0 it first records, through an audit hook, every
# write under the output directory except its shards of the run-state checkpoint being written.
LAUNCHER = textwrap.dedent("""
    import os, sys
    out, argv = os.path.realpath(sys.argv[1]), sys.argv[2:]
    if os.environ.get("JAX_PROCESS_ID", "0") != "0":
        log = os.open(os.environ["FPC_TEST_WRITES"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        EVENTS = ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree")
        busy = []

        def inside(p):
            if not isinstance(p, (str, bytes, os.PathLike)):
                return False
            p = os.path.realpath(os.fsdecode(p))
            return p.startswith(out + os.sep) and "_state.tmp" not in p

        def hook(event, args):
            if busy or not (event == "open" or event in EVENTS):
                return
            busy.append(1)
            try:
                if event == "open":
                    bad = args[2] is not None and args[2] & WRITE and inside(args[0])
                else:
                    bad = any(inside(a) for a in args[:2])
                if bad:
                    os.write(log, f"{event} {args[:2]}\\n".encode())
            finally:
                busy.pop()

        sys.addaudithook(hook)
    from fpc_jax.cli import main
    sys.exit(main(argv))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, process: int | None = None, port: int = 0, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "FPC_JAX_"))}
    flags = f"--xla_force_host_platform_device_count={devices} {FAST_XLA}"
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", XLA_FLAGS=flags)
    if process is not None:
        env.update(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(process),
            FPC_JAX_HEARTBEAT_TIMEOUT_S="10",
            FPC_JAX_INIT_TIMEOUT_S="60",
        )
    env.update(extra)
    return env


def _start(args: list[str], out: Path, env: dict, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", LAUNCHER, str(out), *args, "--out", str(out)]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def _single(args: list[str], out: Path) -> None:
    proc = _start(args, out, _env(4), out.with_suffix(".log"))
    assert proc.wait(timeout=400) == 0, out.with_suffix(".log").read_text()[-3000:]


def _pair(args: list[str], out: Path, tmp: Path, outs: tuple[Path, Path] | None = None):
    """Start processes 0 and 1 (output dirs ``outs``, default both ``out``)."""
    port, outs = _free_port(), outs or (out, out)
    writes = tmp / "writes_by_process_1.txt"
    writes.write_text("")
    logs = [tmp / f"process{i}.log" for i in range(2)]
    procs = [
        _start(args, outs[i], _env(2, i, port, FPC_TEST_WRITES=str(writes)), logs[i])
        for i in range(2)
    ]
    return procs, logs, writes


def _run_pair(args: list[str], out: Path, tmp: Path) -> tuple[list[str], str]:
    procs, logs, writes = _pair(args, out, tmp)
    codes = [p.wait(timeout=500) for p in procs]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(t[-3000:] for t in texts)
    return texts, writes.read_text()


def _files(d: Path) -> list[str]:
    """The outputs (the run-state checkpoint's own files differ: one shard file per process)."""
    return sorted(p.name for p in d.iterdir())


def _compare(one: Path, two: Path, texts: list[str], writes: str, tag: str) -> None:
    assert (two / "summary.csv").read_text() == (one / "summary.csv").read_text()
    assert _files(two) == _files(one)  # the same outputs, no leftovers
    assert writes == "", f"process 1 wrote outputs:\n{writes}"
    assert f"[{tag}]" in texts[0] and f"[{tag}]" not in texts[1]  # log lines from process 0
    info = (two / "run_info.json").read_text()
    assert '"process_count": 2' in info


def test_finetune_on_two_processes_equals_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _single(FINETUNE, one)
    texts, writes = _run_pair(FINETUNE, two, tmp_path)
    _compare(one, two, texts, writes, "finetune")
    np.testing.assert_array_equal(
        np.load(two / "finetune_curves.npz")["eval/stage_success"],
        np.load(one / "finetune_curves.npz")["eval/stage_success"],
    )
    assert '"process_count": 2' in (two / "finetune_state" / "info.json").read_text()


def test_apple_on_two_processes_equals_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _single(APPLE, one)
    texts, writes = _run_pair(APPLE, two, tmp_path)
    _compare(one, two, texts, writes, "apple")


def test_a_killed_process_stops_the_other(tmp_path):
    """Process 1 is killed once both joined; process 0 exits with an error within the heartbeat
    timeout (10 s here) plus margin, instead of waiting for it."""
    procs, logs, _ = _pair(APPLE, tmp_path / "out", tmp_path)
    try:
        deadline = time.monotonic() + 120
        while "[multihost]" not in logs[0].read_text():
            assert procs[0].poll() is None, logs[0].read_text()[-3000:]
            assert time.monotonic() < deadline, "the processes did not join"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = procs[0].wait(timeout=60)
        took = time.monotonic() - killed
    finally:
        for p in procs:
            p.kill()
    assert code != 0
    assert "another task died" in logs[0].read_text() or "heartbeat" in logs[0].read_text()
    assert took < 45, took


def test_unreachable_coordinator_is_a_clear_error(tmp_path):
    env = _env(1, 1, _free_port(), FPC_JAX_INIT_TIMEOUT_S="2")
    cmd = [sys.executable, "-m", "fpc_jax.cli", *APPLE, "--out", str(tmp_path / "out")]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot reach the JAX coordinator" in done.stderr
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_resume_after_a_kill_and_on_another_process_count(tmp_path):
    """A 2-process fine-tune killed after its first run-state checkpoint resumes with the same
    command and finishes with the uninterrupted single-process summary; processes that see
    different checkpoints (no shared filesystem) are refused; a single process resumes a
    2-process checkpoint."""
    args = [a if a != "finetune_steps=400" else "finetune_steps=600" for a in FINETUNE]
    one, two = tmp_path / "one", tmp_path / "two"
    _single(args, one)
    procs, logs, _ = _pair(args, two, tmp_path)
    try:
        deadline = time.monotonic() + 400
        while not (two / "finetune_state" / "info.json").exists():
            assert all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        assert procs[0].wait(timeout=60) != 0
    finally:
        for p in procs:
            p.kill()
    assert '"chunks_done": 1' in (two / "finetune_state" / "info.json").read_text()
    half = tmp_path / "half"  # the interrupted state, for the single-process resume below
    shutil.copytree(two, half)
    procs, logs, _ = _pair(args, two, tmp_path, outs=(two, tmp_path / "elsewhere"))
    assert [p.wait(timeout=300) for p in procs] == [2, 2]
    assert "the processes disagree on the chunks done" in logs[0].read_text()
    texts, writes = _run_pair(args, two, tmp_path)
    assert "resuming after chunk 1/3" in texts[0]
    _compare(one, two, texts, writes, "finetune")
    _single(args, half)
    assert (half / "summary.csv").read_text() == (one / "summary.csv").read_text()


# ---------------------------------------------------------------------------------------------
# In-process pieces (one process)


def test_one_process_is_main_and_fetch_is_device_get():
    assert not multihost.wanted()
    assert multihost.initialize() is False
    assert multihost.is_main()
    x = {"a": jax.numpy.arange(4)}
    np.testing.assert_array_equal(multihost.fetch(x)["a"], np.arange(4))
    assert multihost.leave(2) == 2  # no multi-process job: the command returns its code
    assert multihost.main_only(lambda: 7)() == 7
    multihost.barrier("no-op")
    multihost.check_same(3, "anything")


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"JAX_PROCESS_ID": "x"}, "JAX_PROCESS_ID='x' must be an integer"),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "must be below JAX_NUM_PROCESSES"),
        ({"FPC_JAX_INIT_TIMEOUT_S": "0"}, "FPC_JAX_INIT_TIMEOUT_S='0'"),
    ],
)
def test_bad_launch_variables_are_clear_errors(monkeypatch, env, match):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(multihost.MultihostError, match=match):
        multihost.initialize()


class _Dev:
    def __init__(self, process: int, i: int) -> None:
        self.process_index, self.id = process, i

    def __repr__(self) -> str:
        return f"d{self.process_index}.{self.id}"


def test_runs_mesh_takes_as_many_devices_from_every_process(monkeypatch):
    monkeypatch.setattr(sharding, "Mesh", lambda devs, axes: list(devs))
    devs = [_Dev(p, i) for p in range(2) for i in range(2)]
    assert sharding.runs_mesh(4, devs) == devs
    assert sharding.runs_mesh(6, devs) == [devs[0], devs[2]]  # 3 runs per process, 1 device
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with pytest.warns(UserWarning, match="do not divide over 2 processes"):
        assert sharding.runs_mesh(3, devs) == [devs[2]]  # its own devices, all 3 runs
    assert sharding.runs_mesh(3, devs[:2]) == devs[:1]  # one process: as before
