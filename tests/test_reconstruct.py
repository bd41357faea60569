"""eval.reconstruct: the RE formula, batched shared-prefix decoding, the command's PNGs and results, bad input."""

import json

import numpy as np
import pytest
from conftest import REPO_ROOT, run_module
from hydra import compose, initialize_config_dir
from PIL import Image
from test_train import MICRO

from eval.reconstruct import PNG_UPSCALE, Reconstructor, main, reconstruction_error, worst_answers
from vlm import VLM, VLMConfig, prompts


@pytest.fixture(scope="module")
def model() -> VLM:
    return VLM.from_config(VLMConfig.preset("tiny", **MICRO)).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def run_cli(capsys, *overrides: str) -> tuple[int, str, str]:
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
            main.__wrapped__(compose(config_name="reconstruct", overrides=list(overrides)))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_reconstruction_error_is_the_papers_formula_x100():
    target = np.random.default_rng(0).integers(60, 190, (64, 64, 3), dtype=np.uint8)
    assert reconstruction_error(target, target) == 0.0
    assert reconstruction_error(target + 51, target) == pytest.approx(20.0)  # 51 / 255 = 0.2 everywhere
    off = target.copy()
    off[0, 0, 0] += 51  # one channel of one pixel: 51 / (64 * 64 * 3 * 255) x100
    assert reconstruction_error(off, target) == pytest.approx(100 * 51 / (64 * 64 * 3 * 255))
    valid = np.ones((64, 64), dtype=bool)
    valid[1, 2] = False
    worst = worst_answers(target, target, valid)
    assert reconstruction_error(worst, target) == pytest.approx(
        100 * np.maximum(target[1, 2], 255 - target[1, 2]).sum() / (64 * 64 * 3 * 255)
    )


def test_batched_decoding_gives_what_generate_gives(model):
    """Shared prefix cache, grouped questions, chunks of 7: the same greedy answers as one generate() per question."""
    locations = [(0, 0), (5, 63), (63, 5), (10, 10), (47, 3), (9, 9), (63, 63), (31, 32), (2, 17), (40, 40)]
    frame = np.random.default_rng(1).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    batched = Reconstructor(model, batch=7, locations=locations).answers(frame)
    images = model.preprocess(frame[None])[None]  # [1, 1, 3, S, S]
    one_by_one = [model.generate(prompts.reconstruct_prompt(y, x), images=images)[0] for y, x in locations]
    assert batched == one_by_one


def test_command_prints_re_and_writes_ground_truth_beside_reconstruction(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "rec"
    # seeds as a list, as the README writes it (they select episodes of collected datasets, not image folders)
    code, stdout, _ = run_cli(
        capsys, f"checkpoint={checkpoint}", f"images={images}", "n=1", "seeds=[27,28]", f"out={out}", "progress=false"
    )
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert result["seeds"] == [27, 28]
    (image,) = result["images"]
    assert f"RE x100 = {result['mean_re']:.2f} over 1 images" in stdout
    assert result["mean_re"] == pytest.approx(image["re"]) and 0 <= image["re"] <= 100
    assert result["questions"] == 64 * 64 and 0 <= image["unparsed"] <= 64 * 64

    png = np.asarray(Image.open(out / image["png"]))
    assert png.shape == (64 * PNG_UPSCALE, (2 * 64 + 1) * PNG_UPSCALE, 3)
    frame = np.asarray(Image.open(sorted(images.glob("*.png"))[image["index"]]).convert("RGB"))
    target = prompts.reconstruction_target(frame)
    np.testing.assert_array_equal(png[::PNG_UPSCALE, : 64 * PNG_UPSCALE : PNG_UPSCALE], target)  # left: ground truth
    reconstruction = png[::PNG_UPSCALE, 65 * PNG_UPSCALE :: PNG_UPSCALE].astype(np.int64)
    assert 100 * np.abs(reconstruction - target).mean() / 255 == pytest.approx(image["re"])  # right: what RE scored


def test_bad_input_is_one_line_and_exit_2(checkpoint, images, tmp_path, capsys):
    result = run_module(
        "eval.reconstruct", f"checkpoint={tmp_path / 'missing'}", f"images={images}", "n=1", f"out={tmp_path / 'o'}"
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0
    assert "is not a VLM checkpoint" in result.stderr and "Traceback" not in result.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, f"checkpoint={checkpoint}", f"images={empty}", f"out={tmp_path / 'o'}")
    assert code == 2 and err.startswith("error: ") and "no PNG or JPEG" in err and err.strip().count("\n") == 0
    code, _, err = run_cli(capsys, f"checkpoint={checkpoint}", f"images={images}", "n=0", f"out={tmp_path / 'o'}")
    assert code == 2 and err.startswith("error: n=0") and err.strip().count("\n") == 0
    code, _, err = run_cli(capsys, f"images={tmp_path}")
    assert code == 2 and "give checkpoint=DIR" in err
