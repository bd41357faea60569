"""Read the game-object annotations that `python -m collect.annotate src=<dataset>` writes beside a dataset.

`<dataset>/annotations/` holds one `<episode_id>.npz` per episode and `meta.json` (format version, game, source,
label words, each file's CRC32, the pixel checks). An episode file holds, for each of its `length + 1` stored
frames, the table of that frame's objects (label, box, alien row) and each object's mask, stored as the bits of
its box (np.packbits, row-major): a random frame decodes without decompressing its episode. Objects never share a
pixel, so the masks are also the frame's instance map (`AnnotatedFrames.instances`: 0 = nothing, k = object k).

This module imports no gymnasium: training processes read annotations.
"""

import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collect.dataset import CollectedDataset, file_crc32
from core.errors import UserError

ANNOTATIONS_DIR = "annotations"
META_FILE = "meta.json"
FORMAT_VERSION = 1
ANNOTATE_COMMAND = "python -m collect.annotate src={root}"

LABELS: dict[str, tuple[str, ...]] = {
    "spaceinvaders": ("cannon", "alien", "shield", "player shot", "alien shot", "ufo"),
    "carracing": ("road", "grass", "kerb", "car"),
}
ALIEN_ROWS = 6  # SpaceInvaders' formation: 6 rows of 6 aliens, row 1 at the top
NO_ROW = 0  # the stored row of an object that is not an alien

# The arrays of an episode file: N objects over the episode's frames, in frame order.
COUNTS = "counts"  # int32 [T + 1]: objects in each stored frame
LABEL_IDS = "labels"  # uint8 [N]: index into LABELS[game]
BOXES = "boxes"  # int16 [N, 4]: x0, y0, x1, y1 (x1, y1 exclusive), the mask's bounding box
ROWS = "rows"  # uint8 [N]: alien row 1..6, NO_ROW otherwise
MASK_BITS = "mask_bits"  # uint8 [M]: every object's mask inside its box, np.packbits, concatenated
MASK_OFFSETS = "mask_offsets"  # int64 [N + 1]: where each object's bits start in MASK_BITS
FLAGGED = "flagged"  # bool [T + 1]: the pixel checks failed on this frame; readers leave it out
EPISODE_ARRAYS = (COUNTS, LABEL_IDS, BOXES, ROWS, MASK_BITS, MASK_OFFSETS, FLAGGED)

# Referring phrases: what each names, and the class it is reported under (per-class cIoU).
ROW_PHRASE = "the aliens in row {row}"
TOP_ROW, BOTTOM_ROW = "the aliens in the top row", "the aliens in the bottom row"
CLASS_PHRASES = {
    "cannon": "the player's cannon",
    "alien": "the aliens",
    "shield": "the shields",
    "player shot": "the player's shot",
    "alien shot": "the alien shots",
    "ufo": "the UFO",
    "road": "the road",
    "grass": "the grass",
    "kerb": "the kerb",
    "car": "the car",
}
PHRASE_CLASSES: dict[str, str] = {phrase: label for label, phrase in CLASS_PHRASES.items()}
PHRASE_CLASSES |= {ROW_PHRASE.format(row=row): "alien" for row in range(1, ALIEN_ROWS + 1)}
PHRASE_CLASSES |= {TOP_ROW: "alien", BOTTOM_ROW: "alien"}


@dataclass(frozen=True)
class FrameObject:
    label: str  # one of LABELS[game]
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) pixel edges in the stored frame, x1/y1 exclusive
    mask: np.ndarray  # bool [H, W], the object's pixels in the stored frame
    row: int | None = None  # SpaceInvaders aliens: 1 = top row ... 6 = bottom row; else None


def referring_phrases(game: str, objects: list[FrameObject]) -> dict[str, np.ndarray]:
    """{referring phrase: bool [H, W] mask (the union of the objects it names)} for the phrases present in the frame.

    Every class present has its phrase ("the aliens", "the road", ...); SpaceInvaders' aliens also "the aliens in
    row k" for each row with aliens left (rows keep their numbers as the formation shrinks) and "the aliens in
    the top row" / "in the bottom row" (the highest / lowest row with aliens left)."""
    if game not in LABELS:
        raise UserError(f"unknown game {game!r}: annotations exist for {', '.join(LABELS)}")
    phrases: dict[str, np.ndarray] = {}

    def add(phrase: str, mask: np.ndarray) -> None:
        phrases[phrase] = phrases[phrase] | mask if phrase in phrases else mask.copy()

    for item in objects:
        add(CLASS_PHRASES[item.label], item.mask)
        if item.row is not None:
            add(ROW_PHRASE.format(row=item.row), item.mask)
    rows = sorted({item.row for item in objects if item.row is not None})
    if rows:
        phrases[TOP_ROW] = phrases[ROW_PHRASE.format(row=rows[0])].copy()
        phrases[BOTTOM_ROW] = phrases[ROW_PHRASE.format(row=rows[-1])].copy()
    return phrases


