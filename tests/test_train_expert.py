import io
import json
import zipfile

import torch
from conftest import TINY_PPO_HYPERPARAMS, run_module
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO

from experts.learning_curve import plot_learning_curve, read_monitors


def test_stopped_run_resumes_its_step_count_and_exports_zoo_layout(tmp_path):
    common = [
        "game=carracing",
        "algo=ppo",
        "fast_env=false",
        "save_every=64",
        "progress=false",
        f"run_dir={tmp_path / 'runs'}",
        f"out={tmp_path / 'ppo' / 'CarRacing-v3_1'}",
        TINY_PPO_HYPERPARAMS,
    ]
    first = run_module("experts.train", "steps=64", *common)
    assert first.returncode == 0, first.stderr
    second = run_module("experts.train", "steps=128", *common)
    assert second.returncode == 0, second.stderr
    assert "64 of 128 steps done" in second.stdout

    progress = json.loads((tmp_path / "runs" / "carracing_ppo_seed0" / "progress.json").read_text())
    assert progress["steps"] == 128
    assert [s["start_steps"] for s in progress["segments"]] == [0, 64]
    folder = tmp_path / "ppo" / "CarRacing-v3_1"
    for name in (
        "CarRacing-v3.zip",
        "CarRacing-v3/config.yml",
        "CarRacing-v3/args.yml",
        "CarRacing-v3/vecnormalize.pkl",
    ):
        assert (folder / name).is_file(), name
    assert PPO.load(folder / "CarRacing-v3.zip", device="cpu").num_timesteps == 128


def test_the_default_fast_env_is_registered_in_its_own_process(tmp_path):
    """fast_env=true (the default) trains on CarRacingFast-v3, which only envs.fast_car_racing registers."""
    out = tmp_path / "ppo_lstm" / "CarRacing-v3_1"
    result = run_module(
        "experts.train", "game=carracing", "steps=64", "progress=false", f"run_dir={tmp_path / 'runs'}", f"out={out}",
        TINY_PPO_HYPERPARAMS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    segments = json.loads((out / "progress.json").read_text())["segments"]
    assert [segment["env_id"] for segment in segments] == ["CarRacingFast-v3"]
    assert RecurrentPPO.load(out / "CarRacing-v3.zip", device="cpu").num_timesteps == 64


def write_monitor(path, t_start, rows):
    lines = [f'#{{"t_start": {t_start}, "env_id": "CarRacing-v3"}}', "r,l,t"] + [
        f"{r},{length},{t}" for r, length, t in rows
    ]
    path.write_text("\n".join(lines) + "\n")


def test_learning_curve_orders_episodes_of_all_envs_by_end_time(tmp_path):
    write_monitor(tmp_path / "0.monitor.csv", 100.0, [(1.0, 10, 5.0), (3.0, 10, 20.0)])
    write_monitor(tmp_path / "1.monitor.csv", 110.0, [(2.0, 30, 1.0)])  # ends at 111: second
    steps, returns = read_monitors(sorted(tmp_path.glob("*.monitor.csv")))
    assert steps.tolist() == [10, 40, 50]
    assert returns.tolist() == [1.0, 2.0, 3.0]
    assert plot_learning_curve(tmp_path, "test").is_file()


def test_learning_curve_without_finished_episodes_writes_nothing(tmp_path):
    write_monitor(tmp_path / "0.monitor.csv", 100.0, [])
    assert plot_learning_curve(tmp_path, "test") is None
    assert not (tmp_path / "learning_curve.png").exists()


def test_export_is_policy_only_and_continues_with_init(tmp_path):
    common = ["game=carracing", "algo=ppo", "fast_env=false", "save_every=64", "progress=false", TINY_PPO_HYPERPARAMS]
    first_out = tmp_path / "first" / "CarRacing-v3_1"
    first = run_module("experts.train", "steps=64", f"run_dir={tmp_path / 'a'}", f"out={first_out}", *common)
    assert first.returncode == 0, first.stderr
    agent = first_out / "CarRacing-v3.zip"
    with zipfile.ZipFile(agent) as archive:
        optimizer = torch.load(io.BytesIO(archive.read("policy.optimizer.pth")))
    assert optimizer["state"] == {} and optimizer["param_groups"]
    original = PPO.load(agent, device="cpu")
    assert original.num_timesteps == 64

    write_monitor(
        first_out / "0.monitor.csv", 100.0, [(-50.0, 40, 5.0)]
    )  # a finished training episode of the first run
    second_out = tmp_path / "second" / "CarRacing-v3_1"
    second = run_module(
        "experts.train", "steps=128", f"init={agent}", f"run_dir={tmp_path / 'b'}", f"out={second_out}", *common
    )
    assert second.returncode == 0, second.stderr
    assert "64 of 128 steps done" in second.stdout
    assert PPO.load(second_out / "CarRacing-v3.zip", device="cpu").num_timesteps == 128
    # The continuation carries the first run's history: its segments, wall time and training episodes.
    before, after = (json.loads((out / "progress.json").read_text()) for out in (first_out, second_out))
    assert [s["start_steps"] for s in after["segments"]] == [0, 64]
    assert after["wall_time_s"] > before["wall_time_s"]
    assert read_monitors(sorted(second_out.glob("*.monitor.csv")))[1].tolist() == [-50.0]
