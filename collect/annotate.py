"""python -m collect.annotate src=data/spaceinvaders [overwrite=false] [png=docs/annotations/spaceinvaders.png]

The game objects of every stored frame of a collected dataset, from the game itself: each episode is replayed in the
env it was played in (its seed, its stored actions), every replayed frame is checked to be the stored one bit for
bit, and the game's extractor (envs/objects/<game>.py) reads the objects off the live env: SpaceInvaders from the
ALE RAM, CarRacing from the track polygons and the car's hull. Written beside `data/` in `annotations/`: one
`<episode_id>.npz` per episode (collect/annotations.py reads them) and `meta.json` (game, source, labels, each
file's CRC32, the pixel checks). Resumable: an episode whose file is in place and whole is kept; a damaged one, or
one of an episode collected again since, is annotated again. Deterministic: nothing is drawn at random.
"""

import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from omegaconf import DictConfig
from PIL import Image, ImageDraw
from tqdm import tqdm

from collect.annotations import (
    FORMAT_VERSION,
    LABELS,
    META_FILE,
    AnnotatedFrames,
    FrameObject,
    annotations_dir,
    encode_episode,
    episode_bytes,
    episode_file,
    episode_problem,
    read_meta,
)
from collect.dataset import DATA_DIR, METADATA_FILE, CollectedDataset, EpisodeInfo, check_collected
from collect.writer import played_env_spec
from core.cli import command
from core.errors import UserError
from core.files import check_writable, clean_partial, remove, write_atomically, write_json_atomically
from core.schema import option
from envs.games import get_game
from envs.objects import EXTRACTORS
from envs.objects.base import Checks, FrameObjects
from envs.pipeline import PlayedEnv

# What label 0 (no object) covers in each game, written into meta.json.
NOTHING = {
    "spaceinvaders": "the black background, the scores, the lives and the ground",
    "carracing": "the dashboard strip (black bar, indicators, score) and the black outside the playfield",
}
PNG_FRAMES = 4  # frames shown in the overview PNG, one from each quarter of the dataset
PNG_CANDIDATES = 25  # frames looked at in each quarter: the one with the most classes is shown
PNG_SCALE = {"spaceinvaders": 2, "carracing": 4}  # upscaling of a stored frame in the PNG
OVERLAY_ALPHA = 0.55  # how strongly an object's colour covers its pixels in the PNG
CLASS_COLOURS = {  # overlay colours, chosen to stand out from the game's own
    "cannon": (0, 255, 255),
    "alien": (255, 220, 0),
    "shield": (255, 0, 255),
    "player shot": (0, 160, 255),
    "alien shot": (255, 60, 60),
    "ufo": (255, 255, 255),
    "road": (120, 120, 255),
    "grass": (0, 200, 0),
    "kerb": (255, 0, 255),
    "car": (255, 255, 0),
}


def writable_file(key: str, value) -> None:
    """A file the command will write: the folder it goes in (or the nearest one above that exists) is writable."""
    check_writable(Path(str(value)).expanduser().parent, key)


@dataclass
class AnnotateConfig:
    src: str = option(check=check_collected)
    overwrite: bool = option()
    png: str | None = option(check=writable_file)


def replay_env(root: Path, game: str) -> gym.Env:
    """The env the dataset was played in: its stored env spec when that names PlayedEnv (datasets collected since
    Minari's recover_environment replays them), else the game's env in its default pipeline (older datasets)."""
    metadata = json.loads((root / DATA_DIR / METADATA_FILE).read_text())
    stored = EnvSpec.from_json(metadata["env_spec"]) if "env_spec" in metadata else None
    if stored is not None and any(wrapper.name == PlayedEnv.__name__ for wrapper in stored.additional_wrappers):
        return gym.make(stored)
    spec = get_game(game)
    return gym.make(played_env_spec(spec, spec.pipeline))


