"""Multi-process (multi-host) runs: join the JAX job, gather the runs axis, write from process 0.

Every study command runs as N cooperating processes when ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` are set (or through JAX's own cluster detection on
TPU pods and SLURM with ``FPC_JAX_DISTRIBUTED=1``). The runs axis is sharded over every device of
every process (``sharding.runs_mesh``); outputs are gathered to every process (``fetch``) and
written once, by process 0 (``main_only``). Launch recipes and the design: docs/multihost.md.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

ADDRESS_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
INIT_TIMEOUT_VAR = "FPC_JAX_INIT_TIMEOUT_S"
HEARTBEAT_TIMEOUT_VAR = "FPC_JAX_HEARTBEAT_TIMEOUT_S"
INIT_TIMEOUT_S = 300
"""Default seconds for all processes to join (JAX's default; a pod's hosts start unevenly)."""
HEARTBEAT_TIMEOUT_S = 100
"""Default seconds without a peer's heartbeat before the others stop (JAX's default)."""
BARRIER_TIMEOUT_VAR = "FPC_JAX_BARRIER_TIMEOUT_S"
BARRIER_TIMEOUT_S = 1800
"""Default seconds a process waits for the others at a barrier (one may still be compiling)."""

F = TypeVar("F", bound=Callable[..., Any])


class MultihostError(RuntimeError):
    """The multi-process setup is inconsistent: bad variables, unreachable coordinator, or
    processes that disagree (e.g. on a resume checkpoint)."""


def wanted() -> bool:
    """Whether the environment asks for a multi-process run."""
    return any(os.environ.get(v) for v in ADDRESS_VARS) or os.environ.get(
        "FPC_JAX_DISTRIBUTED", ""
    ).lower() in ("1", "true")


def initialize() -> bool:
    """Join the multi-process JAX job described by the environment; returns whether it did.

    Must run before any JAX computation. Selects gloo CPU collectives (the CPU backend has no
    cross-process collectives otherwise). A process other than 0 first waits for the
    coordinator's port and raises ``MultihostError`` if it stays closed for
    ``FPC_JAX_INIT_TIMEOUT_S`` seconds; JAX then waits as long for every process to register and
    stops the process with an error after it. Once running, a process whose peer stops sending
    heartbeats for ``FPC_JAX_HEARTBEAT_TIMEOUT_S`` seconds (or whose coordinator dies) is stopped
    by JAX with "another task died" instead of hanging.
    """
    if not wanted():
        return False
    if jax.distributed.is_initialized():
        return True
    address = next((os.environ[v] for v in ADDRESS_VARS if os.environ.get(v)), None)
    num_processes = _int_var("JAX_NUM_PROCESSES", minimum=1)
    process_id = _int_var("JAX_PROCESS_ID", minimum=0)
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise MultihostError(
            f"JAX_PROCESS_ID={process_id} must be below JAX_NUM_PROCESSES={num_processes}"
        )
    init_timeout = _int_var(INIT_TIMEOUT_VAR, minimum=1) or INIT_TIMEOUT_S
    heartbeat = _int_var(HEARTBEAT_TIMEOUT_VAR, minimum=1) or HEARTBEAT_TIMEOUT_S
    _select_gloo()
    if address and process_id:
        _wait_for_port(address, init_timeout, process_id, num_processes)
    try:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=init_timeout,
            heartbeat_timeout_seconds=heartbeat,
        )
    except (RuntimeError, ValueError, TypeError) as e:
        raise MultihostError(f"could not join the multi-process JAX job: {e}") from e
    if is_main():
        print(
            f"[multihost] {jax.process_count()} processes, {jax.device_count()} devices "
            f"({jax.local_device_count()} per process, {jax.default_backend()})",
            file=sys.stderr,
        )
    return True


def _int_var(name: str, minimum: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise MultihostError(f"{name}={raw!r} must be an integer >= {minimum}")
    return value


def _select_gloo() -> None:
    """Gloo cross-process collectives on the CPU backend (a no-op on GPU/TPU backends)."""
    if "jax_cpu_collectives_implementation" in jax.config.values:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    else:  # jax < 0.4.32
        jax.config.update("jax_cpu_enable_gloo_collectives", True)


def _wait_for_port(address: str, timeout: float, process_id: int, num: int | None) -> None:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise MultihostError(
                    f"process {process_id} of {num or '?'}: cannot reach the JAX coordinator at "
                    f"{address} within {timeout:.0f}s ({e}); start process 0 there, check the "
                    f"address, port and firewall, or raise {INIT_TIMEOUT_VAR}"
                ) from e
            time.sleep(0.5)


def leave(code: int, error: BaseException | None = None) -> int:
    """Return ``code`` from a command; but a failing process of a multi-process run prints
    ``error`` and exits at once (``os._exit``): JAX's orderly shutdown would wait at a barrier for
    peers that wait in a collective for this process. The peers stop within the heartbeat
    timeout (at once if this is process 0, the coordinator)."""
    if not code or not jax.distributed.is_initialized():
        return code
    if error is not None:
        traceback.print_exception(error)
    print(f"[multihost] process {jax.process_index()} failed; stopping", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def is_main() -> bool:
    """Whether this is process 0, the one that writes results and prints progress."""
    return jax.process_index() == 0


def main_only(fn: F) -> F:
    """Decorate a write: it runs on process 0 only; the other processes get ``None``."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if is_main() else None

    return wrapped  # type: ignore[return-value]


def log(*args: Any, **kwargs: Any) -> None:
    """``print`` on process 0 only."""
    if is_main():
        print(*args, **kwargs)


def fetch(tree: Any) -> Any:
    """The whole of a (runs-sharded) pytree on every process, as numpy arrays.

    One process: ``jax.device_get``. Several: a leaf that spans other processes' devices is
    gathered with ``process_allgather(tiled=True)`` (a collective: every process must call this);
    a process-local leaf (replicated work, e.g. the one pre-training run) is read locally.
    Typed PRNG key leaves come back as key arrays on this process's default device.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    barrier("fetch")
    return jax.tree.map(_fetch_leaf, tree)


def _fetch_leaf(x: Any) -> Any:
    if not isinstance(x, jax.Array):
        return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(
            _fetch_leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x)
        )
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


_BARRIERS = itertools.count()


def barrier(name: str) -> None:
    """Wait until every process gets here, for up to ``FPC_JAX_BARRIER_TIMEOUT_S`` seconds (no-op
    with one process). A coordination-service barrier, not a device collective: the processes
    can arrive minutes apart (one compiles while another loads a cached program), but gloo's
    first collective on a set of devices gives up after 30 s, so ``fetch`` and ``check_same``
    meet here first."""
    if jax.process_count() == 1:
        return
    timeout = _int_var(BARRIER_TIMEOUT_VAR, minimum=1) or BARRIER_TIMEOUT_S
    client = jax._src.distributed.global_state.client  # what orbax's barriers use too
    client.wait_at_barrier(f"fpc_jax:{next(_BARRIERS)}:{name}", timeout * 1000)


def check_same(value: int, what: str, hint: str = "") -> None:
    """Raise ``MultihostError`` on every process unless all processes hold the same ``value``."""
    if jax.process_count() == 1:
        return
    barrier("check_same")
    got = np.asarray(multihost_utils.process_allgather(np.asarray([value], np.int64)))
    got = got.reshape(-1).tolist()
    if len(set(got)) > 1:
        per = ", ".join(f"process {i}: {v}" for i, v in enumerate(got))
        hint = f"; {hint}" if hint else ""
        raise MultihostError(f"the processes disagree on {what} ({per}){hint}")
