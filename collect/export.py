"""python -m collect.export src=data/spaceinvaders out=data/spaceinvaders_lerobot format=lerobot [video=true]

A collected dataset as a LeRobotDataset v3.0 folder, laid out as LeRobot's own writer lays it out
(lerobot/datasets/dataset_writer.py and dataset_metadata.py, v0.6.1): frames and per-frame values in
`data/chunk-XXX/file-XXX.parquet` (one row group per episode, a file rolls over at 100 MB), one row per
episode in `meta/episodes/`, the task in `meta/tasks.parquet`, `meta/stats.json` and `meta/info.json`.
Frames are PNG images inside the Parquet files (lossless, LeRobot's image features); `video=true` stores
them as H.264 MP4 instead (lossy, LeRobot's video features). LeRobot pins torch and numpy below this
project's pins, so the files are written here with pyarrow; tests/test_lerobot.py reads them with LeRobot.
"""

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from collect.dataset import VLMPLAY_KEY, CollectedDataset, EpisodeArrays, check_collected, read_dataset_metadata
from collect.sources import LEROBOT_EPISODES_DIR, LEROBOT_INFO, is_lerobot_dataset
from core.cli import command
from core.errors import UserError
from core.files import write_atomically
from core.schema import option, writable_folder

FORMATS = ("lerobot",)
CODEBASE_VERSION = "v3.0"
CAMERA = "observation.image"  # LeRobot's name for a dataset's only camera
CHUNKS_SIZE = 1000  # LeRobot's default number of files per chunk folder
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = LEROBOT_EPISODES_DIR + "/" + CHUNK_FILE.format(chunk_index=0, file_index=0) + ".parquet"
TASKS_PATH = "meta/tasks.parquet"
STATS_PATH = "meta/stats.json"
VLMPLAY_PATH = "meta/vlmplay.json"  # what LeRobot has no field for: game, env id, policy id, action words
PNG_COMPRESS_LEVEL = 1  # LeRobot's: 2.0 kB per SpaceInvaders frame (raw 100.8 kB), 1.7 ms to encode
VIDEO_CODEC, VIDEO_PIX_FMT, VIDEO_CRF = "libx264", "yuv420p", 23  # x264's default quality
VIDEO_GOP = 2  # a key frame every 2 frames, as LeRobot encodes: a random frame decodes without a long seek
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's DEFAULT_QUANTILES
PIXEL_LEVELS = 256
HISTOGRAM_BLOCK_FRAMES = 64  # frames counted at once: bincount's int64 copy of a 2,000-frame episode is 1.6 GB
MB = 1024**2
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # Hugging Face datasets' Image()
SCALAR = [1]  # LeRobot's shape of a per-frame scalar


@dataclass
class ExportConfig:
    src: str = option(check=check_collected)
    format: str = option(choices=FORMATS)
    video: bool = option()
    data_files_size_in_mb: int = option(minimum=1)
    video_files_size_in_mb: int = option(minimum=1)
    overwrite: bool = option()
    out: str = option(check=writable_folder)


def check_out(src: Path, out: Path, overwrite: bool) -> None:
    """Refuse to write over the source, or over anything but a LeRobot dataset unless overwrite=true."""
    src, target = src.resolve(), out.resolve()
    if target == src or target in src.parents or src in target.parents:
        raise UserError(f"out={out} is the source dataset {src} or overlaps it: choose an out= outside it")
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise UserError(f"out={out} exists: choose another out= or set overwrite=true to replace it")
    if not (is_lerobot_dataset(out) or out.is_dir() and not any(out.iterdir())):
        raise UserError(f"out={out} holds something that is not a LeRobot dataset: overwrite=true replaces only one")


def lerobot_features(dataset: CollectedDataset, video: bool) -> dict:
    """LeRobot's feature dict: the camera, the env action, the action code, reward and done flags,
    then LeRobot's DEFAULT_FEATURES."""
    spec, arrays = dataset.spec, dataset.episode(0)
    action_shape = list(arrays.actions.shape[1:]) or SCALAR
    camera = {"dtype": "video" if video else "image", "shape": list(spec.frame_shape)}
    camera["names"] = ["height", "width", "channels"]
    if video:
        height, width, channels = spec.frame_shape
        camera["info"] = {
            "video.height": height,
            "video.width": width,
            "video.codec": "h264",
            "video.pix_fmt": VIDEO_PIX_FMT,
            "video.fps": spec.decisions_per_second,
            "video.channels": channels,
            "has_audio": False,
            "video.g": VIDEO_GOP,
            "video.crf": VIDEO_CRF,
            "is_depth_map": False,
        }
    scalar = {"shape": SCALAR, "names": None}
    return {
        CAMERA: camera,
        "action": {"dtype": str(arrays.actions.dtype), "shape": action_shape, "names": None},
        "action_code": {"dtype": "int64", **scalar},  # the word: meta/vlmplay.json action_names[code]
        "next.reward": {"dtype": "float64", **scalar},
        "next.done": {"dtype": "bool", **scalar},  # terminated or truncated, LeRobot's gym convention
        "next.terminated": {"dtype": "bool", **scalar},
        "next.truncated": {"dtype": "bool", **scalar},
        "timestamp": {"dtype": "float32", **scalar},
        "frame_index": {"dtype": "int64", **scalar},
        "episode_index": {"dtype": "int64", **scalar},
        "index": {"dtype": "int64", **scalar},
        "task_index": {"dtype": "int64", **scalar},
    }


