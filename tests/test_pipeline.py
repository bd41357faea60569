import numpy as np

from envs import get_game
from envs.pipeline import frame_tap, make_play_env


def test_spaceinvaders_pipeline_is_the_zoo_pipeline_with_raw_frames():
    spec = get_game("spaceinvaders")
    venv = make_play_env(spec, spec.pipeline, seed=1)
    agent_obs = venv.reset()
    tap = frame_tap(venv)
    assert agent_obs.shape == (1, 84, 84, 4)  # AtariWrapper: 84x84 grey, 4 stacked
    assert tap.frame.shape == spec.frame_shape and tap.frame.dtype == np.uint8
    total_clipped, episode = 0.0, None
    while episode is None:
        agent_obs, rewards, _, infos = venv.step(np.array([1]))  # FIRE
        total_clipped += float(rewards[0])
        episode = infos[0].get("episode")
    # The expert sees clipped rewards; the score (Monitor, below the wrappers) is the raw game score.
    assert episode["r"] > total_clipped > 0
    venv.close()


def test_frame_tap_max_pools_the_last_two_raw_frames_for_atari():
    spec = get_game("spaceinvaders")
    venv = make_play_env(spec, spec.pipeline, seed=2)
    venv.reset()
    tap = frame_tap(venv)
    steps_with_flicker = 0
    for _ in range(50):
        venv.step(np.array([1]))
        np.testing.assert_array_equal(tap.frame, np.maximum(tap._previous, tap._latest))
        steps_with_flicker += not np.array_equal(tap._previous, tap._latest)
    assert steps_with_flicker > 0  # sprites drawn on alternate raw frames: pooling keeps both
    venv.close()


def test_carracing_pipeline_same_seed_same_frames():
    spec = get_game("carracing")
    frames = []
    for _ in range(2):
        venv = make_play_env(spec, spec.pipeline, seed=7)
        agent_obs = venv.reset()
        assert agent_obs.shape == (1, 64, 64, 2)  # ppo_lstm recipe: 64x64 grey, 2 stacked
        for _ in range(60):
            venv.step(np.array([[0.0, 1.0, 0.0]]))
        frames.append(frame_tap(venv).frame.copy())
        venv.close()
    assert frames[0].shape == (96, 96, 3)
    np.testing.assert_array_equal(frames[0], frames[1])
