"""Write played episodes into a Minari dataset so that a kill at any moment leaves only complete episodes.

Each episode is written by Minari into a staging folder beside the dataset, then moved into
`data/<episode_id>` with one rename, then listed in the dataset metadata with one atomic replace.
Minari's own `update_metadata` rewrites metadata.json in place, which a kill could leave truncated,
so the dataset metadata (same keys, same format) is replaced here instead. Its env spec rebuilds the env as
it was played, and at the end the dataset is registered where Minari's clients find it (collect.minari_registry).
"""

import dataclasses
import os
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec, WrapperSpec
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.dataset.minari_storage import MinariStorage
from tqdm import tqdm

from agents import Policy
from agents.rollout import Step
from collect.dataset import (
    DATA_DIR,
    METADATA_FILE,
    NO_ACTION_CODE,
    VLMPLAY_KEY,
    DamagedIndexError,
    EpisodeError,
    EpisodeInfo,
    episode_infos,
    episode_path,
    file_crc32,
    open_episode,
    read_dataset_metadata,
)
from collect.minari_registry import check_registrable, dataset_id, register
from core.errors import UserError
from core.files import write_json_atomically
from envs.games import GameSpec
from envs.pipeline import PlayedEnv, action_space

STAGING_DIR = ".staging"  # episodes being played or written; removed when a run starts
SUMMARY_FILE = "summary.png"
MINARI_FORMAT = "arrow"  # one file per episode: a kill cannot damage the episodes already written
# What minari's recover_environment needs to rebuild the env as it was played (envs.pipeline.PlayedEnv).
REQUIREMENTS = ("gymnasium", "ale-py", "stable-baselines3", "rl_zoo3", "vlmplay")


def new_storage(data_path: Path, spec: GameSpec) -> MinariStorage:
    """An empty Minari storage for raw RGB frames, stored losslessly (Minari JPEG-encodes images by default).
    Its env spec is the dataset's to write (`minari_fields`): a staged episode's storage needs none."""
    return MinariStorage.new(
        data_path.resolve(),  # pyarrow's partitioned write nests a relative path inside itself
        observation_space=gym.spaces.Box(0, 255, spec.frame_shape, np.uint8),
        action_space=action_space(spec.env_id),
        data_format=MINARI_FORMAT,
        jpeg_encoding=False,
    )


def played_env_spec(spec: GameSpec, pipeline: dict) -> EnvSpec:
    """The game's env wrapped in PlayedEnv with the pipeline's env wrappers, rendering rgb_array as SB3's
    make_vec_env makes it: `gym.make` of this spec replays stored actions into the stored frames."""
    played = WrapperSpec(
        name=PlayedEnv.__name__,
        entry_point=f"{PlayedEnv.__module__}:{PlayedEnv.__name__}",
        kwargs={"max_pool": spec.frame_max_pool, "env_wrapper": pipeline.get("env_wrapper")},
    )
    base = gym.spec(spec.env_id)
    return dataclasses.replace(base, kwargs=base.kwargs | {"render_mode": "rgb_array"}, additional_wrappers=(played,))


def minari_fields(out: Path, spec: GameSpec, policy: Policy) -> dict:
    """The Minari metadata a collection (re)writes: its id, the env to replay it in, what that env needs."""
    return {
        "dataset_id": dataset_id(out, spec.name, policy.policy_id.split("-", 1)[0]),
        "env_spec": played_env_spec(spec, policy.pipeline or spec.pipeline).to_json(),
        "description": f"{spec.name}: the RGB frames the VLM sees (collect/README.md says what a frame is), "
        "the env action the policy took, its discrete action code (infos.action_code), unclipped rewards; "
        "one seed per episode; recover_environment() replays the actions into the frames.",
        "requirements": [f"{name}=={version(name)}" for name in REQUIREMENTS],
    }


def policy_identity(spec: GameSpec, policy: Policy) -> dict:
    """What makes two collections the same: the game, its action words (the codec the codes come
    from) and the policy (an expert by its agent's bytes)."""
    return {
        "game": spec.name,
        "env_id": spec.env_id,
        "policy_id": policy.policy_id,
        "policy_sha256": policy.fingerprint,
        "action_names": list(spec.action_names),
    }


