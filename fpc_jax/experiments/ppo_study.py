"""The discrete-action FPC study: PPO pre-trained on the Far rooms, fine-tuned on the whole task.

``PPO`` is the PPO agent of the one study driver (``fpc_jax.experiments.study``), on any
pure-JAX ``SequenceEnv`` with one-hot actions (``key_door_rooms``: docs/key_door_rooms.md).
``pretrain(cfg, out)`` trains PPO from Far-room starts (each episode one Far room alone);
``finetune(cfg, out)`` fine-tunes every method (ft, ks, bc, ewc, l2, scratch) x seed as one
vmapped program from that checkpoint, with the same outputs as the SAC studies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax

from fpc_jax.agents.ppo.anchors import make_anchors, placeholder_anchors
from fpc_jax.agents.ppo.diagnostics import make_diagnose
from fpc_jax.agents.ppo.networks import ACTIVATIONS, PPOConfig, make_policy
from fpc_jax.agents.ppo.train import LoopStatic, init_run_state, make_train_chunk
from fpc_jax.agents.ppo.update import (
    PPOHyper,
    PPOTrainState,
    init_train_state,
    train_state_from_params,
)
from fpc_jax.envs import make
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams
from fpc_jax.experiments import checkpoint as ckpt
from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import study
from fpc_jax.experiments.study_config import (
    RetentionOverrides,
    check_methods_and_coefs,
    method_coefs,
    option,
)
from fpc_jax.retention.penalties import RetentionCoefs

PPO_ENVS: tuple[str, ...] = ("key_door_rooms",)
"""Registered pure-JAX sequence envs with one-hot discrete actions this study runs."""

_ENV_OPTIONS = ("num_rooms", "height", "width", "view", "cue", "key_reward")


HYPER_KEYS = (
    "lr",
    "gamma",
    "gae_lambda",
    "clip_eps",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "ext_coef",
    "int_coef",
    "gamma_int",
)
"""``PPOHyper`` fields every PPO schema has (``PPOAgentFields``)."""


@dataclasses.dataclass(frozen=True)
class PPOAgentFields(RetentionOverrides):
    """The PPO agent's fields, shared by every PPO study schema (key-door rooms here, the
    host-stepped games in ``host_ppo_config``): network, optimiser, loss and update shape."""

    hidden_sizes: tuple[int, ...] = option((64, 64), "actor and critic MLP widths")
    activation: str = option("tanh", f"hidden activation: {sorted(ACTIVATIONS)}")
    lr: float = option(2.5e-4, "Adam learning rate")
    gamma: float = option(0.99, "discount")
    gae_lambda: float = option(0.95, "GAE lambda")
    clip_eps: float = option(0.2, "PPO clip range")
    ent_coef: float = option(0.01, "entropy bonus weight")
    vf_coef: float = option(0.5, "value loss weight")
    max_grad_norm: float = option(0.5, "global gradient-norm clip")
    rnd: bool = option(False, "PPO + RND intrinsic reward (Burda et al. 2018; I's Montezuma agent)")
    ext_coef: float = option(1.0, "extrinsic advantage weight (I, Montezuma: 2)")
    int_coef: float = option(1.0, "intrinsic (RND) advantage weight (I, Montezuma: 1)")
    gamma_int: float = option(0.99, "intrinsic discount (I, Montezuma: 0.99)")
    epochs: int = option(4, "epochs per rollout")
    minibatches: int = option(4, "minibatches per epoch")
    clip_value_loss: bool = option(True, "clip the value loss like the policy")

    def hyper_kwargs(self) -> dict[str, float]:
        """The ``PPOHyper.create`` keywords of this config's ``HYPER_KEYS`` fields."""
        return {k: getattr(self, k) for k in HYPER_KEYS}


