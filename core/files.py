"""Writes that a kill at any moment leaves whole or absent, and the output-folder check every command makes."""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from core.errors import UserError

TMP_SUFFIX = ".tmp"


def temporary_path(target: Path, tmp_dir: Path | None = None) -> Path:
    """Where `target` is written before it is renamed into place: beside it, or in `tmp_dir` (same file system)."""
    return (tmp_dir or target.parent) / (target.name + TMP_SUFFIX)


def write_atomically(target: Path, write: Callable[[Path], None], tmp_dir: Path | None = None) -> None:
    """`write(tmp)` writes a file or a folder at `tmp`, which then replaces `target` with one rename.

    A folder target is renamed over after the old one is removed, so a kill in between leaves the new
    folder at its temporary name (`clean_partial` removes it) and no half-written one at `target`.
    """
    tmp = temporary_path(target, tmp_dir)
    remove(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    write(tmp)
    if tmp.is_dir():
        remove(target)
    os.replace(tmp, target)


def write_text_atomically(target: Path, text: str, tmp_dir: Path | None = None) -> None:
    write_atomically(target, lambda tmp: tmp.write_text(text), tmp_dir)


def write_json_atomically(target: Path, value, indent: int | None = 2, tmp_dir: Path | None = None) -> None:
    write_text_atomically(target, json.dumps(value, indent=indent), tmp_dir)


def remove(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean_partial(folder: Path) -> None:
    """Remove what a killed writer left at temporary names inside `folder`."""
    if folder.is_dir():
        for path in folder.glob(f"*{TMP_SUFFIX}"):
            remove(path)


def check_writable(out: Path) -> None:
    """Refuse an output folder that cannot be written, before anything is played or written."""
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"cannot write results to {out}: {existing} is not a writable folder; choose another with out=")
