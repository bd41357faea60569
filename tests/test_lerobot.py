"""LeRobotDataset v3 export (`python -m collect.export format=lerobot`) and LeRobot datasets as training sources.

A real dataset (two random SpaceInvaders episodes) is exported with PNG frames and with MP4 frames. Each export is
read back three ways: with pyarrow and PIL (the files themselves), with ImageSources (what `python -m train
data=[...]` opens) and with LeRobot itself, whose LeRobotDataset must give every frame and value back. LeRobot
pins torch and numpy below this project's pins, so it cannot be installed beside it: its checks run in the
interpreter VLMPLAY_LEROBOT_PYTHON names, else in the venv `.ci/lerobot-venv` makes (~/.cache/vlmplay/lerobot-venv),
else in this one where lerobot imports, and are skipped otherwise.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_command, run_module
from PIL import Image

import collect.export
from collect.dataset import CollectedDataset
from collect.sources import ImageSources
from core.errors import UserError

LEROBOT_PYTHON = "VLMPLAY_LEROBOT_PYTHON"
LEROBOT_VENV_PYTHON = Path("~/.cache/vlmplay/lerobot-venv/bin/python").expanduser()  # what .ci/lerobot-venv makes
MAX_VIDEO_ERROR = 3.0  # mean absolute error of an H.264 frame (CRF 23, 4:2:0) from its source, 0-255 (worst: 2.23)
VALUES = ("action", "action_code", "next.reward", "next.terminated", "next.truncated", "episode_index", "frame_index")
READ_WITH_LEROBOT = """
import sys

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

