"""CarRacingFast-v3 must be indistinguishable from Gymnasium's CarRacing-v3.

Every comparison is exact: ``np.array_equal`` on observations and ``==`` on
rewards, terminated, truncated and infos, at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pygame
import pytest
from pygame import gfxdraw

from envs.fast_car_racing import (
    BAR_TOP,
    BASE_CAR_RACING_ID,
    FAST_CAR_RACING_ID,
    FastFrameSkip,
    _encloses_screen,
    _pygame_rotation,
    register_fast_car_racing,
)

SEEDS = [0, 1, 2]
FULL_STEPS = 1000
CONTROLLER_STRETCH = 60  # steps of track following ...
RANDOM_STRETCH = 20  # ... then steps of random actions, repeated
LOOKAHEAD_TILES = 3
STEER_GAIN = 2.0
TARGET_SPEED = 30.0
CRUISE_GAS = 0.3
# Straight ahead at this gas the car leaves the playfield after ~350 steps.
OFF_PLAYFIELD_GAS = 0.2
# A full-length mixed rollout must get round a good part of the track.
MIN_TILES_VISITED = 100

register_fast_car_racing()


def mixed_actions(env: gym.Env, seed: int) -> Callable[[], np.ndarray]:
    """Actions for the episode ``env`` was just reset into.

    Alternates a track-following controller (steer toward a tile a few ahead
    of the nearest one, gas below a target speed) with seeded uniform random
    actions, so the car drives along the road, visits tiles and skids.
    """
    base = env.unwrapped
    rng = np.random.default_rng(seed)
    track_xy = np.array([(x, y) for _, _, x, y in base.track])
    step = 0

    def next_action() -> np.ndarray:
        nonlocal step
        step += 1
        if step % (CONTROLLER_STRETCH + RANDOM_STRETCH) >= CONTROLLER_STRETCH:
            return rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32)
        hull = base.car.hull
        x, y = hull.position
        nearest = int(np.argmin(np.sum((track_xy - (x, y)) ** 2, axis=1)))
        tx, ty = track_xy[(nearest + LOOKAHEAD_TILES) % len(track_xy)]
        # The car faces its local +y axis.
        error = math.atan2(ty - y, tx - x) - (hull.angle + math.pi / 2)
        error = (error + math.pi) % (2 * math.pi) - math.pi
        steer = float(np.clip(-STEER_GAIN * error, -1, 1))
        speed = float(np.linalg.norm(hull.linearVelocity))
        gas = CRUISE_GAS if speed < TARGET_SPEED else 0.0
        return np.array([steer, gas, 0.0], dtype=np.float32)

    return next_action


def straight_actions(env: gym.Env, seed: int) -> Callable[[], np.ndarray]:
    action = np.array([0.0, OFF_PLAYFIELD_GAS, 0.0], dtype=np.float32)
    return lambda: action


class Rollout(NamedTuple):
    steps: int  # agent steps compared
    frames: int  # env frames simulated (more than steps under a frame skip)
    tiles_visited: int


def assert_same_step(expected, actual, where: str):
    obs_e, reward_e, terminated_e, truncated_e, info_e = expected
    obs_a, reward_a, terminated_a, truncated_a, info_a = actual
    assert np.array_equal(obs_e, obs_a), f"observation differs at {where}"
    assert obs_e.dtype == obs_a.dtype and obs_e.shape == obs_a.shape, where
    assert reward_e == reward_a, f"reward {reward_e} != {reward_a} at {where}"
    assert terminated_e == terminated_a, f"terminated differs at {where}"
    assert truncated_e == truncated_a, f"truncated differs at {where}"
    assert info_e == info_a, f"info {info_e} != {info_a} at {where}"


def assert_same_rollout(
    seed: int,
    steps: int,
    policy: Callable[[gym.Env, int], Callable[[], np.ndarray]] = mixed_actions,
    wrap_reference: Callable[[gym.Env], gym.Env] = lambda env: env,
    wrap_fast: Callable[[gym.Env], gym.Env] = lambda env: env,
    compare_render: bool = False,
    **make_kwargs,
) -> Rollout:
    """Step both envs with the same actions until the episode ends."""
    reference = wrap_reference(gym.make(BASE_CAR_RACING_ID, **make_kwargs))
    fast = wrap_fast(gym.make(FAST_CAR_RACING_ID, **make_kwargs))
    obs_r, info_r = reference.reset(seed=seed)
    obs_f, info_f = fast.reset(seed=seed)
    assert np.array_equal(obs_r, obs_f), f"reset observation differs (seed {seed})"
    assert info_r == info_f
    next_action = policy(reference, seed)
    for t in range(steps):
        action = next_action()
        where = f"seed {seed}, step {t}"
        result = reference.step(action)
        assert_same_step(result, fast.step(action), where)
        if compare_render:
            assert np.array_equal(reference.render(), fast.render()), where
        if result[2] or result[3]:
            break
    rollout = Rollout(
        steps=t + 1,
        frames=reference.get_wrapper_attr("_elapsed_steps"),
        tiles_visited=reference.unwrapped.tile_visited_count,
    )
    reference.close()
    fast.close()
    return rollout


@pytest.mark.parametrize("seed", SEEDS)
def test_rollout_identical(seed):
    rollout = assert_same_rollout(seed, FULL_STEPS)
    assert rollout.steps == FULL_STEPS
    assert rollout.tiles_visited >= MIN_TILES_VISITED


def test_drive_off_playfield_identical():
    """Termination with -100 while the playfield's edge is on screen."""
    rollout = assert_same_rollout(0, FULL_STEPS, policy=straight_actions)
    assert rollout.steps < FULL_STEPS


