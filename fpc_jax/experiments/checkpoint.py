"""Checkpoints: a pre-trained SAC policy (the fine-tuning start point) and resumable run states.

Layout of a policy checkpoint directory::

    meta.json       format version, SAC architecture, env/stage names, how it was made
    state/          orbax StandardCheckpointer of the SACTrainState arrays (actor, critics,
                    targets, log-alphas, optimizer states, step)
    checksums.json  SHA-256 of every other file (``integrity``), verified before loading

Loading checks the checksums, the format version and that the architecture matches the one
requested, and says which file or field differs. Resumable run states (``save_runs``/
``load_runs``) hold a whole batched pytree plus the chunk index it was saved after. Every
checkpoint is written to ``<path>.tmp`` and renamed into place when complete.

Multi-process runs (docs/multihost.md): every process calls the save functions, orbax's
multi-process save writes each process's shards and process 0 the metadata; every process then
reads the whole directory on resume, so it must be on a filesystem shared by all processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from fpc_jax.agents.sac.networks import SACConfig
from fpc_jax.agents.sac.update import SACHyper, SACTrainState, init_train_state
from fpc_jax.experiments import integrity, multihost, sharding

FORMAT_VERSION = 1
_ARCH_FIELDS = (
    "obs_dim",
    "act_dim",
    "num_heads",
    "hidden_sizes",
    "first_activation",
    "hidden_activation",
)


SHARED_FS_HINT = (
    "every process must see the same output and checkpoint directories: put them on a filesystem "
    "shared by all hosts (docs/multihost.md)"
)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, of another format, or does not match the requested
    setup."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a chunked run; the message says after which chunk and how to resume."""


def _save(path: Path, tree: Any) -> None:
    """Orbax save; with several processes, a multi-process save of global arrays (each process
    writes the shards it holds; orbax refuses process-local arrays there)."""
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, sharding.make_global(tree) if jax.process_count() > 1 else tree)
    ckptr.wait_until_finished()


def _checkpointer() -> ocp.StandardCheckpointer:
    """A restoring orbax checkpointer private to this process (no cross-process barriers): each
    process reads the whole state, ``sharding.shard_runs`` then keeps its part."""
    me = jax.process_index()
    options = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.StandardCheckpointer(multiprocessing_options=options)


def sac_config_to_dict(config: SACConfig) -> dict[str, Any]:
    d = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    d["hidden_sizes"] = list(d["hidden_sizes"])
    return d


def sac_config_from_dict(d: dict[str, Any]) -> SACConfig:
    return SACConfig(**{**d, "hidden_sizes": tuple(d["hidden_sizes"])})


@dataclasses.dataclass(frozen=True)
class PolicyCheckpoint:
    config: SACConfig
    state: SACTrainState
    meta: dict[str, Any]


