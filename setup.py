"""Build hook: wheels ship the repository's ``configs/`` (their source of truth) as package data
``fpc_jax/_configs/``, so ``fpc-jax CMD --config configs/...`` also works outside a checkout
(``fpc_jax.experiments.config.load`` falls back to it). Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    """``build_py``, then ``configs/**/*.yaml`` copied to ``<build_lib>/fpc_jax/_configs/``."""

    def run(self) -> None:
        super().run()
        for src in sorted(Path("configs").rglob("*.yaml")):
            dst = Path(self.build_lib, "fpc_jax", "_configs", src.relative_to("configs"))
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithConfigs})
