"""Meta-World v3 tasks on MJX-Warp as a pure-JAX ``SubTask``, stitched by ``SequenceEnv``.

Wraps one ``mtcworldmjx`` env per task (the port chosen in docs/mjx_evaluation.md); the stage logic
is ``fpc_jax.envs.sequence.SequenceEnv`` (docs/sequence_semantics.md). Design, deviations from the
real metaworld and their measured effects: docs/mjx_backend.md. ``MTCWorldMJX`` and ``mujoco`` are
imported when an env is built, never when this module is imported; importing it registers the
``backend="mjx"`` of the ``metaworld/*`` registry names.
"""

from __future__ import annotations

import functools
import os
import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from fpc_jax.envs import metaworld_cpu
from fpc_jax.envs.registry import register_backend
from fpc_jax.envs.sequence import SequenceEnv, SequenceParams, subsequence_params

DISPATCHES: tuple[str, ...] = ("select", "switch")
"""How the current task is chosen: ``select`` steps every task and keeps the current one per env
(works under ``vmap``; costs K task steps per env step); ``switch`` runs only the current task
with ``lax.switch`` but fails under ``vmap`` whenever the stage is batched (JAX's ``cond``
batching rule batches the branch constants, and MuJoCo Warp's ``custom_vmap`` rejects batched
constants: ``AssertionError`` in ``jax/_src/custom_batching.py``). Use ``switch`` only for
unbatched single-env loops."""

IMPLS: tuple[str, ...] = ("warp", "jax")
"""``"warp"``: MuJoCo Warp on metaworld's unedited models (NVIDIA GPUs; CPU through Warp's CPU
backend). ``"jax"``: MJX's JAX pipeline (TPUs, any JAX device) on models with the edits of
``fpc_jax.envs.mjx_models.JAX_EDITS`` (docs/mjx_backend.md measures them)."""

CPU_FLAG = "--xla_cpu_use_fusion_emitters=false"
"""XLA flag MJX's JAX pipeline needs on CPU with jax >= 0.7 (../shared/MJX_NOTES.md)."""

PHYSICS_FIELDS: tuple[str, ...] = (
    "time",
    "qpos",
    "qvel",
    "act",
    "ctrl",
    "mocap_pos",
    "mocap_quat",
    "qacc_warmstart",
    "geom_xpos",
    "geom_xmat",
    "cvel",
    "cdof_dot",
)
"""The ``mjx.Data`` fields carried between steps: the MuJoCo state, the poses of world-welded
geoms (mujoco-warp never recomputes them) and ``cvel`` / ``cdof_dot`` (mujoco-warp's step reads
them before recomputing them; without them a step differs from the port's by ~1e-6). With these
the steps equal the port's own bit for bit. The rest of Data is rebuilt from a constant template:
the Warp contact workspace is shared by all vmap lanes and has no batch axis, so it cannot live
in a state that ``jnp.where`` selects per lane, and the constraint arrays (~120 kB per env) are
recomputed every step anyway."""

MODEL_FIELDS: tuple[str, ...] = ("body_pos", "site_pos")
"""The ``mjx.Model`` fields a reset edits per episode (push's goal site, hammer's and peg's box)."""

NACONMAX_PER_ENV = 32
"""Contact slots per vmap lane: the port's ``VectorEnv`` figure; max measured 12 (docs)."""

NACONMAX_MIN = 2000
"""The port's default ``naconmax`` (contacts across all lanes of one call)."""

NJMAX = 1000
"""The port's default ``njmax`` (constraint rows per env)."""


@struct.dataclass
class TaskState:
    """Per-env state of one task: ``mjx.Data`` physics fields, edited model fields, port info."""

    data: dict[str, jax.Array]
    model: dict[str, jax.Array]
    info: dict[str, jax.Array]


SOLVER_LIMIT_BITS = 512 | 1024
"""mujoco_warp ``OverflowType.ITERATIONS | LS_ITERATIONS``: the step's constraint solver or its line
search stopped at its iteration limit. Counted (``physics/solver_limit``), not printed: MJX-Warp
prints a line per hit, thousands per scripted episode on CPU (docs/mjx_backend.md)."""

CONTACT_OVERFLOW_BITS = 1 | 2 | 4 | 8 | 16 | 256
"""``NEFC | NJMAX_NNZ | BROADPHASE | NARROWPHASE | CCD | EPA_HORIZON``: constraints or contacts
dropped for want of buffer (``physics/contact_overflow``); mujoco_warp still prints these."""


