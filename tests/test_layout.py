"""The import graph is the data flow: core -> envs -> agents / experts -> collect -> vlm / train -> eval.

Every module's imports are parsed with `ast` (function-level imports included) and checked against what its
room may not import; a training process is checked to run without gymnasium.
"""

import ast
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

ROOMS = ("core", "envs", "agents", "experts", "collect", "vlm", "train", "eval")
GYM_STACK = {"gymnasium", "ale_py", "pygame", "stable_baselines3", "sb3_contrib", "rl_zoo3", "minari"}
MODEL_STACK = {"torch", "transformers", "peft"}
# room -> the top-level packages (rooms and libraries) none of its modules may import
FORBIDDEN = {
    "core": set(ROOMS) - {"core"} | GYM_STACK | MODEL_STACK,
    "envs": {"vlm", "agents", "experts", "collect", "train", "eval", "transformers", "peft"},
    "vlm": {"envs", "agents", "experts", "collect", "train", "eval"} | GYM_STACK,
    "agents": {"experts", "collect", "train", "eval"},
    "experts": {"vlm", "agents", "collect", "train", "eval"},
    "collect": {"experts", "train", "eval"},
    "train": {"experts", "eval"} | GYM_STACK - {"minari"},
    "eval": {"experts", "train"},
}
# What a training process may not have loaded (minari's reader is fine: datasets are read with pyarrow).
NOT_IN_TRAINING = GYM_STACK - {"minari"}


def imported_packages(path) -> set[str]:
    """The top-level package of every import in a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def violations(root=REPO_ROOT) -> list[str]:
    found = []
    for room, forbidden in FORBIDDEN.items():
        for path in sorted((root / room).rglob("*.py")):
            for package in sorted(imported_packages(path) & forbidden):
                found.append(f"{path.relative_to(root)} imports {package}")
    return found


def test_every_room_exists_and_is_a_package():
    for room in ROOMS:
        assert (REPO_ROOT / room / "__init__.py").is_file(), room


@pytest.mark.parametrize("room", ROOMS)
def test_no_room_imports_a_room_above_it_or_a_library_it_must_not_use(room):
    found = [v for v in violations() if v.startswith(f"{room}/")]
    assert not found, "\n".join(found)


def test_the_checker_sees_a_violation(tmp_path):
    """A room that imports one above it is reported (so an empty report means something)."""
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "bad.py").write_text("def f():\n    from envs.pipeline import make_play_env\n")
    (tmp_path / "collect").mkdir()
    (tmp_path / "collect" / "bad.py").write_text("import eval.evaluate\n")
    assert sorted(violations(tmp_path)) == ["collect/bad.py imports eval", "vlm/bad.py imports envs"]


def test_a_training_process_does_not_import_gymnasium():
    """Everything `python -m train` runs, every registered task included, without the env stack."""
    code = (
        "import sys\n"
        "import train.__main__, train.loop, train.packing, train.checkpoint\n"
        "from train.tasks import TASKS\n"
        "TASKS.names()\n"
        f"print(sorted(set({sorted(NOT_IN_TRAINING)!r}) & {{m.split('.')[0] for m in sys.modules}}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"a training process imports {result.stdout.strip()}"
