"""eval.segment and eval.refer on a real annotated dataset (a random SpaceInvaders game, collected and annotated
here with `python -m collect` and `python -m collect.annotate`) and a micro model: cIoU arithmetic, the scores
against full-sequence log-likelihoods, the commands' results.json and PNGs, seeds, and bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_command, run_module
from PIL import Image
from test_train import MICRO

import collect.__main__
import collect.annotate
import eval.refer
import eval.segment
from collect.annotations import LABELS, PHRASE_CLASSES, AnnotatedFrames, referring_phrases
from eval.refer import MARK_COLOUR, Referrer, slot_coords
from eval.segment import (
    CAPTION_HEIGHT,
    GROUND_TRUTH_COLOUR,
    PNG_UPSCALE,
    PREDICTION_COLOUR,
    bootstrap_ciou,
    ciou_summary,
    draw_frames,
    evaluate_prior,
    load_grounding_model,
    location_prior,
    overlay,
)
from vlm import IGNORE_INDEX, VLM, VLMConfig, marks, prompts
from vlm.model import positions
from vlm.scoring import SIZE, MaskPredictor, grid_targets, label_shift_threshold, overlap

SEED = 4  # a random game of 353 steps
PHRASE, STEERED_FRAME = "the aliens", 100  # what the micro model is steered on
STEER_STRIDE = 8  # the grid cells it is steered on: every 8th row and column
STEER = 2.0  # the log-likelihood margin it is steered to
MARGIN = 1e-3  # log-likelihood gaps below this may flip between two exact computations in float32


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    out = tmp_path_factory.mktemp("grounding") / "si"
    run_command(collect.__main__.main, "collect", "game=spaceinvaders", "policy=random", "episodes=1", f"seed={SEED}",
                f"out={out}")  # fmt: skip
    run_command(collect.annotate.main, "annotate", f"src={out}")
    return out


@pytest.fixture(scope="module")
def model(annotated) -> VLM:
    """A micro model steered so that its masks are neither empty nor full nor symmetric: "0" and "1" read the same
    as input (so eos follows both alike), and the output row of "1" is that of "0" plus the least-squares direction
    of the final hidden states that makes "1" the likelier answer left of the middle column on a frame."""
    model = VLM.from_config(VLMConfig.preset("tiny", **MICRO)).eval()
    zero, one = (model.tokenizer.encode(a, add_special_tokens=False)[0] for a in ("0", "1"))
    frame = AnnotatedFrames(annotated).frame(STEERED_FRAME)
    cells = [(y, x) for y in range(0, SIZE, STEER_STRIDE) for x in range(0, SIZE, STEER_STRIDE)]
    batch = model.collate(
        [dict(images=model.preprocess(frame[None]), prompt=prompts.segmentation_prompt(PHRASE, y, x)) for y, x in cells]
    )
    with torch.no_grad():
        embeds = model.embed(batch["input_ids"], images=batch["images"])  # [N, L, D]
        mask = batch["attention_mask"]
        out = model.llm(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask), output_hidden_states=True
        )
        hidden = out.hidden_states[-1]  # [N, L, D], after the final norm
        last = mask.sum(-1) - 1  # [N]: right padding
        states = hidden[torch.arange(len(cells)), last]  # [N, D]
        wanted = torch.tensor([STEER if x < SIZE // 2 else -STEER for _, x in cells])  # [N]
        direction = torch.linalg.lstsq(states, wanted[:, None]).solution[:, 0]  # [D]
        inputs, outputs = model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight
        inputs[one] = inputs[zero]
        outputs[one] = outputs[zero] + direction
    return model


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(str(path))
    return path


def full_log_likelihood(model: VLM, frame: np.ndarray, prompt: str, answer: str, **visual_prompts) -> float:
    """log P(answer tokens, eos | prompt) from one plain forward pass over the whole sequence, as training sees it."""
    batch = model.collate([dict(images=model.preprocess(frame[None]), prompt=prompt, answer=answer, **visual_prompts)])
    with torch.inference_mode():
        logits = model(**batch).logits[0].float()  # [L, V]
    labels = batch["labels"][0]
    scored = (labels != IGNORE_INDEX).nonzero()[:, 0]
    return float(logits[scored - 1].log_softmax(-1).gather(-1, labels[scored, None]).sum())


def test_ciou_is_summed_intersections_over_summed_unions():
    truth_a, prediction_a = np.zeros((SIZE, SIZE), bool), np.zeros((SIZE, SIZE), bool)
    truth_a[0, :4] = True  # 4 cells, 2 of them found, 2 cells predicted outside: I 2, U 6
    prediction_a[0, 2:6] = True
    truth_b = np.zeros((SIZE, SIZE), bool)
    truth_b[10:12, 10:15] = True  # 10 cells, found exactly: I 10, U 10
    pairs = []
    for (truth, prediction), label in zip([(truth_a, prediction_a), (truth_b, truth_b)], ["alien", "cannon"]):
        intersection, union = overlap(prediction, truth)
        pairs.append({"class": label, "intersection": intersection, "union": union, "iou": intersection / union})
    summary = ciou_summary([{"pairs": pairs[:1]}, {"pairs": pairs[1:]}])
    assert [(p["intersection"], p["union"]) for p in pairs] == [(2, 6), (10, 10)]
    assert summary["ciou"] == pytest.approx(12 / 16)  # not the mean IoU (1/3 + 1) / 2
    assert summary["miou"] == pytest.approx((1 / 3 + 1) / 2)
    assert summary["ciou_per_class"] == pytest.approx({"alien": 1 / 3, "cannon": 1.0})
    assert summary["pairs"] == 2 and summary["pairs_per_class"] == {"alien": 1, "cannon": 1}
    assert bootstrap_ciou([[2]], [[6]]) == pytest.approx((1 / 3, 1 / 3))  # one frame: nothing to resample
    low, high = bootstrap_ciou([[2], [10]], [[6], [10]])
    assert 1 / 3 <= low < 12 / 16 < high <= 1.0


def test_frames_drawn_depend_on_the_seed_alone():
    assert draw_frames(353, 5, 0) == draw_frames(353, 5, 0) == sorted(draw_frames(353, 5, 0))
    assert draw_frames(353, 5, 0) != draw_frames(353, 5, 1) and len(set(draw_frames(353, 5, 0))) == 5


def test_the_location_prior_is_each_phrases_majority_mask_scored_on_the_frames_segment_draws(annotated):
    frames = AnnotatedFrames(annotated)
    prior = location_prior(frames, len(frames), 0)  # every frame
    targets = [grid_targets(referring_phrases("spaceinvaders", frames.objects(i))) for i in range(len(frames))]
    shown = [target[PHRASE] for target in targets if PHRASE in target]
    np.testing.assert_array_equal(prior[PHRASE], 2 * np.sum(shown, axis=0) >= len(shown))
    assert set(prior) == {phrase for target in targets for phrase in target}
    result = evaluate_prior(prior, frames, 3, 0)
    counts = [overlap(prior[p], t) for i in draw_frames(len(frames), 3, 0) for p, t in targets[i].items()]
    assert result["ciou"] == pytest.approx(sum(i for i, _ in counts) / sum(u for _, u in counts))
    assert result["pairs"] == len(counts)


def test_mask_is_the_likelier_answer_of_full_sequence_likelihoods(model, annotated):
    frames = AnnotatedFrames(annotated)
    frame = frames.frame(STEERED_FRAME)
    phrase = PHRASE
    mask = MaskPredictor(model)(frame, [phrase])[phrase]
    assert 0 < mask.sum() < SIZE * SIZE and (mask != mask.T).any()
    checked = 0
    for y, x in [(0, 0), (5, 63), (20, 31), (33, 12), (47, 50), (63, 63), (12, 40), (58, 7)]:
        question = prompts.segmentation_prompt(phrase, y, x)
        zero, one = (full_log_likelihood(model, frame, question, answer) for answer in ("0", "1"))
        if abs(one - zero) > MARGIN:
            assert mask[y, x] == (one > zero), (y, x)
            checked += 1
    assert checked >= 6


def test_a_recorded_training_prior_moves_the_decision_threshold(model, annotated):
    """Trained asking inside 40 % of the time about a phrase that covers ~16 % of the grid: a cell is inside only
    where log p(1) - log p(0) passes logit(0.4) - logit(0.16) ~ 1.25, not 0; label_shift=False keeps 0."""
    frame = AnnotatedFrames(annotated).frame(STEERED_FRAME)
    plain = MaskPredictor(model)(frame, [PHRASE])[PHRASE]  # the model records no prior: the likelier answer
    model.config.segmentation_inside_fraction, model.config.segmentation_phrase_fractions = 0.4, {PHRASE: 0.16}
    try:
        threshold = label_shift_threshold(model, PHRASE)
        shifted = MaskPredictor(model)(frame, [PHRASE])[PHRASE]
        unshifted = MaskPredictor(model, label_shift=False)(frame, [PHRASE])[PHRASE]
    finally:
        model.config.segmentation_inside_fraction, model.config.segmentation_phrase_fractions = None, {}
    assert threshold == pytest.approx(np.log(0.4 / 0.6) - np.log(0.16 / 0.84))
    np.testing.assert_array_equal(unshifted, plain)
    assert shifted.sum() < plain.sum() and not (shifted & ~plain).any()  # a higher bar: a subset
    checked = 0
    for y, x in [(0, 0), (5, 13), (20, 31), (33, 12), (47, 20), (63, 3), (12, 25), (58, 7), (40, 28), (9, 30)]:
        question = prompts.segmentation_prompt(PHRASE, y, x)
        zero, one = (full_log_likelihood(model, frame, question, answer) for answer in ("0", "1"))
        if abs(one - zero - threshold) > MARGIN:
            assert shifted[y, x] == (one - zero > threshold), (y, x)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("form", marks.FORMS)
def test_referring_scores_are_full_sequence_likelihoods(model, annotated, form):
    """Every form's scores are what one forward pass over the marked input gives: the encoder's slot 1, the
    coordinates in the question, the frame with the mark drawn."""
    frames = AnnotatedFrames(annotated)
    frame, objects = frames.frame(100), frames.objects(100)
    referrer = Referrer(model, LABELS["spaceinvaders"], batch=4, form=form)
    item = {"point": [int(v) for v in np.argwhere(objects[0].mask)[0][::-1]], "box": list(objects[0].box)}
    for kind, mark_kind in eval.refer.KINDS.items():
        coords = slot_coords(item, kind, frame.shape[1], frame.shape[0])
        scores = referrer(frame, kind, coords)
        presented = marks.present(form, frame, [coords], mark_kind)
        for label in ("cannon", "ufo"):
            answer = prompts.visual_prompt_answer([label], mark_kind)
            expected = full_log_likelihood(model, presented.frame, answer=answer, **presented.sample_keys())
            assert scores[label] == pytest.approx(expected, rel=1e-5, abs=1e-3)


def png_cells(png: np.ndarray, row: int, column: int) -> np.ndarray:
    """The 64x64 cells of a segmentation PNG's panel (0: ground truth, 1: prediction) in phrase row `row`."""
    top = row * (CAPTION_HEIGHT + SIZE * PNG_UPSCALE) + CAPTION_HEIGHT
    left = column * (SIZE + 1) * PNG_UPSCALE
    return png[top : top + SIZE * PNG_UPSCALE : PNG_UPSCALE, left : left + SIZE * PNG_UPSCALE : PNG_UPSCALE]