def hf_feature(feature: dict) -> dict:
    """The Hugging Face datasets type of a LeRobot feature, as datasets records it in a Parquet schema."""
    if feature["dtype"] == "image":
        return {"_type": "Image"}
    value = {"dtype": feature["dtype"], "_type": "Value"}
    return value if feature["shape"] == SCALAR else {"feature": value, "length": feature["shape"][0], "_type": "List"}


def arrow_type(feature: dict) -> pa.DataType:
    if feature["dtype"] == "image":
        return IMAGE_TYPE
    value = pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    return value if feature["shape"] == SCALAR else pa.list_(value, feature["shape"][0])


def data_schema(features: dict) -> pa.Schema:
    columns = {key: feature for key, feature in features.items() if feature["dtype"] != "video"}
    huggingface = {"info": {"features": {key: hf_feature(feature) for key, feature in columns.items()}}}
    return pa.schema(
        [(key, arrow_type(feature)) for key, feature in columns.items()],
        metadata={"huggingface": json.dumps(huggingface)},
    )


def png_bytes(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def value_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's statistics of a per-frame value: [N] or [N, D] -> each statistic [1] or [D]."""
    values = values.astype(np.float64).reshape(len(values), -1)
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0)}
    stats |= {name: np.quantile(values, q, axis=0, method="inverted_cdf") for name, q in QUANTILES.items()}
    return stats | {"count": np.array([len(values)])}


def pixel_histogram(frames: np.ndarray) -> np.ndarray:
    """[N, H, W, C] uint8 -> [C, 256] counts of each pixel level per channel."""
    histogram = np.zeros((frames.shape[-1], PIXEL_LEVELS), dtype=np.int64)
    for start in range(0, len(frames), HISTOGRAM_BLOCK_FRAMES):
        block = np.moveaxis(frames[start : start + HISTOGRAM_BLOCK_FRAMES], -1, 0).reshape(len(histogram), -1)
        histogram += [np.bincount(channel, minlength=PIXEL_LEVELS) for channel in block]
    return histogram


def image_stats(histogram: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    """LeRobot's per-channel image statistics, in [0, 1] and shaped [C, 1, 1], computed exactly from every
    frame's pixel histogram (LeRobot samples frames): the same statistics `value_stats` gives the pixels."""
    levels = np.arange(PIXEL_LEVELS) / (PIXEL_LEVELS - 1)
    counts = histogram.astype(np.float64)
    fractions = counts / counts.sum(1, keepdims=True)
    mean = fractions @ levels
    cdf = np.cumsum(fractions, 1)
    present = counts > 0
    stats = {
        "min": levels[present.argmax(1)],
        "max": levels[PIXEL_LEVELS - 1 - present[:, ::-1].argmax(1)],
        "mean": mean,
        "std": np.sqrt(np.maximum(fractions @ levels**2 - mean**2, 0.0)),
    }
    # The inverted CDF, as value_stats takes quantiles; the tolerance absorbs the rounding of the cumulative sum.
    stats |= {name: levels[(cdf >= q - 1e-12).argmax(1)] for name, q in QUANTILES.items()}
    return {name: value.reshape(-1, 1, 1) for name, value in stats.items()} | {"count": np.array([n_frames])}


def episode_values(arrays: EpisodeArrays, length: int, episode_index: int, first_index: int, fps: int) -> dict:
    """Every per-frame feature but the camera, [length] or [length, D]: Minari's extra last row is dropped
    (the play loop had reset by then; it repeats the last frame and has no action)."""
    terminated, truncated = arrays.terminations[:length], arrays.truncations[:length]
    frame_index = np.arange(length, dtype=np.int64)
    return {
        "action": arrays.actions[:length],
        "action_code": arrays.action_codes[:length].astype(np.int64),
        "next.reward": arrays.rewards[:length].astype(np.float64),
        "next.done": terminated | truncated,
        "next.terminated": terminated,
        "next.truncated": truncated,
        "timestamp": (frame_index / fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.full(length, episode_index, dtype=np.int64),
        "index": first_index + frame_index,
        "task_index": np.zeros(length, dtype=np.int64),
    }


def arrow_column(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(kind):
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), kind.value_type), kind.list_size)
    return pa.array(values, kind)


