import json

from stable_baselines3 import PPO

from conftest import TINY_PPO_HYPERPARAMS, run_module


def test_stopped_run_resumes_its_step_count_and_exports_zoo_layout(tmp_path):
    common = ["game=carracing", "algo=ppo", "fast_env=false", "save_every=64", "progress=false",
              f"run_dir={tmp_path / 'runs'}", f"out={tmp_path / 'ppo' / 'CarRacing-v3_1'}", TINY_PPO_HYPERPARAMS]
    first = run_module("collect.train_expert", "steps=64", *common)
    assert first.returncode == 0, first.stderr
    second = run_module("collect.train_expert", "steps=128", *common)
    assert second.returncode == 0, second.stderr
    assert "64 of 128 steps done" in second.stdout

    progress = json.loads((tmp_path / "runs" / "carracing_ppo_seed0" / "progress.json").read_text())
    assert progress["steps"] == 128
    assert [s["start_steps"] for s in progress["segments"]] == [0, 64]
    folder = tmp_path / "ppo" / "CarRacing-v3_1"
    for name in ("CarRacing-v3.zip", "CarRacing-v3/config.yml", "CarRacing-v3/args.yml", "CarRacing-v3/vecnormalize.pkl"):
        assert (folder / name).is_file(), name
    assert PPO.load(folder / "CarRacing-v3.zip", device="cpu").num_timesteps == 128
