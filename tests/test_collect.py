"""python -m collect and the dataset reader: real envs, real policies, real files.

Most runs call the command's entry point in this process (a new interpreter costs ~6 s of CPU to
import torch and SB3); the kill test and the damaged-file message run it as a real subprocess.
"""

import json
import shutil
import signal
import subprocess
import sys
import time

import minari
import numpy as np
import pytest
from conftest import REPO_ROOT, run_module
from hydra import compose, initialize_config_dir
from PIL import Image

from collect.__main__ import main
from collect.dataset import CollectedDataset, EpisodeError
from core.errors import UserError
from envs import get_game

SEEDS = [4, 5]  # random SpaceInvaders episodes of 353 and 329 steps: with 2 workers the second ends first
RANDOM_SI = ["game=spaceinvaders", "policy=random", f"episodes={len(SEEDS)}", f"seed={SEEDS[0]}"]
SI_EXPERT_ID = "expert-ppo-SpaceInvadersNoFrameskip-v4_1"
KILL_POLL_S = 0.05
KILL_AFTER_START_S = 0.1  # let the second episode get going (it plays in about half a second) before the kill
KILL_DEADLINE_S = 240


def run_main(*args: str) -> None:
    """`python -m collect ARGS` in this process: Hydra composes the same config, then the command's own main runs."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        main.__wrapped__(compose(config_name="collect", overrides=list(args)))


def collect_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`python -m collect ARGS` run in this process: (exit code, stdout, stderr)."""
    try:
        run_main(*args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def dataset_content(root) -> tuple[list, list]:
    """Everything the reader gives, per episode, plus each episode file's bytes."""
    dataset = CollectedDataset(root)
    episodes = []
    for index, info in enumerate(dataset.episodes):
        arrays = dataset.episode(index)
        episodes.append(
            (
                info.seed,
                info.length,
                info.episode_return,
                arrays.frames.tobytes(),
                arrays.actions.tobytes(),
                arrays.action_codes.tobytes(),
                arrays.rewards.tobytes(),
                arrays.terminations.tobytes(),
                arrays.truncations.tobytes(),
            )
        )
    files = [next((root / "data" / str(info.episode_id)).glob("*.arrow")).read_bytes() for info in dataset.episodes]
    return episodes, files


def indexed_seeds(root) -> list[int]:
    return [entry["seed"] for entry in json.loads((root / "data" / "metadata.json").read_text())["vlmplay"]["episodes"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The random SpaceInvaders dataset of SEEDS, collected uninterrupted with one worker."""
    out = tmp_path_factory.mktemp("collect") / "si"
    run_main(*RANDOM_SI, "workers=1", f"out={out}")
    return out


def test_dataset_is_lossless_minari_with_a_summary(reference):
    dataset = CollectedDataset(reference)
    assert dataset.seeds == SEEDS and dataset.policy_id == "random-spaceinvaders"
    minari_dataset = minari.MinariDataset(reference / "data")
    assert minari_dataset.total_episodes == len(SEEDS) and minari_dataset.total_steps == len(dataset)
    assert minari_dataset.storage.metadata["jpeg_encoding"] is False
    for index, (episode, info) in enumerate(zip(minari_dataset.iterate_episodes(), dataset.episodes)):
        arrays = dataset.episode(index)
        assert len(episode) == info.length
        assert episode.observations.shape == (info.length + 1, 210, 160, 3)
        assert np.array_equal(episode.observations, arrays.frames)
        assert np.array_equal(episode.actions, arrays.actions[:-1])
        assert np.array_equal(episode.infos["action_code"][:-1], arrays.action_codes[:-1])
        assert episode.terminations[-1] and not episode.terminations[:-1].any()
        assert episode.rewards.sum() == info.episode_return
    assert not (reference / ".staging").exists()

    summary = np.asarray(Image.open(reference / "summary.png").convert("RGB"))
    assert summary.shape[0] > 500 and summary.shape[1] > 500
    assert len(np.unique(summary.reshape(-1, 3), axis=0)) > 100  # game frames, not an empty figure


def test_reader_stacks_frames_with_first_frame_padding(reference):
    dataset = CollectedDataset(reference)
    first_length, second_length = (episode.length for episode in dataset.episodes)
    assert len(dataset) == first_length + second_length
    frames = dataset.episode(1).frames  # the second episode's single frames, as stored
    assert not frames.flags.owndata and not frames.flags.writeable  # a view of the memory-mapped file

    sample = dataset[first_length + 2]  # third step of the second episode
    assert (sample.seed, sample.step) == (SEEDS[1], 2)
    assert sample.frames.shape == (4, 210, 160, 3) and sample.frames.dtype == np.uint8
    assert np.array_equal(sample.frames, frames[[0, 0, 1, 2]])
    assert np.array_equal(dataset[first_length].frames, frames[[0, 0, 0, 0]])
    assert np.array_equal(dataset[first_length + 10].frames, frames[7:11])
    assert np.array_equal(dataset[-1].frames[-1], frames[-2])  # the last decision's frame; frames[-1] is Minari's extra
    assert dataset[first_length - 1].terminated and not dataset[first_length].terminated
    assert [(dataset[i].seed, dataset[i].step) for i in range(first_length - 1, first_length + 1)] == [
        (SEEDS[0], first_length - 1),
        (SEEDS[1], 0),
    ]
    assert np.array_equal(dataset.action_codes[:3], [dataset[i].action_code for i in range(3)])
    assert dataset[5].action_code == get_game("spaceinvaders").codec.encode(dataset[5].action)
    assert CollectedDataset(reference, n_stack=2)[first_length + 2].frames.shape == (2, 210, 160, 3)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_subset_by_seed_shares_the_mapped_episodes(reference):
    dataset = CollectedDataset(reference)
    held_out, rest = dataset.subset([SEEDS[1]]), dataset.subset([SEEDS[0]])
    assert rest.seeds == [SEEDS[0]] and held_out.seeds == [SEEDS[1]]
    assert len(rest) + len(held_out) == len(dataset)
    assert np.array_equal(held_out[2].frames, dataset[dataset.episodes[0].length + 2].frames)
    with pytest.raises(UserError, match="no episodes with seeds"):
        CollectedDataset(reference, seeds=[12345])
    assert CollectedDataset(reference, seeds=[SEEDS[1]]).seeds == [SEEDS[1]]


def test_two_workers_make_the_same_dataset(tmp_path, capsys, reference):
    out = tmp_path / "si"
    code, _, err = collect_cli(capsys, *RANDOM_SI, "workers=2", f"out={out}")
    assert code == 0, err
    assert dataset_content(out) == dataset_content(reference)


def test_killed_run_resumes_to_the_same_dataset(tmp_path, capsys, reference):
    out = tmp_path / "si"
    log = tmp_path / "log.txt"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "collect", *RANDOM_SI, f"out={out}"],
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        playing = out / ".staging" / f"episode1-seed{SEEDS[1]}"  # exists while the second episode is played
        deadline = time.monotonic() + KILL_DEADLINE_S
        while not playing.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(KILL_POLL_S)
        time.sleep(KILL_AFTER_START_S)
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert playing.exists() and indexed_seeds(out) == SEEDS[:1]
    (out / "data" / "1").mkdir()  # as a kill between an episode's move and the index update leaves it
    (out / "data" / "1" / "part-0.arrow").write_bytes(b"half")

    code, stdout, err = collect_cli(capsys, *RANDOM_SI, f"out={out}")
    assert code == 0, err
    assert f"already holds 1 of the {len(SEEDS)} seeds" in stdout
    assert not (out / ".staging").exists()
    assert dataset_content(out) == dataset_content(reference)

    code, stdout, _ = collect_cli(capsys, *RANDOM_SI, f"out={out}")
    assert code == 0 and "playing the other 0" in stdout


def test_damaged_episode_is_refused_by_name_then_repaired(tmp_path, capsys, reference):
    out = tmp_path / "si"
    shutil.copytree(reference, out)
    changed = next((out / "data" / "1").glob("*.arrow"))
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped frame byte: only the CRC32 can tell
    changed.write_bytes(bytes(data))
    with pytest.raises(EpisodeError, match=f"episode 1 \\(seed {SEEDS[1]}\\) in .*data/1 is damaged: .*CRC32"):
        CollectedDataset(out)

    before = {path: path.read_bytes() for path in (out / "data").rglob("*") if path.is_file()}
    refused = run_module("collect", *RANDOM_SI, f"out={out}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    lines = refused.stderr.strip().splitlines()  # a progress bar may precede the message
    assert [line for line in lines if "error" in line] == lines[-1:]
    assert lines[-1].startswith(f"error: episode 1 (seed {SEEDS[1]}) in {out / 'data' / '1'} is damaged")
    assert "repair=true" in lines[-1]
    assert {path: path.read_bytes() for path in (out / "data").rglob("*") if path.is_file()} == before

    truncated = next((out / "data" / "0").glob("*.arrow"))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(EpisodeError, match=f"episode 0 \\(seed {SEEDS[0]}\\) in .*data/0 is damaged"):
        CollectedDataset(out, verify=False)

    code, stdout, err = collect_cli(capsys, *RANDOM_SI, "repair=true", f"out={out}")
    assert code == 0, err
    assert f"re-collecting damaged episodes (seeds {SEEDS})" in stdout
    assert dataset_content(out) == dataset_content(reference)


def test_other_policy_is_refused(tmp_path, capsys, reference):
    out = tmp_path / "si"
    shutil.copytree(reference, out)
    before = (out / "data" / "metadata.json").read_bytes()
    code, _, err = collect_cli(capsys, "game=spaceinvaders", "policy=expert", "episodes=1", f"out={out}")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"error: {out} holds spaceinvaders episodes of random-spaceinvaders")
    assert SI_EXPERT_ID in err and "overwrite=true" in err
    assert (out / "data" / "metadata.json").read_bytes() == before


def test_codes_of_another_codec_are_refused(tmp_path, capsys, reference):
    out = tmp_path / "si"
    shutil.copytree(reference, out)
    metadata_path = out / "data" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["vlmplay"]["action_names"] = ["NOOP", "FIRE"]  # as if made with an older codec
    metadata_path.write_text(json.dumps(metadata))
    code, _, err = collect_cli(capsys, *RANDOM_SI, f"out={out}")
    assert code == 2
    assert "other action words than spaceinvaders's (its codec changed)" in err and "overwrite=true" in err
    assert json.loads(metadata_path.read_text()) == metadata


def test_carracing_expert_replaces_another_game_only_with_overwrite(tmp_path, capsys, reference, tiny_carracing_expert):
    out = tmp_path / "dataset"
    shutil.copytree(reference, out)
    carracing = ["game=carracing", f"expert={tiny_carracing_expert}", "episodes=1", "seed=4", f"out={out}"]
    code, _, err = collect_cli(capsys, *carracing)
    assert code == 2 and "holds spaceinvaders episodes" in err and "this run plays carracing" in err
    assert CollectedDataset(out).seeds == SEEDS

    code, _, err = collect_cli(capsys, *carracing, "overwrite=true")
    assert code == 0, err
    dataset = CollectedDataset(out)
    spec = get_game("carracing")
    assert dataset.policy_id == "expert-ppo_lstm-CarRacing-v3_1" and dataset.seeds == [4] and len(dataset) == 1000
    sample = dataset[999]
    assert sample.frames.shape == (2, 96, 96, 3) and sample.truncated and not sample.terminated
    actions = dataset.episode(0).actions[:-1]  # [1000, 3] float32 env actions
    assert actions.shape == (1000, 3) and actions.dtype == np.float32
    assert list(dataset.action_codes) == [spec.codec.encode(action) for action in actions]
    assert minari.MinariDataset(out / "data").recover_environment().spec.id == "CarRacing-v3"


@pytest.mark.parametrize(
    "args, message",
    [
        (["game=pong"], "unknown game 'pong'"),
        (["episodes=0"], "episodes=0"),
        (["workers=0"], "workers=0"),
        (["expert=/no/such/folder"], "expert folder /no/such/folder does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "dataset"
    code, _, err = collect_cli(capsys, *args, f"out={out}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"error: {message}")
    assert not out.exists()


def test_unwritable_or_foreign_output_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = collect_cli(capsys, "policy=random", f"out={blocker / 'dataset'}")
    assert code == 2 and "not a writable folder" in err

    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = collect_cli(capsys, "policy=random", "overwrite=true", f"out={tmp_path}")
    assert code == 2 and "holds no collected dataset (a_file, notes.txt)" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "notes.txt"]
