"""Files that are never half-written nor silently corrupt: atomic writes and checkpoint checksums.

Every result and checkpoint file is written to a temporary name in its own directory and renamed
over the target (``os.replace``), so an interrupted write leaves the old file or the new one,
never a mix. Checkpoint directories carry ``checksums.json`` (the SHA-256 of every other file),
verified before anything is read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CHECKSUMS = "checksums.json"


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``, replacing what is there."""
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != CHECKSUMS
    )


def write_checksums(root: str | Path) -> Path:
    """Write ``root/checksums.json``: the SHA-256 of every file below ``root``."""
    root = Path(root)
    sums = {name: _sha256(root / name) for name in _files(root)}
    return write_text(root / CHECKSUMS, json.dumps(sums, indent=1, sort_keys=True) + "\n")


def verify_checksums(root: str | Path, error: type[Exception], warn=None) -> bool:
    """Raise ``error`` naming the first file of ``root`` that is missing or differs from its
    recorded checksum. A directory without ``checksums.json`` (written before they existed) is
    accepted with a one-line ``warn``; returns whether checksums were checked."""
    root = Path(root)
    listing = root / CHECKSUMS
    if not listing.is_file():
        note = f"warning: {root} has no {CHECKSUMS} (an older checkpoint); integrity not checked"
        (warn or _stderr)(note)
        return False
    try:
        sums = json.loads(listing.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        msg = f"checkpoint {str(root)!r} is corrupted: {CHECKSUMS} is not valid JSON ({e})"
        raise error(msg) from e
    if not isinstance(sums, dict):
        raise error(f"checkpoint {str(root)!r} is corrupted: {CHECKSUMS} is not a mapping")
    for name, want in sorted(sums.items()):
        f = root / name
        if not f.is_file():
            raise error(f"checkpoint {str(root)!r} is incomplete: {name} is missing")
        if _sha256(f) != want:
            raise error(
                f"checkpoint {str(root)!r} is corrupted: {name} does not match its checksum in "
                f"{CHECKSUMS}; restore it from a copy or delete the checkpoint"
            )
    return True


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
