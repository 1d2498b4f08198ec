"""The ``fpc-jax`` command: one subcommand per experiment, each driven by its config schema."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fpc_jax.experiments import config as cfglib


def _apple(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    from fpc_jax.experiments import apple

    cfg = cfglib.load(apple.AppleConfig, args.config, overrides)
    out = args.out or f"runs/apple/{cfg.name}"
    apple.main(cfg, out)


# name -> (help, runner, schema import path for --help-config)
COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace, dict[str, Any]], None], str]] = {
    "apple": (
        "AppleRetrieval (Fig. 3): pre-train on Phase 2, fine-tune, sweep (M, c) x seeds",
        _apple,
        "fpc_jax.experiments.apple:AppleConfig",
    ),
}


def _schema(path: str) -> type:
    mod, name = path.split(":")
    return getattr(__import__(mod, fromlist=[name]), name)


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
        p.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _, runner, schema_path = COMMANDS[args.command]
    if args.help_config:
        print(cfglib.describe(_schema(schema_path)))
        return 0
    try:
        overrides = cfglib.parse_overrides(args.overrides)
        if args.seeds is not None:
            overrides["seeds"] = args.seeds
        runner(args, overrides)
    except cfglib.ConfigError as e:
        print(f"fpc-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
