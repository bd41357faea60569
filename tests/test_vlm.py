"""vlm/: config, prompts, tokenizer, encoders, model forward, choice, generation, save/load, training stages.

Real transformers models at tiny sizes, nothing downloaded.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from vlm import (
    IGNORE_INDEX,
    IMAGE_TOKEN_ID,
    KIND_BOX,
    KIND_POINT,
    PROMPT_TOKEN_ID,
    TRAINING_STAGES,
    VLM,
    FrameCache,
    VLMConfig,
    build_tokenizer,
    encode,
    jitter_box,
    load_tokenizer,
    normalize_box,
    normalize_point,
    preprocess_images,
    prompts,
    resolve_attn_implementation,
)
from vlm.projector import Projector
from vlm.prompt_encoder import VisualPromptEncoder
from vlm.vision import ConvStem

CARRACING_ACTIONS = [
    f"{steer}_{pedal}"
    for steer in ("hardleft", "left", "straight", "right", "hardright")
    for pedal in ("gas", "coast", "brake")
]
SPACEINVADERS_ACTIONS = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
MEMORISE_MAX_STEPS, MEMORISED_LOSS = 60, 0.05


@pytest.fixture(scope="module")
def model() -> VLM:
    return VLM.from_config(VLMConfig.preset("tiny")).eval()


def frames(n: int, height: int = 96, width: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def pvp_samples(model: VLM, images: np.ndarray, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    pixels = model.preprocess(images)
    samples = []
    for i, image in enumerate(images):
        y, x = (int(v) for v in rng.integers(0, prompts.RECONSTRUCT_SIZE, size=2))
        rgb = prompts.reconstruction_target(image)[y, x]
        prompt, answer = prompts.reconstruct_prompt(y, x), prompts.reconstruct_answer(rgb)
        samples.append(dict(images=pixels[i : i + 1], prompt=prompt, answer=answer))
    return samples


def visual_prompt_samples(model: VLM) -> list[dict]:
    pixels = model.preprocess(frames(2))
    return [
        dict(
            images=pixels[:1],
            prompt=prompts.visual_prompt_question(prompts.POINT),
            answer=prompts.visual_prompt_answer(["car", "grass"], prompts.POINT),
            prompt_coords=[[0.2, 0.3, 0.0, 0.0], [0.7, 0.6, 0.0, 0.0]],
            prompt_kinds=[KIND_POINT, KIND_POINT],
        ),
        dict(
            images=pixels[1:],
            prompt=prompts.visual_prompt_question(prompts.REGION),
            answer=prompts.visual_prompt_answer(["road"], prompts.REGION),
            prompt_coords=[[0.1, 0.1, 0.5, 0.4]],
            prompt_kinds=[KIND_BOX],
        ),
    ]


# ---- config ------------------------------------------------------------------------------------


def test_presets_and_config_round_trip():
    tiny, full = VLMConfig.preset("tiny"), VLMConfig.preset("full")
    assert tiny == VLMConfig(vision_stem="conv") and tiny.vision_path is None and tiny.llm_path is None
    assert (full.image_size, full.lora_r, full.lora_target_modules, full.dtype) == (
        448,
        64,
        ("q_proj", "v_proj"),
        "bfloat16",
    )
    assert full.vision_path and full.llm_path
    assert VLMConfig.from_dict(full.to_dict()) == full
    with pytest.raises(ValueError, match="unknown preset"):
        VLMConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown VLMConfig fields"):
        VLMConfig.from_dict({"hidden": 3})


def test_attention_choice():
    expected = "sdpa" if not torch.cuda.is_available() else resolve_attn_implementation(None)
    assert resolve_attn_implementation(None) == expected
    assert resolve_attn_implementation("eager") == "eager"


# ---- prompts and tokenizer ---------------------------------------------------------------------


def test_prompt_templates_are_exact():
    assert prompts.reconstruct_prompt(3, 60) == "<Img><ImageHere></Img> [reconstruct] loc: [3,60] rgb: "
    assert prompts.reconstruct_answer(np.array([255, 0, 7], dtype=np.uint8)) == "[255,0,7]"
    assert prompts.segmentation_prompt("the red car", 5, 6) == (
        "<Img><ImageHere></Img> [segmentation] the red car loc: [5,6] mask: "
    )
    assert prompts.segmentation_answer(True) == "1" and prompts.segmentation_answer(False) == "0"
    assert prompts.game_prompt(2, "Drive well.", "CarRacing-v3") == (
        "<Img><ImageHere></Img><Img><ImageHere></Img> Drive well. [CarRacing-v3] choose an action from Action Space: "
    )
    assert prompts.game_prompt(2, "", "carracing") == (
        "<Img><ImageHere></Img><Img><ImageHere></Img> [carracing] choose an action from Action Space: "
    )
    assert prompts.visual_prompt_question(prompts.POINT).endswith(
        "<PromptHere> Please identify the labels of each marked point in the image."
    )
    assert prompts.visual_prompt_question(prompts.REGION).endswith("each marked region in the image.")
    assert prompts.visual_prompt_answer(["car", "road"], prompts.POINT) == "<Mark 1>: car\n<Mark 2>: road"
    assert prompts.visual_prompt_answer(["car"], prompts.REGION) == "<Region 1>: car"


def test_answer_parsing():
    assert prompts.parse_rgb("[12,300,4]</s>") == (12, 255, 4)
    assert prompts.parse_rgb("no colour") is None
    assert prompts.parse_mask(" 1") == 1 and prompts.parse_mask("x") is None
    assert prompts.parse_visual_prompt_answer("<Mark 1>: car\n<Mark 3>: tree", prompts.POINT) == {0: "car", 2: "tree"}
    target = prompts.reconstruction_target(frames(1, 210, 160)[0])
    assert target.shape == (64, 64, 3) and target.dtype == np.uint8


def test_tokenizer_is_deterministic_and_round_trips(tmp_path):
    a = build_tokenizer(extra_texts=["Shoot the aliens."])
    b = build_tokenizer(extra_texts=["Shoot the aliens."])
    assert a.get_vocab() == b.get_vocab()
    assert 256 < len(a) <= 1024
    text = prompts.reconstruct_prompt(12, 34) + "[255,0,17] Shoot the aliens. <Mark 2> ünïcode"
    assert a.decode(a.encode(text, add_special_tokens=False)) == text
    assert a.convert_ids_to_tokens(a.encode("255", add_special_tokens=False)) == ["2", "5", "5"]
    a.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.encode(text, add_special_tokens=False) == a.encode(text, add_special_tokens=False)
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (
        a.pad_token_id,
        a.bos_token_id,
        a.eos_token_id,
    )


def test_encode_labels_only_the_answer():
    tokenizer = build_tokenizer()
    prompt = prompts.game_prompt(3, "Shoot.", "SpaceInvaders") + "<PromptHere>"
    ids, labels = encode(tokenizer, prompt, "FIRE", num_image_tokens=5, num_prompt_tokens=10)
    answer = tokenizer.encode("FIRE", add_special_tokens=False) + [tokenizer.eos_token_id]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(IMAGE_TOKEN_ID) == 15 and ids.count(PROMPT_TOKEN_ID) == 10
    assert ids[-len(answer) :] == answer
    assert labels == [IGNORE_INDEX] * (len(ids) - len(answer)) + answer
    prompt_only, no_labels = encode(tokenizer, prompt, None, 5, 10)
    assert prompt_only == ids[: -len(answer)] and set(no_labels) == {IGNORE_INDEX}


# ---- vision, projector, visual prompts ---------------------------------------------------------


def test_preprocess_and_vision_interpolation(model):
    pixels = preprocess_images(frames(3, 210, 160), 64)
    assert pixels.shape == (3, 3, 64, 64) and pixels.dtype == torch.float32
    with pytest.raises(ValueError, match="uint8"):
        preprocess_images(np.zeros((2, 8, 8, 3), dtype=np.float32), 64)
    with torch.no_grad():
        assert model.vision(pixels).shape == (3, 8, 8, 192)
        # Other input sizes work through CLIP's position-embedding interpolation.
        assert model.vision(preprocess_images(frames(1), 96)).shape == (1, 12, 12, 192)
        assert model.encode_images(pixels).shape == (3, model.num_image_tokens, model.llm.config.hidden_size)
    assert model.num_image_tokens == 16


def test_vision_stems(model, tmp_path):
    """The tiny tower patchifies by convolutions; a config saved without the field (every checkpoint
    before it) keeps CLIP's linear patch embedding, and a pretrained tower keeps its own."""
    assert isinstance(model.vision.clip.embeddings.patch_embedding, ConvStem)
    old = {k: v for k, v in VLMConfig.preset("tiny").to_dict().items() if k != "vision_stem"}
    patch_model = VLM.from_config(VLMConfig.from_dict(old))
    assert patch_model.config.vision_stem == "patch"
    assert type(patch_model.vision.clip.embeddings.patch_embedding) is torch.nn.Conv2d
    patch_model.save_pretrained(tmp_path)
    loaded = VLM.from_pretrained(str(tmp_path))
    pixels = preprocess_images(frames(2, 64, 64), 64)
    with torch.no_grad():
        assert torch.equal(loaded.vision(pixels), patch_model.eval().vision(pixels))
        assert model.vision(pixels).shape == patch_model.vision(pixels).shape == (2, 8, 8, 192)
    with pytest.raises(ValueError, match="vision_stem"):
        VLMConfig(vision_stem="pixels")
    with pytest.raises(ValueError, match="pretrained tower's patch embedding"):
        VLM.from_config(VLMConfig.preset("full", vision_stem="conv"))
    with pytest.raises(ValueError, match="power-of-two"):
        ConvStem(192, 6)


