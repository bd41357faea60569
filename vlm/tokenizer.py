"""Tokenizers and prompt encoding.

The tiny preset uses a byte-level BPE the project trains itself (deterministic, digits split one
by one as LLaMA does); the full preset uses the LLM's own tokenizer. Markers are never tokens:
the prompt is split on them and their positions get negative placeholder ids, which the model
replaces with image / visual prompt embeddings.
"""

import os
import re

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from vlm import prompts
from vlm.config import MissingFolderError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"  # what tokenizer.save_pretrained always writes
IMAGE_TOKEN_ID = -200  # placeholder ids inside input_ids, replaced by embeddings in the model
PROMPT_TOKEN_ID = -300
IGNORE_INDEX = -100  # label of tokens without loss

_MARKERS = re.compile(f"({re.escape(prompts.IMAGE_MARKER)}|{re.escape(prompts.PROMPT_MARKER)})")

# Common words of task templates and instructions. No game's words: every game's instruction and action
# words come from its GameSpec through build_tokenizer(extra_texts), as do referring phrases and labels.
_BASE_WORDS = (
    "left right up down the a an of to and or in on at is are be you your it its this that with for from as by "
    "not do game player score points reward objective tips action actions space image frame object"
)


_CORPUS_PROMPT_SLOTS = 10  # <Mark 1> .. <Mark 10>, as many as the encoder's slots


def _training_corpus(extra_texts) -> list[str]:
    corpus = [_BASE_WORDS, *_BASE_WORDS.split(), "0 1 2 3 4 5 6 7 8 9"]  # alone too: answers start without a space
    corpus += [
        prompts.reconstruct_prompt(y, x) + prompts.reconstruct_answer((y, x, y + x))
        for y in range(0, 64, 7)
        for x in range(0, 64, 9)
    ]
    corpus += [
        prompts.segmentation_prompt("the object", y, y) + prompts.segmentation_answer(y % 2 == 0) for y in range(64)
    ]
    for kind in prompts.PROMPT_NAMES:
        labels = [f"object {i}" for i in range(_CORPUS_PROMPT_SLOTS)]
        corpus.append(prompts.visual_prompt_question(kind) + prompts.visual_prompt_answer(labels, kind))
    corpus.append(prompts.game_prompt(4, "Play the game well.", "game") + "action")
    return corpus + list(extra_texts)


def build_tokenizer(extra_texts=(), vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train the tiny preset's byte-level BPE on the task templates plus extra_texts."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_corpus(extra_texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, bos_token=BOS, eos_token=EOS)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """A tokenizer saved in a local directory; a missing pad token becomes unk (or eos)."""
    if not os.path.isdir(path):
        raise MissingFolderError(
            f"no tokenizer directory at {path!r}; it must be a local directory (nothing is downloaded)"
        )
    if not os.path.isfile(os.path.join(path, TOKENIZER_CONFIG_FILE)):
        raise MissingFolderError(
            f"no tokenizer in {path!r} (no {TOKENIZER_CONFIG_FILE}): an LLM folder needs its tokenizer, "
            "saved there with tokenizer.save_pretrained()"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer in {path} has no eos token; answers need one to end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer


def common_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all the sequences share."""
    length = min(len(s) for s in sequences)
    for i in range(length):
        if any(s[i] != sequences[0][i] for s in sequences[1:]):
            return i
    return length


def encode_answer(tokenizer: PreTrainedTokenizerBase, answer: str) -> list[int]:
    """Answer tokens followed by eos (eos makes "RIGHT" and "RIGHTFIRE" distinguishable)."""
    return tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]


def encode(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    answer: str | None,
    num_image_tokens: int,
    num_prompt_tokens: int,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels): bos + prompt (markers expanded to placeholders) [+ answer + eos].

    Labels are IGNORE_INDEX everywhere except on the answer and its eos.
    """
    ids = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    for piece in _MARKERS.split(prompt):
        if piece == prompts.IMAGE_MARKER:
            ids += [IMAGE_TOKEN_ID] * num_image_tokens
        elif piece == prompts.PROMPT_MARKER:
            ids += [PROMPT_TOKEN_ID] * num_prompt_tokens
        elif piece:
            ids += tokenizer.encode(piece, add_special_tokens=False)
    labels = [IGNORE_INDEX] * len(ids)
    if answer is not None:
        answer_ids = encode_answer(tokenizer, answer)
        ids += answer_ids
        labels += answer_ids
    return ids, labels