def test_segment_writes_ciou_of_its_pairs_and_ground_truth_beside_prediction(checkpoint, annotated, tmp_path, capsys):
    out = tmp_path / "segment"
    run_command(eval.segment.main, "segment", f"checkpoint={checkpoint}", f"images={annotated}", f"seeds=[{SEED}]",
                "n=1", f"out={out}", "progress=false")  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert result["frames"] == 1 and result["seeds"] == [SEED] and result["game"] == "spaceinvaders"
    (image,) = result["images"]
    pairs = image["pairs"]
    assert result["ciou"] == pytest.approx(sum(p["intersection"] for p in pairs) / sum(p["union"] for p in pairs))
    assert set(result["ciou_per_class"]) == {PHRASE_CLASSES[p["phrase"]] for p in pairs}
    assert result["questions"] == len(pairs) * SIZE * SIZE and result["seconds_per_frame"] > 0
    assert any(0 < p["predicted_cells"] < SIZE * SIZE for p in pairs)  # the micro model's masks say something
    assert f"cIoU = {result['ciou']:.3f}" in capsys.readouterr().out

    frames = AnnotatedFrames(annotated)
    masks = referring_phrases("spaceinvaders", frames.objects(image["index"]))
    truths = grid_targets(masks)
    assert [p["phrase"] for p in pairs] == list(truths) and result["phrases_empty_on_grid"] == len(masks) - len(truths)
    target = prompts.reconstruction_target(frames.frame(image["index"]))
    predictions = MaskPredictor(load_grounding_model(checkpoint))(frames.frame(image["index"]), list(truths)[:1])
    png = np.asarray(Image.open(out / image["png"]))
    assert png.shape == (len(pairs) * (CAPTION_HEIGHT + SIZE * PNG_UPSCALE), (2 * SIZE + 1) * PNG_UPSCALE, 3)
    for row, (pair, (phrase, truth)) in enumerate(zip(pairs, truths.items())):
        assert pair["truth_cells"] == truth.sum()
        np.testing.assert_array_equal(png_cells(png, row, 0), overlay(target, truth, GROUND_TRUTH_COLOUR))
        if phrase in predictions:
            assert (pair["intersection"], pair["union"]) == overlap(predictions[phrase], truth)
            np.testing.assert_array_equal(
                png_cells(png, row, 1), overlay(target, predictions[phrase], PREDICTION_COLOUR)
            )