def frame_objects(found: FrameObjects) -> list[FrameObject]:
    """The extractor's objects with their boxes: each mask's bounding box, x1 and y1 exclusive."""
    objects = []
    for item in found.objects:
        ys, xs = np.nonzero(item.mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append(FrameObject(item.label, box, item.mask, item.row))
    return objects


def add_checks(total: Checks, checks: Checks) -> None:
    for name, (agreeing, count) in checks.items():
        counts = total.setdefault(name, [0, 0])
        counts[0] += agreeing
        counts[1] += count


def annotate_episode(env: gym.Env, dataset: CollectedDataset, index: int, bar: tqdm) -> tuple[dict, dict]:
    """Replay one episode, checking every frame -> (its file's arrays, its meta.json entry but the CRC)."""
    episode: EpisodeInfo = dataset.episodes[index]
    arrays = dataset.episode(index)
    start = time.perf_counter()
    frame, _ = env.reset(seed=episode.seed)
    extractor = EXTRACTORS.get(dataset.spec.name)(env)
    frames_objects, flagged, checks = [], [], {}
    for step in range(episode.length):
        if not np.array_equal(frame, arrays.frames[step]):
            raise UserError(
                f"replaying episode {episode.episode_id} (seed {episode.seed}) of {dataset.root} gives another frame "
                f"at step {step} than the stored one: annotate it where it was collected (the gymnasium and ale-py "
                "versions in data/metadata.json's requirements), or collect it again"
            )
        found = extractor(frame)
        frames_objects.append(frame_objects(found))
        flagged.append(found.flagged)
        add_checks(checks, found.checks)
        if step < episode.length - 1:
            frame, *_ = env.step(arrays.actions[step])
        bar.update()
    # Minari's extra last frame repeats the last decision's frame (collect/README.md): so do its objects.
    frames_objects.append(frames_objects[-1])
    flagged.append(flagged[-1])
    entry = {
        "episode_id": episode.episode_id,
        "file": episode_file(dataset.root, episode.episode_id).name,
        "seed": episode.seed,
        "length": episode.length,
        "dataset_crc32": episode.crc32,
        "objects": sum(len(objects) for objects in frames_objects[:-1]),
        "flagged_frames": int(sum(flagged[:-1])),
        "seconds": round(time.perf_counter() - start, 2),
        "checks": checks,
    }
    return encode_episode(frames_objects, np.array(flagged), dataset.spec.name), entry


def summary(episodes: dict) -> dict:
    """The checks of every episode added up: {name: {agreeing, total, fraction}}."""
    total: Checks = {}
    for entry in episodes.values():
        add_checks(total, entry["checks"])
    return {
        name: {"agreeing": agreeing, "total": count, "fraction": round(agreeing / count, 6) if count else None}
        for name, (agreeing, count) in sorted(total.items())
    }


def new_meta(dataset: CollectedDataset, source: str) -> dict:
    game = dataset.spec.name
    return {
        "format_version": FORMAT_VERSION,
        "game": game,
        "source": source,
        "labels": list(LABELS[game]),
        "label_0": NOTHING[game],
        "frame_shape": list(dataset.spec.frame_shape),
        "policy_id": dataset.policy_id,
        "episodes": {},
    }


def write_meta(root: Path, meta: dict) -> None:
    meta["checks"] = summary(meta["episodes"])
    meta["seconds"] = round(sum(entry["seconds"] for entry in meta["episodes"].values()), 2)
    write_json_atomically(annotations_dir(root) / META_FILE, meta)


def starting_meta(root: Path, dataset: CollectedDataset, source: str, overwrite: bool) -> dict:
    """meta.json to resume from (entries of episodes no longer in the dataset dropped), or a new one."""
    folder = annotations_dir(root)
    try:
        meta = read_meta(root)
    except UserError:
        if not overwrite:
            raise
        meta = None
    if meta is not None and meta.get("game") != dataset.spec.name and not overwrite:
        raise UserError(
            f"{folder} holds annotations of {meta.get('game')!r}, the dataset is {dataset.spec.name!r} now: "
            "pass overwrite=true to annotate it anew"
        )
    if meta is None or overwrite:
        remove(folder)
        folder.mkdir(parents=True)
        return new_meta(dataset, source)
    ids = {str(episode.episode_id) for episode in dataset.episodes}
    meta["episodes"] = {key: entry for key, entry in meta["episodes"].items() if key in ids}
    return meta


def annotate(root: Path, overwrite: bool) -> dict:
    """Annotate every episode of the dataset at `root` that is not annotated (whole) yet -> meta.json's content."""
    dataset = CollectedDataset(root)  # checks every episode file's CRC32 first
    if not dataset.episodes:
        raise UserError(f"src={root} holds no episodes yet: collect some first")
    game = dataset.spec.name
    extractor = EXTRACTORS.get(game)
    clean_partial(annotations_dir(root))
    meta = starting_meta(root, dataset, extractor.source, overwrite)
    todo = []
    for index, episode in enumerate(dataset.episodes):
        entry = meta["episodes"].get(str(episode.episode_id))
        problem = None if entry is None else episode_problem(root, entry, episode.crc32)
        if problem is not None:
            print(f"episode {episode.episode_id} (seed {episode.seed}) is annotated again: {problem}")
        if entry is None or problem is not None:
            todo.append(index)
    if not todo:
        return meta
    env = replay_env(root, game)
    total = sum(dataset.episodes[index].length for index in todo)
    try:
        with tqdm(total=total, desc=f"annotate {root.name} ({game})", unit="frame") as bar:
            for index in todo:
                arrays, entry = annotate_episode(env, dataset, index, bar)
                data = episode_bytes(arrays)
                path = episode_file(root, entry["episode_id"])
                write_atomically(path, lambda tmp, data=data: tmp.write_bytes(data))
                meta["episodes"][str(entry["episode_id"])] = entry | {"crc32": zlib.crc32(data)}
                write_meta(root, meta)
    finally:
        env.close()
    return meta


def overlay(frame: np.ndarray, objects: list[FrameObject], scale: int) -> Image.Image:
    """The frame with each object's pixels tinted in its class colour, its box and its label (and row)."""
    tinted = frame.astype(np.float64)  # [H, W, 3]
    for item in objects:
        colour = np.array(CLASS_COLOURS[item.label], dtype=np.float64)
        tinted[item.mask] = (1 - OVERLAY_ALPHA) * tinted[item.mask] + OVERLAY_ALPHA * colour
    image = Image.fromarray(tinted.astype(np.uint8)).resize(
        (frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST
    )
    draw = ImageDraw.Draw(image)
    for item in objects:
        x0, y0, x1, y1 = (value * scale for value in item.box)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=CLASS_COLOURS[item.label])
        text = item.label if item.row is None else f"row {item.row}"
        draw.text((x0 + 1, y0 + 1), text, fill=CLASS_COLOURS[item.label])
    return image


def write_png(root: Path, path: Path) -> None:
    """PNG_FRAMES frames spread over the dataset, each as stored | with its annotations drawn on."""
    frames = AnnotatedFrames(root, verify=False)
    scale = PNG_SCALE[frames.game]
    # Each shown frame: of PNG_CANDIDATES evenly spaced in its part of the dataset, one showing the most classes.
    candidates = np.linspace(0, len(frames) - 1, PNG_FRAMES * PNG_CANDIDATES).round().astype(int)
    indices = [
        max(part, key=lambda index: len({item.label for item in frames.objects(int(index))}))
        for part in candidates.reshape(PNG_FRAMES, PNG_CANDIDATES)
    ]
    tiles = []
    for index in indices:
        frame = frames.frame(int(index))
        plain = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
        tiles.append((plain, overlay(frame, frames.objects(int(index)), scale)))
    width, height = tiles[0][0].size
    sheet = Image.new("RGB", (2 * width, height * len(tiles)))
    for row, (plain, annotated) in enumerate(tiles):
        sheet.paste(plain, (0, row * height))
        sheet.paste(annotated, (width, row * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: sheet.save(tmp, format="PNG"))


def folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file()) / 2**20


@command("annotate", AnnotateConfig)
def main(cfg: DictConfig) -> None:
    root = Path(cfg.src).expanduser()
    start = time.perf_counter()
    meta = annotate(root, cfg.overwrite)
    checks = meta["checks"]
    frames = sum(entry["length"] for entry in meta["episodes"].values())
    flagged = sum(entry["flagged_frames"] for entry in meta["episodes"].values())
    agreement = ", ".join(f"{name} {value['fraction']:.4f}" for name, value in checks.items() if value["total"])
    print(
        f"{annotations_dir(root)}: {len(meta['episodes'])} episodes, {frames} frames ({flagged} flagged), "
        f"{folder_mb(annotations_dir(root)):.1f} MB, {time.perf_counter() - start:.1f} s; checks: {agreement}"
    )
    if cfg.png is not None:
        write_png(root, Path(cfg.png).expanduser())
        print(f"wrote {cfg.png}")


if __name__ == "__main__":
    main()
