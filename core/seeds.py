"""Seed lists: the episodes of a command (`seed, seed+1, ...`) and the seeds a user writes on the command line."""

from core.errors import UserError

SEED_MAX = 2**32 - 1  # the largest seed np.random.seed takes (torch takes < 2**64)


def episode_seeds(first: int, episodes: int) -> list[int]:
    """The seed of each episode a command plays: first, first + 1, ..."""
    return [first + index for index in range(episodes)]


def check_last_seed(first_key: str, first: int, episodes: int) -> None:
    """The last seed of `episodes` episodes from `first` is still a seed (<= SEED_MAX)."""
    last = first + episodes - 1
    if last > SEED_MAX:
        raise UserError(
            f"{first_key}={first} with {episodes} episodes would play seeds up to {last}, past the largest seed "
            f"{SEED_MAX}: give {first_key} <= {SEED_MAX - episodes + 1}"
        )


def parse_seeds(seeds, key: str = "seeds") -> list[int] | None:
    """None (every episode), an int, a list of ints, or "first-last" (inclusive) -> a list of seeds (each >= 0)."""
    if seeds is None:
        return None
    help_text = f"give a list like {key}=[27,28,29] or a range like {key}=0-26 (seeds are whole numbers >= 0)"
    if isinstance(seeds, str):
        first, sep, last = seeds.partition("-")
        if not sep or not first.strip().isdigit() or not last.strip().isdigit() or int(last) < int(first):
            raise UserError(f"{key}={seeds!r}: {help_text}")
        return list(range(int(first), int(last) + 1))
    listed = [seeds] if isinstance(seeds, int) else list(seeds)
    if any(isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 for seed in listed):
        raise UserError(f"{key}={seeds}: {help_text}")
    return listed


def check_seed_list(key: str, seeds) -> None:
    """The schema check (core.schema) of an option that takes a seed list."""
    parse_seeds(seeds, key)
