"""The fields every host-stepped PPO study shares (``host_ppo``: Montezuma's Revenge, NetHack):
the PPO agent, the rollout shape, chunks, methods x seeds and the retention data. A game's schema
subclasses ``HostPPOConfig`` and adds its env fields (``montezuma_config``, ``nethack_config``)."""

from __future__ import annotations

import dataclasses

from fpc_jax.agents.ppo.networks import ACTIVATIONS
from fpc_jax.agents.ppo.update import PPOHyper
from fpc_jax.experiments import ppo_study
from fpc_jax.experiments.study_config import check_methods_and_coefs, option

POSITIVE = (
    "max_steps",
    "num_envs",
    "num_steps",
    "epochs",
    "minibatches",
    "eval_episodes",
    "steps_per_chunk",
    "seeds",
    "bc_states",
    "fisher_states",
)


@dataclasses.dataclass(frozen=True)
class HostPPOConfig(ppo_study.PPOAgentFields):
    """PPO, rollouts, chunks and methods of a host-stepped study (a game adds its env fields)."""

    name: str = option("host_ppo", "experiment name")
    max_steps: int = option(1000, "training episode time limit, agent steps")
    workers: int = option(0, "env worker processes (0: in-process)")
    reward_scale: float = option(0.01, "extrinsic reward multiplier [U]")
    num_envs: int = option(8, "envs per run")
    num_steps: int = option(128, "rollout length per env and update")
    eval_episodes: int = option(4, "evaluation episodes per run and per start")
    steps_per_chunk: int = option(16_384, "env steps per run between evaluations")
    checkpoint: str = option("", "pre-trained policy directory ('': <out>/../pretrain/policy)")
    finetune_steps: int = option(
        65_536,
        "env steps of fine-tuning per run (a longer run extends a shorter one)",
        resume_extend=True,
    )
    methods: tuple[str, ...] = option(("ft", "bc", "ks", "ewc"), "retention methods")
    seeds: int = option(2, "seeds per method")
    seed: int = option(0, "base PRNG seed")
    bc_states: int = option(2_048, "stored pi* Far states for BC (I: 10k)")
    fisher_states: int = option(1_024, "states for the EWC Fisher (I: 2560)")
    bc_kl_direction: float = option(0.0, "0: KL(teacher||student) (default); 1: reverse")

    uses_em = False
    coefs = ppo_study.PPOStudyConfig.coefs  # preset, then <method>_* fields, then the token

    def loop_problems(self, phase_steps: tuple[str, ...]) -> list[str]:
        """What is wrong with the shared fields (``phase_steps``: the budgets that must be whole
        chunks); a game's ``validate`` adds its own and raises ``ConfigError``."""
        bad = check_methods_and_coefs(self, has_replay=False)
        if self.activation not in ACTIVATIONS:
            bad.append(f"activation {self.activation!r}: expected one of {sorted(ACTIVATIONS)}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            bad.append(f"hidden_sizes must be positive widths, got {list(self.hidden_sizes)}")
        bad += [f"{k} must be >= 1" for k in POSITIVE if getattr(self, k) < 1]
        if self.workers < 0:
            bad.append("workers must be >= 0")
        rollout = self.num_envs * self.num_steps
        if rollout % max(self.minibatches, 1):
            bad.append(f"num_envs * num_steps ({rollout}) must split into minibatches")
        if self.steps_per_chunk % max(rollout, 1):
            bad.append(f"steps_per_chunk must be a multiple of num_envs * num_steps ({rollout})")
        for k in phase_steps:
            if getattr(self, k) < 1 or getattr(self, k) % max(self.steps_per_chunk, 1):
                bad.append(f"{k} must be a positive multiple of steps_per_chunk")
        try:
            PPOHyper.create(**self.hyper_kwargs())
        except ValueError as e:
            bad.append(str(e))
        return bad