@struct.dataclass
class MJXSubState:
    """One ``TaskState`` per distinct task; only the slot of the current stage is meaningful.
    ``overflow``: mujoco_warp's overflow bits of the last step (0 for MJX-JAX)."""

    tasks: tuple[TaskState, ...]
    overflow: jax.Array


@struct.dataclass
class MJXSubParams:
    """Head -> task map and the reset distribution (all array leaves).

    ``rand_vecs[i]`` (n_i, d_i) are metaworld ``_last_rand_vec``s of task ``i``; when
    ``use_rand_vecs[i]`` a reset of task ``i`` draws one of them uniformly (``mt1`` randomization,
    or a forced start state), otherwise it samples the task's reset space with the port's sampler
    (``uniform``, metaworld's ranges and push's 0.15 m object-goal rejection).
    """

    task_of_head: jax.Array  # int32 [num_heads]
    rand_vecs: tuple[jax.Array, ...]
    use_rand_vecs: jax.Array  # bool [num_tasks]


@functools.cache
def _port_env(task: str, impl: str, naconmax: int, njmax: int) -> tuple[Any, Any]:
    """``(env, settled Data)``: the port's env, goal visible, its hand settle cached.

    The settle (50 x 5 substeps driving the hand to its start pose; the same at every reset) runs
    once here and the env's resets reuse its result, so a reset costs one ``mjx.forward`` instead
    of 250 substeps; the port's reset code runs unchanged around it. The settled Data is also the
    template each step rebuilds its Data from. Built once per ``(task, impl, naconmax, njmax)``.
    """
    try:
        from MTCWorldMJX import mjx_env as port
        from MTCWorldMJX.envs.sawyer_xyz import SawyerXYZConfig
    except ImportError as e:
        raise ImportError(
            "the Meta-World MJX backend needs the `mtcworldmjx` port: "
            "pip install -e '.[metaworld,mjx]' && pip install --no-deps mtcworldmjx==0.4.0 "
            "(docs/mjx_backend.md)"
        ) from e

    if impl not in IMPLS:
        raise ValueError(f"unknown MJX impl {impl!r}; valid: {', '.join(IMPLS)}")
    on_cpu = jax.default_backend() == "cpu"
    if impl == "jax" and on_cpu and CPU_FLAG not in os.getenv("XLA_FLAGS", ""):
        warnings.warn(
            f"MJX impl='jax' on CPU: set XLA_FLAGS={CPU_FLAG} before JAX starts; without it "
            "jax >= 0.7 ran a jitted MJX kinematics call in 1.6 s instead of 1.4 ms "
            "(docs/mjx_backend.md)",
            stacklevel=3,
        )
    from MTCWorldMJX.env_dict import ENV_CLS_MAP

    from fpc_jax.envs import mjx_models

    # The port ships a copy of metaworld's model files; read the installed metaworld's instead.
    cls = ENV_CLS_MAP[task]
    xml = str(mjx_models.metaworld_xml(str(cls.xml_path.fget(None))))
    own = type(cls.__name__, (cls,), {"xml_path": property(lambda self: xml)})
    config = SawyerXYZConfig(partially_observable=False, impl=impl, naconmax=naconmax, njmax=njmax)
    load = port.load_mj_model
    port.load_mj_model = mjx_models.port_loader(impl, load)
    try:
        env = own(config)
    finally:
        port.load_mj_model = load
    if impl == "warp":  # solver-limit hits are counted per step, not printed
        opt = env._mjx_model.opt
        quiet = opt._impl.replace(warn_overflow=int(opt._impl.warn_overflow) & ~SOLVER_LIMIT_BITS)
        env._mjx_model = env._mjx_model.replace(opt=opt.replace(_impl=quiet))
    data0 = port.make_data(
        env.mj_model,
        env.mjx_model,
        qpos=env._init_qpos,
        qvel=env._init_qvel,
        naconmax=naconmax,
        njmax=njmax,
    )
    settled, init_tcp = jax.jit(env._settle_hand)(env.mjx_model, data0)
    jax.block_until_ready(settled)
    if impl == "warp":  # overflow bits are sticky: each step starts from the template's zeros
        settled = settled.replace(
            _impl=settled._impl.replace(overflow=jnp.zeros_like(settled._impl.overflow))
        )
    env._settle_hand = lambda model, data: (settled, init_tcp)
    return env, settled


def _task_state(state: Any) -> TaskState:
    info = {k: v for k, v in state.info.items() if k != "rng"}
    return TaskState(
        data={f: getattr(state.data, f) for f in PHYSICS_FIELDS},
        model={f: getattr(state.model, f) for f in MODEL_FIELDS},
        info=info,
    )


