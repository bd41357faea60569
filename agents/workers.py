"""Episodes played by workers, each with its own copy of the policy; results come back in job order.

A Player names what to build (the game, a registered policy, its options), so that a worker can build its
own copy once and then play the jobs it is sent. Every policy reseeds itself per episode (`reset(seed)`),
so an episode's result does not depend on which worker played it or what it played before. A backend decides
where the workers run: `processes` on this machine, `ray` as Ray actors (agents.ray_backend).
"""

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import NamedTuple

import torch

from agents.base import Policy
from agents.ray_backend import import_ray, in_ray_actors
from agents.registry import load_policy
from envs.games import GameSpec, get_game

# One torch thread per player: faster on a shared CPU, and the same arithmetic whatever the worker count.
PLAYER_TORCH_THREADS = 1
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_worker: dict = {}  # the player of a worker process, set by _start_worker


class Player(NamedTuple):
    """Which policy plays: what a worker process needs to build its own copy."""

    game: str
    policy: str  # a registered policy name (agents.registry)
    options: dict  # the policy's command-line options (None = not given), e.g. {"checkpoint": None}


def load_player(player: Player) -> tuple[GameSpec, Policy]:
    torch.set_num_threads(PLAYER_TORCH_THREADS)
    spec = get_game(player.game)
    return spec, load_policy(player.policy, spec, **player.options)


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive a killed parent (a resumed collector cleans the staging it would write into)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def _start_worker(player: Player, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    _worker["spec"], _worker["policy"] = load_player(player)


def _play_in_worker(play: Callable, job: tuple):
    return play(_worker["spec"], _worker["policy"], *job)


def in_processes(play: Callable, jobs: list[tuple], player: Player, workers: int, address: str | None) -> Iterator:
    """backend=processes: `workers` spawned processes of this machine (`address`, a Ray cluster's, is not read)."""
    # spawn, not fork: a forked child inherits torch's thread pool state and the parent's open files.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(player, os.getpid()),
    )
    try:
        futures = [pool.submit(_play_in_worker, play, job) for job in jobs]
        for future in futures:
            yield future.result()
    finally:
        pool.shutdown(cancel_futures=True)


class Backend(NamedTuple):
    play: Callable[..., Iterator]  # (play, jobs, player, workers, address) -> play's results in job order
    check: Callable[[], object]  # raises a UserError where the backend cannot run (its package not installed)


BACKENDS = {"processes": Backend(in_processes, check=lambda: None), "ray": Backend(in_ray_actors, check=import_ray)}


def check_backend(key: str, name: str) -> None:
    """Schema check of `backend=`: refused before anything is played or written where it cannot run."""
    BACKENDS[name].check()


def in_order(
    play: Callable,
    jobs: list[tuple],
    player: Player,
    workers: int,
    local: tuple[GameSpec, Policy],
    backend: str = "processes",
    address: str | None = None,
) -> Iterator:
    """`play(spec, policy, *job)` for every job, yielded in the order of `jobs`: here with the `local` spec and
    policy when one worker is asked for (whatever the backend), else by `workers` workers of `backend` (play
    must be picklable: a module-level function, or a functools.partial of one)."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield play(*local, *job)
        return
    yield from BACKENDS[backend].play(play, jobs, player, min(workers, len(jobs)), address)