def test_projector_merges_neighbours():
    grid = torch.arange(4 * 8, dtype=torch.float32).view(1, 4, 8, 1)  # patch value = its raster index
    for merge, first_group in (("2x2", [0, 1, 8, 9]), ("1x4", [0, 1, 2, 3])):
        projector = Projector(vision_dim=1, llm_dim=4, merge=merge)
        with torch.no_grad():
            projector.proj.weight.zero_()
            projector.proj.weight[:, :].copy_(torch.eye(4))
            projector.proj.bias.zero_()
            out = projector(grid)  # [1, 8, 4]
        assert out.shape == (1, 8, 4)
        assert out[0, 0].tolist() == first_group
    with pytest.raises(ValueError, match="even patch grid"):
        Projector(1, 4, "2x2")(torch.zeros(1, 3, 4, 1))


def test_visual_prompt_encoder_points_boxes_and_padding():
    torch.manual_seed(0)
    encoder = VisualPromptEncoder(llm_dim=32, num_slots=10, fourier_features=16, fourier_scale=1.0, seed=0)
    coords = torch.rand(1, 10, 4)
    kinds = torch.tensor([[KIND_POINT, KIND_BOX] + [KIND_POINT] * 8])
    valid = torch.tensor([[True, True, True] + [False] * 7])
    base = encoder(coords, kinds, valid)
    assert base.shape == (1, 10, 32)

    moved = coords.clone()
    moved[0, 0, :2] += 0.1
    assert not torch.allclose(encoder(moved, kinds, valid)[0, 0], base[0, 0])

    padded = coords.clone()
    padded[0, 3:] = torch.rand(7, 4)
    assert torch.equal(encoder(padded, kinds, valid), base)  # pad slots ignore their coordinates
    assert torch.equal(encoder(padded, kinds.masked_fill(~valid, KIND_BOX), valid), base)  # and their kinds

    as_box = kinds.clone()
    as_box[0, 0] = KIND_BOX
    assert not torch.allclose(encoder(coords, as_box, valid)[0, 0], base[0, 0])  # type embeddings matter
    point_second_corner = coords.clone()
    point_second_corner[0, 2, 2:] += 0.3
    assert torch.equal(encoder(point_second_corner, kinds, valid)[0, 2], base[0, 2])  # points ignore (x1, y1)