def encode_episode(frames_objects: list[list[FrameObject]], flagged: np.ndarray, game: str) -> dict[str, np.ndarray]:
    """The arrays of an episode file, from each stored frame's objects (masks must not overlap) and the frames
    whose pixel checks failed."""
    labels = LABELS[game]
    counts = np.array([len(objects) for objects in frames_objects], dtype=np.int32)
    flat = [item for objects in frames_objects for item in objects]
    bits = [np.packbits(item.mask[y0:y1, x0:x1]) for item in flat for x0, y0, x1, y1 in [item.box]]
    offsets = np.concatenate([[0], np.cumsum([len(chunk) for chunk in bits], dtype=np.int64)]).astype(np.int64)
    return {
        COUNTS: counts,
        LABEL_IDS: np.array([labels.index(item.label) for item in flat], dtype=np.uint8),
        BOXES: np.array([item.box for item in flat], dtype=np.int16).reshape(-1, 4),
        ROWS: np.array([NO_ROW if item.row is None else item.row for item in flat], dtype=np.uint8),
        MASK_BITS: np.concatenate(bits) if bits else np.zeros(0, np.uint8),
        MASK_OFFSETS: offsets,
        FLAGGED: np.asarray(flagged, dtype=bool),
    }


def episode_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An episode file's bytes (np.savez_compressed: lossless, zlib)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def annotations_dir(root: Path) -> Path:
    return root / ANNOTATIONS_DIR


def episode_file(root: Path, episode_id: int) -> Path:
    return annotations_dir(root) / f"{episode_id}.npz"


def read_meta(root: Path) -> dict | None:
    """meta.json of a dataset's annotations, None when there is none; a damaged one is a UserError."""
    path = annotations_dir(root) / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("episodes"), dict):
            raise ValueError("not an annotations index")
    except (OSError, ValueError) as error:
        raise UserError(
            f"{path} is damaged ({error}): annotate again with `{ANNOTATE_COMMAND.format(root=root)} overwrite=true`"
        ) from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {meta.get('format_version')!r}, this reader reads {FORMAT_VERSION}: "
            f"annotate again with `{ANNOTATE_COMMAND.format(root=root)} overwrite=true`"
        )
    return meta


def load_episode(root: Path, episode_id: int, crc32: int) -> dict[str, np.ndarray]:
    """The arrays of one episode file, after checking its CRC32 against meta.json."""
    path = episode_file(root, episode_id)
    redo = f"annotate again: `{ANNOTATE_COMMAND.format(root=root)}` redoes damaged episodes"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"{path} is missing or unreadable ({error.strerror}); {redo}") from None
    if zlib.crc32(data) != crc32:
        raise UserError(f"{path} is damaged (its CRC32 does not match meta.json); {redo}")
    with np.load(io.BytesIO(data)) as npz:
        return {key: npz[key] for key in EPISODE_ARRAYS}


def episode_problem(root: Path, entry: dict, dataset_crc32: int) -> str | None:
    """Why an episode's annotation cannot be used as it is on disk (None: it can): what `annotate` redoes."""
    path = episode_file(root, entry["episode_id"])
    if entry.get("dataset_crc32") != dataset_crc32:
        return "it was made from another collection of this episode"
    if not path.is_file():
        return f"{path.name} is missing"
    if file_crc32(path) != entry.get("crc32"):
        return f"{path.name} does not match its CRC32"
    return None