class MetaWorldMJXSubTask:
    """``SubTask`` (fpc_jax.envs.sequence) over the ``mtcworldmjx`` envs of a task sequence.

    ``stage`` is a global head index; ``params.task_of_head`` maps it to one of the distinct
    tasks, whose reset / step is chosen per ``dispatch`` (``DISPATCHES``; docs/mjx_backend.md
    measures the cost).
    """

    observation_size = 39
    action_size = 4

    def __init__(
        self,
        tasks: Sequence[str],
        heads: Sequence[int],
        *,
        impl: str = "warp",
        naconmax: int = NACONMAX_MIN,
        njmax: int = NJMAX,
        dispatch: str = "select",
    ) -> None:
        tasks = metaworld_cpu.check_tasks(tasks)
        if dispatch not in DISPATCHES:
            raise ValueError(f"unknown dispatch {dispatch!r}; valid: {', '.join(DISPATCHES)}")
        self.dispatch = dispatch
        heads = tuple(int(h) for h in heads)
        if len(heads) != len(tasks) or min(heads) < 0:
            raise ValueError(f"need one head index >= 0 per task, got {heads} for {tasks}")
        self.tasks = tuple(dict.fromkeys(tasks))  # distinct, in order of appearance
        self.num_stages = max(heads) + 1
        task_of_head = [0] * self.num_stages
        head_task: dict[int, str] = {}
        for task, head in zip(tasks, heads, strict=True):
            if head_task.setdefault(head, task) != task:
                raise ValueError(f"head {head} is given to both {head_task[head]} and {task}")
            task_of_head[head] = self.tasks.index(task)
        self.head_names = tuple(head_task.get(h, f"unused{h}") for h in range(self.num_stages))
        self._task_of_head = np.asarray(task_of_head, np.int32)
        self.impl, self.naconmax, self.njmax = impl, int(naconmax), int(njmax)
        ports = [_port_env(t, impl, self.naconmax, self.njmax) for t in self.tasks]
        self.envs = [env for env, _ in ports]
        self._templates = [template for _, template in ports]
        self.rand_vec_sizes = tuple(int(e.random_reset_bounds()[0].shape[0]) for e in self.envs)
        self._defaults = tuple(
            _task_state(jax.jit(e.reset)(jax.random.PRNGKey(0))) for e in self.envs
        )

    def default_params(self) -> MJXSubParams:
        return MJXSubParams(
            task_of_head=jnp.asarray(self._task_of_head),
            rand_vecs=tuple(jnp.zeros((1, d), jnp.float32) for d in self.rand_vec_sizes),
            use_rand_vecs=jnp.zeros(len(self.envs), jnp.bool_),
        )

    def _reset_task(self, i: int, key: jax.Array, params: MJXSubParams):
        env = self.envs[i]
        k_sample, k_pick, k_env = jax.random.split(key, 3)
        sampled = env.sample_reset_state(k_sample)["rand_vec"]
        table = params.rand_vecs[i]
        picked = table[jax.random.randint(k_pick, (), 0, table.shape[0])]
        rand_vec = jnp.where(params.use_rand_vecs[i], picked, sampled).astype(jnp.float32)
        state = env.reset(k_env, rand_vec=rand_vec)
        slots = list(self._defaults)
        slots[i] = _task_state(state)
        return state.obs.astype(jnp.float32), MJXSubState(tuple(slots), jnp.int32(0))

    def _step_task(self, i: int, sub: MJXSubState, action: jax.Array):
        from MTCWorldMJX.mjx_env import State

        env, ts = self.envs[i], sub.tasks[i]
        state = State(
            model=env.mjx_model.replace(**ts.model),
            data=self._templates[i].replace(**ts.data),
            obs=jnp.zeros(self.observation_size),
            reward=jnp.float32(0.0),
            truncated=jnp.float32(0.0),
            terminated=jnp.float32(0.0),
            metrics={},
            info=ts.info,
        )
        nxt = env.step(state, action)
        slots = list(sub.tasks)
        slots[i] = _task_state(nxt)
        success = nxt.metrics["success"] > 0.5
        ovf = jnp.int32(0)
        if self.impl == "warp":
            ovf = jnp.asarray(nxt.data._impl.overflow, jnp.int32).reshape(-1)[0]
        sub_state = MJXSubState(tuple(slots), ovf)
        return nxt.obs.astype(jnp.float32), sub_state, nxt.reward, success

    def step_info(self, sub: MJXSubState) -> dict[str, jax.Array]:
        """Per-step physics flags the training loops average (``physics/<name>``)."""
        return {
            "physics/solver_limit": (sub.overflow & SOLVER_LIMIT_BITS) != 0,
            "physics/contact_overflow": (sub.overflow & CONTACT_OVERFLOW_BITS) != 0,
        }

    def reset(
        self, key: jax.Array, params: MJXSubParams, stage: jax.Array
    ) -> tuple[jax.Array, MJXSubState]:
        branches = [functools.partial(self._reset_task, i) for i in range(len(self.envs))]
        return self._dispatch(params.task_of_head[stage], branches, key, params)

    def step(
        self,
        key: jax.Array,
        state: MJXSubState,
        action: jax.Array,
        params: MJXSubParams,
        stage: jax.Array,
    ) -> tuple[jax.Array, MJXSubState, jax.Array, jax.Array]:
        del key  # the dynamics are deterministic
        action = jnp.asarray(action, jnp.float32)
        branches = [functools.partial(self._step_task, i) for i in range(len(self.envs))]
        obs, sub, r, success = self._dispatch(params.task_of_head[stage], branches, state, action)
        return obs, sub, jnp.asarray(r, jnp.float32), success

    def _dispatch(self, index: jax.Array, branches: list, *args: Any) -> Any:
        if len(branches) == 1:
            return branches[0](*args)
        if self.dispatch == "switch":
            return jax.lax.switch(index, branches, *args)
        outs = [branch(*args) for branch in branches]
        return jax.tree.map(lambda *xs: jax.lax.select_n(index, *xs), *outs)


