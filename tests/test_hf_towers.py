"""The full preset on local Hugging Face towers of every supported type: CLIP and SigLIP vision (dual encoder or
vision model alone), LLaMA, SmolLM (a LLaMA with tied embeddings), Mistral, Qwen2 and Qwen3 causal LMs. Tiny random
models saved with save_pretrained into tmp_path; real transformers models, nothing downloaded."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from core.errors import UserError
from vlm import KIND_BOX, VLM, VLMConfig, build_tokenizer, prompts
from vlm.vision import SIGLIP_MEAN, SIGLIP_STD

VISION = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99)
# Weights wide enough that the LLM's scores depend on what it attends to (at the default 0.02 they barely do).
LLM_INIT_STD = 0.1
LLM = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    initializer_range=LLM_INIT_STD,
)
TOWER_IMAGE_SIZE = 32  # the towers' native size; the VLM runs them at 64 px (interpolated positions)
VLM_IMAGE_SIZE = 64
PATCH = 8
GRID = VLM_IMAGE_SIZE // PATCH
ACTIONS = ["NOOP", "FIRE", "LEFT"]
GAME_PROMPT = prompts.game_prompt(1, "", "game")
QWEN_END = "<|endoftext|>"

VISION_FOLDERS = {
    "clip": lambda: CLIPModel(
        CLIPConfig(vision_config=dict(**VISION, image_size=TOWER_IMAGE_SIZE, patch_size=PATCH), text_config=TEXT)
    ),
    "clip_vision_model": lambda: CLIPVisionModel(
        CLIPVisionConfig(**VISION, image_size=TOWER_IMAGE_SIZE, patch_size=PATCH)
    ),
    "siglip": lambda: SiglipModel(
        SiglipConfig(vision_config=dict(**VISION, image_size=TOWER_IMAGE_SIZE, patch_size=PATCH), text_config=TEXT)
    ),
    "siglip_vision_model": lambda: SiglipVisionModel(
        SiglipVisionConfig(**VISION, image_size=TOWER_IMAGE_SIZE, patch_size=PATCH)
    ),
}
# name -> (model, its config class, extra config fields, the tokenizer has a bos token)
LLM_FOLDERS = {
    "llama": (LlamaForCausalLM, LlamaConfig, dict(tie_word_embeddings=False), True),
    "smollm": (LlamaForCausalLM, LlamaConfig, dict(tie_word_embeddings=True), True),  # SmolLM: model_type llama
    "mistral": (MistralForCausalLM, MistralConfig, dict(tie_word_embeddings=False), True),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config, dict(tie_word_embeddings=False), False),  # Qwen has no bos token
    "qwen3": (Qwen3ForCausalLM, Qwen3Config, dict(tie_word_embeddings=True, head_dim=8), False),
}
# Each LLM with one vision folder; together they cover every vision folder type.
PAIRS = [
    ("clip", "llama"),
    ("siglip", "qwen2"),
    ("siglip_vision_model", "smollm"),
    ("clip_vision_model", "mistral"),
    ("siglip", "qwen3"),
]


def llm_tokenizer(has_bos: bool):
    """The project's BPE dressed as the LLM's own: LLaMA-2's has no pad token; Qwen's has no bos, and its
    <|endoftext|> ends and pads."""
    tokenizer = build_tokenizer()
    if has_bos:
        tokenizer.pad_token = None
    else:
        tokenizer.add_special_tokens({"eos_token": QWEN_END, "pad_token": QWEN_END})
        tokenizer.bos_token = None
    return tokenizer


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> dict:
    """Folder name -> (path, the model saved there)."""
    root = tmp_path_factory.mktemp("towers")
    folders = {}
    torch.manual_seed(0)
    for name, build in VISION_FOLDERS.items():
        model = build()
        model.save_pretrained(root / name)
        folders[name] = (str(root / name), model)
    for name, (model_class, config_class, extra, has_bos) in LLM_FOLDERS.items():
        tokenizer = llm_tokenizer(has_bos)
        special = dict(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = model_class(config_class(vocab_size=len(tokenizer), **LLM, **extra, **special))
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = (str(root / name), model)
    return folders


def full_config(towers: dict, vision: str, llm: str, **overrides) -> VLMConfig:
    paths = dict(vision_path=towers[vision][0], llm_path=towers[llm][0])
    return VLMConfig.preset("full", **paths, image_size=VLM_IMAGE_SIZE, **overrides)


def batch(model: VLM) -> dict:
    """A game sample and a visual prompt sample, one image each."""
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 96, 96, 3), dtype=np.uint8)
    pixels = model.preprocess(frames)
    game = dict(images=pixels[:1], prompt=GAME_PROMPT, answer="FIRE")
    region = dict(
        images=pixels[1:],
        prompt=prompts.visual_prompt_question(prompts.REGION),
        answer=prompts.visual_prompt_answer(["road"], prompts.REGION),
        prompt_coords=[[0.1, 0.1, 0.5, 0.4]],
        prompt_kinds=[KIND_BOX],
    )
    return model.collate([game, region])


@pytest.mark.parametrize(("vision", "llm"), PAIRS)
def test_local_towers_train_choose_and_round_trip(towers, vision, llm, tmp_path):
    model = VLM.from_config(full_config(towers, vision, llm))
    vision_width, llm_width = VISION["hidden_size"], LLM["hidden_size"]
    assert model.projector.proj.in_features == 4 * vision_width and model.projector.proj.out_features == llm_width
    assert model.prompt_encoder.proj.out_features == llm_width
    assert model.num_image_tokens == GRID * GRID // 4
    saved_embeddings = towers[llm][1].get_input_embeddings().weight
    assert torch.equal(model.llm.get_input_embeddings().weight.float(), saved_embeddings.bfloat16().float())

    model.train()
    model.set_trainable(vision=True, projector=True, llm_lora=True, prompt_encoder=True, prompt_projector=True)
    inputs = batch(model)
    loss = model(**inputs).loss
    assert torch.isfinite(loss)
    loss.backward()
    for group in ("vision", "projector", "llm_lora", "prompt_encoder", "prompt_projector"):
        grads = [p.grad for p in model.parameter_groups()[group] if p.grad is not None]
        assert any(g.abs().sum() > 0 for g in grads), group

    model.eval()
    pixels = inputs["images"][:1]  # [1, 1, 3, S, S]
    choice = model.choose(GAME_PROMPT, ACTIONS, images=pixels)
    assert choice.answers[0] in ACTIONS and abs(float(choice.probs.sum()) - 1) < 1e-5
    with torch.no_grad():
        logits = model(**inputs).logits
    model.save_pretrained(str(tmp_path))
    loaded = VLM.from_pretrained(str(tmp_path))  # needs no tower folders
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, logits)
    again = loaded.choose(GAME_PROMPT, ACTIONS, images=pixels)
    assert torch.equal(again.probs, choice.probs)


@pytest.mark.parametrize(("vision", "llm"), PAIRS)
def test_choice_layouts_agree(towers, vision, llm):
    """choose()'s prefix tree in one row takes a 4D attention mask; one row per candidate takes a plain one. They
    agree only where the LLM honours the 4D mask (float32, to compare closely; an all-visible mask moves these log
    probabilities by about 1)."""
    model = VLM.from_config(full_config(towers, vision, llm, dtype="float32")).eval()
    pixels = batch(model)["images"][:1]
    candidates = ["left_gas", "left_brake", "left", "straight"]  # shared prefixes: a branching tree
    tree = model.choose(GAME_PROMPT, candidates, images=pixels)
    rows = model.choose(GAME_PROMPT, candidates, images=pixels, one_row_per_candidate=True)
    assert torch.allclose(tree.probs.log(), rows.probs.log(), atol=1e-4)


@pytest.mark.parametrize("vision", list(VISION_FOLDERS))
def test_patch_tokens_and_normalisation_follow_the_tower(towers, vision):
    """The folder's weights are loaded; CLIP's CLS token is dropped, SigLIP has none; SigLIP's pixels are
    normalised to [-1, 1]."""
    model = VLM.from_config(full_config(towers, vision, "llama")).eval()
    white = np.full((1, VLM_IMAGE_SIZE, VLM_IMAGE_SIZE, 3), 255, dtype=np.uint8)
    pixels = model.preprocess(white)
    saved = towers[vision][1]
    saved_patch_embedding = getattr(saved, "vision_model", saved).embeddings.patch_embedding.weight  # dual: its half
    loaded_patch_embedding = model.vision.clip.embeddings.patch_embedding.weight
    assert torch.equal(loaded_patch_embedding.float(), saved_patch_embedding.bfloat16().float())
    siglip = vision.startswith("siglip")
    if siglip:
        expected = (1 - torch.tensor(SIGLIP_MEAN)) / torch.tensor(SIGLIP_STD)
        assert torch.allclose(pixels[0, :, 0, 0], expected)
    with torch.no_grad():
        hidden = model.vision.clip(pixel_values=pixels.bfloat16(), interpolate_pos_encoding=True).last_hidden_state
        patches = model.vision(pixels)
    assert hidden.shape[1] == GRID * GRID + (0 if siglip else 1)
    assert torch.equal(patches.flatten(1, 2), hidden[:, -GRID * GRID :])
    if siglip:
        assert not model.vision.clip.config.vision_use_head  # the unused pooling head is not loaded


def test_missing_or_unsupported_folders_are_one_line_user_errors(towers, tmp_path):
    clip, llama = towers["clip"][0], towers["llama"][0]
    missing = VLMConfig.preset("full", vision_path=str(tmp_path / "none"), llm_path=llama)
    with pytest.raises(UserError, match=r"vision_path path .* is not a local Hugging Face model directory"):
        VLM.from_config(missing)
    BertConfig().save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match=r"type 'bert'; supported types: clip, clip_vision_model, siglip, siglip_vis"):
        VLM.from_config(VLMConfig.preset("full", vision_path=str(tmp_path / "bert"), llm_path=llama))
    build_tokenizer().save_pretrained(tmp_path / "bert")
    with pytest.raises(UserError, match=r"type 'bert'; supported types: llama, mistral, qwen2, qwen3$"):
        VLM.from_config(VLMConfig.preset("full", vision_path=clip, llm_path=str(tmp_path / "bert")))
    with pytest.raises(UserError, match="no tokenizer in"):
        VLM.from_config(VLMConfig.preset("full", vision_path=clip, llm_path=clip))
    with pytest.raises(UserError, match="no tokenizer directory"):
        VLM.from_config(VLMConfig.preset("full", vision_path=clip, llm_path=str(tmp_path / "none")))