class EpisodeRecorder:
    """The on_step callback of `agents.rollout.play_episode`: keeps what the dataset stores of each step."""

    def __init__(self, spec: GameSpec, action_space: gym.Space):
        self.codec = spec.codec
        self.action_space = action_space
        self.frames, self.actions, self.action_codes = [], [], []
        self.rewards, self.terminations, self.truncations = [], [], []

    def __call__(self, step: Step) -> None:
        self.frames.append(step.frame.copy())  # the frame tap may hand out a buffer the env reuses
        self.actions.append(np.asarray(step.action, dtype=self.action_space.dtype).reshape(self.action_space.shape))
        self.action_codes.append(self.codec.encode(step.label))
        self.rewards.append(step.reward)
        self.terminations.append(step.terminated)
        self.truncations.append(step.truncated)

    def episode_buffer(self, episode_id: int, seed: int) -> EpisodeBuffer:
        # Minari stores one observation more than actions (the one after the last action). The play
        # loop's VecEnv has already reset by then, so the last frame is repeated; it has no action.
        return EpisodeBuffer(
            id=episode_id,
            seed=seed,
            observations=np.stack(self.frames + self.frames[-1:]),  # [length + 1, H, W, 3]
            actions=np.stack(self.actions),
            rewards=self.rewards,
            terminations=self.terminations,
            truncations=self.truncations,
            infos={"action_code": self.action_codes + [NO_ACTION_CODE]},
        )


@dataclass
class StagedEpisode:
    info: EpisodeInfo
    folder: Path  # the Minari episode folder, ready to be moved into the dataset
    staging: Path  # everything to delete once it is moved
    wall_time_s: float


def staging_folder(out: Path, episode_id: int, seed: int) -> Path:
    return out / STAGING_DIR / f"episode{episode_id}-seed{seed}"


def stage_episode(
    out: Path,
    spec: GameSpec,
    policy: Policy,
    recorder: EpisodeRecorder,
    episode_id: int,
    seed: int,
    episode_return: float,
    wall_time_s: float,
) -> StagedEpisode:
    """Write a played episode with Minari's writer into its staging folder."""
    staging = staging_folder(out, episode_id, seed)
    storage = new_storage(staging / DATA_DIR, spec)
    storage.update_episodes([recorder.episode_buffer(episode_id, seed)])
    storage.update_episode_metadata(
        [{"episode_return": episode_return, "policy_id": policy.policy_id, "wall_time_s": round(wall_time_s, 3)}],
        [episode_id],
    )
    folder = staging / DATA_DIR / str(episode_id)
    (arrow_file,) = folder.glob("*.arrow")
    info = EpisodeInfo(episode_id, seed, len(recorder.rewards), episode_return, file_crc32(arrow_file))
    return StagedEpisode(info, folder, staging, wall_time_s)