def test_box_noise_and_normalisation():
    box = torch.tensor([[0.2, 0.2, 0.6, 0.4]]).repeat(2000, 1)
    noisy = jitter_box(box, torch.Generator().manual_seed(1))
    assert torch.equal(noisy, jitter_box(box, torch.Generator().manual_seed(1)))
    assert not torch.equal(noisy, jitter_box(box, torch.Generator().manual_seed(2)))
    w, h = noisy[:, 2] - noisy[:, 0], noisy[:, 3] - noisy[:, 1]
    assert w.min() >= 0.85 * 0.4 - 1e-6 and w.max() <= 1.15 * 0.4 + 1e-6
    assert h.min() >= 0.85 * 0.2 - 1e-6 and h.max() <= 1.15 * 0.2 + 1e-6
    cx, cy = (noisy[:, 0] + noisy[:, 2]) / 2, (noisy[:, 1] + noisy[:, 3]) / 2
    assert (cx - 0.4).abs().max() <= 0.4 / 8 + 1e-6 and (cy - 0.3).abs().max() <= 0.2 / 8 + 1e-6
    assert (cx - 0.4).abs().max() > 0.4 / 16  # the shift range is actually used
    assert jitter_box(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.Generator().manual_seed(0)).min() >= 0
    assert normalize_point(0, 95, 96, 96) == (0.5 / 96, 95.5 / 96)
    assert normalize_box(0, 0, 160, 210, 160, 210) == (0.0, 0.0, 1.0, 1.0)


