"""Minari's own clients open collected datasets: load_dataset, list_local_datasets, the `minari` CLI, and
recover_environment, whose env replays a dataset's actions into its frames. Real collections, real minari.
"""

import json
import os
import shutil
import subprocess
import sys

import gymnasium as gym
import minari
import numpy as np
import pytest
from conftest import REPO_ROOT, run_command

import collect.__main__
from collect.dataset import CollectedDataset

RANDOM_SI = ["game=spaceinvaders", "policy=random", "episodes=2", "seed=4"]  # random games of 353 and 329 steps
RANDOM_CR = ["game=carracing", "policy=random", "episodes=1", "seed=3"]  # leaves the field after 683 steps
MINARI_CLI = os.path.join(os.path.dirname(sys.executable), "minari")  # the console script minari installs


def collect_into(out, *args: str) -> str:
    """`python -m collect ARGS out=OUT` in this process; returns the dataset's Minari id."""
    run_command(collect.__main__.main, "collect", *args, f"out={out}")
    return json.loads((out / "data" / "metadata.json").read_text())["dataset_id"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """MINARI_DATASETS_PATH, a fresh folder, for this module's collections and Minari calls."""
    root = tmp_path_factory.mktemp("minari_datasets")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        yield root


@pytest.fixture(scope="module")
def spaceinvaders(registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "si"
    return out, collect_into(out, *RANDOM_SI)


@pytest.fixture(scope="module")
def carracing(registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "cr"
    return out, collect_into(out, *RANDOM_CR)


def minari_cli(registry, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {
        "MINARI_DATASETS_PATH": str(registry),
        "COLUMNS": "250",  # rich cuts table cells to the terminal's width
        "PYTHONPATH": str(REPO_ROOT),  # `minari show` builds the env, whose wrapper lives in envs.pipeline
    }
    return subprocess.run([MINARI_CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def test_each_out_has_its_own_id_that_load_dataset_finds(registry, spaceinvaders, tmp_path):
    out, dataset_id = spaceinvaders
    assert dataset_id.startswith("vlmplay/spaceinvaders/random-si-") and dataset_id.endswith("-v0")
    dataset = minari.load_dataset(dataset_id)
    assert dataset.id == dataset_id and dataset.total_episodes == 2
    assert (registry / dataset_id / "data").resolve() == (out / "data").resolve()

    other_id = collect_into(tmp_path / "si", *RANDOM_SI[:2], "episodes=1", "seed=4")  # same name, another place
    assert other_id != dataset_id
    assert collect_into(out, *RANDOM_SI) == dataset_id  # collecting again (nothing to play) keeps the id
    assert {dataset_id, other_id} <= set(minari.list_local_datasets())


def test_minari_cli_lists_and_shows_the_datasets(registry, spaceinvaders, carracing):
    listed = minari_cli(registry, "list", "local")
    assert listed.returncode == 0, listed.stderr
    assert spaceinvaders[1] in listed.stdout and carracing[1] in listed.stdout
    shown = minari_cli(registry, "show", spaceinvaders[1])
    assert shown.returncode == 0, shown.stderr
    assert spaceinvaders[1] in shown.stdout and "envs.pipeline:PlayedEnv" in shown.stdout
    assert "Box(0, 255, (210, 160, 3), uint8)" in shown.stdout


@pytest.mark.parametrize("game", ["spaceinvaders", "carracing"])
def test_recovered_env_replays_the_actions_into_the_stored_frames(request, game):
    dataset = minari.load_dataset(request.getfixturevalue(game)[1])
    env = dataset.recover_environment()
    seeds = [episode["seed"] for episode in dataset.storage.get_episode_metadata(dataset.episode_indices)]
    for episode, seed in zip(dataset.iterate_episodes(), seeds):
        frame, _ = env.reset(seed=seed)
        frames, rewards, terminations, truncations = [frame], [], [], []
        for action in episode.actions:
            frame, reward, terminated, truncated, _ = env.step(action)
            frames.append(frame)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
        length = len(episode.actions)
        # Every frame a decision was taken on, bit for bit; the stored one after the last action repeats the
        # last decision's (the play loop had reset the game by then), so it is not the replay's.
        assert np.array_equal(np.stack(frames[:length]), episode.observations[:length])
        assert np.array_equal(episode.observations[length], episode.observations[length - 1])
        assert terminations == list(episode.terminations) and truncations == list(episode.truncations)
        # The stored final reward is Monitor's episode return (rounded to 6 decimals) minus the score before it.
        assert rewards[:-1] == list(episode.rewards[:-1])
        assert rewards[-1] == pytest.approx(episode.rewards[-1], abs=1e-6)
    env.close()


def test_registrations_follow_overwrites_and_vanish_with_their_dataset(registry, carracing, tmp_path):
    out = tmp_path / "dataset"
    shutil.copytree(carracing[0], out)
    carracing_id = collect_into(out, *RANDOM_CR)  # nothing to play: the copy is registered under its own id
    assert carracing_id != carracing[1] and minari.load_dataset(carracing[1]).total_episodes == 1
    spaceinvaders_id = collect_into(out, *RANDOM_SI[:2], "episodes=1", "seed=4", "overwrite=true")
    assert spaceinvaders_id.startswith("vlmplay/spaceinvaders/random-dataset-")
    assert not (registry / carracing_id).exists()  # its out holds another dataset now

    minari.delete_dataset(spaceinvaders_id)  # Minari deletes the registration, never the dataset behind it
    assert CollectedDataset(out).seeds == [4]
    gone = tmp_path / "gone"
    gone_id = collect_into(gone, *RANDOM_SI[:2], "episodes=1", "seed=4")
    shutil.rmtree(gone)
    assert gone_id not in minari.list_local_datasets()
    assert collect_into(out, *RANDOM_SI[:2], "episodes=1", "seed=4") == spaceinvaders_id
    assert minari.load_dataset(spaceinvaders_id).total_episodes == 1
    assert not (registry / gone_id).exists()  # registering removes the registrations of deleted datasets


def test_dataset_collected_before_ids_and_wrappers_gets_them_when_collected_again(spaceinvaders, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(spaceinvaders[0], out)
    metadata_path = out / "data" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["dataset_id"] = "vlmplay/spaceinvaders/random-spaceinvaders-v0"  # what every dataset had
    metadata["env_spec"] = gym.spec("SpaceInvadersNoFrameskip-v4").to_json()
    metadata_path.write_text(json.dumps(metadata))
    before = CollectedDataset(out)
    assert minari.MinariDataset(out / "data").recover_environment().spec.additional_wrappers == ()

    dataset_id = collect_into(out, *RANDOM_SI)
    assert dataset_id != metadata["dataset_id"] and minari.load_dataset(dataset_id).total_steps == len(before)
    wrappers = minari.load_dataset(dataset_id).recover_environment().spec.additional_wrappers
    assert [wrapper.name for wrapper in wrappers] == ["PlayedEnv"]


def test_a_foreign_dataset_at_the_id_is_refused_before_any_episode(registry, tmp_path, capsys):
    out = tmp_path / "si"
    collect_into(out, *RANDOM_SI[:2], "episodes=1", "seed=4")
    dataset_id = json.loads((out / "data" / "metadata.json").read_text())["dataset_id"]
    link = registry / dataset_id / "data"
    link.unlink()
    link.mkdir()  # a real dataset folder, not vlmplay's link
    with pytest.raises(SystemExit) as exit_:
        run_command(collect.__main__.main, "collect", *RANDOM_SI, f"out={out}")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and "did not register" in err[-1] and err[-1].startswith("error: ")
    assert CollectedDataset(out).seeds == [4]
    link.rmdir()
