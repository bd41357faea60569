"""backend=ray: collect and eval on a local Ray instance of 2 CPUs give what one worker gives; without Ray
installed, backend=ray is refused with one line saying how to install it."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, run_command
from test_collect import dataset_content

import collect.__main__
import eval.__main__
from agents.ray_backend import RAY_MISSING
from agents.workers import check_backend
from core.errors import UserError

RANDOM_SI = ["game=spaceinvaders", "policy=random", "episodes=3"]  # 3 episodes for 2 workers: one plays two


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason='backend=ray needs the ray extra: pip install -e ".[ray]"')
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_collect_on_ray_makes_the_dataset_of_one_worker(tmp_path, local_ray):
    one, ray_two = tmp_path / "one", tmp_path / "ray_two"
    run_command(collect.__main__.main, "collect", *RANDOM_SI, "seed=4", "workers=1", f"out={one}")
    run_command(collect.__main__.main, "collect", *RANDOM_SI, "seed=4", "backend=ray", "workers=2", f"out={ray_two}")
    assert dataset_content(ray_two) == dataset_content(one)  # every array, and each episode's Arrow file's bytes


def test_eval_on_ray_gives_the_returns_of_one_worker(tmp_path, local_ray):
    reports = []
    for out, workers in ((tmp_path / "one", ["workers=1"]), (tmp_path / "ray_two", ["backend=ray", "workers=2"])):
        run_command(eval.__main__.main, "eval", *RANDOM_SI, "seed=500", "video=false", *workers, f"out={out}")
        reports.append(json.loads((out / "results.json").read_text()))
    one, ray_two = reports
    played = [[(e["seed"], e["return"], e["length"]) for e in report["episodes"]] for report in reports]
    assert played[0] == played[1] and one["return"] == ray_two["return"]
    assert (ray_two["backend"], ray_two["workers"]) == ("ray", 2)


def test_backend_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does where ray is not installed
    with pytest.raises(UserError, match="pip install -e"):
        check_backend("backend", "ray")
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as exit_:
        run_command(eval.__main__.main, "eval", "policy=random", "backend=ray", "workers=2", f"out={out}")
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {RAY_MISSING}"
    assert not out.exists()


def test_the_processes_backend_imports_no_ray():
    code = (
        "import sys\n"
        "import collect.__main__, eval.__main__, train.dagger\n"
        "from agents.workers import check_backend\n"
        "check_backend('backend', 'processes')\n"
        "print('ray' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
