"""Writes that a kill at any moment leaves whole or absent, and the output-folder check every command makes."""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.errors import UserError

TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"  # a folder being replaced, kept until its successor is in place
NAMES_LISTED = 5  # the entries of a refused output folder that its message names


def temporary_path(target: Path, tmp_dir: Path | None = None) -> Path:
    """Where `target` is written before it is renamed into place: beside it, or in `tmp_dir` (same file system)."""
    return (tmp_dir or target.parent) / (target.name + TMP_SUFFIX)


def write_atomically(target: Path, write: Callable[[Path], None], tmp_dir: Path | None = None) -> None:
    """`write(tmp)` writes a file or a folder at `tmp`, which then replaces `target` with one rename.

    A folder (a multi-file checkpoint) replaces an old one in two renames: the old one to `target.old`, the
    new one to `target`; a kill between them leaves both whole, and `clean_partial` puts the old one back.
    """
    tmp = temporary_path(target, tmp_dir)
    remove(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    write(tmp)
    if tmp.is_dir() and target.exists():
        old = target.with_name(target.name + OLD_SUFFIX)
        remove(old)
        os.replace(target, old)
        os.replace(tmp, target)
        remove(old)
    else:
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
    """Remove what a killed writer left at temporary names inside `folder`, and put back a folder whose
    replacement it had not renamed into place yet."""
    if folder.is_dir():
        for path in folder.glob(f"*{TMP_SUFFIX}"):
            remove(path)
        for old in folder.glob(f"*{OLD_SUFFIX}"):
            current = old.with_name(old.name.removesuffix(OLD_SUFFIX))
            if current.exists():
                remove(old)
            else:
                os.replace(old, current)


def check_writable(out: Path, key: str = "out") -> None:
    """Refuse an output folder that cannot be written, before anything is played or written: its missing
    folders are created and removed again, and a new entry is made and removed in it."""
    created = []
    try:
        missing, existing = [], out
        while not existing.exists() and not existing.is_symlink():
            missing.append(existing)
            existing = existing.parent
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        os.rmdir(tempfile.mkdtemp(dir=out, prefix=".write-check-"))
    except OSError as error:
        raise UserError(
            f"cannot write to {key}={out}: not a writable folder ({error.strerror}); choose another {key}="
        ) from None
    finally:
        for folder in reversed(created):
            folder.rmdir()


def check_replaceable(out: Path, key: str, what: str, is_own: Callable[[Path], bool], overwrite: bool) -> None:
    """Refuse an output folder that holds files this command did not write, before anything is played or written:
    an empty or missing folder, or one `is_own` recognises (e.g. what the same command wrote before), is the
    command's to replace; anything else only with overwrite=true."""
    if overwrite or not out.is_dir() or not any(out.iterdir()) or is_own(out):
        return
    names = sorted(path.name for path in out.iterdir())
    listed = ", ".join(names[:NAMES_LISTED]) + (", ..." if len(names) > NAMES_LISTED else "")
    raise UserError(
        f"{key}={out} is not empty and holds no {what} ({listed}): choose another {key}=, "
        "or pass overwrite=true to replace it"
    )
