"""The ``fpc-jax`` command: one subcommand per experiment, each driven by its config schema.

A bad input (config, override, checkpoint, output directory) is one ``error:`` line on stderr and
exit code 2; Ctrl-C says where the run stopped and exits 130; anything else is a bug and keeps
its traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from fpc_jax.experiments import config as cfglib
from fpc_jax.experiments import multihost
from fpc_jax.experiments.checkpoint import CheckpointError, RunInterrupted


def _apple(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from fpc_jax.experiments import apple

    cfg = cfglib.load(apple.AppleConfig, args.config, overrides)
    out = args.out or f"runs/apple/{cfg.name}"
    apple.main(cfg, out, log=multihost.log)


_PPO_SCHEMA = "fpc_jax.experiments.ppo_study:PPOStudyConfig"
_SAC_SCHEMA = "fpc_jax.experiments.sac_study:SACStudyConfig"
_RS_SCHEMA = "fpc_jax.experiments.robotic_sequence:RoboticSequenceConfig"
_MONTEZUMA_SCHEMA = "fpc_jax.experiments.montezuma_config:MontezumaStudyConfig"
_NETHACK_SCHEMA = "fpc_jax.experiments.nethack_config:NetHackStudyConfig"
_HOST_PPO = {  # host-stepped PPO on a real game: schema -> the module with pretrain / finetune
    _MONTEZUMA_SCHEMA: "fpc_jax.experiments.montezuma_study",  # configs/montezuma
    _NETHACK_SCHEMA: "fpc_jax.experiments.nethack_study",  # configs/nethack
}


def _study_schema(config: Path | None, overrides: dict[str, Any]) -> str:
    """The study schema a config belongs to: a discrete-action ``env`` -> PPO
    (``configs/key_door``); the Meta-World sequence on the CPU backend (``far_tasks`` given, or
    ``env: metaworld/robotic_sequence`` without ``backend: mjx``) -> the host-env SAC sweep
    (``configs/robotic_sequence``); else the pure-JAX SAC study (``configs/toy``, MJX)."""
    from fpc_jax.experiments.ppo_study import PPO_ENVS

    data: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = yaml.safe_load(cfglib.resolve_path(config).read_text()) or {}
        except (OSError, yaml.YAMLError):
            loaded = {}  # cfglib.load reports the problem
        data = loaded if isinstance(loaded, dict) else {}
    data = {**data, **overrides}
    env, backend = data.get("env"), data.get("backend", "")
    if env == "ale/montezuma":
        return _MONTEZUMA_SCHEMA  # host-stepped PPO on the real game (configs/montezuma)
    if env == "nle/nethack":
        return _NETHACK_SCHEMA  # host-stepped PPO on the real game (configs/nethack)
    if env in PPO_ENVS:
        return _PPO_SCHEMA
    if not backend and ("far_tasks" in data or env == "metaworld/robotic_sequence"):
        return _RS_SCHEMA
    return _SAC_SCHEMA


def _study(kind: str):
    def runner(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
        from fpc_jax.experiments import ppo_study, sac_study, study

        schema_path = _study_schema(args.config, overrides)
        if schema_path in _HOST_PPO:
            module = importlib.import_module(_HOST_PPO[schema_path])
            cfg = cfglib.load(_schema(schema_path), args.config, overrides)
            out = args.out or module.default_out(cfg, kind)
            getattr(module, kind)(cfg, out, log=multihost.log)
            return
        if schema_path == _RS_SCHEMA:
            if kind == "pretrain":
                raise cfglib.ConfigError(
                    "the Meta-World Far policy is the packaged asset robotic_sequence_far; its "
                    "build is in docs/pretrained_asset.md (fpc-jax pretrain runs pure-JAX envs)"
                )
            return _sweep(args, overrides)
        agent, module = (
            (ppo_study.PPO, ppo_study) if schema_path == _PPO_SCHEMA else (sac_study.SAC, sac_study)
        )
        cfg = cfglib.load(_schema(schema_path), args.config, overrides)
        out = args.out or study.default_out(cfg, agent, kind)
        if kind == "pretrain":
            module.pretrain(cfg, out, log=multihost.log)
        else:
            module.finetune(cfg, out, log=multihost.log)

    return runner


def _sweep(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from fpc_jax.experiments import robotic_sequence

    cfg = cfglib.load(robotic_sequence.RoboticSequenceConfig, args.config, overrides)
    robotic_sequence.sweep(cfg, args.out or f"runs/robotic_sequence/{cfg.name}", log=multihost.log)


def _evaluate(args: argparse.Namespace) -> int:
    from fpc_jax.experiments import evaluate

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        rows = evaluate.evaluate_policy(
            args.checkpoint, tasks, args.episodes, args.seed, args.workers
        )
    except (ValueError, CheckpointError) as e:
        print(f"fpc-jax evaluate: error: {e}", file=sys.stderr)
        return 2
    path = evaluate.write_eval_csv(rows, args.out)
    for task, rate in evaluate.success_rates(rows).items():
        print(f"{task}: success {rate:.3f} over {args.episodes} episodes")
    print(f"wrote {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from fpc_jax.experiments import report

    try:
        report.report(args.run_dirs, args.out, args.metric, args.reps, args.seed)
    except report.ReportError as e:
        print(f"fpc-jax report: error: {e}", file=sys.stderr)
        return 2
    return 0


def _parse_methods(value: str) -> list[str]:
    """``"ft,bc:bc_actor=10,bc_kl_direction=1,ewc"`` -> ``["ft", "bc:bc_actor=10,bc_kl_direction=1",
    "ewc"]``: a ``key=value`` item with no ``:`` continues the method before it."""
    methods: list[str] = []
    for item in filter(None, (m.strip() for m in value.split(","))):
        if "=" in item and ":" not in item and methods:
            methods[-1] += "," + item
        else:
            methods.append(item)
    return methods


# name -> (help, runner, schema import path for --help-config)
COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace, dict[str, Any]], None], str]] = {
    "apple": (
        "AppleRetrieval (Fig. 3): pre-train on Phase 2, fine-tune, sweep (M, c) x seeds",
        _apple,
        "fpc_jax.experiments.apple:AppleConfig",
    ),
    "pretrain": (
        "Train the agent (SAC, or PPO for a discrete env) on the Far stages alone; writes a policy",
        _study("pretrain"),
        _SAC_SCHEMA,
    ),
    "finetune": (
        "Fine-tune the pre-trained policy with every method x seed as one vmapped, sharded program",
        _study("finetune"),
        _SAC_SCHEMA,
    ),
    "sweep": (
        "Alias of finetune for configs/robotic_sequence (the real Meta-World on CPU)",
        _sweep,
        "fpc_jax.experiments.robotic_sequence:RoboticSequenceConfig",
    ),
}


def _schema(path: str) -> type:
    mod, name = path.split(":")
    return getattr(__import__(mod, fromlist=[name]), name)


def _report_metrics() -> tuple[str, ...]:
    from fpc_jax.experiments.report import METRICS

    return METRICS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpc-jax",
        description="Forgetting of pre-trained capabilities in RL fine-tuning, vectorized in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _, _) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text + ". Extra arguments key=value override config fields "
            "(YAML values; a list on a sweepable field makes a sweep axis). "
            "--help-config lists the fields.",
        )
        p.add_argument("--config", type=Path, default=None, help="YAML config file")
        p.add_argument("--out", type=Path, default=None, help="output directory")
        p.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides config)")
        p.add_argument("--help-config", action="store_true", help="list config fields and exit")
        if name in ("finetune", "sweep"):
            p.add_argument(
                "--methods",
                type=_parse_methods,
                default=None,
                help="comma-separated methods, e.g. ft,l2,ewc,bc,ks,em,scratch",
            )
            p.add_argument("--checkpoint", default=None, help="pre-trained policy directory")
        p.add_argument("overrides", nargs="*", metavar="key=value")
    ev_help = "Run Meta-World tasks alone with their heads (deterministic); write DIR/eval.csv"
    ev = sub.add_parser(
        "evaluate",
        help=ev_help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=ev_help + ": each task's success over --episodes episodes of the policy's "
        "deterministic action tanh(mean) with its own head (docs/sequence_semantics.md).",
    )
    ev.add_argument("--checkpoint", default=None, help="policy directory; None: the packaged asset")
    ev.add_argument(
        "--tasks",
        default="peg-unplug-side-v3,push-wall-v3",
        help="comma-separated Meta-World v3 tasks, each a stage of the checkpoint",
    )
    ev.add_argument("--episodes", type=_count(1), default=10, help="episodes per task")
    ev.add_argument("--seed", type=int, default=0, help="seed of the env starts")
    ev.add_argument(
        "--workers",
        type=_count(0),
        default=0,
        help="worker processes stepping physics (0: in-process; at most --episodes)",
    )
    ev.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="output directory")
    rp = sub.add_parser(
        "report",
        help="Merge study run dirs; per method IQM, mean, 90%% bootstrap CIs; a table, figures",
    )
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run dir (or a summary CSV)")
    rp.add_argument("--out", type=Path, default=Path("runs/report"), help="output directory")
    rp.add_argument(
        "--metric",
        action="append",
        default=None,
        metavar="METRIC",
        choices=_report_metrics(),
        help="one of %(choices)s; repeatable; default: every metric of the study kind",
    )
    rp.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    rp.add_argument("--seed", type=int, default=0, help="bootstrap PRNG seed")
    return parser


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _help_config(args: argparse.Namespace, schema_path: str) -> int:
    """Every field of the command's schema; with ``--config``, the file's values."""
    if args.command in ("pretrain", "finetune"):
        schema_path = _study_schema(args.config, {})
    schema = _schema(schema_path)
    values = cfglib.load(schema, args.config) if args.config is not None else None
    head = f"fields of {schema.__name__}" + (f", values of {args.config}" if values else "")
    print(f"{head}:\n" + cfglib.describe(schema, values))
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``fpc-jax`` entry point: the command's exit code (see the module docstring)."""
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. `fpc-jax apple --help-config | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 2
    except KeyboardInterrupt as e:  # evaluate, report (the study commands say more)
        print(f"fpc-jax: {_interrupted(e)}", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "report":
        return _report(args)
    _, runner, schema_path = COMMANDS[args.command]
    try:
        if args.help_config:
            return _help_config(args, schema_path)
        overrides = cfglib.parse_overrides(args.overrides)
        if args.seeds is not None:
            overrides["seeds"] = args.seeds
        if getattr(args, "methods", None):
            overrides["methods"] = args.methods
        if getattr(args, "checkpoint", None):
            overrides["checkpoint"] = args.checkpoint
        if args.command == "sweep":
            print(
                "fpc-jax sweep is an alias: fpc-jax finetune --config configs/robotic_sequence/"
                "... runs the same Meta-World CPU study",
                file=sys.stderr,
            )
        multihost.initialize()  # first: before any JAX computation
        runner(args, overrides)
    except (cfglib.ConfigError, CheckpointError, multihost.MultihostError) as e:
        print(f"fpc-jax {args.command}: error: {e}", file=sys.stderr)
        return multihost.leave(2)
    except KeyboardInterrupt as e:
        print(f"fpc-jax {args.command}: {_interrupted(e)}", file=sys.stderr)
        return multihost.leave(130)
    except Exception as e:
        multihost.leave(1, e)  # a multi-process run exits here, without waiting for its peers
        raise
    return 0


def _interrupted(e: KeyboardInterrupt) -> str:
    """What a Ctrl-C stopped and how to go on."""
    from fpc_jax.experiments import chunks

    if isinstance(e, RunInterrupted) and str(e):
        return str(e)
    point = dict(chunks.LAST_CHECKPOINT)
    if point:
        done, n = point["chunks_done"], point["n_chunks"]
        if done:
            return f"interrupted after chunk {done}/{n}; the same command resumes"
        return f"interrupted before chunk 1/{n} was checkpointed; the same command starts again"
    return "interrupted; no results were written by this run"


if __name__ == "__main__":
    sys.exit(main())
