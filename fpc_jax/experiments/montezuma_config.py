"""Schema of ``configs/montezuma/*.yaml``: the FPC study with PPO on the real Montezuma's Revenge
(run by ``fpc_jax.experiments.montezuma_study``; docs/montezuma.md)."""

from __future__ import annotations

import dataclasses

from fpc_jax.agents.ppo.networks import PPOConfig
from fpc_jax.envs import ale_montezuma as mz
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments.host_ppo_config import HostPPOConfig
from fpc_jax.experiments.study_config import option

ENV = "ale/montezuma"
ROUTE = tuple(f"room{k}" for k in range(1, 10))
"""The route rooms in order (room1 = game start); the stage axis of the curves and plots."""


@dataclasses.dataclass(frozen=True)
class MontezumaStudyConfig(HostPPOConfig):
    """Schema of ``configs/montezuma/*.yaml`` (pre-training and fine-tuning share one file); the
    PPO, rollout and method fields are ``HostPPOConfig``'s."""

    name: str = option("montezuma", "experiment name")
    env: str = option(ENV, f"must be {ENV!r} (the real game, ale-py)")
    obs: str = option("ram", "observation: 'ram' (42 RAM features; frames need a CNN, not here)")
    sticky: float = option(mz.DEFAULT_STICKY, "ALE sticky-action probability (v5: 0.25)")
    max_steps: int = option(1000, "episode time limit, agent steps (RND: 4500)")
    terminal_on_life_loss: bool = option(True, "end the episode at the first lost life [U]")
    asset: str = option("", "start-state asset directory ('': the shipped one)")
    pretrain_starts: tuple[str, ...] = option(("room7", "room8", "room9"), "pi*'s Far starts")
    finetune_start: str = option(mz.GAME_START, "fine-tuning start (the game start)")
    reward_scale: float = option(0.01, "extrinsic reward multiplier (game points 100..3000) [U]")
    pretrain_steps: int = option(
        131_072, "env steps of PPO from the Far starts", resume_extend=True
    )

    def validate(self) -> None:
        bad = self.loop_problems(("pretrain_steps", "finetune_steps"))
        if self.env != ENV:
            bad.append(f"env must be {ENV!r}, got {self.env!r}")
        if self.obs != "ram":
            bad.append(f"obs must be 'ram' (the CPU-budget deviation), got {self.obs!r}")
        if not self.pretrain_starts:
            bad.append("pretrain_starts must name at least one start")
        try:
            starts = mz.load_starts(self.asset or None)
            for name in (*self.pretrain_starts, self.finetune_start):
                starts.get(name)
        except (FileNotFoundError, ValueError) as e:
            bad.append(str(e))
        if bad:
            raise cfglib.ConfigError("invalid Montezuma study config: " + "; ".join(bad))


def network(cfg: MontezumaStudyConfig) -> PPOConfig:
    """Shared-head actor/critic MLPs on the RAM features (the policy sees no room id)."""
    return PPOConfig(
        obs_dim=mz.RAM_SIZE,
        num_actions=mz.NUM_ACTIONS,
        hidden_sizes=tuple(cfg.hidden_sizes),
        activation=cfg.activation,
        rnd=cfg.rnd,
    )


def default_out(cfg: MontezumaStudyConfig, phase: str) -> str:
    return f"runs/montezuma/{cfg.name}/{phase}"