@dataclasses.dataclass(frozen=True)
class PPOStudyConfig(PPOAgentFields):
    """Schema of ``configs/key_door/*.yaml`` (pre-training and fine-tuning share one file)."""

    name: str = option("key_door", "experiment name")
    env: str = option("key_door_rooms", f"registered discrete sequence env: {list(PPO_ENVS)}")
    T: int = option(50, "room (stage) time limit, steps")
    beta: float = option(0.1, "success bonus factor: the door step pays beta * (T - t)")
    num_rooms: int = option(4, "rooms in a row (Far = the last two)")
    height: int = option(5, "room interior rows")
    width: int = option(7, "room interior columns")
    view: int = option(5, "egocentric window side (odd)")
    cue: float = option(0.5, "magnitude of the room-colour cue (Close +cue, Far -cue)")
    key_reward: float = option(0.2, "reward on the key pick-up step")
    # network
    head_mode: str = option("shared", "shared (no task id, as Montezuma) or per_stage heads")
    # PPO: the agent's shared fields are in PPOAgentFields
    num_envs: int = option(16, "parallel envs per run")
    num_steps: int = option(64, "rollout length per env and update")
    eval_mode: str = option("sample", "evaluation acts by sampling pi (sample) or argmax (greedy)")
    eval_episodes: int = option(20, "evaluation episodes per room and per sequence")
    steps_per_chunk: int = option(16_384, "env steps per compiled chunk (= evaluation interval)")
    # pre-training
    pretrain_steps: int = option(
        32_768, "env steps of PPO on the Far rooms (each episode one Far room)", resume_extend=True
    )
    # fine-tuning
    checkpoint: str = option(
        "", "pre-trained policy: a directory, 'asset:NAME' (packaged), or '' (<pretrain out>)"
    )
    finetune_steps: int = option(
        131_072,
        "env steps of fine-tuning per run (raise it to extend a finished run)",
        resume_extend=True,
    )
    methods: tuple[str, ...] = option(("ft", "ks", "bc", "ewc", "scratch"), "retention methods")
    seeds: int = option(5, "seeds per method")
    seed: int = option(0, "base PRNG seed")
    bc_states: int = option(10_000, "stored Far states for BC (I: 10k)")
    fisher_states: int = option(2_560, "states for the EWC Fisher (I: 10 batches x 256)")
    bc_kl_direction: float = option(0.0, "0: KL(teacher||student) (default); 1: reverse")
    checkpoint_every: int = option(1, "chunks between resumable run-state checkpoints")
    min_pretrain_success: float = option(
        0.5,
        "warn (and record it) when pi*'s success on a Far room alone is below this",
        resume_omit_default=True,
    )

    uses_em = False  # PPO has no replay buffer: EM is refused by validate()

    def validate(self) -> None:
        bad = check_methods_and_coefs(self, has_replay=False)
        if self.env not in PPO_ENVS:
            bad.append(f"unknown env {self.env!r}; this study runs {list(PPO_ENVS)}")
        for k in (
            "T",
            "seeds",
            "num_envs",
            "num_steps",
            "epochs",
            "minibatches",
            "eval_episodes",
            "steps_per_chunk",
            "bc_states",
            "fisher_states",
        ):
            if getattr(self, k) < 1:
                bad.append(f"{k} must be >= 1")
        rollout = self.num_envs * self.num_steps
        if self.steps_per_chunk % rollout:
            bad.append(f"steps_per_chunk must be a multiple of num_envs * num_steps ({rollout})")
        if self.finetune_steps < 1 or self.finetune_steps % self.steps_per_chunk:
            bad.append("finetune_steps must be a positive multiple of steps_per_chunk")
        if self.pretrain_steps < 0 or self.pretrain_steps % self.steps_per_chunk:
            bad.append("pretrain_steps must be a multiple of steps_per_chunk (0: no pre-training)")
        if not self.lr > 0 or not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            bad.append("need lr > 0 and gamma, gae_lambda in [0, 1]")
        for k in (
            "ent_coef",
            "vf_coef",
            "clip_eps",
            "max_grad_norm",
            "beta",
            "key_reward",
            "ext_coef",
            "int_coef",
        ):
            if not getattr(self, k) >= 0:
                bad.append(f"{k} must be >= 0")
        if self.eval_mode not in ("sample", "greedy"):
            bad.append(f"eval_mode must be 'sample' or 'greedy', got {self.eval_mode!r}")
        if bad:
            raise cfglib.ConfigError("invalid PPO study config: " + "; ".join(bad))

    def coefs(self, method: str) -> RetentionCoefs:
        """Coefficients of a method token from the PPO presets (``method_coefs``)."""
        return method_coefs(self, method, "ppo")


# ---------------------------------------------------------------------------------------------
# Policy checkpoints