# ---- model -------------------------------------------------------------------------------------


def test_collate_and_forward_shapes(model):
    samples = pvp_samples(model, frames(3))
    batch = model.collate(samples)
    b, length = batch["input_ids"].shape
    assert batch["images"].shape == (3, 1, 3, 64, 64)
    assert batch["attention_mask"].shape == batch["labels"].shape == (b, length)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape == (3, length, len(model.tokenizer))

    vp = model.collate(visual_prompt_samples(model))
    assert vp["prompt_coords"].shape == (2, 10, 4) and vp["prompt_kinds"].shape == (2, 10)
    assert vp["prompt_valid"].sum(1).tolist() == [2, 1]
    with torch.no_grad():
        assert torch.isfinite(model(**vp).loss)


def test_loss_is_on_answer_tokens_only(model):
    batch = model.collate(pvp_samples(model, frames(2)))
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    answer = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[answer], labels[answer])
    assert torch.allclose(out.loss, expected, atol=1e-5)
    # Only answer and eos are labelled: the labelled text decodes to the answers.
    first = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert model.tokenizer.decode(first[:-1]) == pvp_samples(model, frames(2))[0]["answer"]
    assert first[-1] == model.tokenizer.eos_token_id


def test_padded_prompt_slots_change_nothing(model):
    batch = model.collate(visual_prompt_samples(model))
    changed = {k: v.clone() for k, v in batch.items()}
    changed["prompt_coords"][~batch["prompt_valid"]] = torch.rand(int((~batch["prompt_valid"]).sum()), 4)
    moved = {k: v.clone() for k, v in batch.items()}
    moved["prompt_coords"][0, 0, :2] = torch.tensor([0.9, 0.9])
    with torch.no_grad():
        base = model(**batch).logits
        assert torch.equal(model(**changed).logits, base)
        assert not torch.allclose(model(**moved).logits[0], base[0])


def test_missing_inputs_raise_clear_errors(model):
    batch = model.collate(pvp_samples(model, frames(1)))
    del batch["images"]
    with pytest.raises(ValueError, match="neither images nor image_tokens"):
        model(**batch)
    one_image = torch.zeros(1, 1, model.num_image_tokens, model.llm.config.hidden_size)  # the prompt has two
    with pytest.raises(ValueError, match="image placeholders"):
        model.choose(prompts.game_prompt(2, "Go.", "g"), ["a", "b"], image_tokens=one_image)