class RollingFiles:
    """Consecutive episodes appended to file-000, file-001, ... of LeRobot's chunk folders. LeRobot's rule for
    when a file is full: an episode starts a new file when, at the current file's bytes per frame so far, it
    would bring that file to `max_mb`."""

    def __init__(self, root: Path, path_pattern: str, max_mb: int):
        self.root, self.path_pattern, self.max_mb = root, path_pattern, max_mb
        self.file_number, self.frames_in_file, self.writer = 0, 0, None

    @property
    def indices(self) -> dict[str, int]:
        return {"chunk_index": self.file_number // CHUNKS_SIZE, "file_index": self.file_number % CHUNKS_SIZE}

    @property
    def path(self) -> Path:
        return self.root / self.path_pattern.format(**self.indices)

    def start_episode(self, n_frames: int) -> None:
        if self.writer is not None:
            size = self.path.stat().st_size
            if size + size / self.frames_in_file * n_frames >= self.max_mb * MB:
                self.close()
                self.file_number, self.frames_in_file = self.file_number + 1, 0
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = self.open(self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.finish(self.writer)
            self.writer = None


class ParquetFiles(RollingFiles):
    def __init__(self, root: Path, schema: pa.Schema, max_mb: int):
        super().__init__(root, DATA_PATH, max_mb)
        self.schema = schema

    def open(self, path: Path) -> pq.ParquetWriter:
        return pq.ParquetWriter(path, self.schema, compression="snappy", use_dictionary=True)

    def finish(self, writer: pq.ParquetWriter) -> None:
        writer.close()

    def write_episode(self, columns: dict[str, pa.Array]) -> None:
        table = pa.table(columns, schema=self.schema)
        self.start_episode(table.num_rows)
        self.writer.write_table(table)  # one row group per episode
        self.frames_in_file += table.num_rows


class VideoFiles(RollingFiles):
    def __init__(self, root: Path, frame_shape: tuple[int, int, int], fps: int, max_mb: int):
        super().__init__(root, VIDEO_PATH.replace("{video_key}", CAMERA), max_mb)
        self.frame_shape, self.fps = frame_shape, fps

    def open(self, path: Path):
        height, width, _ = self.frame_shape
        writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            fps=self.fps,
            codec=VIDEO_CODEC,
            pix_fmt_out=VIDEO_PIX_FMT,
            quality=None,
            macro_block_size=1,  # keep 210x160: the default pads each side to a multiple of 16
            ffmpeg_log_level="error",
            output_params=["-crf", str(VIDEO_CRF), "-g", str(VIDEO_GOP)],
        )
        writer.send(None)  # starts ffmpeg
        return writer

    def finish(self, writer) -> None:
        writer.close()

    def write_episode(self, frames: np.ndarray) -> dict:
        """Append an episode's frames; -> its video entries in meta/episodes."""
        self.start_episode(len(frames))
        start_s = self.frames_in_file / self.fps
        for frame in frames:
            self.writer.send(np.ascontiguousarray(frame))
        self.frames_in_file += len(frames)
        row = {f"videos/{CAMERA}/{name}": index for name, index in self.indices.items()}
        return row | {
            f"videos/{CAMERA}/from_timestamp": start_s,
            f"videos/{CAMERA}/to_timestamp": start_s + len(frames) / self.fps,
        }


def png_column(frames: np.ndarray, bar: tqdm) -> pa.Array:
    images = []
    for frame in frames:
        images.append({"bytes": png_bytes(frame), "path": None})
        bar.update()
    return pa.array(images, IMAGE_TYPE)


def flat_stats(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, list]:
    """Statistics as LeRobot's meta/episodes columns: `stats/<feature>/<statistic>`."""
    return {f"stats/{key}/{name}": value.tolist() for key, feature in stats.items() for name, value in feature.items()}


class LeRobotWriter:
    """A LeRobotDataset v3.0 folder, written episode by episode; `close` writes its metadata."""

    def __init__(self, folder: Path, dataset: CollectedDataset, options: DictConfig):
        self.folder, self.dataset = folder, dataset
        self.fps, self.task = dataset.spec.decisions_per_second, dataset.spec.objective  # one task: the game's
        self.features = lerobot_features(dataset, options.video)
        self.schema = data_schema(self.features)
        self.file_sizes_mb = {key: options[key] for key in ("data_files_size_in_mb", "video_files_size_in_mb")}
        self.data_files = ParquetFiles(folder, self.schema, options.data_files_size_in_mb)
        self.video_files = None
        if options.video:
            frame_shape = dataset.spec.frame_shape
            self.video_files = VideoFiles(folder, frame_shape, self.fps, options.video_files_size_in_mb)
        self.episodes, self.values, self.histogram, self.total_frames = [], [], 0, 0

    def write_episode(self, episode_index: int, bar: tqdm) -> None:
        episode, arrays = self.dataset.episodes[episode_index], self.dataset.episode(episode_index)
        length, first_index = episode.length, self.total_frames
        frames = arrays.frames[:length]
        values = episode_values(arrays, length, episode_index, first_index, self.fps)
        columns = {key: arrow_column(values[key], self.schema.field(key).type) for key in values}
        row = {"episode_index": episode_index, "tasks": [self.task], "length": length}
        if self.video_files is None:
            columns[CAMERA] = png_column(frames, bar)
        else:
            row |= self.video_files.write_episode(frames)
            bar.update(length)
        self.data_files.write_episode(columns)
        row |= {f"data/{name}": index for name, index in self.data_files.indices.items()}
        row |= {"dataset_from_index": first_index, "dataset_to_index": first_index + length}
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        row |= {"seed": episode.seed, "episode_return": episode.episode_return}
        histogram = pixel_histogram(frames)
        row |= flat_stats({CAMERA: image_stats(histogram, length)} | {key: value_stats(v) for key, v in values.items()})
        self.episodes.append(row)
        self.values.append(values)
        self.histogram, self.total_frames = self.histogram + histogram, self.total_frames + length

    def close(self) -> None:
        self.data_files.close()
        if self.video_files is not None:
            self.video_files.close()
        stats = {CAMERA: image_stats(self.histogram, self.total_frames)}
        stats |= {key: value_stats(np.concatenate([values[key] for values in self.values])) for key in self.values[0]}
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": None,
            "total_episodes": len(self.episodes),
            "total_frames": self.total_frames,
            "total_tasks": 1,
            "chunks_size": CHUNKS_SIZE,
            **self.file_sizes_mb,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH,
            "video_path": None if self.video_files is None else VIDEO_PATH,
            "features": self.features,
        }
        (self.folder / EPISODES_PATH).parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(self.episodes), self.folder / EPISODES_PATH)
        tasks = pd.DataFrame({"task_index": [0]}, index=pd.Index([self.task], name="task"))
        tasks.to_parquet(self.folder / TASKS_PATH)  # pandas, as LeRobot writes it: the task is the index
        write_json(self.folder / STATS_PATH, {key: {k: v.tolist() for k, v in s.items()} for key, s in stats.items()})
        vlmplay = read_dataset_metadata(self.dataset.root)[VLMPLAY_KEY]
        write_json(self.folder / VLMPLAY_PATH, {key: value for key, value in vlmplay.items() if key != "episodes"})
        write_json(self.folder / LEROBOT_INFO, info)


