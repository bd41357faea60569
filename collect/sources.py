"""Image sources: folders of PNG/JPEG images and collected datasets, read as single RGB frames."""

from pathlib import Path

import numpy as np
from PIL import Image

from collect.dataset import CollectedDataset, is_collected_dataset
from core.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def open_collected(
    path: str | Path,
    seeds: list[int] | None,
    n_stack: int | None = None,
    held_out: list[int] = (),
    verify: bool = False,
) -> CollectedDataset:
    """The episodes of a collected dataset whose seeds are in `seeds` (all when None) and not in `held_out`;
    files are memory-mapped; `verify` checks every episode file's CRC32 first."""
    path = Path(path).expanduser()
    dataset = CollectedDataset(path, n_stack=n_stack, verify=verify)
    if seeds is None and not held_out:
        return dataset
    wanted = set(dataset.seeds if seeds is None else seeds) - set(held_out)
    kept = dataset.subset([seed for seed in dataset.seeds if seed in wanted])
    if not len(kept):
        raise UserError(f"{path} has no episodes with the seeds asked for (its seeds: {dataset.seeds})")
    return kept


class ImageSources:
    """Every frame of the sources, by index: uint8 [H, W, 3] RGB.

    A source is a collected dataset folder (its single frames, of the episodes in `seeds` but not in
    `held_out`) or any folder holding PNG/JPEG images (searched recursively; seeds do not apply to it).
    Every source is checked when it is opened, before any training step: each dataset's episode files
    against their CRC32 (as collect checks them), each image by decoding it.
    """

    def __init__(self, sources: list[str], seeds: list[int] | None = None, held_out: list[int] = ()):
        if not sources:
            raise UserError("no image sources: pass data=[FOLDER,...] (image folders or collected datasets)")
        self.datasets: list[CollectedDataset] = []
        self.files: list[Path] = []
        for source in sources:
            path = Path(source).expanduser()
            if is_collected_dataset(path):
                self.datasets.append(open_collected(path, seeds, n_stack=1, held_out=held_out, verify=True))
            elif path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise UserError(f"{path} holds no PNG or JPEG images and is not a collected dataset")
                for file in files:
                    read_image(file)
                self.files += files
            else:
                raise UserError(
                    f"image source {path} does not exist: give a folder of PNG/JPEG images or a collected dataset"
                )
        self._dataset_ends = np.cumsum([len(d) for d in self.datasets])  # [n_datasets]

    def __len__(self) -> int:
        return int(self._dataset_ends[-1] if len(self.datasets) else 0) + len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        """A writable copy of frame `index` (dataset frames are read-only views of mapped files)."""
        frames_in_datasets = len(self) - len(self.files)
        if index >= frames_in_datasets:
            return read_image(self.files[index - frames_in_datasets])
        which = int(np.searchsorted(self._dataset_ends, index, side="right"))
        start = self._dataset_ends[which - 1] if which else 0
        return np.array(self.datasets[which][int(index - start)].frames[-1])

    def played_by(self, kinds, game: str | None = None) -> list[CollectedDataset]:
        """The collected datasets whose actions a policy of one of `kinds` chose (e.g. ["expert"]),
        of `game` if given."""
        return [d for d in self.datasets if d.policy_kind in kinds and game in (None, d.spec.name)]

    def stacked_played_by(
        self, kinds, game: str | None = None, seeds: list[int] | None = None
    ) -> list[CollectedDataset]:
        """`played_by`'s datasets reopened with their game's own frame stack (the sources hold single frames):
        the same episodes, or those of `seeds`."""
        return [open_collected(d.root, d.seeds if seeds is None else seeds) for d in self.played_by(kinds, game)]


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise UserError(f"{path} is not a readable image ({error})") from None