def _abs(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def save_policy(path: str | Path, state: SACTrainState, meta: dict[str, Any] | None = None) -> Path:
    """Write ``state`` (unbatched) and metadata to ``path`` (replaced if it exists)."""
    full_meta = {
        "format_version": FORMAT_VERSION,
        "kind": "fpc_jax.sac_policy",
        "sac_config": sac_config_to_dict(state.config),
        **(meta or {}),
    }
    return write_state_dir(path, state, full_meta)


def write_state_dir(path: str | Path, state: Any, meta: dict[str, Any]) -> Path:
    """Replace ``path`` by ``state/`` (orbax) and ``meta.json``: a policy checkpoint of any agent
    family. In a multi-process run every process calls it and returns once it is written."""
    path = _abs(path)
    tmp = path.with_name(path.name + ".tmp")
    if multihost.is_main():
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    multihost.barrier(f"fpc_jax save_policy {path}")
    _save(tmp / "state", jax.tree.map(jnp.asarray, state))
    multihost.barrier(f"fpc_jax saved policy state {path}")
    if multihost.is_main():
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        integrity.write_checksums(tmp)
        integrity.replace_dir(tmp, path)
    multihost.barrier(f"fpc_jax saved policy {path}")
    return path


def restore_state(path: str | Path, target: Any) -> Any:
    """Restore the orbax ``state/`` written by ``write_state_dir`` into ``target``'s structure
    (shapes and dtypes), on this process alone; orbax's errors pass through."""
    return _checkpointer().restore(_abs(path) / "state", _on_this_process(target))


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON mapping of a checkpoint; unreadable or garbled JSON is a ``CheckpointError``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{what} {str(path.parent)!r} is corrupted: {path.name}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {str(path.parent)!r} is corrupted: {path.name} is not a map")
    return data


def read_meta(path: str | Path) -> dict[str, Any]:
    """The checked ``meta.json`` of a policy checkpoint (after ``integrity.verify_checksums``)."""
    path = _abs(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise CheckpointError(
            f"no fpc_jax checkpoint at {str(path)!r} (missing meta.json); "
            "create one with `fpc-jax pretrain`"
        )
    integrity.verify_checksums(path, CheckpointError)
    meta = read_json(meta_file, "checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {meta.get('format_version')!r}; "
            f"this fpc_jax reads version {FORMAT_VERSION}"
        )
    return meta


def load_policy(path: str | Path, expected: SACConfig | None = None) -> PolicyCheckpoint:
    """Load a policy checkpoint; if ``expected`` is given its architecture must match."""
    path = _abs(path)
    meta = read_meta(path)
    config = sac_config_from_dict(meta["sac_config"])
    if expected is not None:
        norm = lambda v: tuple(v) if isinstance(v, list | tuple) else v  # noqa: E731
        diffs = [
            f"{k}: checkpoint {getattr(config, k)!r} vs requested {getattr(expected, k)!r}"
            for k in _ARCH_FIELDS
            if norm(getattr(config, k)) != norm(getattr(expected, k))
        ]
        if diffs:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not match the requested network: "
                + "; ".join(diffs)
            )
        config = dataclasses.replace(config, batch_size=expected.batch_size)
    target = jax.eval_shape(
        lambda: init_train_state(config, SACHyper.create(config.act_dim), jax.random.key(0))
    )
    try:
        state = restore_state(path, target)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} could not be restored: {e}") from e
    return PolicyCheckpoint(config=config, state=state, meta=meta)


def save_runs(path: str | Path, tree: Any, info: dict[str, Any]) -> None:
    """Atomically write a batched run-state pytree and ``info`` (e.g. chunks done, config). In a
    multi-process run every process calls it and writes its own shards of the runs."""
    path = _abs(path)
    info = {**info, "process_count": jax.process_count(), "device_count": jax.device_count()}
    tmp = path.with_name(path.name + ".tmp")
    if multihost.is_main():
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    multihost.barrier(f"fpc_jax save_runs {path}")
    _save(tmp / "state", _drop_empty(jax.tree.map(jnp.asarray, tree)))
    multihost.barrier(f"fpc_jax saved runs state {path}")
    if multihost.is_main():
        (tmp / "info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        integrity.write_checksums(tmp)
        integrity.replace_dir(tmp, path)


def read_run_info(path: str | Path) -> dict[str, Any]:
    """The ``info.json`` of a run-state checkpoint (chunks done, resume key), checksums checked."""
    path = _abs(path)
    if not (path / "info.json").is_file():
        raise CheckpointError(
            f"run checkpoint {str(path)!r} is incomplete (no info.json); use another --out or "
            "delete it"
        )
    integrity.verify_checksums(path, CheckpointError)
    return read_json(path / "info.json", "run checkpoint")


def load_runs(path: str | Path, target: Any) -> tuple[Any, dict[str, Any]]:
    """Restore a batched run state saved by ``save_runs`` into the structure of ``target``."""
    path = _abs(path)
    info = read_run_info(path)
    abstract = _on_this_process(_drop_empty(jax.tree.map(ocp.utils.to_shape_dtype_struct, target)))
    try:
        tree = _checkpointer().restore(path / "state", abstract)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"run checkpoint {str(path)!r} does not match this run: {e}") from e
    leaves, treedef = jax.tree.flatten(target)
    got = jax.tree.leaves(tree, is_leaf=lambda x: x is None)
    tree = treedef.unflatten([t if g is None else g for t, g in zip(leaves, got, strict=True)])
    return tree, info


def _on_this_process(abstract: Any) -> Any:
    """Restore targets on this process's first device: the saved sharding names process 0's."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)


def _drop_empty(tree: Any) -> Any:
    """Zero-size leaves as ``None``: orbax refuses to save zero-size arrays (an MJX env state has
    some, e.g. ``act`` of a model without activation states); ``load_runs`` takes them from the
    target."""
    return jax.tree.map(lambda x: None if math.prod(x.shape) == 0 else x, tree)