def refer(checkpoint, annotated, out, *overrides: str) -> dict:
    run_command(eval.refer.main, "refer", f"checkpoint={checkpoint}", f"images={annotated}", f"out={out}",
                "progress=false", *overrides)  # fmt: skip
    return json.loads((out / "results.json").read_text())


def test_refer_asks_in_the_form_the_model_was_trained_in_unless_told(model, annotated, tmp_path):
    model.config.mark_form = "text"
    try:
        model.save_pretrained(str(tmp_path / "text_model"))
    finally:
        model.config.mark_form = marks.DEFAULT_FORM
    asked = refer(tmp_path / "text_model", annotated, tmp_path / "own", "n=2", "pngs=0")
    told = refer(tmp_path / "text_model", annotated, tmp_path / "told", "n=2", "pngs=0", "form=encoder")
    assert (asked["form"], told["form"]) == ("text", "encoder")
    assert asked["items"][0]["point_result"]["scores"] != told["items"][0]["point_result"]["scores"]


def test_refer_chooses_between_label_and_distractor_in_a_seeded_order(checkpoint, annotated, tmp_path):
    result = refer(checkpoint, annotated, tmp_path / "refer", "n=12", "pngs=2")
    items = result["items"]
    assert result["objects"] == 12 and result["prompts"] == 24 and result["prompts_per_s"] > 0
    frames = AnnotatedFrames(annotated)
    labels = LABELS["spaceinvaders"]
    for kind in ("point", "box"):
        correct = [item[f"{kind}_result"]["correct"] for item in items]
        assert result[f"count_{kind}"] == 12 and result[f"correct_{kind}"] == sum(correct)
        assert result[f"accuracy_{kind}"] == pytest.approx(np.mean(correct))
        assert result[f"accuracy_{kind}_ci95_low"] <= result[f"accuracy_{kind}"] <= result[f"accuracy_{kind}_ci95_high"]
    for item in items:
        assert (
            sorted(item["candidates"]) == sorted([item["label"], item["distractor"]])
            and item["label"] != item["distractor"]
        )
        assert set(item["point_result"]["scores"]) == set(labels)
        for kind in ("point", "box"):
            judged = item[f"{kind}_result"]
            first, second = item["candidates"]
            assert judged["chosen"] == (first if judged["scores"][first] >= judged["scores"][second] else second)
            assert judged["correct"] == (judged["chosen"] == item["label"])
        x, y = item["point"]
        marked = [o for o in frames.objects(item["index"]) if o.label == item["label"] and list(o.box) == item["box"]]
        assert marked and marked[0].mask[y, x]  # the point is a pixel of the object the box frames
    assert {item["candidates"][0] == item["label"] for item in items} == {True, False}  # both orders drawn

    assert [item["png"] for item in items[:2]] == ["object_00000.png", "object_00001.png"] and "png" not in items[2]
    png = np.asarray(Image.open(tmp_path / "refer" / "object_00000.png"))
    height, width, _ = frames.frame(0).shape
    assert png.shape[:2] == (height * eval.refer.PNG_UPSCALE + eval.refer.CAPTION_HEIGHT,
                             2 * width * eval.refer.PNG_UPSCALE + eval.refer.GAP)  # fmt: skip
    assert (png == MARK_COLOUR).all(-1).any()

    again = refer(checkpoint, annotated, tmp_path / "again", "n=12", "pngs=0")
    assert again["items"] == [{k: v for k, v in item.items() if k != "png"} for item in items]
    other = refer(checkpoint, annotated, tmp_path / "other", "n=12", "pngs=0", "seed=1")
    assert [item["point"] for item in other["items"]] != [item["point"] for item in items]


