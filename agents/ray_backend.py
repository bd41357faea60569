"""backend=ray: episodes played by Ray actors, on a local Ray instance or a cluster (`pip install -e ".[ray]"`).

The only module that imports ray, and only once backend=ray is chosen. Each actor builds its own copy of the
policy once and plays the jobs it is sent, as a worker process does (agents.workers); results come back in job
order. A cluster's nodes need vlmplay installed and the driver's files at the same paths (a shared filesystem):
each actor works in the driver's working directory, where collect stages its episodes and eval writes its videos.
"""

import os
from collections.abc import Callable, Iterator

from core.errors import UserError

RAY_MISSING = 'backend=ray needs Ray, which is not installed: pip install -e ".[ray]"'


def import_ray():
    """The ray module, or a UserError saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError as error:
        if error.name != "ray":  # ray is there but broken: its own error says more
            raise
        raise UserError(RAY_MISSING) from None
    return ray


class EpisodePlayer:
    """One Ray actor's copy of the player (ray.remote wraps this class once the backend starts)."""

    def __init__(self, player, play: Callable, working_dir: str):
        from agents.workers import load_player  # agents.workers imports this module

        os.chdir(working_dir)  # relative paths (out=, checkpoint=) mean what they mean to the driver
        self.play = play
        self.spec, self.policy = load_player(player)

    def play_job(self, job: tuple):
        return self.play(self.spec, self.policy, *job)


def in_ray_actors(play: Callable, jobs: list[tuple], player, workers: int, address: str | None) -> Iterator:
    """`play(spec, policy, *job)` for every job, yielded in job order, by `workers` actors of the cluster at
    `address` (None: RAY_ADDRESS, else a local instance; a Ray already initialised in this process is used)."""
    ray = import_ray()
    from ray.util import ActorPool

    if not ray.is_initialized():
        try:
            ray.init(address=address)
        except ConnectionError as error:
            raise UserError(f"backend=ray: {error}") from None  # Ray's message names the address it tried
    room = max(int(ray.cluster_resources().get("CPU", 0)), 1)  # actors, one CPU each
    if workers > room:  # an actor that finds no free CPU never starts, and the jobs sent to it would wait forever
        print(f"backend=ray: the cluster has room for {room} workers (one CPU each): {room} of the {workers} play")
        workers = room
    actor_class = ray.remote(num_cpus=1)(EpisodePlayer)
    actors = [actor_class.remote(player, play, os.getcwd()) for _ in range(workers)]
    try:
        yield from ActorPool(actors).map(lambda actor, job: actor.play_job.remote(job), jobs)
    finally:
        for actor in actors:
            ray.kill(actor)
