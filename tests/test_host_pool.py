"""The shared host-env worker pool on a toy batch: workers=0 and workers=2 give the same replies,
a worker's exception names the worker and carries its traceback, close leaves no process alive."""

import functools
import gc
import multiprocessing as mp

import numpy as np
import pytest

from fpc_jax.envs.host_pool import HostPool, PooledVec, concat


class Toy:
    """Env i holds ``10 * seed_i``; ``step(x)`` adds ``x`` (raising for a negative one)."""

    def __init__(self, seeds: list[int], fail_at_start: bool = False) -> None:
        if fail_at_start:
            raise OSError(f"cannot build envs {seeds}")
        self.state = np.array(seeds, np.int64) * 10

    def reset(self) -> np.ndarray:
        return self.state.copy()

    def step(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if (x < 0).any():
            raise ValueError(f"negative action for state {self.state.tolist()}")
        self.state = self.state + x
        return self.state.astype(np.float32), {"even": self.state % 2 == 0, "x": x.copy()}

    def label(self, names: list[str]) -> np.ndarray:
        assert isinstance(names, list)
        return np.array([f"{n}:{s}" for n, s in zip(names, self.state, strict=True)])


def _assert_exited(procs: list) -> None:
    assert procs and all(not p.is_alive() and p.exitcode is not None for p in procs)
    assert not set(procs) & set(mp.active_children())


def test_concat_joins_nested_replies_in_order():
    a = (np.arange(2), {"k": np.ones((2, 3)), "j": np.zeros(2, bool)})
    b = (np.arange(1), {"k": np.ones((1, 3)), "j": np.ones(1, bool)})
    out = concat([a, b])
    assert list(out[1]) == ["k", "j"] and out[1]["k"].shape == (3, 3)
    np.testing.assert_array_equal(out[0], [0, 1, 0])
    assert out[1]["j"].dtype == bool


def test_in_process_and_two_workers_agree_and_close_cleanly():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 5, (6, 5))
    names = ["a", "b", "c", "d", "e"]
    outs, procs = [], None
    for workers in (0, 2):
        with HostPool(Toy, [1, 2, 3, 4, 5], workers, name="toy") as pool:
            out = [pool.call("reset"), *(pool.call("step", a) for a in actions)]
            out.append(pool.call("label", names))
            outs.append(out)
            if workers:
                assert [c.tolist() for c in pool.chunks] == [[0, 1, 2], [3, 4]]
                procs = list(pool.processes)
                assert all(p.is_alive() for p in procs)
        with pytest.raises(RuntimeError, match="toy pool is closed"):
            pool.call("reset")
    _assert_exited(procs)
    assert all(p.exitcode == 0 for p in procs)
    ref, got = outs
    np.testing.assert_array_equal(ref[0], [10, 20, 30, 40, 50])
    np.testing.assert_array_equal(ref[-1], got[-1])
    for (obs_a, info_a), (obs_b, info_b) in zip(ref[1:-1], got[1:-1], strict=True):
        assert obs_a.dtype == obs_b.dtype == np.float32
        np.testing.assert_array_equal(obs_a, obs_b)
        assert list(info_a) == list(info_b) == ["even", "x"]
        for k in info_a:
            np.testing.assert_array_equal(info_a[k], info_b[k])
    with HostPool(Toy, [1, 2], 0) as pool, pytest.raises(ValueError, match="one entry per env"):
        pool.call("step", np.zeros(3, np.int64))


def test_worker_error_names_the_worker_and_closes_the_pool():
    pool = HostPool(Toy, [1, 2, 3, 4], 2, name="toy")
    procs = list(pool.processes)
    with pytest.raises(RuntimeError, match=r"toy worker 1 of 2 \(envs 2\.\.3\) failed") as err:
        pool.call("step", np.array([0, 0, 0, -1]))
    assert "Traceback" in str(err.value) and "negative action for state [30, 40]" in str(err.value)
    _assert_exited(procs)
    with pytest.raises(ValueError, match="negative action"):  # in-process: raised as is
        HostPool(Toy, [1], 0).call("step", np.array([-1]))


def test_start_failure_and_lost_worker_raise_clearly_without_orphans():
    before = set(mp.active_children())
    factory = functools.partial(Toy, fail_at_start=True)
    with pytest.raises(RuntimeError, match=r"toy worker 0 of 1 \(envs 0\.\.1\) failed(.|\n)*OSE"):
        HostPool(factory, [1, 2], 1, name="toy")
    assert set(mp.active_children()) <= before
    pool = HostPool(Toy, [1, 2], 1, name="toy")
    procs = list(pool.processes)
    procs[0].kill()
    procs[0].join()
    with pytest.raises(RuntimeError, match=r"toy worker 0 of 1 .* exited without a reply"):
        pool.call("reset")
    _assert_exited(procs)


def test_garbage_collection_closes_the_pool():
    class Vec(PooledVec):
        def __init__(self) -> None:
            self._pool = HostPool(Toy, [1, 2], 1)

    vec = Vec()
    procs = list(vec._pool.processes)
    del vec
    gc.collect()
    _assert_exited(procs)
    assert all(p.exitcode == 0 for p in procs)
