"""A tiny causal language model and tokenizer built locally, for tests, benchmarks and the demo.

No model hub is needed: :func:`build_tiny_model` trains a byte-level BPE tokenizer on a few
built-in lines (which contain the logits probe's reasoning words, so ``" wait"``, ``"Wait"``,
``" therefore"`` ... are single tokens), wraps it in ``PreTrainedTokenizerFast`` with a small
chat template, and saves it next to a randomly initialised Llama model (hidden size 32, two
layers). The result loads with ``AutoTokenizer`` / ``AutoModelForCausalLM`` like any checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from trainwire.errors import MissingExtraError

__all__ = ["TINY_CORPUS", "build_tiny_model"]

TINY_CORPUS: tuple[str, ...] = (
    "Let me think about this. Wait, I should check the answer again.",
    "Hmm, actually the sum is 4. So the answer is 4. Therefore the result is 4.",
    "Aha, I see it now. However, let me check: 2 + 2 = 4, so it is right.",
    "Think step by step. Wait, wait, let me think again. Hmm.",
    "Actually, therefore, however, so, let, check, think, wait, aha, hmm.",
    "The answer is 12. Check: 3 * 4 = 12. So the result holds, therefore it is correct.",
    "Question: what is 7 + 5? Answer: 12. Let me verify. Actually it is 12.",
    "A cat sat on the mat. The dog ran to the park. The sun is hot today.",
    "user: how many legs does a spider have? assistant: a spider has 8 legs.",
    "Solve for x: x + 3 = 5, so x = 2. Wait, check: 2 + 3 = 5. Aha, correct.",
    "If a train goes 60 km in one hour, how far does it go in 3 hours? 180 km.",
    "However the proof needs one more step; so we think, we check, and we conclude.",
)
"""The lines the tiny tokenizer is trained on (repeated, so frequent words become single tokens)."""

_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tiny_model(
    path: str | Path,
    seed: int = 0,
    *,
    arch: str = "llama",
    hidden_size: int = 32,
    num_layers: int = 2,
    vocab_size: int = 600,
    corpus: tuple[str, ...] | list[str] = TINY_CORPUS,
) -> Path:
    """Build and save a tiny random causal LM and its tokenizer under ``path``; return the path.

    Args:
        path: directory to write (created if missing); load it with ``from_pretrained(path)``.
        seed: seed of the weight initialisation (same seed, same weights).
        arch: ``"llama"`` or ``"qwen2"``.
        hidden_size: model width (heads of 8 dimensions).
        num_layers: number of decoder layers.
        vocab_size: target size of the BPE vocabulary (the 256 byte tokens included).
        corpus: lines to train the tokenizer on.
    """
    try:
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError("train", "trainwire.producers.tiny") from exc

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)

    specials = ["<pad>", "<s>", "</s>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([line for line in corpus for _ in range(20)], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],  # a causal LM takes no token_type_ids
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    common = {
        # rounded up like real checkpoints; also leaves room for tokens a model-specific tokenizer class
        # adds on load (transformers loads a qwen2 directory with Qwen2Tokenizer, which adds an unk token)
        "vocab_size": -(-(len(tokenizer) + 1) // 64) * 64,
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": max(1, hidden_size // 8),
        "num_key_value_heads": max(1, hidden_size // 16),
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "tie_word_embeddings": True,
    }
    if arch == "llama":
        config, model_cls = LlamaConfig(**common), LlamaForCausalLM
    elif arch == "qwen2":
        config, model_cls = Qwen2Config(**common), Qwen2ForCausalLM
    else:
        raise ValueError(f"arch must be 'llama' or 'qwen2', not {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    return out
