import json

import pytest
from conftest import run_module


@pytest.mark.parametrize(
    "args, message",
    [
        (["game=pong"], "unknown game 'pong'"),
        (["episodes=0"], "episodes=0"),
        (["policy=expert", "expert=/no/such/folder"], "expert folder /no/such/folder does not exist"),
        (["expert=/some/folder"], "expert=/some/folder is read by policy=dagger|expert, not by policy=vlm"),
        (
            ["policy=random", "checkpoint=/some/folder"],
            "checkpoint=/some/folder is read by policy=bc|dagger|vlm, not by",
        ),
        (["policy=dqn"], "unknown policy 'dqn'"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "results"
    result = run_module("eval", *args, f"out={out}", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_unwritable_output_is_refused_before_playing(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_module("eval", "policy=random", f"out={blocker / 'results'}", timeout=120)
    assert result.returncode == 2 and "not a writable folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_random_policy_same_seeds_same_returns_with_videos(tmp_path):
    reports = []
    for run in ("first", "second"):
        out = tmp_path / run
        result = run_module(
            "eval", "game=spaceinvaders", "policy=random", "episodes=2", "seed=500", f"out={out}", timeout=300
        )
        assert result.returncode == 0, result.stderr
        reports.append(json.loads((out / "results.json").read_text()))
        assert sorted(p.name for p in out.glob("*.mp4")) == ["episode_seed500.mp4", "episode_seed501.mp4"]
        assert (out / "returns.png").stat().st_size > 0
    first, second = reports
    assert first["seeds"] == [500, 501]
    assert [e["return"] for e in first["episodes"]] == [e["return"] for e in second["episodes"]]
    assert first["return"]["min"] <= first["return"]["mean"] <= first["return"]["max"]
    assert first["versions"]["gymnasium"] and first["env_steps_per_s"] > 0
    stats = first["return"]
    assert stats["ci95_low"] <= stats["mean"] <= stats["ci95_high"] and 0 < stats["expert_fraction"] < 1
    assert "human_normalised" in stats and "iqm" in stats


def test_recurrent_carracing_expert_end_to_end(tmp_path, tiny_carracing_expert):
    out = tmp_path / "cr"
    result = run_module(
        "eval",
        "game=carracing",
        "policy=expert",
        f"expert={tiny_carracing_expert}",
        "episodes=1",
        "video=false",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "results.json").read_text())
    assert report["policy"] == "expert-ppo_lstm-CarRacing-v3_1" and report["episodes"][0]["length"] == 1000
    assert not list(out.glob("*.mp4"))