class DatasetWriter:
    """Opens (or creates) the dataset in `out`, refuses another game's or policy's, and commits episodes.

    Opening removes what a killed run left half done (staging, an episode folder not yet listed) and
    checks every listed episode. A damaged one is refused by name unless `repair`; then `damaged`
    lists those to re-collect.
    """

    def __init__(self, out: Path, spec: GameSpec, policy: Policy, overwrite: bool, repair: bool):
        self.out, self.spec = out, spec
        self.metadata_path = out / DATA_DIR / METADATA_FILE
        self.staging = out / STAGING_DIR
        self.identity = policy_identity(spec, policy)
        self.policy_id = policy.policy_id
        self.minari_fields = minari_fields(out, spec, policy)
        self._check_folder()
        check_registrable(self.minari_fields["dataset_id"])
        if self.metadata_path.exists() and not self._existing_is_ours(overwrite):
            shutil.rmtree(self.out / DATA_DIR)
            (self.out / SUMMARY_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.metadata = read_dataset_metadata(self.out) if self.metadata_path.exists() else self._create()
        self.episodes = episode_infos(self.metadata)
        self._remove_unlisted_episodes()
        self.damaged = self._find_damaged(repair)
        self.metadata.update(self.minari_fields)  # a dataset collected before (or moved since) gets today's

    def _check_folder(self) -> None:
        ours = {DATA_DIR, STAGING_DIR, SUMMARY_FILE}
        foreign = sorted(p.name for p in self.out.iterdir() if p.name not in ours) if self.out.is_dir() else []
        data = self.out / DATA_DIR
        if foreign or (data.exists() and not self.metadata_path.exists()):
            raise UserError(
                f"{self.out} is not empty and holds no collected dataset ({', '.join(foreign) or DATA_DIR}): "
                "choose a new folder with out="
            )

    def _existing_is_ours(self, overwrite: bool) -> bool:
        """True for this game and policy's dataset; False for another one that `overwrite` lets us replace."""
        try:
            metadata = read_dataset_metadata(self.out)
        except UserError as error:
            if overwrite:
                return False
            problem = error.detail if isinstance(error, DamagedIndexError) else error
            raise UserError(
                f"{problem}: restore it, or pass overwrite=true to collect {self.out} again from scratch"
            ) from None
        stored = {key: metadata[VLMPLAY_KEY].get(key) for key in self.identity}
        if stored != self.identity:
            if overwrite:
                return False
            what = (
                f"{self.out} holds {stored['game']} episodes of {stored['policy_id']} "
                f"(agent sha256 {stored['policy_sha256']}); "
                f"this run plays {self.identity['game']} with {self.identity['policy_id']} "
                f"(agent sha256 {self.identity['policy_sha256']})"
            )
            if stored | {"action_names": None} == self.identity | {"action_names": None}:
                what = (
                    f"{self.out} holds action codes of other action words than {self.identity['game']}'s "
                    "(its codec changed)"
                )
            raise UserError(f"{what}: choose another out= or pass overwrite=true to replace it")
        return True

    def _create(self) -> dict:
        """Create the empty dataset in staging and move it into place: a kill leaves it whole or absent."""
        new_data = self.staging / "new-dataset" / DATA_DIR
        new_data.parent.mkdir(parents=True)
        storage = new_storage(new_data, self.spec)
        storage.update_metadata(
            {
                "minari_version": version("minari"),
                "algorithm_name": self.policy_id,
                "author": {"vlmplay"},
                VLMPLAY_KEY: self.identity | {"episodes": []},
            }
            | self.minari_fields
        )
        os.rename(new_data, self.out / DATA_DIR)
        new_data.parent.rmdir()
        return read_dataset_metadata(self.out)

    def _remove_unlisted_episodes(self) -> None:
        """An episode folder that a kill left between its rename and the metadata update is not in the dataset."""
        for folder in (self.out / DATA_DIR).iterdir():
            if folder.is_dir() and folder.name.isdigit() and int(folder.name) >= len(self.episodes):
                shutil.rmtree(folder)

    def _find_damaged(self, repair: bool) -> list[EpisodeInfo]:
        errors = []
        for episode in tqdm(self.episodes, desc=f"check {self.out}", unit="episode", leave=False):
            try:
                open_episode(self.out, episode, self.spec.frame_shape, verify=True)
            except EpisodeError as error:
                errors.append(error)
        if errors and not repair:
            raise UserError(
                "; ".join(error.detail for error in errors) + ": nothing was changed; pass repair=true to re-play "
                "the seeds of damaged episodes (episodes are deterministic given policy and seed)"
            )
        return [error.episode for error in errors]

    @property
    def seeds(self) -> list[int]:
        return [episode.seed for episode in self.episodes]

    def commit(self, staged: StagedEpisode) -> None:
        """Move a staged episode into the dataset (as a new episode, or replacing a damaged one) and list it."""
        episode_id = staged.info.episode_id
        target = episode_path(self.out, episode_id)
        if target.exists():
            os.rename(target, staged.staging / "replaced")
        os.rename(staged.folder, target)
        if episode_id == len(self.episodes):
            self.episodes.append(staged.info)
        else:
            self.episodes[episode_id] = staged.info
        self._write_metadata()
        shutil.rmtree(staged.staging)

    def close(self) -> Path:
        """Write what this run changed in the metadata and register the dataset with Minari; returns the
        registration folder."""
        if read_dataset_metadata(self.out) != self.metadata:
            self._write_metadata()
        shutil.rmtree(self.staging, ignore_errors=True)
        return register(self.minari_fields["dataset_id"], self.out / DATA_DIR)

    def _write_metadata(self) -> None:
        self.metadata.update(
            {
                "total_episodes": len(self.episodes),
                "total_steps": sum(episode.length for episode in self.episodes),
                "dataset_size": dataset_size_mb(self.out / DATA_DIR),
            }
        )
        self.metadata[VLMPLAY_KEY]["episodes"] = [
            {"seed": e.seed, "length": e.length, "return": e.episode_return, "crc32": e.crc32} for e in self.episodes
        ]
        write_json_atomically(self.metadata_path, self.metadata, indent=None, tmp_dir=self.staging)


def dataset_size_mb(folder: Path) -> float:
    """Minari's `dataset_size`: MB on disk."""
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 1)