def test_bad_input_is_one_line(checkpoint, annotated, tmp_path, capsys, monkeypatch):
    result = run_module(
        "eval.segment", f"checkpoint={tmp_path / 'missing'}", f"images={annotated}", f"out={tmp_path / 'o'}"
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr and "python -m train recipe=segmentation" in result.stderr

    def refused(command, *overrides: str) -> str:
        module = {"segment": eval.segment, "refer": eval.refer}[command]
        with pytest.raises(SystemExit) as exit_:
            run_command(module.main, command, f"out={tmp_path / 'o'}", "progress=false", *overrides)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0, err
        return err

    monkeypatch.setattr(eval.segment, "SHIPPED_CHECKPOINT", tmp_path / "grounding")  # as long as none ships
    assert "python -m train recipe=segmentation" in refused("segment", f"images={annotated}")
    assert "python -m train recipe=visual_prompt" in refused("refer", f"images={annotated}")
    assert "does not ship yet" in refused("refer", f"images={annotated}")

    plain = tmp_path / "plain"
    shutil.copytree(annotated / "data", plain / "data")
    for command in ("segment", "refer"):
        err = refused(command, f"checkpoint={checkpoint}", f"images={plain}")
        assert "no object annotations" in err and f"python -m collect.annotate src={plain}" in err
        assert "seeds [99]" in refused(command, f"checkpoint={checkpoint}", f"images={annotated}", "seeds=[99]")
        assert "n=0 is out of range" in refused(command, f"checkpoint={checkpoint}", f"images={annotated}", "n=0")
        assert "give images=" in refused(command, f"checkpoint={checkpoint}")
    assert "choose between 1 and the 353" in refused(
        "segment", f"checkpoint={checkpoint}", f"images={annotated}", "n=354"
    )
    assert "choose one of encoder, text, overlay" in refused(
        "refer", f"checkpoint={checkpoint}", f"images={annotated}", "form=arrows"
    )
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    assert "overwrite=true" in refused("refer", f"checkpoint={checkpoint}", f"images={annotated}")
    assert not (tmp_path / "o" / "results.json").exists()