class AnnotatedFrames:
    """The annotated frames of a collected dataset: every stored frame a decision was taken on (but those the
    pixel checks flagged, see meta.json).

    `seeds` keeps only those episodes, `held_out` drops those (e.g. evaluation seeds); `verify` checks the
    dataset's episode files' CRC32 too (the annotation files' CRC32 are always checked)."""

    def __init__(self, root: str | Path, seeds: list[int] | None = None, held_out: list[int] = (), verify: bool = True):
        self.root = Path(root).expanduser()
        meta = read_meta(self.root)
        if meta is None:
            raise UserError(
                f"{self.root} has no object annotations ({ANNOTATIONS_DIR}/{META_FILE}): "
                f"run `{ANNOTATE_COMMAND.format(root=self.root)}` first"
            )
        dataset = CollectedDataset(self.root, seeds=seeds, verify=verify)
        if meta.get("game") != dataset.spec.name:
            raise UserError(
                f"{self.root}: the annotations are of {meta.get('game')!r}, the dataset is {dataset.spec.name!r}; "
                f"annotate again with `{ANNOTATE_COMMAND.format(root=self.root)} overwrite=true`"
            )
        self.game: str = dataset.spec.name
        self.labels: tuple[str, ...] = LABELS[self.game]
        kept = [episode.seed for episode in dataset.episodes if episode.seed not in set(held_out)]
        self.dataset = dataset.subset(kept)
        self.meta = meta
        self._episodes = [self._load(episode) for episode in self.dataset.episodes]
        kept_steps = [
            np.flatnonzero(~arrays[FLAGGED][: episode.length])
            for episode, arrays in zip(self.dataset.episodes, self._episodes)
        ]
        self._episode_of_frame = np.concatenate(
            [np.full(len(steps), i, dtype=np.int64) for i, steps in enumerate(kept_steps)] or [np.zeros(0, np.int64)]
        )  # [frames]
        self._step_of_frame = np.concatenate(kept_steps or [np.zeros(0, np.int64)])  # [frames]

    def _load(self, episode) -> dict[str, np.ndarray]:
        entry = self.meta["episodes"].get(str(episode.episode_id))
        command = ANNOTATE_COMMAND.format(root=self.root)
        if entry is None:
            raise UserError(
                f"episode {episode.episode_id} (seed {episode.seed}) of {self.root} is not annotated yet: "
                f"run `{command}` (it annotates only what is missing)"
            )
        if entry.get("dataset_crc32") != episode.crc32:
            raise UserError(
                f"the annotation of episode {episode.episode_id} (seed {episode.seed}) was made from another "
                f"collection of it: run `{command}` to redo it"
            )
        arrays = load_episode(self.root, episode.episode_id, entry["crc32"])
        if len(arrays[COUNTS]) != episode.length + 1:
            raise UserError(f"{episode_file(self.root, episode.episode_id)} is damaged (wrong frame count): {command}")
        arrays["first"] = np.concatenate([[0], np.cumsum(arrays[COUNTS])]).astype(np.int64)  # [T + 2]
        return arrays

    def __len__(self) -> int:
        return len(self._episode_of_frame)

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is out of range for {len(self)} annotated frames")
        return int(self._episode_of_frame[index]), int(self._step_of_frame[index])

    def frame(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3], the stored frame (a read-only view of the mapped dataset file)."""
        episode, step = self._locate(index)
        return self.dataset.episode(episode).frames[step]

    def objects(self, index: int) -> list[FrameObject]:
        """Every object in that frame, in the order of its table (object k is instance k + 1)."""
        episode, step = self._locate(index)
        arrays = self._episodes[episode]
        height, width, _ = self.dataset.spec.frame_shape
        found = []
        for k in range(arrays["first"][step], arrays["first"][step + 1]):
            x0, y0, x1, y1 = (int(v) for v in arrays[BOXES][k])
            bits = arrays[MASK_BITS][arrays[MASK_OFFSETS][k] : arrays[MASK_OFFSETS][k + 1]]
            mask = np.zeros((height, width), dtype=bool)  # [H, W]
            mask[y0:y1, x0:x1] = np.unpackbits(bits, count=(y1 - y0) * (x1 - x0)).reshape(y1 - y0, x1 - x0)
            row = int(arrays[ROWS][k])
            label = self.labels[arrays[LABEL_IDS][k]]
            found.append(FrameObject(label, (x0, y0, x1, y1), mask, None if row == NO_ROW else row))
        return found

    def instances(self, index: int) -> np.ndarray:
        """uint8 [H, W]: 0 = nothing, k = the k-th object of `objects(index)`."""
        height, width, _ = self.dataset.spec.frame_shape
        labels = np.zeros((height, width), dtype=np.uint8)  # [H, W]
        for k, item in enumerate(self.objects(index), start=1):
            labels[item.mask] = k
        return labels

    def seed_of(self, index: int) -> int:
        """The episode's seed (for held-out splits)."""
        return self.dataset.episodes[self._locate(index)[0]].seed

    def step_of(self, index: int) -> int:
        """The decision's index inside its episode."""
        return self._locate(index)[1]

    @property
    def seeds(self) -> list[int]:
        return self.dataset.seeds
