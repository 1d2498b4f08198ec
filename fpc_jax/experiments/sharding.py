"""The runs axis over devices: a 1-D ``Mesh('runs')``, runs sharded with ``NamedSharding``.

Runs are independent, so sharding them adds no collectives: each device steps its own runs.
Multi-host jobs call ``jax.distributed.initialize()`` when the standard coordinator variables are
set (``maybe_initialize_distributed``), after which ``jax.devices()`` spans every host.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_DIST_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def maybe_initialize_distributed() -> bool:
    """Initialize multi-host JAX when a coordinator address is in the environment (or on a TPU pod
    slice / SLURM job, where ``jax.distributed.initialize()`` discovers it). Returns whether it
    did."""
    wanted = any(os.environ.get(v) for v in _DIST_VARS) or os.environ.get(
        "FPC_JAX_DISTRIBUTED", ""
    ) in ("1", "true")
    if not wanted:
        return False
    jax.distributed.initialize()
    return True


def runs_mesh(num_runs: int, devices: list[Any] | None = None) -> Mesh:
    """A mesh over the most devices that divide ``num_runs`` evenly (all of them when possible)."""
    devices = list(devices if devices is not None else jax.devices())
    k = max(d for d in range(1, len(devices) + 1) if num_runs % d == 0)
    return Mesh(np.asarray(devices[:k]), ("runs",))


def shard_runs(mesh: Mesh, tree: Any) -> Any:
    """Place every leaf (leading axis = runs) sharded along ``runs``."""
    sharding = NamedSharding(mesh, PartitionSpec("runs"))
    return jax.device_put(tree, sharding)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Place every leaf whole on every device of the mesh (shared inputs such as anchors)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def describe(mesh: Mesh) -> str:
    devs = mesh.devices.ravel()
    return f"{len(devs)} x {devs[0].device_kind} ({jax.default_backend()})"