# ---- choice and generation ---------------------------------------------------------------------


def teacher_forced_scores(model: VLM, prompt: str, images: torch.Tensor, candidates: list[str]) -> torch.Tensor:
    scores = []
    for candidate in candidates:
        batch = model.collate([dict(images=images, prompt=prompt, answer=candidate)])
        with torch.no_grad():
            logp = model(**batch).logits[0, :-1].log_softmax(-1)
        labels = batch["labels"][0, 1:]
        answer = labels != IGNORE_INDEX
        scores.append(logp[answer].gather(-1, labels[answer, None]).sum())
    return torch.stack(scores)


def test_choose_returns_legal_normalised_choices(model):
    pixels = model.preprocess(frames(3 * 4, 210, 160)).view(3, 4, 3, 64, 64)
    game = [
        prompts.game_prompt(4, instruction, "SpaceInvaders")
        for instruction in ("Shoot.", "Shoot the aliens.", "Dodge.")
    ]
    choice = model.choose(game, SPACEINVADERS_ACTIONS, images=pixels)
    assert choice.probs.shape == (3, 6)
    assert torch.allclose(choice.probs.sum(-1), torch.ones(3), atol=1e-5)
    assert all(a in SPACEINVADERS_ACTIONS for a in choice.answers)
    assert [SPACEINVADERS_ACTIONS[i] for i in choice.index.tolist()] == choice.answers
    assert torch.equal(choice.prob, choice.probs.max(-1).values)
    assert choice.greedy_legal.shape == (3,) and choice.greedy_legal.dtype == torch.bool
    # Each observation scores exactly as a one-at-a-time teacher-forced pass (RIGHT vs RIGHTFIRE included).
    for b in range(3):
        expected = teacher_forced_scores(model, game[b], pixels[b], SPACEINVADERS_ACTIONS).softmax(-1)
        assert torch.allclose(choice.probs[b], expected, atol=1e-5)
        single = model.choose(game[b], SPACEINVADERS_ACTIONS, images=pixels[b : b + 1])
        assert torch.allclose(single.probs[0], choice.probs[b], atol=1e-5)


def test_frame_cache_encodes_each_frame_once(model):
    stream = frames(6)  # consecutive 2-frame stacks share a frame
    cache = FrameCache(model, capacity=4)
    prompt = prompts.game_prompt(2, "Drive.", "CarRacing-v3")
    for t in range(5):
        tokens = cache(stream[t : t + 2])  # [2, T, D]
        with torch.no_grad():
            expected = model.encode_images(model.preprocess(stream[t : t + 2]))
        assert tokens.shape == expected.shape and torch.allclose(tokens, expected, atol=1e-5)
        cached = model.choose(prompt, CARRACING_ACTIONS, image_tokens=tokens[None])
        fresh = model.choose(prompt, CARRACING_ACTIONS, images=model.preprocess(stream[t : t + 2])[None])
        assert torch.allclose(cached.probs, fresh.probs, atol=1e-5)
    assert (cache.misses, cache.hits) == (6, 4) and len(cache.tokens) == 4
    # An episode's first stack repeats one frame; a batch of stacks works the same way.
    assert cache(np.stack([stream[0], stream[0]])).shape == tokens.shape and cache.misses == 7
    assert cache(np.stack([stream[3:5], stream[4:6]])).shape == (2, *tokens.shape) and cache.misses == 7
    cache.clear()
    assert not cache.tokens


