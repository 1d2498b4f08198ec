"""Environments: pure-JAX envs, host-env adapters and the name registry."""

from fpc_jax.envs import (
    ale_montezuma,  # registered below (the real game; ale-py imported lazily)
    apple_retrieval,  # noqa: F401  (registers "apple_retrieval")
    key_door_rooms,  # noqa: F401  (registers "key_door_rooms")
    metaworld_cpu,  # noqa: F401  (registers "metaworld/*", lazy import)
    metaworld_mjx,  # noqa: F401  (registers backend "mjx" of "metaworld/*", lazy import)
    nle_vec,  # noqa: F401  (registers "nle/nethack", lazy import)
    point_sequence,  # noqa: F401  (registers "point_sequence")
)
from fpc_jax.envs.registry import make, register, registered

register("ale/montezuma")(ale_montezuma.make_montezuma)

__all__ = ["make", "register", "registered"]
