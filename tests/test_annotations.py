"""Game-object annotations: `python -m collect.annotate` on real collections (random play, real envs), read back
with collect.annotations and checked against the stored pixels and the games' geometry."""

import json
import shutil
import subprocess
import sys
import zlib
from dataclasses import replace

import numpy as np
import pytest
from conftest import REPO_ROOT, run_command
from tqdm import tqdm

import collect.__main__
import collect.annotate
from collect.annotations import (
    LABELS,
    PHRASE_CLASSES,
    AnnotatedFrames,
    annotations_dir,
    episode_file,
    referring_phrases,
)
from collect.dataset import CollectedDataset
from core.errors import UserError
from envs.objects.spaceinvaders import COLOURS, GROUND_TOP, SCORE_ROWS

RANDOM_SI = ["game=spaceinvaders", "policy=random", "episodes=2", "seed=4"]  # random games of 353 and 329 steps
RANDOM_CR = ["game=carracing", "policy=random", "episodes=1", "seed=3"]  # leaves the field after 683 steps
CAR_CENTRE = (48, 72)  # (x, y): the camera keeps the car's hull at the canvas's (W/2, 3H/4), here in 96x96
CAR_CENTRE_TOLERANCE_PX = 4
HULL_RED, HULL_RED_TOLERANCE = 204, 16  # the hull's red channel, as smoothscale leaves it (202)
ZOOM_STEPS = 50  # the first second of CarRacing zooms in: the car is not at its place yet
DASHBOARD_TOP = 84  # of 96 rows: the bar covers the bottom 5/40 of the frame


def collect_into(out, *args: str):
    run_command(collect.__main__.main, "collect", *args, f"out={out}")
    return out


def annotate(*overrides: str) -> None:
    run_command(collect.annotate.main, "annotate", *overrides)


