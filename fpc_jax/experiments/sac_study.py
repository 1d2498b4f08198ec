"""The SAC FPC study on a pure-JAX stitched env: pre-train on Far, fine-tune every method x seed.

The env is a pure-JAX registry env (the toy ``point_sequence``) or, with ``backend: mjx``, the
Meta-World RoboticSequence on MJX-Warp (docs/mjx_backend.md), so the whole study runs on-device.

``SAC`` is the SAC agent of the one study driver (``fpc_jax.experiments.study``):
``pretrain(cfg, out)``: multi-task SAC on the Far stages (each episode one Far stage alone, with
its head), saved as a policy checkpoint. ``finetune(cfg, out)``: loads it, builds the retention
anchors (theta*, EWC Fisher, BC states, EM transitions) from pi* on the Far stages, and trains all
methods x seeds as one vmapped program, the runs axis sharded over every device. Results are
written after every chunk; an interrupted run resumes from its last run-state checkpoint with
identical results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpc_jax.agents.sac.anchors import make_anchors, placeholder_anchors
from fpc_jax.agents.sac.diagnostics import make_diagnose
from fpc_jax.agents.sac.losses import Batch
from fpc_jax.agents.sac.networks import SACConfig, zero_critic_heads
from fpc_jax.agents.sac.train import LoopStatic, init_run_state, make_policy, make_train_chunk
from fpc_jax.agents.sac.update import (
    SACHyper,
    SACTrainState,
    init_train_state,
    train_state_from_params,
)
from fpc_jax.envs import make
from fpc_jax.envs.metaworld_cpu import DEFAULT_TASKS
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams
from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import study, study_config
from fpc_jax.experiments.study import TEACHER_ENVS
from fpc_jax.experiments.study_config import BACKENDS, SACStudyConfig
from fpc_jax.experiments.study_report import SUMMARY_COLUMNS

__all__ = ["SAC", "SUMMARY_COLUMNS", "TEACHER_ENVS", "finetune", "pretrain"]


# ---------------------------------------------------------------------------------------------
# Shared setup


_ENVS: dict[tuple[Any, ...], tuple[SequenceEnv, SequenceParams]] = {}


def build_env(cfg: SACStudyConfig, num_envs: int = 1) -> tuple[SequenceEnv, SequenceParams]:
    """The study's env and default params, memoized per build arguments: the compiled programs
    are cached per env object (``chunks._compiled``), so equal configs share them, and an MJX env
    is built once per process. ``num_envs`` (``env_lanes``) sizes the MJX contact buffer."""
    kw: dict[str, Any] = {"T": cfg.T, "beta": cfg.beta}
    if cfg.backend:
        kw.update(backend=cfg.backend, impl=cfg.mjx_impl, num_envs=num_envs)
        if cfg.tasks:
            kw["tasks"] = tuple(cfg.tasks)
    elif cfg.tasks:
        raise cfglib.ConfigError(f"tasks needs a Meta-World backend; valid: {list(BACKENDS[1:])}")
    spec = (cfg.env, *sorted(kw.items()))
    if spec not in _ENVS:
        env, params = make(cfg.env, **kw)
        if not isinstance(env, SequenceEnv):
            raise cfglib.ConfigError(f"env {cfg.env!r} is not a pure-JAX sequence env")
        _ENVS[spec] = env, params
    return _ENVS[spec]


def env_lanes(cfg: SACStudyConfig, phase: str) -> int:
    """The most vmap lanes of any one env call in the programs of ``phase``.

    The MJX backend needs it: MuJoCo-Warp's contact buffer (``naconmax``) is shared by all lanes
    of one call, so it must hold the contacts of the widest call (too small a buffer silently drops
    contacts). The calls: a training step steps one env per run, vmapped over the runs
    (``runs`` lanes; pre-training has 1 run, fine-tuning methods x seeds); ``make_evaluate``,
    inside every chunk and once at the end, vmapped over the runs, plays ``eval_episodes``
    sequence episodes and ``num_heads x eval_episodes`` single-stage episodes per run (its widest
    call: ``runs x num_heads x eval_episodes`` lanes); fine-tuning's pi* rollout
    (``collect_teacher_data``) steps ``TEACHER_ENVS`` lanes.
    """
    heads = len(cfg.tasks or DEFAULT_TASKS)
    runs = 1 if phase == "pretrain" else len(cfg.methods) * cfg.seeds
    lanes = runs * heads * cfg.eval_episodes
    return lanes if phase == "pretrain" else max(lanes, TEACHER_ENVS)


def sac_config(cfg: SACStudyConfig, env: SequenceEnv) -> SACConfig:
    return SACConfig(
        obs_dim=env.observation_size,
        act_dim=env.action_size,
        num_heads=env.num_heads,
        hidden_sizes=tuple(cfg.hidden_sizes),
        first_activation=cfg.first_activation,
        hidden_activation=cfg.hidden_activation,
        batch_size=cfg.batch_size,
    )


def sac_hyper(cfg: SACStudyConfig, act_dim: int) -> SACHyper:
    return SACHyper.create(
        act_dim, lr=cfg.lr, gamma=cfg.gamma, polyak=cfg.polyak, init_log_alpha=cfg.init_log_alpha
    )


def loop_static(cfg: SACStudyConfig, phase: str) -> LoopStatic:
    pre = phase == "pretrain"
    return LoopStatic(
        steps_per_chunk=cfg.steps_per_chunk,
        update_every=cfg.update_every,
        update_after=cfg.update_after,
        start_steps=cfg.pretrain_start_steps if pre else cfg.finetune_start_steps,
        buffer_capacity=cfg.buffer_capacity if pre else study_config.replay_layout(cfg)[0],
        em_reserved=0 if pre else study_config.replay_layout(cfg)[1],
        eval_episodes=cfg.eval_episodes,
        eval_policy=cfg.eval_policy,
        stage_horizon=cfg.T,
        episode_mode="single" if pre else "sequence",
    )


resolve_checkpoint = study.resolve_checkpoint
ASSETS = study.ASSETS
_ROLLOUTS = study._ROLLOUTS  # the pi* rollouts (tests look up the compiled ones)


class _SACAgent:
    """The SAC family of the study driver (``study.StudyAgent``)."""

    family = "sac"
    kind = "fpc_jax.sac_policy"

    def out_group(self, cfg: SACStudyConfig) -> str:
        return cfg.backend or "toy"

    def build_env(self, cfg: SACStudyConfig, phase: str) -> tuple[SequenceEnv, SequenceParams]:
        return build_env(cfg, env_lanes(cfg, phase))

    def network(self, cfg: SACStudyConfig, env: SequenceEnv) -> SACConfig:
        return sac_config(cfg, env)

    def hyper(self, cfg: SACStudyConfig, config: SACConfig) -> SACHyper:
        return sac_hyper(cfg, config.act_dim)

    def loop_static(self, cfg: SACStudyConfig, phase: str) -> LoopStatic:
        return loop_static(cfg, phase)

    make_chunk = staticmethod(make_train_chunk)

    def make_diagnose(self, config: SACConfig):
        diagnose = make_diagnose(config)
        return lambda run, anchors, pool: diagnose(run.sac, anchors, pool)

    make_policy = staticmethod(make_policy)
    init_state = staticmethod(init_train_state)

    def make_anchors(
        self, cfg: SACStudyConfig, config, actor, critic, bc_obs, bc_stage, f_obs, f_stage
    ):
        return make_anchors(
            config, actor, critic, bc_obs, bc_stage, f_obs, f_stage, fisher_mean=cfg.ewc_fisher_mean
        )

    def start_state(self, cfg: SACStudyConfig, config, hyper, pre, far) -> SACTrainState:
        sac = train_state_from_params(
            config,
            hyper,
            pre.state.actor_params,
            pre.state.critic_params,
            log_alpha=pre.state.log_alpha,
        )
        sac = sac.replace(target_critic_params=pre.state.target_critic_params)
        if cfg.new_critic_heads == "zero":
            sac = sac.replace(
                critic_params=zero_critic_heads(sac.critic_params, far),
                target_critic_params=zero_critic_heads(sac.target_critic_params, far),
            )
        return sac

    def init_run(self, env, static, state, params, pool, key, em=None, cfg=None, method=None):
        """A run; a fine-tuning ``method`` of ``cfg`` sets its random start steps and its replay
        ring (``study_config.start_steps``, ``ring_limit``), pre-training keeps ``static``'s."""
        em = Batch(**em) if em is not None else None
        per_run = (
            {}
            if method is None
            else {
                "random_steps": study_config.start_steps(cfg, method),
                "ring_limit": study_config.ring_limit(cfg, method),
            }
        )
        return init_run_state(env, static, state, params, pool, key, em_transitions=em, **per_run)

    def train_state(self, runs) -> SACTrainState:
        return runs.sac

    def null_anchors(self, config: SACConfig, state: SACTrainState):
        return placeholder_anchors(config, state.actor_params, state.critic_params, 1)

    def save_policy(self, path, state, meta):
        return ckpt.save_policy(path, state, meta)

    def load_policy(self, path, expected):
        return ckpt.load_policy(path, expected=expected)


SAC = _SACAgent()


def pretrain(cfg: SACStudyConfig, out_dir: str | Path, log=print) -> Path:
    """Multi-task SAC on the Far stages; writes ``out_dir/policy`` and the pre-training curves."""
    return study.pretrain(cfg, SAC, out_dir, log=log)


def finetune(
    cfg: SACStudyConfig,
    out_dir: str | Path,
    log=print,
    mesh: Any = None,
    stop_after: int | None = None,
) -> Path | None:
    """Fine-tune every method x seed from the pre-trained checkpoint; write results in out_dir."""
    return study.finetune(cfg, SAC, out_dir, log=log, mesh=mesh, stop_after=stop_after)