def mt1_rand_vecs(task: str, seed: np.random.SeedSequence) -> np.ndarray:
    """MT1's 50 goal vectors of ``task``, as ``metaworld_cpu.StageEnv(task, seed, "mt1")`` draws."""
    import metaworld

    env_seed = int(seed.generate_state(2)[0])
    goals = metaworld.MT1(task, seed=env_seed).train_tasks
    return np.stack([np.asarray(pickle.loads(g.data)["rand_vec"]) for g in goals])


def with_rand_vecs(params: SequenceParams, task_index: int, rand_vecs: Any) -> SequenceParams:
    """Params whose resets of task ``task_index`` draw from ``rand_vecs`` (n, d) (vmappable)."""
    sub = params.sub
    table = list(sub.rand_vecs)
    table[task_index] = jnp.atleast_2d(jnp.asarray(rand_vecs, jnp.float32))
    use = sub.use_rand_vecs.at[task_index].set(True)
    return params.replace(sub=sub.replace(rand_vecs=tuple(table), use_rand_vecs=use))


def make_mjx_sequence(
    config: metaworld_cpu.MetaWorldSequenceConfig,
    *,
    impl: str = "warp",
    num_envs: int = 1,
    naconmax: int | None = None,
    njmax: int = NJMAX,
    dispatch: str = "select",
    seed: int = 0,
) -> tuple[SequenceEnv, SequenceParams]:
    """Backend ``"mjx"`` of ``metaworld/*``: a pure-JAX ``(SequenceEnv, SequenceParams)``.

    ``num_envs`` is the batch the env will be vmapped over (it sizes ``naconmax``, the contact
    buffer shared by all lanes, unless ``naconmax`` is given); ``dispatch``: see ``DISPATCHES``;
    ``seed`` only picks MT1's goal set when ``config.randomization == "mt1"`` (as the CPU backend
    does); resets take JAX keys.
    """
    if naconmax is None:
        naconmax = max(NACONMAX_MIN, NACONMAX_PER_ENV * int(num_envs))
    subtask = MetaWorldMJXSubTask(
        config.tasks,
        config.stage_ids,
        impl=impl,
        naconmax=naconmax,
        njmax=njmax,
        dispatch=dispatch,
    )
    default = config.tasks == metaworld_cpu.DEFAULT_TASKS and config.stage_ids == (0, 1, 2, 3)
    name = "metaworld/robotic_sequence" if len(config.tasks) > 1 else f"metaworld/{config.tasks[0]}"
    env = SequenceEnv(
        name,
        subtask,
        default_T=config.T,
        default_beta=config.beta,
        stage_names=subtask.head_names,
        close_stages=(0, 1) if default else (),
        far_stages=(2, 3) if default else (),
    )
    params = subsequence_params(env.default_params(), config.stage_ids)
    if config.randomization == "mt1":
        seeds = np.random.SeedSequence(seed).spawn(config.num_stages)
        for task, s in reversed(list(zip(config.tasks, seeds, strict=True))):
            params = with_rand_vecs(params, subtask.tasks.index(task), mt1_rand_vecs(task, s))
    return env, params


register_backend(metaworld_cpu.FAMILY, "mjx", make_mjx_sequence)
