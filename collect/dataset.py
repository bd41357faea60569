"""Read a collected dataset: stacked frames and action codes by index, O(1) random access, split by seed.

A dataset folder holds a Minari dataset (Arrow backend, no JPEG) in `data/`: one folder per episode
with one Arrow IPC file of single RGB frames. The files are memory-mapped, so a lookup copies only
the `n_stack` frames it returns; stacks are built here, at read time.
"""

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.errors import UserError
from envs.games import GAMES, GameSpec, get_game

DATA_DIR = "data"  # the Minari storage folder inside a dataset folder
METADATA_FILE = "metadata.json"  # Minari's name, for the dataset and for each episode
VLMPLAY_KEY = "vlmplay"  # our entry in Minari's dataset metadata: game, policy and the episode index
NO_ACTION_CODE = -1  # Minari keeps one observation more than actions: the last frame has no action
CRC_CHUNK_BYTES = 1 << 24


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as file:
        while chunk := file.read(CRC_CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    return crc


def is_count(value) -> bool:
    """A whole number >= 0 (JSON's true and false are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# What the readers take from our entry of the dataset index, and from each of its episodes, with its check.
INDEX_FIELDS = {
    "game": lambda value: value in GAMES,
    "policy_id": lambda value: isinstance(value, str),
    "episodes": lambda value: isinstance(value, list),
}
EPISODE_FIELDS = {"seed": is_count, "length": is_count, "return": is_number, "crc32": is_count}


class DamagedIndexError(UserError):
    """The dataset index (data/metadata.json) does not parse, or not to what collect writes: the episodes it
    lists cannot be trusted, so only collecting the dataset again mends it."""

    def __init__(self, root: Path, problem: str):
        self.detail = f"the dataset index {root / DATA_DIR / METADATA_FILE} is damaged ({problem})"
        super().__init__(
            f"{self.detail}; restore it, or collect the dataset again: run the same `python -m collect ... "
            f"out={root}` with overwrite=true"
        )


def index_problem(metadata) -> str | None:
    """What is wrong with the structure of a parsed dataset index (our entry, each episode's fields), or None."""
    if not isinstance(metadata, dict):
        return f"a {type(metadata).__name__}, not an object"
    info = metadata.get(VLMPLAY_KEY)
    if not isinstance(info, dict):
        return f"its {VLMPLAY_KEY!r} entry is {info!r}, not an object"
    for key, valid in INDEX_FIELDS.items():
        if not valid(info.get(key)):
            return f"{VLMPLAY_KEY}.{key} is {info.get(key)!r}"
    for episode_id, entry in enumerate(info["episodes"]):
        if not isinstance(entry, dict):
            return f"episode {episode_id} is listed as {entry!r}, not an object"
        for key, valid in EPISODE_FIELDS.items():
            if key not in entry:
                return f"episode {episode_id} has no {key}"
            if not valid(entry[key]):
                return f"episode {episode_id} has {key}={entry[key]!r}"
    return None


def read_dataset_metadata(root: Path) -> dict:
    """Minari's dataset metadata of the dataset folder `root`, with our entry checked."""
    path = root / DATA_DIR / METADATA_FILE
    if not path.is_file():
        raise UserError(
            f"{root} is not a collected dataset (no {DATA_DIR}/{METADATA_FILE}): "
            f"run `python -m collect out={root}` first"
        )
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DamagedIndexError(root, f"unreadable: {error}") from None
    if isinstance(metadata, dict) and VLMPLAY_KEY not in metadata:
        raise UserError(f"{path} is a Minari dataset that vlmplay did not collect (no {VLMPLAY_KEY!r} entry)")
    problem = index_problem(metadata)
    if problem is not None:
        raise DamagedIndexError(root, problem)
    return metadata


def is_collected_dataset(path: Path) -> bool:
    return (path / DATA_DIR / METADATA_FILE).is_file()


def check_collected(key: str, folders) -> None:
    """The schema check (core.schema) of an option naming one collected dataset folder, or a list of them."""
    for folder in [folders] if isinstance(folders, str) else folders:
        if not is_collected_dataset(Path(str(folder)).expanduser()):
            raise UserError(
                f"{key}={folder} is not a collected dataset (no {DATA_DIR}/{METADATA_FILE}): "
                f"collect one with `python -m collect ... out={folder}` first"
            )


def episode_path(root: Path, episode_id: int) -> Path:
    return root / DATA_DIR / str(episode_id)


@dataclass(frozen=True)
class EpisodeInfo:
    episode_id: int  # Minari's episode id: the folder data/<episode_id>
    seed: int
    length: int  # policy decisions (steps)
    episode_return: float
    crc32: int  # of the episode's Arrow file


@dataclass
class EpisodeArrays:
    frames: np.ndarray  # [length + 1, H, W, 3] uint8, a read-only view of the mapped file
    actions: np.ndarray  # [length + 1, ...] env actions (the last row is Minari's padding)
    action_codes: np.ndarray  # [length + 1] int64
    rewards: np.ndarray  # [length + 1] float64
    terminations: np.ndarray  # [length + 1] bool
    truncations: np.ndarray  # [length + 1] bool


@dataclass
class Sample:
    frames: np.ndarray  # [n_stack, H, W, 3] uint8, oldest first; the current frame is frames[-1]
    action_code: int
    action: np.ndarray | int  # the env action the policy took
    reward: float
    terminated: bool
    truncated: bool
    seed: int
    step: int  # index of the decision inside its episode


def stack_indices(steps: np.ndarray, n_stack: int) -> np.ndarray:
    """Frame indices of the stacks ending at `steps` ([N] -> [N, n_stack], oldest first).
    At the start of an episode the stack repeats the first frame, as the VLM policy does at play time."""
    return np.maximum(np.asarray(steps)[:, None] + np.arange(1 - n_stack, 1)[None, :], 0)


class EpisodeError(UserError):
    """One episode on disk is missing or damaged; the collector re-plays its seed to repair it."""

    def __init__(self, root: Path, episode: EpisodeInfo, problem: str):
        self.episode = episode
        self.detail = (
            f"episode {episode.episode_id} (seed {episode.seed}) in {episode_path(root, episode.episode_id)} "
            f"is damaged: {problem}"
        )
        super().__init__(
            f"{self.detail}; re-collect it: run the same `python -m collect ... out={root}` with repair=true"
        )


def episode_infos(metadata: dict) -> list[EpisodeInfo]:
    return [
        EpisodeInfo(episode_id, entry["seed"], entry["length"], entry["return"], entry["crc32"])
        for episode_id, entry in enumerate(metadata[VLMPLAY_KEY]["episodes"])
    ]


def open_episode(root: Path, episode: EpisodeInfo, frame_shape: tuple[int, int, int], verify: bool) -> EpisodeArrays:
    """Map one episode's Arrow file and check it against the index; `verify` also checks its CRC32."""
    folder = episode_path(root, episode.episode_id)
    files = sorted(folder.glob("*.arrow"))
    if len(files) != 1:
        raise EpisodeError(root, episode, f"expected one .arrow file, found {len(files)}")
    episode_metadata = folder / METADATA_FILE
    try:
        stored = json.loads(episode_metadata.read_text())
    except (OSError, ValueError) as error:
        raise EpisodeError(root, episode, f"{episode_metadata.name} is unreadable ({error})") from None
    if not isinstance(stored, dict):
        raise EpisodeError(root, episode, f"{episode_metadata.name} holds a {type(stored).__name__}, not an object")
    stored_seed = stored.get("seed")
    if stored_seed != episode.seed:
        raise EpisodeError(root, episode, f"{episode_metadata.name} says seed {stored_seed}")
    if verify and file_crc32(files[0]) != episode.crc32:
        raise EpisodeError(
            root, episode, f"{files[0].name} does not match its CRC32 (its bytes changed since collection)"
        )
    try:
        table = pa.ipc.open_file(pa.memory_map(str(files[0]))).read_all()
        observations = table.column("observations")
        # Minari writes one record batch per episode: a zero-copy view of the mapped file.
        observations = observations.chunk(0) if observations.num_chunks == 1 else observations.combine_chunks()
        frames = observations.flatten().to_numpy(zero_copy_only=False).reshape(-1, *frame_shape)
        infos = table.column("infos").combine_chunks()
        arrays = EpisodeArrays(
            frames=frames,
            actions=np.stack(table.column("actions").to_numpy(zero_copy_only=False)),
            action_codes=infos.field("action_code").to_numpy(zero_copy_only=False),
            rewards=table.column("rewards").to_numpy(),
            terminations=table.column("terminations").to_numpy(),
            truncations=table.column("truncations").to_numpy(),
        )
    except (pa.ArrowException, KeyError, ValueError) as error:
        raise EpisodeError(root, episode, f"{files[0].name} is not a readable episode file ({error})") from None
    if len(frames) != episode.length + 1:
        raise EpisodeError(root, episode, f"{len(frames)} frames on disk, the index says {episode.length} steps + 1")
    return arrays


class CollectedDataset:
    """Samples of a collected dataset by global step index: stacked frames, action code and the rest.

    `seeds` keeps only those episodes; `n_stack` defaults to the game's (CarRacing 2, SpaceInvaders 4);
    `verify` checks every episode file's CRC32 when opening (one read of the dataset).
    """

    def __init__(
        self, root: str | Path, seeds: list[int] | None = None, n_stack: int | None = None, verify: bool = True
    ):
        self.root = Path(root)
        metadata = read_dataset_metadata(self.root)
        info = metadata[VLMPLAY_KEY]
        self.spec: GameSpec = get_game(info["game"])
        self.policy_id: str = info["policy_id"]
        self.n_stack = n_stack or self.spec.n_stack
        episodes = episode_infos(metadata)
        if seeds is not None:
            missing = sorted(set(seeds) - {episode.seed for episode in episodes})
            if missing:
                raise UserError(f"{self.root} has no episodes with seeds {missing}")
            episodes = [episode for episode in episodes if episode.seed in set(seeds)]
        arrays = [open_episode(self.root, episode, self.spec.frame_shape, verify) for episode in episodes]
        self._set_episodes(episodes, arrays)

    def _set_episodes(self, episodes: list[EpisodeInfo], arrays: list[EpisodeArrays]) -> None:
        self.episodes = episodes
        self._arrays = arrays
        lengths = np.array([episode.length for episode in episodes], dtype=np.int64)
        self._episode_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self._episode_of_step = np.repeat(np.arange(len(episodes)), lengths)  # [total steps]
        self.action_codes = np.concatenate([a.action_codes[:-1] for a in arrays]) if arrays else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._episode_of_step)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"step {index} is out of range for {len(self)} steps")
        index %= len(self)
        episode_index = self._episode_of_step[index]
        step = int(index - self._episode_start[episode_index])
        arrays = self._arrays[episode_index]
        return Sample(
            frames=arrays.frames[stack_indices(np.array([step]), self.n_stack)[0]],
            action_code=int(arrays.action_codes[step]),
            action=arrays.actions[step],
            reward=float(arrays.rewards[step]),
            terminated=bool(arrays.terminations[step]),
            truncated=bool(arrays.truncations[step]),
            seed=self.episodes[episode_index].seed,
            step=step,
        )

    @property
    def seeds(self) -> list[int]:
        return [episode.seed for episode in self.episodes]

    @property
    def policy_kind(self) -> str:
        """The registered name of the policy that chose the stored actions: policy ids are "<name>-..."."""
        return self.policy_id.split("-", 1)[0]

    def episode(self, index: int) -> EpisodeArrays:
        """All the arrays of the `index`-th episode of this dataset (memory-mapped, read-only)."""
        return self._arrays[index]

    def subset(self, seeds: list[int]) -> "CollectedDataset":
        """The episodes with these seeds, sharing this dataset's mapped files (nothing is re-read)."""
        keep = [index for index, episode in enumerate(self.episodes) if episode.seed in set(seeds)]
        subset = object.__new__(CollectedDataset)
        subset.root, subset.spec, subset.policy_id, subset.n_stack = self.root, self.spec, self.policy_id, self.n_stack
        subset._set_episodes([self.episodes[i] for i in keep], [self._arrays[i] for i in keep])
        return subset