def test_choose_layouts_agree(model):
    """The prefix tree in one row (4D mask) and one row per candidate (flash attention's layout)
    score alike, with shared prefixes, a candidate that is a prefix of another, and an empty one."""
    pixels = model.preprocess(frames(4)).view(2, 2, 3, 64, 64)
    game = [
        prompts.game_prompt(2, "Drive.", "CarRacing-v3"),
        prompts.game_prompt(2, "Drive fast on the road.", "CarRacing-v3"),
    ]
    candidates = ["left_gas", "left_brake", "left", "hardleft_gas", "straight_coast", ""]
    tree = model.choose(game, candidates, images=pixels)
    rows = model.choose(game, candidates, images=pixels, one_row_per_candidate=True)
    assert torch.allclose(tree.probs, rows.probs, atol=1e-5)
    assert torch.equal(tree.greedy_legal, rows.greedy_legal)
    for b in range(2):
        expected = teacher_forced_scores(model, game[b], pixels[b], candidates).softmax(-1)
        assert torch.allclose(tree.probs[b], expected, atol=1e-5)
    with pytest.raises(ValueError, match="at least one candidate"):
        model.choose(game, [], images=pixels)


def test_greedy_legality_agrees_with_generate():
    """Once a model has learnt to answer left_gas, greedy decoding is legal exactly when left_gas is a
    candidate; "left" alone is not enough (greedy goes on past it instead of stopping)."""
    torch.manual_seed(0)
    fresh = VLM.from_config(VLMConfig.preset("tiny", seed=2))
    fresh.set_trainable(**TRAINING_STAGES["scratch"])
    prompt = prompts.game_prompt(1, "Drive.", "CarRacing-v3")
    pixels = fresh.preprocess(frames(1))[None]  # [1, 1, 3, S, S]
    batch = fresh.collate([dict(images=pixels[0], prompt=prompt, answer="left_gas")])
    optimizer = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(MEMORISE_MAX_STEPS):
        loss = fresh(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if loss.item() < MEMORISED_LOSS:
            break
    fresh.eval()
    assert fresh.generate(prompt, images=pixels, max_new_tokens=8) == ["left_gas"]
    legal = fresh.choose(prompt, CARRACING_ACTIONS, images=pixels)
    assert legal.answers == ["left_gas"] and legal.greedy_legal.tolist() == [True]
    for candidates in (["right_gas", "straight_gas"], ["left", "right"]):
        choice = fresh.choose(prompt, candidates, images=pixels)
        assert choice.answers[0] in candidates and choice.greedy_legal.tolist() == [False]


def test_choose_is_the_same_with_eager_attention(model, tmp_path):
    model.save_pretrained(tmp_path)
    eager = VLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    assert eager.llm.config._attn_implementation == "eager"
    pixels = model.preprocess(frames(4)).view(2, 2, 3, 64, 64)
    game = [
        prompts.game_prompt(2, "Drive.", "CarRacing-v3"),
        prompts.game_prompt(2, "Drive fast on the road.", "CarRacing-v3"),
    ]
    expected = model.choose(game, CARRACING_ACTIONS, images=pixels).probs
    assert torch.allclose(eager.choose(game, CARRACING_ACTIONS, images=pixels).probs, expected, atol=1e-5)


def test_generate_matches_step_by_step_greedy(model):
    pixels = model.preprocess(frames(2))
    texts = [prompts.reconstruct_prompt(1, 2), prompts.segmentation_prompt("the long grey road on the left", 3, 4)]
    generated = model.generate(texts, images=pixels[:, None], max_new_tokens=6)
    for i, text in enumerate(texts):
        ids = encode(model.tokenizer, text, None, model.num_image_tokens, 10)[0]
        out = []
        for _ in range(6):
            with torch.no_grad():
                mask = torch.ones(1, len(ids), dtype=torch.long)
                logits = model(torch.tensor([ids]), mask, images=pixels[i : i + 1, None]).logits
            token = int(logits[0, -1].argmax())
            if token == model.tokenizer.eos_token_id:
                break
            ids.append(token)
            out.append(token)
        assert generated[i] == model.tokenizer.decode(out, skip_special_tokens=True)


# ---- save / load / merge -----------------------------------------------------------------------


def test_save_load_gives_identical_logits(model, tmp_path):
    batch = model.collate(visual_prompt_samples(model))
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(tmp_path))
    loaded = VLM.from_pretrained(str(tmp_path))
    assert loaded.config == model.config and not loaded.training  # ready to play, as Hugging Face models load
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_merge_lora_keeps_outputs(tmp_path):
    fresh = VLM.from_config(VLMConfig.preset("tiny", seed=1))
    with torch.no_grad():  # LoRA B starts at zero; make the adapters do something
        for p in fresh.parameter_groups()["llm_lora"]:
            p.normal_(0, 0.05)
    fresh.eval()
    batch = fresh.collate(pvp_samples(fresh, frames(2)))
    with torch.no_grad():
        before = fresh(**batch).logits
        fresh.merge_lora()
        merged = fresh(**batch).logits
    assert fresh.config.lora_r == 0 and not fresh.parameter_groups()["llm_lora"]
    assert torch.allclose(before, merged, atol=1e-4)
    fresh.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(VLM.from_pretrained(str(tmp_path)).eval()(**batch).logits, merged)
    with pytest.raises(ValueError, match="no LoRA"):
        fresh.set_trainable(llm_lora=True)