def annotate_fails(capsys, *overrides: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        annotate(*overrides)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def spaceinvaders(tmp_path_factory):
    out = collect_into(tmp_path_factory.mktemp("annotate") / "si", *RANDOM_SI)
    annotate(f"src={out}")
    return out


@pytest.fixture(scope="module")
def carracing(tmp_path_factory):
    out = collect_into(tmp_path_factory.mktemp("annotate") / "cr", *RANDOM_CR)
    annotate(f"src={out}")
    return out


def check_layout(frames: AnnotatedFrames, index: int) -> None:
    """What holds for every game: masks disjoint, boxes their bounding boxes, the instance map their union."""
    objects = frames.objects(index)
    covered = np.zeros(frames.frame(index).shape[:2], dtype=np.int32)
    for item in objects:
        ys, xs = np.nonzero(item.mask)
        assert item.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert item.label in LABELS[frames.game]
        covered += item.mask
    assert covered.max() <= 1
    instances = frames.instances(index)
    assert np.array_equal(instances > 0, covered > 0)
    for k, item in enumerate(objects, start=1):
        assert np.array_equal(instances == k, item.mask)


def test_spaceinvaders_objects_are_the_pixels_and_the_formation(spaceinvaders):
    frames = AnnotatedFrames(spaceinvaders)
    dataset = CollectedDataset(spaceinvaders)
    assert frames.game == "spaceinvaders" and len(frames) == len(dataset) == 353 + 329
    assert np.array_equal(frames.frame(0), dataset[0].frames[-1])
    first = frames.objects(0)
    counts = {label: sum(item.label == label for item in first) for label in LABELS["spaceinvaders"]}
    assert counts["alien"] == 36 and counts["shield"] == 3 and counts["cannon"] == 1
    aliens = [item for item in first if item.label == "alien"]
    top_y = {row: min(item.box[1] for item in aliens if item.row == row) for row in range(1, 7)}
    assert all(sum(item.row == row for item in aliens) == 6 for row in range(1, 7))
    assert [top_y[row] for row in range(1, 7)] == sorted(top_y.values())  # row 1 at the top

    covered, coloured = 0, 0
    for index in range(0, len(frames), 7):
        check_layout(frames, index)
        frame, objects = frames.frame(index), frames.objects(index)
        for item in objects:  # every object pixel has its class's colour
            assert (frame[item.mask] == COLOURS[item.label]).all()
        # The pixels of the objects' colours between the scores and the ground are the objects' pixels.
        play = slice(SCORE_ROWS, GROUND_TOP)
        for colour in set(COLOURS.values()):
            pixels = (frame[play] == colour).all(-1)
            owners = np.any([item.mask[play] for item in objects if COLOURS[item.label] == colour], axis=0)
            covered, coloured = covered + (pixels & owners).sum(), coloured + pixels.sum()
    assert covered / coloured > 0.995

    meta = json.loads((annotations_dir(spaceinvaders) / "meta.json").read_text())
    assert meta["source"] == "ale-ram" and meta["labels"] == list(LABELS["spaceinvaders"])
    assert meta["checks"]["explained"]["fraction"] > 0.99
    assert meta["checks"]["found/alien"]["fraction"] == 1.0


def test_referring_phrases_name_the_objects_they_cover(spaceinvaders):
    frames = AnnotatedFrames(spaceinvaders)
    objects = frames.objects(0)
    phrases = referring_phrases("spaceinvaders", objects)
    assert set(phrases) <= set(PHRASE_CLASSES)
    row3 = np.any([item.mask for item in objects if item.row == 3], axis=0)
    assert np.array_equal(phrases["the aliens in row 3"], row3)
    assert np.array_equal(phrases["the aliens in the bottom row"], phrases["the aliens in row 6"])
    assert np.array_equal(phrases["the aliens in the top row"], phrases["the aliens in row 1"])
    assert np.array_equal(phrases["the aliens"], np.any([item.mask for item in objects if item.label == "alien"], 0))
    assert "the UFO" not in phrases and phrases["the player's cannon"].sum() > 0


def test_carracing_labels_are_the_track_and_the_car(carracing):
    frames = AnnotatedFrames(carracing)
    assert frames.game == "carracing" and len(frames) == 683
    meta = json.loads((annotations_dir(carracing) / "meta.json").read_text())
    assert meta["source"] == "track-geometry"
    for label in LABELS["carracing"]:  # where a class covers a stored pixel whole, its colour is the class's
        assert meta["checks"][f"agreement whole pixels/{label}"]["fraction"] > 0.99, label
    assert meta["checks"]["agreement/road"]["fraction"] > 0.98 and meta["checks"]["agreement/grass"]["fraction"] > 0.98
    for index in range(ZOOM_STEPS, len(frames), 31):
        check_layout(frames, index)
        objects = {item.label: item for item in frames.objects(index)}
        assert not frames.instances(index)[DASHBOARD_TOP:].any()  # the dashboard is label 0
        car = objects["car"].mask
        ys, xs = np.nonzero(car)
        assert abs(xs.mean() - CAR_CENTRE[0]) < CAR_CENTRE_TOLERANCE_PX
        assert abs(ys.mean() - CAR_CENTRE[1]) < CAR_CENTRE_TOLERANCE_PX
        red, green, blue = np.moveaxis(frames.frame(index).astype(int), -1, 0)
        hull_red = (abs(red - HULL_RED) <= HULL_RED_TOLERANCE) & (green + blue <= HULL_RED_TOLERANCE)
        hull_red[DASHBOARD_TOP:] = False  # the dashboard's gyroscope bar is red too
        assert hull_red.any() and car[hull_red].all()  # the hull's red (not the kerb's 255) is car


def test_resumes_redoes_damaged_episodes_and_the_reader_refuses_them(spaceinvaders, tmp_path, capsys):
    out = tmp_path / "si"
    shutil.copytree(spaceinvaders, out)
    first, second = episode_file(out, 0), episode_file(out, 1)
    kept = first.stat().st_mtime_ns
    second.write_bytes(second.read_bytes()[:-10])
    with pytest.raises(UserError, match=r"damaged .*python -m collect\.annotate src="):
        AnnotatedFrames(out)
    annotate(f"src={out}")
    assert first.stat().st_mtime_ns == kept  # whole: not annotated again
    assert second.read_bytes() == episode_file(spaceinvaders, 1).read_bytes()  # deterministic
    meta = json.loads((annotations_dir(out) / "meta.json").read_text())
    assert meta["episodes"]["1"]["crc32"] == zlib.crc32(second.read_bytes())
    assert len(AnnotatedFrames(out)) == len(AnnotatedFrames(spaceinvaders))


def test_refuses_what_it_cannot_annotate_or_read(spaceinvaders, carracing, tmp_path, capsys):
    bare = tmp_path / "bare"
    collect_into(bare, *RANDOM_SI[:2], "episodes=1", "seed=4")
    with pytest.raises(UserError, match=f"run `python -m collect.annotate src={bare}`"):
        AnnotatedFrames(bare)
    assert "not a collected dataset" in annotate_fails(capsys, f"src={tmp_path}")
    assert not (tmp_path / "annotations").exists()

    shutil.copytree(annotations_dir(carracing), annotations_dir(bare))  # another game's annotations
    assert "annotations of 'carracing'" in annotate_fails(capsys, f"src={bare}")
    with pytest.raises(UserError, match="annotations are of 'carracing'"):
        AnnotatedFrames(bare)
    annotate(f"src={bare}", "overwrite=true")
    assert AnnotatedFrames(bare).game == "spaceinvaders"

    dataset = CollectedDataset(carracing)
    dataset.episodes[0] = replace(dataset.episodes[0], seed=dataset.episodes[0].seed + 1)  # another track
    env = collect.annotate.replay_env(carracing, "carracing")
    with pytest.raises(UserError, match="gives another frame at step"), tqdm(disable=True) as bar:
        collect.annotate.annotate_episode(env, dataset, 0, bar)
    env.close()


def test_overview_png_and_held_out_seeds(spaceinvaders, tmp_path):
    png = tmp_path / "docs" / "si.png"
    annotate(f"src={spaceinvaders}", f"png={png}")
    assert png.stat().st_size > 0
    held_out = AnnotatedFrames(spaceinvaders, held_out=[5])
    assert len(held_out) == 353 and {held_out.seed_of(i) for i in range(0, len(held_out), 50)} == {4}
    assert AnnotatedFrames(spaceinvaders, seeds=[5]).seed_of(0) == 5


def test_the_reader_imports_no_gymnasium():
    code = (
        "import sys, collect.annotations\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'gymnasium', 'ale_py', 'pygame'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
