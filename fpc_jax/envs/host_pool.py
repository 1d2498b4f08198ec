"""The worker pool behind the host vector envs (Meta-World, Montezuma, NetHack): ``workers``
processes each owning one batch of envs built by a picklable factory, or that batch in-process."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Self

import numpy as np

JOIN_TIMEOUT_S = 5.0
"""How long ``close`` waits for a worker to exit (then terminates it and waits as long again)."""


def concat(parts: Sequence[Any]) -> Any:
    """Join per-worker replies along the env axis: arrays are concatenated, tuples and dicts of
    them (nested) joined entry by entry, in the order of the first reply."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    if isinstance(first, tuple):
        return tuple(concat(x) for x in zip(*parts, strict=True))
    return np.concatenate(parts)


def _serve(conn: Connection, factory: Callable[[list[Any]], Any], items: list[Any]) -> None:
    """A worker's loop: build the batch, then answer ``(method, args)`` until ``close``."""
    try:
        batch = factory(items)
        conn.send(("ok", None))
        while (msg := conn.recv())[0] != "close":
            method, args = msg
            conn.send(("ok", getattr(batch, method)(*args)))
        if hasattr(batch, "close"):
            batch.close()
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:  # reported to the parent, which raises
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _shutdown(local: Any, conns: list[Connection], procs: list[Any]) -> None:
    """Close the in-process batch, or ask every worker to stop and wait (terminating if need be)."""
    if local is not None and hasattr(local, "close"):
        local.close()
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.send(("close", ()))
    for proc in procs:
        if proc.pid is None:  # never started
            continue
        proc.join(timeout=JOIN_TIMEOUT_S)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=JOIN_TIMEOUT_S)
    for conn in conns:
        conn.close()
    conns.clear()


class HostPool:
    """``factory(items)`` batches over ``workers`` processes, or one in-process (``workers=0``).

    ``items`` (one per env, e.g. seeds) are split into ``workers`` contiguous chunks as
    ``np.array_split`` does; worker ``w`` holds ``factory(items[chunk w])``. ``call(method,
    per_env)`` runs ``batch.method(per_env[chunk])`` (``batch.method()`` when ``per_env`` is None)
    on every batch and joins the replies with ``concat``, so a reply must be an array, or a
    tuple / dict of them, with the env axis first. A worker's exception closes the pool and is
    raised as a ``RuntimeError`` naming the worker and carrying its traceback; in-process, it
    propagates as is. ``close()`` (also on ``with`` exit, garbage collection and interpreter exit)
    stops every worker, calling ``batch.close()`` first where the batch has one. ``start_method``
    "forkserver" by default: safe after JAX has started threads; with forkserver or spawn the
    main script needs an ``if __name__ == "__main__":`` guard.
    """

    def __init__(
        self,
        factory: Callable[[list[Any]], Any],
        items: Sequence[Any],
        workers: int = 0,
        *,
        name: str = "host env",
        start_method: str = "forkserver",
    ) -> None:
        if len(items) < 1 or not 0 <= workers <= len(items):
            raise ValueError(f"need >= 1 items and 0 <= workers <= items: {len(items)}, {workers}")
        self.name, self.num_envs, self.workers = name, len(items), workers
        self.chunks = np.array_split(np.arange(len(items)), max(workers, 1))
        self.processes: list[Any] = []
        self._conns: list[Connection] = []
        self.local: Any = factory(list(items)) if workers == 0 else None
        # runs on close(), on garbage collection, or at interpreter exit (before module teardown)
        self._finalizer = weakref.finalize(self, _shutdown, self.local, self._conns, self.processes)
        if workers == 0:
            return
        ctx = mp.get_context(start_method)
        try:
            for w, chunk in enumerate(self.chunks):
                parent, child = ctx.Pipe()
                args = (child, factory, [items[i] for i in chunk])
                proc = ctx.Process(target=_serve, args=args, name=f"{name} worker {w}", daemon=True)
                self._conns.append(parent)
                self.processes.append(proc)
                proc.start()
                child.close()
            for w in range(workers):
                self._recv(w)
        except BaseException:
            self.close()
            raise

    def _where(self, w: int) -> str:
        chunk = self.chunks[w]
        return f"{self.name} worker {w} of {self.workers} (envs {chunk[0]}..{chunk[-1]})"

    def _lost(self, w: int) -> RuntimeError:
        self.close()
        return RuntimeError(
            f"{self._where(w)} exited without a reply (killed, or at start-up: with "
            "forkserver/spawn the main script needs an `if __name__ == '__main__':` guard)"
        )

    def _recv(self, w: int) -> Any:
        try:
            status, data = self._conns[w].recv()
        except (EOFError, OSError):
            raise self._lost(w) from None
        if status == "error":
            self.close()
            raise RuntimeError(f"{self._where(w)} failed:\n{data}")
        return data

    def _split(self, per_env: Any, w: int) -> Any:
        lo, hi = self.chunks[w][0], self.chunks[w][-1] + 1
        return per_env[lo:hi] if isinstance(per_env, np.ndarray) else list(per_env[lo:hi])

    def call(self, method: str, per_env: Any = None) -> Any:
        """``batch.method(per_env[chunk])`` on every batch, the replies joined with ``concat``."""
        if not self._finalizer.alive:
            raise RuntimeError(f"the {self.name} pool is closed")
        if per_env is not None and len(per_env) != self.num_envs:
            raise ValueError(f"need one entry per env ({self.num_envs}), got {len(per_env)}")
        n = len(self.chunks)
        args = [() if per_env is None else (self._split(per_env, w),) for w in range(n)]
        if self.local is not None:
            return concat([getattr(self.local, method)(*args[0])])
        for w, (conn, a) in enumerate(zip(self._conns, args, strict=True)):
            try:
                conn.send((method, a))
            except OSError:
                raise self._lost(w) from None
        return concat([self._recv(w) for w in range(self.workers)])

    def close(self) -> None:
        """Stop the workers (or close the in-process batch); safe to call more than once."""
        if (finalizer := getattr(self, "_finalizer", None)) is not None:
            finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PooledVec:
    """Base of the vector envs that step a ``HostPool`` held in ``self._pool``: ``close`` and
    the context manager (the pool closes itself on garbage collection)."""

    _pool: HostPool | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