def test_from_pretrained_on_missing_dir_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing config.json, model.safetensors.*save_pretrained"):
        VLM.from_pretrained(str(tmp_path / "nope"))


# ---- training ----------------------------------------------------------------------------------


def test_each_stage_trains_exactly_its_parts():
    fresh = VLM.from_config(VLMConfig.preset("tiny"))
    fresh.train()
    batch = fresh.collate(visual_prompt_samples(fresh))
    groups = fresh.parameter_groups()
    # CLIP's post_layernorm only serves the pooled CLS output, which the VLM drops.
    unused = {id(p) for p in fresh.vision.clip.post_layernorm.parameters()}
    for stage, flags in TRAINING_STAGES.items():
        fresh.set_trainable(**flags)
        fresh.zero_grad(set_to_none=True)
        fresh(**batch).loss.backward()
        for group, params in groups.items():
            used = [p for p in params if id(p) not in unused]
            if flags.get(group, False):
                assert all(p.requires_grad and p.grad is not None for p in used), (stage, group)
                assert any(p.grad.abs().sum() > 0 for p in used), (stage, group)
            else:
                assert all(not p.requires_grad and p.grad is None for p in params), (stage, group)


OVERFIT_SAMPLES, OVERFIT_BATCH, OVERFIT_LR, OVERFIT_WARMUP, OVERFIT_MAX_EPOCHS = 32, 8, 3e-3, 10, 50


def test_tiny_model_overfits_32_pvp_samples():
    """Projector + LLM trainable on a randomly initialised frozen vision tower (training that tower
    too at this learning rate halves the pace); stops once the loss is 10x lower."""
    torch.manual_seed(0)
    fresh = VLM.from_config(VLMConfig.preset("tiny"))
    fresh.set_trainable(projector=True, llm=True)
    samples = pvp_samples(fresh, frames(OVERFIT_SAMPLES, 64, 64))
    everything = fresh.collate(samples)
    batches = [fresh.collate(samples[i : i + OVERFIT_BATCH]) for i in range(0, OVERFIT_SAMPLES, OVERFIT_BATCH)]
    fresh.eval()
    with torch.no_grad():
        initial = fresh(**everything).loss.item()
    fresh.train()
    optimizer = torch.optim.AdamW(
        [p for p in fresh.parameters() if p.requires_grad], lr=OVERFIT_LR, betas=(0.9, 0.95), weight_decay=0.0
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / OVERFIT_WARMUP))
    for _ in range(OVERFIT_MAX_EPOCHS):
        epoch_loss = 0.0
        for batch in batches:
            loss = fresh(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(fresh.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.item() / len(batches)
        if epoch_loss < initial / 10:
            break
    fresh.eval()
    with torch.no_grad():
        final = fresh(**everything).loss.item()
    assert final < initial / 10, (initial, final)
