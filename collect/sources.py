"""Image sources: folders of PNG/JPEG images, collected datasets and LeRobot datasets, read as single RGB frames."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from collect.dataset import CollectedDataset, is_collected_dataset
from core.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LEROBOT_INFO = "meta/info.json"  # what makes a folder a LeRobot dataset
LEROBOT_EPISODES_DIR = "meta/episodes"
LEROBOT_VERSION = "v3."  # the layout read here: LeRobotDataset v3 (one Parquet file holds many episodes)


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


def is_lerobot_dataset(path: Path) -> bool:
    return (path / LEROBOT_INFO).is_file()


def read_lerobot_parquet(folder: Path, columns: list[str] | None = None) -> pa.Table:
    """The rows of every chunk-XXX/file-XXX.parquet in `folder`, in LeRobot's order: chunk by chunk, file by file."""
    paths = sorted(folder.glob("*/*.parquet"))
    if not paths:
        raise UserError(f"{folder} holds no chunk-XXX/file-XXX.parquet files: the LeRobot dataset is incomplete")
    try:
        return pa.concat_tables([pq.read_table(path, columns=columns) for path in paths])
    except (OSError, pa.ArrowException, KeyError) as error:
        raise UserError(f"the Parquet files in {folder} are unreadable ({error})") from None


class LeRobotFrames:
    """The camera frames of a LeRobotDataset v3 folder (e.g. one `python -m collect.export` wrote), by index:
    uint8 [H, W, 3] RGB, every frame of each camera in turn.

    Its image features are read: PNG (or JPEG) files embedded in the Parquet files, lossless. The encoded
    images are held in memory and decoded per lookup; each is decoded once here, when the source is opened.
    A dataset whose episodes record their seed (meta/episodes `seed`, as the export writes it) keeps the
    episodes in `seeds` but not in `held_out`; seeds do not apply to one without.
    """

    def __init__(self, root: Path, seeds: list[int] | None = None, held_out: list[int] = ()):
        self.root = root
        try:
            info = json.loads((root / LEROBOT_INFO).read_text())
            version, features = info["codebase_version"], info["features"]
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"{root / LEROBOT_INFO} is not a LeRobot dataset's info ({error})") from None
        if not str(version).startswith(LEROBOT_VERSION):
            raise UserError(f"{root} is a LeRobotDataset {version}: only v3 is read; convert it with LeRobot first")
        videos = [key for key, feature in features.items() if feature["dtype"] == "video"]
        if videos:
            raise UserError(
                f"{root} stores its frames {videos} as MP4 video, which is lossy: training reads lossless image "
                "features (export with video=false)"
            )
        self.cameras = [key for key, feature in features.items() if feature["dtype"] == "image"]
        if not self.cameras:
            raise UserError(f"{root} has no image features: nothing to train on")
        table = read_lerobot_parquet(root / "data", [*self.cameras, "episode_index"])
        kept = self.kept_episodes(seeds, held_out)
        if kept is not None:
            table = table.filter(pc.is_in(table.column("episode_index"), pa.array(kept, pa.int64())))
            if not table.num_rows:
                raise UserError(f"{root} has no episodes with the seeds asked for")
        self._images = [table.column(camera).combine_chunks().field("bytes") for camera in self.cameras]
        for camera, images in zip(self.cameras, self._images):
            shape = tuple(features[camera]["shape"])
            for index in range(len(images)):
                if self.decode(camera, images, index).shape != shape:
                    raise UserError(f"{root}: frame {index} of {camera} is not of the shape {shape} info.json gives")

    def kept_episodes(self, seeds: list[int] | None, held_out: list[int]) -> list[int] | None:
        """The episode indices of the seeds asked for, or None (all episodes) when seeds do not apply."""
        if seeds is None and not held_out:
            return None
        table = read_lerobot_parquet(self.root / LEROBOT_EPISODES_DIR)
        if "seed" not in table.column_names:
            return None
        episode_seeds = table.column("seed").to_pylist()
        wanted = set(episode_seeds if seeds is None else seeds) - set(held_out)
        return [i for i, seed in zip(table.column("episode_index").to_pylist(), episode_seeds) if seed in wanted]

    def decode(self, camera: str, images: pa.BinaryArray, index: int) -> np.ndarray:
        encoded = images[index].as_py()
        if encoded is None:
            raise UserError(f"{self.root}: frame {index} of {camera} has no embedded image bytes")
        try:
            with Image.open(io.BytesIO(encoded)) as image:
                return np.array(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as error:
            raise UserError(f"{self.root}: frame {index} of {camera} is not a readable image ({error})") from None

    def __len__(self) -> int:
        return sum(len(images) for images in self._images)

    def __getitem__(self, index: int) -> np.ndarray:
        camera, index = divmod(index, len(self._images[0]))
        return self.decode(self.cameras[camera], self._images[camera], index)


class ImageSources:
    """Every frame of the sources, by index: uint8 [H, W, 3] RGB.

    A source is a collected dataset folder (its single frames, of the episodes in `seeds` but not in
    `held_out`), a LeRobotDataset v3 folder (its image features, see LeRobotFrames; a source of frames, not
    of the actions the game task imitates) or any folder holding PNG/JPEG images (searched recursively; seeds
    do not apply to it). Every source is checked when it is opened, before any training step: each dataset's
    episode files against their CRC32 (as collect checks them), each image by decoding it.
    """

    def __init__(self, sources: list[str], seeds: list[int] | None = None, held_out: list[int] = ()):
        if not sources:
            raise UserError("no image sources: pass data=[FOLDER,...] (image folders, collected or LeRobot datasets)")
        self.datasets: list[CollectedDataset] = []
        self.lerobot_datasets: list[LeRobotFrames] = []
        self.files: list[Path] = []
        for source in sources:
            path = Path(source).expanduser()
            if is_collected_dataset(path):
                self.datasets.append(open_collected(path, seeds, n_stack=1, held_out=held_out, verify=True))
            elif is_lerobot_dataset(path):
                self.lerobot_datasets.append(LeRobotFrames(path, seeds, held_out))
            elif path.is_dir():
                files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    raise UserError(f"{path} holds no PNG or JPEG images and is not a collected dataset")
                for file in files:
                    read_image(file)
                self.files += files
            else:
                problem = "is a file, not a folder" if path.exists() else "does not exist"
                raise UserError(
                    f"image source {path} {problem}: give a folder of PNG/JPEG images, a collected dataset "
                    "or a LeRobot dataset"
                )
        self._frame_sources = [*self.datasets, *self.lerobot_datasets]
        self._source_ends = np.cumsum([len(source) for source in self._frame_sources])  # [n_sources]

    def __len__(self) -> int:
        return int(self._source_ends[-1] if len(self._frame_sources) else 0) + len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        """A writable copy of frame `index` (collected frames are read-only views of mapped files)."""
        frames_in_sources = len(self) - len(self.files)
        if index >= frames_in_sources:
            return read_image(self.files[index - frames_in_sources])
        which = int(np.searchsorted(self._source_ends, index, side="right"))
        source, local = self._frame_sources[which], int(index - (self._source_ends[which - 1] if which else 0))
        if isinstance(source, LeRobotFrames):
            return source[local]
        return np.array(source[local].frames[-1])

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