def test_rgb_array_render_identical():
    """``render()`` (600x400, with skid marks) matches as well."""
    assert_same_rollout(3, 200, compare_render=True, render_mode="rgb_array")


def test_domain_randomize_identical():
    assert_same_rollout(4, 200, domain_randomize=True)


def test_tall_indicators_identical():
    """ABS indicators taller than the black bar reach into the track view."""
    reference, fast = gym.make(BASE_CAR_RACING_ID), gym.make(FAST_CAR_RACING_ID)
    reference.reset(seed=5)
    fast.reset(seed=5)
    action = np.array([0.0, 0.0, 0.0], dtype=np.float32)
    for t in range(60):
        if t % 20 == 10:
            for env in (reference, fast):
                for i, wheel in enumerate(env.unwrapped.car.wheels):
                    wheel.omega = (-1) ** i * 300.0 * (t // 10)
        assert_same_step(reference.step(action), fast.step(action), f"step {t}")
    assert fast.unwrapped._indicators_top() < BAR_TOP


def zoo_frame_skip(skip: int) -> Callable[[gym.Env], gym.Env]:
    from rl_zoo3.wrappers import FrameSkip

    return lambda env: FrameSkip(env, skip=skip)


def fast_frame_skip(skip: int) -> Callable[[gym.Env], gym.Env]:
    return lambda env: FastFrameSkip(env, skip=skip)


@pytest.mark.parametrize(
    "skip, seed, policy",
    [
        # Leaves the playfield on frame 353, a skipped frame.
        (2, 0, straight_actions),
        # The time limit truncates on frame 1000 = 3 * 333 + 1, a skipped one.
        (3, 1, mixed_actions),
    ],
)
def test_fast_frame_skip_matches_zoo_frame_skip(skip, seed, policy):
    rollout = assert_same_rollout(
        seed,
        FULL_STEPS,
        policy=policy,
        wrap_reference=zoo_frame_skip(skip),
        wrap_fast=fast_frame_skip(skip),
    )
    # The episode ended early, on a frame whose observation was not drawn
    # until FastFrameSkip asked for it.
    assert rollout.frames % skip != 0


def test_fast_frame_skip_refuses_observation_wrappers():
    env = gym.wrappers.GrayscaleObservation(gym.make(FAST_CAR_RACING_ID))
    with pytest.raises(TypeError):
        FastFrameSkip(env, skip=2)
    with pytest.raises(TypeError):
        FastFrameSkip(gym.make(BASE_CAR_RACING_ID), skip=2)


def test_registration_is_idempotent_and_mirrors_car_racing():
    register_fast_car_racing()
    register_fast_car_racing()
    fast, base = gym.spec(FAST_CAR_RACING_ID), gym.spec(BASE_CAR_RACING_ID)
    assert fast.max_episode_steps == base.max_episode_steps == 1000
    assert fast.reward_threshold == base.reward_threshold
    assert fast.kwargs == base.kwargs


# The premises the renderer's exactness rests on, checked directly so that a
# pygame upgrade that breaks one fails here with a clear name.


def test_rotation_matches_pygame_bit_for_bit():
    rng = np.random.default_rng(0)
    quarter = math.pi / 2
    angles = list(rng.uniform(-50, 50, 200)) + [k * quarter + d for k in range(-8, 9) for d in (0.0, 1e-7, -1e-7, 1e-5)]
    points = rng.uniform(-500, 500, (64, 2))
    for angle in angles:
        cos_a, sin_a = _pygame_rotation(angle)
        x, y = points[:, 0], points[:, 1]
        ours = np.stack([cos_a * x - sin_a * y, sin_a * x + cos_a * y], axis=1)
        theirs = [tuple(pygame.math.Vector2(p).rotate_rad(angle)) for p in points]
        assert np.array_equal(ours, np.array(theirs)), angle


def test_enclosing_background_quad_only_fills_the_screen():
    rng = np.random.default_rng(0)
    w, h = 1000, 800
    drawn, filled = pygame.Surface((w, h)), pygame.Surface((w, h))
    screen = np.array([(w, h), (w, 0), (0, 0), (0, h)], dtype=float)
    outward = np.array([(1, 1), (1, -1), (-1, -1), (-1, 1)], dtype=float)
    enclosing = 0
    for _ in range(300):
        # Corners pushed out by a few pixels: around the enclosing threshold.
        quad = screen + outward * rng.uniform(2, 16, (4, 2))
        quad = [tuple(p) for p in quad.tolist()]
        if not _encloses_screen(quad):
            continue
        enclosing += 1
        color = rng.uniform(0, 210, 3)
        drawn.fill((0, 0, 0))
        gfxdraw.aapolygon(drawn, quad, color)
        gfxdraw.filled_polygon(drawn, quad, color)
        filled.fill((0, 0, 0))
        gfxdraw.pixel(filled, 0, 0, color)
        filled.fill(filled.get_at((0, 0)))
        assert np.array_equal(pygame.surfarray.pixels3d(drawn), pygame.surfarray.pixels3d(filled)), quad
    assert enclosing > 20


def test_smoothscale_is_a_row_pass_then_a_column_pass():
    rng = np.random.default_rng(0)
    image = pygame.Surface((1000, 800))
    pygame.surfarray.pixels2d(image)[...] = rng.integers(0, 2**32, (1000, 800), dtype=np.uint32)
    for size in [(96, 96), (600, 400)]:
        rows_first = pygame.transform.smoothscale(pygame.transform.smoothscale(image, (size[0], 800)), size)
        assert np.array_equal(
            pygame.surfarray.pixels3d(pygame.transform.smoothscale(image, size)),
            pygame.surfarray.pixels3d(rows_first),
        )


EXPERT_SEEDS = [0, 1, 2]
EXPERT_STEPS = 300


@pytest.mark.parametrize("seed", EXPERT_SEEDS)
def test_expert_pipeline_identical(seed, tiny_carracing_expert):
    """A real RL-Zoo3 agent, in its own wrapper pipeline, sees and earns the same in both envs."""
    from agents import Observation
    from agents.expert_policy import ExpertPolicy
    from envs import get_game
    from envs.pipeline import frame_tap, make_play_env

    spec = get_game("carracing")

    trajectories = []
    for env_id in (BASE_CAR_RACING_ID, FAST_CAR_RACING_ID):
        policy = ExpertPolicy(tiny_carracing_expert, spec)
        venv = make_play_env(spec, policy.pipeline, seed, env_id=env_id, stats_dir=policy.stats_dir)
        tap = frame_tap(venv)
        policy.reset(seed)
        agent_obs, episode_start, steps = venv.reset(), True, []
        for _ in range(EXPERT_STEPS):
            action = policy.act(Observation(tap.frame, agent_obs, episode_start))
            agent_obs, rewards, dones, _ = venv.step(np.array([action]))
            episode_start = bool(dones[0])
            steps.append((tap.frame.copy(), agent_obs.copy(), np.copy(action), float(rewards[0])))
        venv.close()
        trajectories.append(steps)
    for t, (reference, fast) in enumerate(zip(*trajectories)):
        for a, b in zip(reference, fast):
            assert np.array_equal(a, b), f"seed {seed}, step {t}"


def test_fast_frame_skip_accepts_monitor():
    """make_vec_env puts SB3's Monitor between the env and the zoo's wrappers."""
    from stable_baselines3.common.monitor import Monitor

    assert isinstance(FastFrameSkip(Monitor(gym.make(FAST_CAR_RACING_ID)), skip=2), FastFrameSkip)