root, out, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
dataset = LeRobotDataset("vlmplay/export", root=root)
items = [dataset[index] for index in range(len(dataset))]
arrays = {key: np.stack([item[key].numpy() for item in items]) for key in keys}
# LeRobot returns a frame as float32 [3, H, W] in [0, 1]: uint8 / 255, which * 255 rounds back exactly.
frames = [(item["observation.image"] * 255).round().byte().permute(1, 2, 0).numpy() for item in items]
np.savez(
    out,
    frames=np.stack(frames),
    seeds=np.array(list(dataset.meta.episodes["seed"])),
    fps=dataset.fps,
    tasks=np.array(sorted({item["task"] for item in items})),
    image_mean=dataset.meta.stats["observation.image"]["mean"],
    **arrays,
)
"""


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("lerobot") / "si"
    result = run_module("collect", "game=spaceinvaders", "policy=random", "episodes=2", "seed=0", f"out={out}")
    assert result.returncode == 0, result.stderr
    return out


def export(src, out, *overrides):
    result = run_module("collect.export", f"src={src}", f"out={out}", *overrides)
    assert result.returncode == 0, result.stderr
    return out


# 1 MB files: each of the two episodes gets its own data (PNG) or video (MP4) file, so every reader below
# reads across files; with LeRobot's default sizes the whole dataset fits one file.
@pytest.fixture(scope="module")
def exported(collected):
    return export(collected, collected.parent / "si_lerobot", "data_files_size_in_mb=1")


@pytest.fixture(scope="module")
def exported_video(collected):
    return export(collected, collected.parent / "si_lerobot_mp4", "video=true", "video_files_size_in_mb=1")


def files(root, folder, suffix) -> list:
    return sorted((root / folder).glob(f"**/*{suffix}"))


def collected_arrays(root) -> dict[str, np.ndarray]:
    """Every step of the collected dataset, episode after episode (Minari's extra last row dropped)."""
    dataset = CollectedDataset(root)
    parts = []
    for index, episode in enumerate(dataset.episodes):
        arrays, length = dataset.episode(index), episode.length
        parts.append(
            {
                "frames": arrays.frames[:length],
                "action": arrays.actions[:length],
                "action_code": arrays.action_codes[:length],
                "next.reward": arrays.rewards[:length],
                "next.terminated": arrays.terminations[:length],
                "next.truncated": arrays.truncations[:length],
                "episode_index": np.full(length, index),
                "frame_index": np.arange(length),
            }
        )
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def read_with_lerobot(root, tmp_path) -> dict[str, np.ndarray]:
    """The export as LeRobot's LeRobotDataset gives it, item by item, from local files only."""
    python = os.environ.get(LEROBOT_PYTHON) or (str(LEROBOT_VENV_PYTHON) if LEROBOT_VENV_PYTHON.is_file() else None)
    if not python:
        pytest.importorskip(
            "lerobot", reason=f"no LeRobot: run .ci/lerobot-venv, or set {LEROBOT_PYTHON} to a venv's python with it"
        )
        python = sys.executable
    out = tmp_path / "lerobot.npz"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # no hub, no shared cache
    result = subprocess.run(
        [python, "-c", READ_WITH_LEROBOT, str(root), str(out), *VALUES], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    return dict(np.load(out))


def test_the_export_holds_every_frame_and_value_of_the_dataset(collected, exported):
    """Read with pyarrow and PIL alone: PNG frames bit for bit, every value, LeRobot's metadata."""
    ours = collected_arrays(collected)
    data_files = files(exported, "data", ".parquet")
    assert [path.relative_to(exported).as_posix() for path in data_files] == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
    ]
    table = pa.concat_tables([pq.read_table(path) for path in data_files])
    frames = [
        np.array(Image.open(io.BytesIO(image["bytes"]))) for image in table.column("observation.image").to_pylist()
    ]
    assert np.array_equal(np.stack(frames), ours["frames"])
    for key in VALUES:
        assert np.array_equal(table.column(key).to_numpy(), ours[key]), key
    assert np.array_equal(table.column("next.done").to_numpy(), ours["next.terminated"] | ours["next.truncated"])
    assert np.array_equal(table.column("index").to_numpy(), np.arange(len(frames)))

    dataset = CollectedDataset(collected)
    info = json.loads((exported / "meta" / "info.json").read_text())
    assert (info["codebase_version"], info["total_episodes"], info["total_frames"]) == ("v3.0", 2, len(frames))
    assert info["fps"] == dataset.spec.decisions_per_second and info["video_path"] is None
    episodes = pq.read_table(exported / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [episode["seed"] for episode in episodes] == dataset.seeds
    assert [episode["length"] for episode in episodes] == [episode.length for episode in dataset.episodes]
    assert [episode["data/file_index"] for episode in episodes] == [0, 1]
    stats = json.loads((exported / "meta" / "stats.json").read_text())
    pixel_mean = ours["frames"].reshape(-1, 3).mean(0) / 255
    assert np.allclose(np.ravel(stats["observation.image"]["mean"]), pixel_mean)
    assert stats["action_code"]["max"] == [ours["action_code"].max()]
    vlmplay = json.loads((exported / "meta" / "vlmplay.json").read_text())
    assert vlmplay["action_names"] == list(dataset.spec.action_names)


def test_lerobot_reads_every_frame_and_value_bit_for_bit(collected, exported, tmp_path):
    ours, theirs = collected_arrays(collected), read_with_lerobot(exported, tmp_path)
    assert np.array_equal(theirs["frames"], ours["frames"])
    for key in VALUES:
        # LeRobot turns a float64 reward into a float32 tensor (torch's default); the file holds float64.
        expected = ours[key].astype(np.float32) if key == "next.reward" else ours[key]
        assert np.array_equal(theirs[key], expected), key
    dataset = CollectedDataset(collected)
    assert theirs["seeds"].tolist() == dataset.seeds
    assert int(theirs["fps"]) == dataset.spec.decisions_per_second
    assert theirs["tasks"].tolist() == [dataset.spec.objective]
    assert np.allclose(theirs["image_mean"].ravel(), ours["frames"].reshape(-1, 3).mean(0) / 255)


def test_lerobot_decodes_the_mp4_export_close_to_the_frames(collected, exported_video, tmp_path):
    """MP4 is lossy: every frame LeRobot decodes, at its episode's timestamps, is close to the source frame."""
    ours, theirs = collected_arrays(collected), read_with_lerobot(exported_video, tmp_path)
    assert theirs["frames"].shape == ours["frames"].shape
    error = np.abs(theirs["frames"].astype(np.int16) - ours["frames"]).mean(axis=(1, 2, 3))  # [frames]
    assert error.max() < MAX_VIDEO_ERROR, f"worst frame {error.argmax()}: {error.max():.2f}"
    for key in VALUES:
        expected = ours[key].astype(np.float32) if key == "next.reward" else ours[key]
        assert np.array_equal(theirs[key], expected), key


def test_the_mp4_export_plays_back_close_to_the_frames(collected, exported_video):
    ours = collected_arrays(collected)["frames"]
    height, width, _ = ours.shape[1:]
    videos = files(exported_video, "videos", ".mp4")
    assert [path.name for path in videos] == ["file-000.mp4", "file-001.mp4"]
    frames = []
    for video in videos:
        reader = imageio_ffmpeg.read_frames(str(video))
        assert tuple(next(reader)["size"]) == (width, height)
        frames += [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]
    frames = np.stack(frames)
    assert frames.shape == ours.shape
    assert np.abs(frames.astype(np.int16) - ours).mean(axis=(1, 2, 3)).max() < MAX_VIDEO_ERROR


@pytest.mark.parametrize("selection", [{}, {"seeds": [1]}, {"held_out": [1]}])
def test_image_sources_read_the_export_as_the_collected_frames(collected, exported, selection):
    theirs, ours = ImageSources([str(exported)], **selection), ImageSources([str(collected)], **selection)
    assert len(theirs) == len(ours) > 0
    assert all(np.array_equal(theirs[index], ours[index]) for index in range(len(ours)))


def test_image_sources_refuse_mp4_frames(exported_video):
    with pytest.raises(UserError, match="as MP4 video, which is lossy"):
        ImageSources([str(exported_video)])


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["src={src}", "out={exported}"], "exists: choose another out= or set overwrite=true"),
        (["src={src}", "out={src}/lerobot"], "overlaps it"),
        (["src={src}", "out={src}", "overwrite=true"], "overlaps it"),
        (["src={exported}", "out={tmp}/x"], "is not a collected dataset"),
        (["src={src}", "out={tmp}/x", "format=hdf5"], "format='hdf5': choose one of lerobot"),
        (["src={src}", "out={tmp}/x", "video=maybe"], "video='maybe': give true or false"),
        (["src={src}", "out={not_lerobot}", "overwrite=true"], "holds something that is not a LeRobot dataset"),
    ],
)
def test_bad_input_stops_with_one_line_and_writes_nothing(collected, exported, tmp_path, capsys, overrides, expected):
    not_lerobot = tmp_path / "notes"
    not_lerobot.mkdir()
    (not_lerobot / "keep.txt").write_text("mine")
    paths = {"src": collected, "exported": exported, "tmp": tmp_path, "not_lerobot": not_lerobot}
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(SystemExit) as stopped:
        run_command(collect.export.main, "export", *(override.format(**paths) for override in overrides))
    stderr = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(stderr) == 1 and stderr[0].startswith("error: "), stderr
    assert expected in stderr[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == before
    assert (not_lerobot / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_an_export(collected, tmp_path):
    out = export(collected, tmp_path / "again", "video=true")
    export(collected, out, "overwrite=true")
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["observation.image"]["dtype"] == "image" and not (out / "videos").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["again"]  # no temporary folder left behind
