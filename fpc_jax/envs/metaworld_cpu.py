"""Host-side (NumPy) RoboticSequence over the real Meta-World v3 tasks on CPU MuJoCo: the public
module, and the ``metaworld/*`` registry entries with their ``"cpu"`` backend.

Implements docs/sequence_semantics.md (Algorithm 1 of Wolczyk et al. 2023) in three parts: the task
names, sequence config and one task as an env (``metaworld_tasks``), one stitched episode
(``metaworld_episode``) and the vector env (``metaworld_pool``, on the shared ``host_pool``).
metaworld is imported lazily, so this module (and its registry entries) load without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fpc_jax.envs.metaworld_episode import INFO_KEYS, MetaWorldSequence, env_seeds
from fpc_jax.envs.metaworld_pool import MetaWorldSequenceVec
from fpc_jax.envs.metaworld_tasks import (
    ACTION_SIZE,
    DEFAULT_TASKS,
    OBS_SIZE,
    RANDOMIZATIONS,
    V3_TASKS,
    MetaWorldSequenceConfig,
    StageEnv,
    check_tasks,
    sequence_config,
    single_stage_config,
)
from fpc_jax.envs.registry import make_backend, register, register_backend

__all__ = [
    "ACTION_SIZE",
    "DEFAULT_TASKS",
    "FAMILY",
    "INFO_KEYS",
    "OBS_SIZE",
    "RANDOMIZATIONS",
    "V3_TASKS",
    "HostEnv",
    "MetaWorldSequence",
    "MetaWorldSequenceConfig",
    "MetaWorldSequenceVec",
    "StageEnv",
    "check_tasks",
    "env_seeds",
    "make_sequence",
    "sequence_config",
    "single_stage_config",
]

FAMILY = "Meta-World"
"""The backend family of the ``metaworld/*`` names in ``fpc_jax.envs.registry``."""

HostEnv = MetaWorldSequence | MetaWorldSequenceVec


def _build_cpu(
    config: MetaWorldSequenceConfig, num_envs: int | None = None, seed: int = 0, workers: int = 0
) -> tuple[HostEnv, MetaWorldSequenceConfig]:
    if num_envs is None:
        if workers:
            raise ValueError("workers needs num_envs (a MetaWorldSequenceVec)")
        return MetaWorldSequence(config, seed=seed), config
    return MetaWorldSequenceVec(
        num_envs=num_envs, seed=seed, workers=workers, config=config
    ), config


register_backend(FAMILY, "cpu", _build_cpu)


def make_sequence(
    backend: str = "cpu",
    tasks: Sequence[str] = DEFAULT_TASKS,
    stage_ids: Sequence[int] | None = None,
    T: int = 200,
    beta: float = 1.5,
    randomization: str = "uniform",
    **kw: Any,
) -> tuple[Any, MetaWorldSequenceConfig]:
    """Registry factory for ``metaworld/robotic_sequence``.

    ``backend="cpu"`` returns ``(MetaWorldSequence, config)``, or ``(MetaWorldSequenceVec, config)``
    when ``num_envs`` is given (``seed``, ``workers`` pass through).
    """
    config = sequence_config(tasks, stage_ids, T, beta, randomization)
    return make_backend(FAMILY, backend, config, **kw)


def _make_single(task: str) -> Callable[..., tuple[Any, MetaWorldSequenceConfig]]:
    def factory(backend: str = "cpu", head: int = 0, **kw: Any) -> tuple[Any, Any]:
        return make_sequence(backend, tasks=(task,), stage_ids=(head,), **kw)

    factory.__doc__ = (
        f"Registry factory for ``metaworld/{task}``: the task as a one-stage sequence "
        "(terminated on success, truncated at T) with global head index ``head``."
    )
    return factory


for _task in V3_TASKS:
    register(f"metaworld/{_task}")(_make_single(_task))
register("metaworld/robotic_sequence")(make_sequence)