def write_lerobot(dataset: CollectedDataset, folder: Path, options: DictConfig, bar: tqdm) -> None:
    """The whole LeRobotDataset v3.0 folder of `dataset`, written into `folder`."""
    writer = LeRobotWriter(folder, dataset, options)
    for episode_index in range(len(dataset.episodes)):
        writer.write_episode(episode_index, bar)
    writer.close()


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=4))


def folder_size_mb(folder: Path) -> float:
    return round(sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / MB, 1)


@command("export", ExportConfig)
def main(cfg: DictConfig) -> None:
    src, out = Path(cfg.src).expanduser(), Path(cfg.out).expanduser()
    check_out(src, out, cfg.overwrite)
    dataset = CollectedDataset(src)  # checks every episode file's CRC32 before anything is written
    if not dataset.episodes:
        raise UserError(f"src={src} holds no episodes yet: collect some first")
    start = time.perf_counter()
    with tqdm(total=len(dataset), desc=f"export {src.name} to {cfg.format}", unit="frame") as bar:
        write_atomically(out, lambda folder: write_lerobot(dataset, folder, cfg, bar))
    print(
        f"{out}: LeRobotDataset {CODEBASE_VERSION}, {len(dataset.episodes)} episodes, {len(dataset)} frames "
        f"({'H.264 MP4' if cfg.video else 'PNG'}), {folder_size_mb(out)} MB in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
