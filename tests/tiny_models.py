"""Tiny random causal LMs with a locally trained BPE tokenizer, for tests (nothing is downloaded).

`build_tiny_model(arch, directory)` writes a save_pretrained directory (safetensors) of a 2-layer,
64-dim model of the given architecture, with a byte-level BPE tokenizer trained in well under a second.
"""

from __future__ import annotations

from pathlib import Path

ARCHITECTURES = ("gpt2", "llama", "qwen2", "gpt_neox", "opt")
# Encoders (exported with --task feature-extraction), built by `build_tiny_encoder`; not causal LMs.
ENCODER_ARCHITECTURES = ("bert",)

# A small, repetitive corpus: enough for a BPE vocabulary and for LoRA loss to fall quickly.
CORPUS = [
    "The patient was given aspirin for the headache and rested at home.",
    "The doctor listened to the heart and lungs and wrote a short note.",
    "A nurse measured the blood pressure twice before the visit ended.",
    "The clinic opens at nine in the morning and closes at five.",
    "Fever, cough and fatigue are common symptoms of a viral infection.",
    "The pharmacist explained how to take the medicine with food.",
    "Regular exercise and sleep help the body recover after illness.",
    "The scan showed no fracture, so the arm was put in a sling.",
] * 4


def train_tokenizer(directory: Path, vocab_size: int = 384):
    """Train a byte-level BPE tokenizer and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],
    )
    # A minimal chat template so chat-format data can be tested on every architecture.
    fast.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    fast.save_pretrained(directory)
    return fast


def _config(arch: str, vocab: int, bos: int, eos: int):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config

    common = dict(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos)
    if arch == "gpt2":
        return GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128, **common)
    if arch == "llama":
        return LlamaConfig(
            num_hidden_layers=2,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            **common,
        )
    if arch == "qwen2":
        return Qwen2Config(
            num_hidden_layers=2,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            **common,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            num_hidden_layers=2,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            max_position_embeddings=128,
            **common,
        )
    if arch == "opt":
        return OPTConfig(
            num_hidden_layers=2,
            hidden_size=64,
            ffn_dim=128,
            num_attention_heads=4,
            max_position_embeddings=128,
            word_embed_proj_dim=64,
            **common,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")


def build_tiny_model(arch: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random `arch` causal LM + tokenizer to `directory` and return it."""
    import torch
    from transformers import AutoModelForCausalLM

    if arch in ENCODER_ARCHITECTURES:
        return build_tiny_encoder(arch, directory, seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(directory)
    torch.manual_seed(seed)
    cfg = _config(arch, len(tok), tok.bos_token_id, tok.eos_token_id)
    cfg.pad_token_id = tok.pad_token_id
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def build_tiny_encoder(arch: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny random encoder (BertModel: 2 layers, hidden 32) + the same BPE tokenizer to `directory`.

    Its graph declares token_type_ids besides input_ids and attention_mask, as all-MiniLM-L6-v2's does.
    """
    import torch
    from transformers import BertConfig, BertModel

    if arch not in ENCODER_ARCHITECTURES:
        raise ValueError(f"unknown tiny encoder {arch!r}; known: {', '.join(ENCODER_ARCHITECTURES)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(directory)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tok),
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
    )
    BertModel(cfg).save_pretrained(directory, safe_serialization=True)
    return directory
