"""Language model: a transformers causal LM (LLaMA family), LoRA via peft."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

from vlm.config import VLMConfig, load_tower_config

# Decoder-only LMs the VLM drives as it drives LLaMA: inputs_embeds, position ids, a 4D attention mask (choose()'s
# prefix tree), logits_to_keep, and q_proj / v_proj projections for LoRA. SmolLM is "llama".
LLM_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def build_llm(config: VLMConfig, tokenizer: PreTrainedTokenizerBase, attn_implementation: str) -> PreTrainedModel:
    if config.llm_path is not None:
        llm_config = load_tower_config(config.llm_path, "llm_path", LLM_TYPES)
        llm = AutoModelForCausalLM.from_pretrained(
            config.llm_path,
            config=llm_config,
            local_files_only=True,
            dtype=config.torch_dtype,
            attn_implementation=attn_implementation,
        )
        if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the LLM in {config.llm_path} only "
                f"{llm.get_input_embeddings().num_embeddings} embeddings; use the LLM's own tokenizer"
            )
        return llm
    llm_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.llm_hidden_size,
        intermediate_size=config.llm_intermediate_size,
        num_hidden_layers=config.llm_layers,
        num_attention_heads=config.llm_heads,
        num_key_value_heads=config.llm_heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return llm_from_config(llm_config.to_dict(), config.torch_dtype, attn_implementation)


def llm_from_config(llm_config: dict, dtype: torch.dtype, attn_implementation: str) -> PreTrainedModel:
    """A randomly initialised LLM from a saved config dict (weights are loaded afterwards)."""
    values = dict(llm_config)
    hf_config = AutoConfig.for_model(values.pop("model_type"), **values)
    return AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=attn_implementation)


def add_lora(llm: PreTrainedModel, config: VLMConfig) -> PreTrainedModel:
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, lora)