def _config_to_dict(config: PPOConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _config_from_dict(d: dict[str, Any]) -> PPOConfig:
    seqs = ("hidden_sizes", "rnd_hidden_sizes")
    return PPOConfig(**{k: tuple(v) if k in seqs else v for k, v in d.items()})


def save_policy(path: Path, state: PPOTrainState, meta: dict[str, Any]) -> Path:
    """Write an unbatched PPO train state and ``meta`` to ``path`` (replaced if it exists)."""
    full = {
        "format_version": ckpt.FORMAT_VERSION,
        "kind": PPO.kind,
        "ppo_config": _config_to_dict(state.config),
        **meta,
    }
    return ckpt.write_state_dir(path, state, full)  # multi-process: docs/multihost.md


def load_policy(path: Path, expected: PPOConfig | None) -> ckpt.PolicyCheckpoint:
    """Load a PPO policy checkpoint; its network must equal ``expected`` (field by field)."""
    path = Path(path).expanduser().resolve()
    meta = ckpt.read_meta(path)
    if meta.get("kind") != PPO.kind:
        raise ckpt.CheckpointError(
            f"{str(path)!r} is a {meta.get('kind')!r} checkpoint, not a PPO policy"
        )
    config = _config_from_dict(meta["ppo_config"])
    if expected is not None and config != expected:
        diffs = [
            f"{f.name}: checkpoint {getattr(config, f.name)!r} vs requested "
            f"{getattr(expected, f.name)!r}"
            for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(expected, f.name)
        ]
        raise ckpt.CheckpointError(
            f"checkpoint {str(path)!r} does not match the requested network: " + "; ".join(diffs)
        )
    target = jax.eval_shape(lambda: init_train_state(config, PPOHyper.create(), jax.random.key(0)))
    try:
        state = ckpt.restore_state(path, target)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise ckpt.CheckpointError(f"checkpoint {str(path)!r} could not be restored: {e}") from e
    return ckpt.PolicyCheckpoint(config=config, state=state, meta=meta)


# ---------------------------------------------------------------------------------------------
# The agent of the study driver


_ENVS: dict[tuple[Any, ...], tuple[SequenceEnv, SequenceParams]] = {}


class _PPOAgent:
    """The PPO family of the study driver (``study.StudyAgent``)."""

    family = "ppo"
    kind = "fpc_jax.ppo_policy"

    def out_group(self, cfg: PPOStudyConfig) -> str:
        return "key_door" if cfg.env == "key_door_rooms" else cfg.env

    def build_env(self, cfg: PPOStudyConfig, phase: str) -> tuple[SequenceEnv, SequenceParams]:
        """The env, memoized per options (the compiled programs are cached per env object)."""
        kw = {"T": cfg.T, "beta": cfg.beta, **{k: getattr(cfg, k) for k in _ENV_OPTIONS}}
        spec = (cfg.env, *sorted(kw.items()))
        if spec not in _ENVS:
            try:
                _ENVS[spec] = make(cfg.env, **kw)
            except ValueError as e:
                raise cfglib.ConfigError(f"env {cfg.env!r}: {e}") from e
        return _ENVS[spec]

    def network(self, cfg: PPOStudyConfig, env: SequenceEnv) -> PPOConfig:
        return PPOConfig(
            obs_dim=env.observation_size,
            num_actions=env.action_size,
            num_heads=env.num_heads,
            hidden_sizes=tuple(cfg.hidden_sizes),
            activation=cfg.activation,
            head_mode=cfg.head_mode,
            rnd=cfg.rnd,
        )

    def hyper(self, cfg: PPOStudyConfig, config: PPOConfig) -> PPOHyper:
        return PPOHyper.create(**cfg.hyper_kwargs())

    def loop_static(self, cfg: PPOStudyConfig, phase: str) -> LoopStatic:
        return LoopStatic(
            num_envs=cfg.num_envs,
            num_steps=cfg.num_steps,
            epochs=cfg.epochs,
            minibatches=cfg.minibatches,
            steps_per_chunk=cfg.steps_per_chunk,
            eval_episodes=cfg.eval_episodes,
            stage_horizon=cfg.T,
            eval_mode=cfg.eval_mode,
            episode_mode="single" if phase == "pretrain" else "sequence",
            clip_value_loss=cfg.clip_value_loss,
        )

    make_chunk = staticmethod(make_train_chunk)

    def make_diagnose(self, config: PPOConfig):
        diagnose = make_diagnose(config)
        return lambda run, anchors, pool: diagnose(run.ppo, anchors, pool)

    make_policy = staticmethod(make_policy)
    init_state = staticmethod(init_train_state)

    def make_anchors(self, cfg, config, actor, critic, bc_obs, bc_stage, f_obs, f_stage):
        return make_anchors(config, actor, critic, bc_obs, bc_stage, f_obs, f_stage)

    save_policy = staticmethod(save_policy)
    load_policy = staticmethod(load_policy)

    def start_state(self, cfg, config, hyper, pre, far) -> PPOTrainState:
        rnd = {"predictor": pre.state.rnd_predictor, "target": pre.state.rnd_target}
        return train_state_from_params(
            config, hyper, pre.state.actor_params, pre.state.critic_params, rnd
        )

    def init_run(self, env, static, state, params, pool, key, em=None, cfg=None, method=None):
        if em is not None:
            raise cfglib.ConfigError("PPO has no replay buffer for episodic memory")
        return init_run_state(env, static, state, params, pool, key)

    def train_state(self, runs) -> PPOTrainState:
        return runs.ppo

    def null_anchors(self, config: PPOConfig, state: PPOTrainState):
        return placeholder_anchors(config, state.actor_params, state.critic_params, 1)


PPO = _PPOAgent()


def pretrain(cfg: PPOStudyConfig, out_dir: str | Path, log=print) -> Path:
    """PPO on the Far rooms alone; writes ``out_dir/policy`` and the pre-training curves."""
    return study.pretrain(cfg, PPO, out_dir, log=log)


def finetune(
    cfg: PPOStudyConfig,
    out_dir: str | Path,
    log=print,
    mesh: Any = None,
    stop_after: int | None = None,
) -> Path | None:
    """Fine-tune every method x seed from the pre-trained checkpoint; write results in out_dir."""
    return study.finetune(cfg, PPO, out_dir, log=log, mesh=mesh, stop_after=stop_after)
