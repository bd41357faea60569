"""Register collected datasets where Minari's own clients look for local datasets.

`minari.load_dataset(id)`, `minari list local` and `minari show id` find the dataset `<namespace>/<name>-v<N>`
at `$MINARI_DATASETS_PATH/<namespace>/<name>-v<N>/data` (default `~/.minari/datasets`). A collected dataset
stays where `out=` put it: its registration is a folder there holding one symlink, `data`, to `out/data`.
"""

import contextlib
import hashlib
import os
import re
from pathlib import Path

from minari.storage.datasets_root_dir import get_dataset_path

from core.errors import UserError

NAMESPACE = "vlmplay"
LINK = "data"  # the folder Minari opens inside a dataset's registration
NEW_LINK = ".data-new"  # hidden: Minari's listing skips it while it is being swapped in


def dataset_id(out: Path, game: str, policy_kind: str) -> str:
    """`vlmplay/<game>/<policy>-<out folder>-<hash>-v0`: the hash is of out's absolute path, so the same out
    keeps its id and two outs never share one; only characters Minari's id rules allow."""
    folder = out.resolve()
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{policy_kind}-{folder.name}")
    return f"{NAMESPACE}/{game}/{name}-{digest}-v0"


def datasets_root() -> Path:
    """Minari's local datasets folder ($MINARI_DATASETS_PATH or ~/.minari/datasets), created if missing."""
    try:
        return get_dataset_path()
    except OSError as error:
        raise UserError(
            f"cannot create Minari's datasets folder ({error}): set MINARI_DATASETS_PATH to a writable folder"
        ) from None


def check_registrable(dataset_id: str) -> None:
    """Refuse up front what would stop `register` after the episodes are played."""
    root = datasets_root()
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"Minari's datasets folder {root} is not writable: set MINARI_DATASETS_PATH to one that is")
    link = root / dataset_id / LINK
    if link.exists() and not link.is_symlink():
        raise UserError(
            f"{link.parent} holds a Minari dataset that vlmplay did not register: move it, or collect into another out="
        )


def register(dataset_id: str, data: Path) -> Path:
    """Point `<datasets root>/<dataset_id>/data` at `data` (the link is replaced atomically), then drop vlmplay
    registrations of the same data under another id and those whose dataset is gone; returns the registration."""
    root = datasets_root()
    target = data.resolve()
    entry = root / dataset_id
    link = entry / LINK
    entry.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and link.resolve() == target):
        new_link = entry / NEW_LINK
        new_link.unlink(missing_ok=True)
        new_link.symlink_to(target, target_is_directory=True)
        os.replace(new_link, link)
    remove_stale_registrations(root, keep=dataset_id, target=target)
    return entry


def remove_stale_registrations(root: Path, keep: str, target: Path) -> None:
    for folder, _, _ in os.walk(root / NAMESPACE):  # never follows the links into the datasets
        link = Path(folder) / LINK
        if not link.is_symlink():
            continue
        gone = not link.exists()
        if gone or (Path(folder).relative_to(root).as_posix() != keep and link.resolve() == target):
            link.unlink(missing_ok=True)  # another collector may be removing it too
            with contextlib.suppress(OSError):  # it holds something else, or is gone already
                Path(folder).rmdir()
