"""benchmarks/gpu_check.py at its --smoke sizes: whatever the machine, it finishes, writes every field, says what it
fell back from."""

import json
import os
import subprocess
import sys

import torch
from conftest import REPO_ROOT

SMOKE_TIMEOUT_S = 60


def test_the_smoke_run_writes_every_field_and_states_its_fallbacks(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", f"--out={out}"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    expected = {"device", "gpus", "torch", "cuda", "flash_attn", "precision", "smoke", "fallbacks", "wall_s"}
    assert expected | {"attention_check", "pvp_packed_check", "throughput", "fsdp"} <= set(results)

    check = results["attention_check"]
    assert check["passed"] and check["same_choice"] + check["ties"] == check["observations"]
    assert len(check["implementations"]) == 2 and check["loss_relative_difference"] < 1e-2
    packed = results["pvp_packed_check"]
    assert packed["passed"] and packed["implementations"] == check["implementations"]

    tiny, one_b = results["throughput"]
    assert tiny["model"] == "tiny" and tiny["train_samples_per_s"] > 0 and tiny["play_actions_per_s"] > 0
    assert one_b == {"model": "~1.2B", "skipped": "--smoke"}

    fallbacks = results["fallbacks"]
    assert "the ~1.2 B model is not measured (--smoke)" in fallbacks
    if not torch.cuda.is_available():
        assert results["device"].startswith("CPU") and results["precision"] == "fp32"
        assert any(reason.startswith("no CUDA GPU: runs on the CPU") for reason in fallbacks)
        assert check["implementations"] == ["sdpa", "eager"]
    if torch.cuda.device_count() < 2:
        assert "FSDP needs several" in results["fsdp"]["skipped"]
    assert all(f"fallback: {reason}" in result.stdout for reason in fallbacks)
    assert results["device"] in result.stdout.splitlines()[0]
