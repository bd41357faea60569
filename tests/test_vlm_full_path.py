"""The `full` preset's code path (local Hugging Face towers, local_files_only, LoRA r=64, bf16),
pointed at tiny CLIP and LLaMA directories this test creates with save_pretrained."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM

from vlm import VLM, VLMConfig, build_tokenizer, prompts

CLIP_IMAGE_SIZE = 32  # the checkpoint's native size; the VLM runs it at 64 px (interpolated positions)
VLM_IMAGE_SIZE = 64
PATCH = 8


@pytest.fixture(scope="module")
def tower_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    clip = CLIPModel(
        CLIPConfig(
            vision_config=dict(
                hidden_size=48,
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=CLIP_IMAGE_SIZE,
                patch_size=PATCH,
            ),
            text_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99
            ),
        )
    )
    clip.save_pretrained(root / "clip")
    tokenizer = build_tokenizer()
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    llama.save_pretrained(root / "llama")
    tokenizer.pad_token = None  # as LLaMA-2's own tokenizer: no pad token
    tokenizer.save_pretrained(root / "llama")
    return str(root / "clip"), str(root / "llama"), clip, llama


@pytest.fixture(scope="module")
def full_model(tower_dirs) -> VLM:
    clip_dir, llama_dir, _, _ = tower_dirs
    config = VLMConfig.preset("full", vision_path=clip_dir, llm_path=llama_dir, image_size=VLM_IMAGE_SIZE)
    return VLM.from_config(config).eval()


def test_full_preset_loads_local_towers(full_model, tower_dirs):
    _, _, clip, llama = tower_dirs
    assert full_model.vision.clip.dtype == torch.bfloat16 and full_model.llm.dtype == torch.bfloat16
    loaded_patch = full_model.vision.clip.embeddings.patch_embedding.weight.float()
    assert torch.equal(loaded_patch, clip.vision_model.embeddings.patch_embedding.weight.bfloat16().float())
    base = full_model.llm.get_base_model()
    q_proj = base.model.layers[0].self_attn.q_proj
    assert torch.equal(
        q_proj.base_layer.weight.float(), llama.model.layers[0].self_attn.q_proj.weight.bfloat16().float()
    )
    assert q_proj.r["default"] == 64 and base.model.layers[0].self_attn.v_proj.r["default"] == 64
    assert not hasattr(base.model.layers[0].self_attn.k_proj, "lora_A")
    assert full_model.num_image_tokens == (VLM_IMAGE_SIZE // PATCH) ** 2 // 4
    assert full_model.tokenizer.pad_token_id == full_model.tokenizer.eos_token_id  # no pad, no unk: eos pads


def test_full_path_forward_choose_generate_and_round_trip(full_model, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(2, 210, 160, 3), dtype=np.uint8)
    pixels = full_model.preprocess(images)
    batch = full_model.collate([dict(images=pixels[:1], prompt=prompts.reconstruct_prompt(1, 2), answer="[1,2,3]")])
    with torch.no_grad():
        logits = full_model(**batch).logits
    assert torch.isfinite(logits).all()
    choice = full_model.choose(prompts.game_prompt(2, "Shoot.", "SpaceInvaders"), ["NOOP", "FIRE"], images=pixels[None])
    assert choice.answers[0] in ("NOOP", "FIRE") and abs(float(choice.probs.sum()) - 1) < 1e-5
    assert len(full_model.generate(prompts.reconstruct_prompt(1, 2), images=pixels[:1, None], max_new_tokens=3)) == 1

    full_model.save_pretrained(tmp_path)
    loaded = VLM.from_pretrained(str(tmp_path)).eval()  # needs no tower directories
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, logits)


def test_missing_tower_directory_is_a_clear_error(tower_dirs, tmp_path):
    clip_dir, llama_dir, _, _ = tower_dirs
    no_clip = VLMConfig.preset("full", vision_path=str(tmp_path / "no-clip"), llm_path=llama_dir)
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face model directory"):
        VLM.from_config(no_clip)
    no_llama = VLMConfig.preset("full", vision_path=clip_dir, llm_path=str(tmp_path / "no-llama"))
    with pytest.raises(FileNotFoundError, match="no tokenizer directory"):
        VLM.from_config(no_llama)
