import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub by the tests
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# collect registers each dataset with Minari: the tests' datasets go to a folder of their own, not ~/.minari
os.environ.setdefault("MINARI_DATASETS_PATH", tempfile.mkdtemp(prefix="vlmplay_tests_minari_"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_EXPERTS = REPO_ROOT.parent / "shared" / "experts"
EXPERT_TRAIN_SEED, EXPERT_VAL_SEED = 4, 5  # expert SpaceInvaders episodes of ~720 and ~550 steps
TINY_PPO_HYPERPARAMS = "hyperparams={n_envs: 1, n_steps: 64, batch_size: 64, n_epochs: 1}"


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m module args...` from the repo root, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def run_command(main, config_name: str, *overrides: str) -> None:
    """`python -m <command> OVERRIDES` in this process: Hydra composes configs/<config_name>.yaml, the command's
    own main (schema check included) runs."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        main.__wrapped__(compose(config_name=config_name, overrides=list(overrides)))


@pytest.fixture(scope="session")
def tiny_carracing_expert(tmp_path_factory) -> Path:
    """A real ppo_lstm CarRacing agent, trained for 128 steps with the project's trainer."""
    root = tmp_path_factory.mktemp("tiny_expert")
    out = root / "ppo_lstm" / "CarRacing-v3_1"
    result = run_module(
        "experts.train",
        "game=carracing",
        "algo=ppo_lstm",
        "steps=128",
        "fast_env=false",
        f"run_dir={root / 'runs'}",
        f"out={out}",
        "progress=false",
        TINY_PPO_HYPERPARAMS,
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def expert_data(tmp_path_factory) -> Path:
    """A real dataset of the default SpaceInvaders expert: two episodes (training and validation seed)."""
    out = tmp_path_factory.mktemp("expert") / "si"
    result = run_module(
        "collect", "game=spaceinvaders", "policy=expert", "episodes=2", f"seed={EXPERT_TRAIN_SEED}", f"out={out}"
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Small matmuls gain nothing from a second thread, and lose a lot when other jobs share the cores."""
    import torch

    torch.set_num_threads(1)
