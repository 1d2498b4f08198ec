"""Schema of ``configs/nethack/*.yaml``: the FPC study with PPO on the real NetHack (NLE 1.3.0;
run by ``fpc_jax.experiments.nethack_study``; docs/nethack.md, "The study")."""

from __future__ import annotations

import dataclasses

from fpc_jax.agents.ppo.networks import PPOConfig
from fpc_jax.envs import nle_nethack as nh
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments.host_ppo_config import HostPPOConfig
from fpc_jax.experiments.study_config import option

ENV = "nle/nethack"
PREFIX_SEEDS = range(1, 65)
"""Core seeds of the packaged Far-start asset: pi*'s BC games must not replay them."""


@dataclasses.dataclass(frozen=True)
class NetHackStudyConfig(HostPPOConfig):
    """Schema of ``configs/nethack/*.yaml`` (pre-training and fine-tuning share one file); the
    PPO, rollout and method fields are ``HostPPOConfig``'s. Close = Dlvl 1 (the game start),
    Far = Dlvl >= ``far_depth`` (a replayed bot prefix); pi* = BC of the rule-based bot."""

    name: str = option("nethack", "experiment name")
    env: str = option(ENV, f"must be {ENV!r} (the real game, NLE)")
    character: str = option(nh.CHARACTERS[0], f"NetHack character: {list(nh.CHARACTERS)}")
    crop: int = option(9, "side of the glyph-class crop around the agent (odd)")
    far_depth: int = option(2, "Far = Dlvl >= far_depth; Far success = reaching far_depth + 1")
    prefixes: str = option("", "Far-start prefix asset directory ('': the packaged one)")
    max_steps: int = option(2000, "training episode time limit, agent steps")
    stall_limit: int = option(200, "agent steps without the game clock moving before truncation")
    eval_max_steps: int = option(1000, "evaluation episode time limit, agent steps")
    eval_seed: int = option(7, "seed of the evaluation games (the same games every evaluation)")
    reward_scale: float = option(0.1, "in-game score delta multiplier [U]")
    hidden_sizes: tuple[int, ...] = option((256, 256), "actor and critic MLP widths")
    activation: str = option("relu", "hidden activation")
    bot_games: int = option(40, "bot games for pi*'s BC data")
    bot_first_seed: int = option(1000, "core seed of the first BC game (disp = core + 10^6)")
    bot_max_steps: int = option(2000, "bot steps per BC game")
    bc_epochs: int = option(10, "epochs of BC of the bot into pi*")
    bc_lr: float = option(1e-3, "Adam learning rate of the BC (actor) and value (critic) fits")
    bc_batch: int = option(256, "minibatch of the BC fit")
    finetune_start: str = option("close", "fine-tuning start: 'close' (the game start)")

    def validate(self) -> None:
        bad = self.loop_problems(("finetune_steps",))
        if self.env != ENV:
            bad.append(f"env must be {ENV!r}, got {self.env!r}")
        if self.finetune_start != "close":
            bad.append(
                f"finetune_start must be 'close' (the game start), got {self.finetune_start!r}"
            )
        for k in (
            "eval_max_steps",
            "stall_limit",
            "bot_games",
            "bot_max_steps",
            "bc_epochs",
            "bc_batch",
        ):
            if getattr(self, k) < 1:
                bad.append(f"{k} must be >= 1")
        if not self.bc_lr > 0:
            bad.append(f"bc_lr must be > 0, got {self.bc_lr}")
        if set(range(self.bot_first_seed, self.bot_first_seed + self.bot_games)) & set(
            PREFIX_SEEDS
        ):
            bad.append("bot_first_seed: pi*'s BC games overlap the Far-start asset's seeds 1..64")
        try:
            nh.NetHackConfig(**self.env_config("far"))  # character, crop, far_depth, limits
            from fpc_jax.envs.nle_prefixes import PrefixSet

            PrefixSet.load(self.prefixes or None).reaching(self.far_depth)
        except (ValueError, FileNotFoundError) as e:
            bad.append(str(e))
        if bad:
            raise cfglib.ConfigError("invalid NetHack study config: " + "; ".join(bad))

    def env_config(self, start: str, max_steps: int | None = None) -> dict:
        """``make_nethack`` options of this study's envs at ``start`` ('close' or 'far')."""
        return {
            "character": self.character,
            "crop": self.crop,
            "obs_mode": "flat",
            "start": start,
            "far_depth": self.far_depth,
            "prefixes": self.prefixes or None,
            "max_steps": max_steps or self.max_steps,
            "stall_limit": self.stall_limit,
        }


def network(cfg: NetHackStudyConfig) -> PPOConfig:
    """Shared-head actor/critic MLPs on the flat observation (one-hot crop classes + stats)."""
    size = cfg.crop * cfg.crop * nh.NUM_GLYPH_CLASSES + nh.NUM_STATS
    return PPOConfig(
        obs_dim=size,
        num_actions=nh.NUM_ACTIONS,
        hidden_sizes=tuple(cfg.hidden_sizes),
        activation=cfg.activation,
        rnd=cfg.rnd,
    )


def default_out(cfg: NetHackStudyConfig, phase: str) -> str:
    return f"runs/nethack/{cfg.name}/{phase}"
