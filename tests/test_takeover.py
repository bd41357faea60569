"""TakeoverPolicy: the first policy drives k decisions, then the second; real CarRacing, the real default expert."""

import numpy as np

from agents.expert_policy import ExpertPolicy
from agents.random_policy import RandomPolicy
from agents.rollout import play_episode
from agents.takeover import TakeoverPolicy
from envs.games import CARRACING

SEED = 100000
K = 40


def actions_and_return(policy):
    actions = []
    result = play_episode(
        policy,
        CARRACING,
        SEED,
        on_step=lambda step: actions.append(np.asarray(step.action)),
        env_id=CARRACING.play_env_id(True),
    )
    return np.stack(actions), result.episode_return


def test_takeover_switches_driver_after_k_decisions():
    expert = ExpertPolicy(CARRACING.default_expert_path, CARRACING)
    random_first = RandomPolicy(CARRACING)
    expert_actions, expert_return = actions_and_return(expert)
    random_actions, _ = actions_and_return(TakeoverPolicy(random_first, expert, k=10**9))
    never, never_return = actions_and_return(TakeoverPolicy(random_first, expert, k=0))
    after_k, _ = actions_and_return(TakeoverPolicy(random_first, expert, k=K))

    assert never_return == expert_return and np.array_equal(never, expert_actions)
    codes = {tuple(CARRACING.codec.decode(c)) for c in range(len(CARRACING.action_names))}
    assert all(tuple(a) in codes for a in random_actions)  # the random driver's actions, whole episode
    assert np.array_equal(after_k[:K], random_actions[:K])
    assert not np.array_equal(after_k[K:], random_actions[K : len(after_k)])
