"""One policy drives for the first k decisions of an episode, another for the rest: it separates a
learner's compounding error in closed loop from its per-step accuracy (issue 7's diagnosis)."""

from agents.base import Observation, Policy


class TakeoverPolicy(Policy):
    """`first` acts for `k` decisions, then `then` takes over. Both see every observation, so a
    recurrent `then` (ppo_lstm) takes over with its memory of the road so far. Plays in the pipeline
    of `then` (an expert's config.yml), whose frames the game's default pipeline also gives `first`."""

    def __init__(self, first: Policy, then: Policy, k: int):
        self.first, self.then, self.k = first, then, k
        self.pipeline, self.stats_dir = then.pipeline, then.stats_dir
        self.policy_id = f"{first.policy_id}-then-{then.policy_id}-after-{k}"
        self.decisions = 0

    def reset(self, seed: int) -> None:
        self.first.reset(seed)
        self.then.reset(seed)
        self.decisions = 0

    def act(self, observation: Observation):
        then_action = self.then.act(observation)
        self.decisions += 1
        if self.decisions > self.k:
            return then_action
        return self.first.act(observation)
