"""Return vs training steps of an RL-Zoo3 agent, from the Monitor files of its training envs.

python -m experts.learning_curve experts/ppo/SpaceInvadersNoFrameskip-v4_1   # writes learning_curve.png there
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from core.files import write_atomically
from envs.zoo import MONITOR_GLOB

SMOOTHING_EPISODES = 50  # rolling mean over this many training episodes
CURVE_FILE = "learning_curve.png"


def read_monitors(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Episodes of all envs in the order they ended -> (env frames so far [N], episode return [N])."""
    ends, lengths, returns = [], [], []
    for path in files:
        with path.open() as f:
            t_start = json.loads(f.readline().lstrip("#"))["t_start"]
            lines = f.read().splitlines()[1:]  # after the header "r,l,t"
        if lines:
            rows = np.loadtxt(lines, delimiter=",", ndmin=2)  # columns r, l, t
            returns.append(rows[:, 0])
            lengths.append(rows[:, 1])
            ends.append(t_start + rows[:, 2])
    if not ends:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(np.concatenate(ends))
    steps = np.cumsum(np.concatenate(lengths)[order])
    return steps, np.concatenate(returns)[order]


def plot_learning_curve(folder: Path, title: str) -> Path | None:
    """Write folder/learning_curve.png; None when no training episode has finished yet."""
    steps, returns = read_monitors(sorted(folder.glob(MONITOR_GLOB)))
    if not len(returns):
        return None
    window = min(SMOOTHING_EPISODES, len(returns))
    smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, returns, ".", alpha=0.25, markersize=3, label="training episode")
    ax.plot(steps[window - 1 :], smooth, label=f"mean of last {window}")
    ax.set_xlabel("env frames (all training envs)")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = folder / CURVE_FILE
    write_atomically(out, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m experts.learning_curve <RL-Zoo3 agent folder with *.monitor.csv>")
    agent = Path(sys.argv[1])
    curve = plot_learning_curve(agent, agent.name)
    print(f"wrote {curve}" if curve else f"no finished training episodes in {agent}/{MONITOR_GLOB}")
