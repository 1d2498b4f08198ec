"""Schema of ``configs/montezuma/*.yaml``: the FPC study with PPO on the real Montezuma's Revenge
(run by ``fpc_jax.experiments.host_ppo``; docs/montezuma.md)."""

from __future__ import annotations

import dataclasses

from fpc_jax.agents.ppo.networks import PPOConfig
from fpc_jax.agents.ppo.update import PPOHyper
from fpc_jax.envs import ale_montezuma as mz
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import ppo_study
from fpc_jax.experiments.study_config import RetentionOverrides, check_methods_and_coefs, option

ENV = "ale/montezuma"
ROUTE = tuple(f"room{k}" for k in range(1, 10))
"""The route rooms in order (room1 = game start); the stage axis of the curves and plots."""


@dataclasses.dataclass(frozen=True)
class MontezumaStudyConfig(RetentionOverrides):
    """Schema of ``configs/montezuma/*.yaml`` (pre-training and fine-tuning share one file)."""

    name: str = option("montezuma", "experiment name")
    env: str = option(ENV, f"must be {ENV!r} (the real game, ale-py)")
    obs: str = option("ram", "observation: 'ram' (42 RAM features; frames need a CNN, not here)")
    sticky: float = option(mz.DEFAULT_STICKY, "ALE sticky-action probability (v5: 0.25)")
    max_steps: int = option(1000, "episode time limit, agent steps (RND: 4500)")
    terminal_on_life_loss: bool = option(True, "end the episode at the first lost life [U]")
    asset: str = option("", "start-state asset directory ('': the shipped one)")
    pretrain_starts: tuple[str, ...] = option(("room7", "room8", "room9"), "pi*'s Far starts")
    finetune_start: str = option(mz.GAME_START, "fine-tuning start (the game start)")
    workers: int = option(0, "env worker processes (0: in-process)")
    hidden_sizes: tuple[int, ...] = option((64, 64), "actor and critic MLP widths")
    activation: str = option("tanh", "hidden activation")
    lr: float = option(2.5e-4, "Adam learning rate")
    gamma: float = option(0.99, "discount")
    gae_lambda: float = option(0.95, "GAE lambda")
    clip_eps: float = option(0.2, "PPO clip range")
    ent_coef: float = option(0.01, "entropy bonus weight")
    vf_coef: float = option(0.5, "value loss weight")
    max_grad_norm: float = option(0.5, "global gradient-norm clip")
    reward_scale: float = option(0.01, "extrinsic reward multiplier (game points 100..3000) [U]")
    rnd: bool = option(False, "PPO + RND: not in the host loop yet (must stay false)")
    num_envs: int = option(8, "envs per run")
    num_steps: int = option(128, "rollout length per env and update")
    epochs: int = option(4, "epochs per rollout")
    minibatches: int = option(4, "minibatches per epoch")
    clip_value_loss: bool = option(True, "clip the value loss like the policy")
    eval_episodes: int = option(4, "evaluation episodes per run and per start")
    steps_per_chunk: int = option(16_384, "env steps per run between evaluations")
    pretrain_steps: int = option(131_072, "env steps of PPO from the Far starts")
    checkpoint: str = option("", "pre-trained policy directory ('': <out>/../pretrain/policy)")
    finetune_steps: int = option(65_536, "env steps of fine-tuning per run")
    methods: tuple[str, ...] = option(("ft", "bc", "ks", "ewc"), "retention methods")
    seeds: int = option(2, "seeds per method")
    seed: int = option(0, "base PRNG seed")
    bc_states: int = option(2_048, "stored pi* Far states for BC (I: 10k)")
    fisher_states: int = option(1_024, "states for the EWC Fisher (I: 2560)")
    bc_kl_direction: float = option(0.0, "0: KL(teacher||student) (default); 1: reverse")

    uses_em = False
    coefs = ppo_study.PPOStudyConfig.coefs  # preset, then <method>_* fields, then the token

    def validate(self) -> None:
        bad = check_methods_and_coefs(self, has_replay=False)
        if self.env != ENV:
            bad.append(f"env must be {ENV!r}, got {self.env!r}")
        if self.obs != "ram":
            bad.append(f"obs must be 'ram' (the CPU-budget deviation), got {self.obs!r}")
        if self.rnd:
            bad.append("rnd: the host-env PPO loop has no RND stream yet; set rnd: false")
        for k in ("max_steps", "num_envs", "num_steps", "epochs", "minibatches", "eval_episodes",
                  "steps_per_chunk", "seeds", "bc_states", "fisher_states"):  # fmt: skip
            if getattr(self, k) < 1:
                bad.append(f"{k} must be >= 1")
        rollout = self.num_envs * self.num_steps
        if rollout % max(self.minibatches, 1):
            bad.append(f"num_envs * num_steps ({rollout}) must split into minibatches")
        if self.steps_per_chunk % max(rollout, 1):
            bad.append(f"steps_per_chunk must be a multiple of num_envs * num_steps ({rollout})")
        for k in ("pretrain_steps", "finetune_steps"):
            if getattr(self, k) < 1 or getattr(self, k) % self.steps_per_chunk:
                bad.append(f"{k} must be a positive multiple of steps_per_chunk")
        if not self.pretrain_starts:
            bad.append("pretrain_starts must name at least one start")
        try:
            starts = mz.load_starts(self.asset or None)
            for name in (*self.pretrain_starts, self.finetune_start):
                starts.get(name)
        except (FileNotFoundError, ValueError) as e:
            bad.append(str(e))
        try:
            PPOHyper.create(**hyper_kwargs(self))
        except ValueError as e:
            bad.append(str(e))
        if bad:
            raise cfglib.ConfigError("invalid Montezuma study config: " + "; ".join(bad))


def hyper_kwargs(cfg: MontezumaStudyConfig) -> dict[str, float]:
    keys = ("lr", "gamma", "gae_lambda", "clip_eps", "ent_coef", "vf_coef", "max_grad_norm")
    return {k: getattr(cfg, k) for k in keys}


def network(cfg: MontezumaStudyConfig) -> PPOConfig:
    """Shared-head actor/critic MLPs on the RAM features (the policy sees no room id)."""
    return PPOConfig(obs_dim=mz.RAM_SIZE, num_actions=mz.NUM_ACTIONS,
                     hidden_sizes=tuple(cfg.hidden_sizes), activation=cfg.activation)  # fmt: skip


def default_out(cfg: MontezumaStudyConfig, phase: str) -> str:
    return f"runs/montezuma/{cfg.name}/{phase}"
