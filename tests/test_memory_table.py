"""benchmarks/memory_table.py: parameter counts of the meta-device model, the LLM activation enumeration, the table."""

import importlib.util
import sys

import pytest
import torch
from conftest import REPO_ROOT

from train.__main__ import new_model
from vlm import VLM, VLMConfig

# meta-llama/Llama-2-7b-hf: every weight, embeddings and LM head included (the Hub's "6.74B"; GGUF conversions
# report general.parameter_count = 6738415616).
LLAMA_2_7B_PARAMETERS = 6_738_415_616
# open_clip docs/model_profile.csv, ViT-L-14: image_mparams 303.97, which includes the 1024 x 768 output
# projection that a CLIPVisionModel (what the VLM uses) does not have.
CLIP_VIT_L_14_IMAGE_PARAMETERS = 303_970_000
CLIP_VIT_L_14_PROJECTION = 1024 * 768
RELATIVE_TOLERANCE = 0.01


def load_script():
    spec = importlib.util.spec_from_file_location("memory_table", REPO_ROOT / "benchmarks" / "memory_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


memory_table = load_script()


@pytest.fixture(scope="module")
def full_model() -> VLM:
    return memory_table.meta_model(memory_table.train_config("pvp", "full", []).model)


def test_tiny_parameter_count_equals_a_real_tiny_model():
    model_cfg = memory_table.train_config("pvp", "tiny", []).model
    counted = memory_table.parameter_counts(memory_table.meta_model(model_cfg))
    real = new_model(model_cfg)  # what python -m train builds for model=tiny
    assert counted == {part: sum(p.numel() for p in params) for part, params in real.parameter_groups().items()}
    assert sum(counted.values()) == sum(p.numel() for p in real.parameters())


def test_full_parameter_count_matches_llama_2_7b_and_clip_vit_l_14(full_model):
    counts = memory_table.parameter_counts(full_model)
    assert all(p.device.type == "meta" for p in full_model.parameters())
    assert counts["llm"] == pytest.approx(LLAMA_2_7B_PARAMETERS, rel=RELATIVE_TOLERANCE)
    vision = CLIP_VIT_L_14_IMAGE_PARAMETERS - CLIP_VIT_L_14_PROJECTION
    assert counts["vision"] == pytest.approx(vision, rel=RELATIVE_TOLERANCE)
    known = LLAMA_2_7B_PARAMETERS + CLIP_VIT_L_14_IMAGE_PARAMETERS
    assert sum(counts.values()) == pytest.approx(known, rel=RELATIVE_TOLERANCE)


def saved_tensor_bytes(run, excluded: set[int]) -> int:
    """Bytes of the distinct tensors autograd saves while run() builds the graph, but those whose storage is in
    `excluded` (the parameters)."""
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(saved.values())


def test_llm_activation_enumeration_matches_autograds_saved_tensors():
    """On a small bf16 LLaMA with fp32 LoRA, the per-layer enumeration is what autograd keeps under bf16 autocast
    (CPU; without dropout, whose mask is boolean on a GPU but a float tensor on a CPU)."""
    model = VLM.from_config(VLMConfig.preset("tiny", dtype="bfloat16", lora_dropout=0.0))
    model.train()
    model.set_trainable(projector=True, llm_lora=True)
    batch, length = 2, 40
    tokens = batch * length
    embeds = torch.randn(batch, length, model.llm.config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(model.llm.config.vocab_size, (batch, length))
    positions = torch.arange(length).expand(batch, length)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.llm(inputs_embeds=embeds, position_ids=positions, labels=labels).loss.backward()

    measured = saved_tensor_bytes(forward, parameters)
    assert measured == pytest.approx(memory_table.llm_saved_bytes(model, tokens), rel=1e-3)


def test_the_table_has_every_stage_and_fsdp_shards_the_states(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["memory_table.py", "--recipe", "pvp", "--gpus", "1", "4"])
    memory_table.main()
    out = capsys.readouterr().out
    totals = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1] in ("ddp", "fsdp"):
            totals[cells[0], cells[1]] = [float(c) for c in cells[2:]]
    assert {stage for stage, _ in totals} == {"pvp_stage1", "pvp_stage2", "pvp_stage3"}
    for stage in ("pvp_stage1", "pvp_stage2", "pvp_stage3"):
        (ddp_1, ddp_4), (fsdp_1, fsdp_4) = totals[stage, "ddp"], totals[stage, "fsdp"]
        assert ddp_1 == ddp_4 == fsdp_1 > fsdp_4
    assert "6.738 B" in out and "text tokens counted with" in out
