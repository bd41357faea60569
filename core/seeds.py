"""Seed lists: the episodes of a command (`seed, seed+1, ...`) and the seeds a user writes on the command line."""

from core.errors import UserError


def episode_seeds(first: int, episodes: int) -> list[int]:
    """The seed of each episode a command plays: first, first + 1, ..."""
    return [first + index for index in range(episodes)]


def parse_seeds(seeds) -> list[int] | None:
    """None (every episode), an int, a list of ints, or "first-last" (inclusive) -> a list of seeds."""
    if seeds is None:
        return None
    if isinstance(seeds, int):
        return [seeds]
    if isinstance(seeds, str):
        first, sep, last = seeds.partition("-")
        if not sep or not first.strip().isdigit() or not last.strip().isdigit():
            raise UserError(f"seeds={seeds!r}: give a list like [27,28,29] or a range like 0-26")
        return list(range(int(first), int(last) + 1))
    return [int(seed) for seed in seeds]
