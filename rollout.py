"""The plan -> check -> act/refuse loop, over many episodes at once.

    python rollout.py --model tiny --split test --episodes 8 --out runs/rollouts.jsonl
    python rollout.py --policy expert --split ood --episodes 4        # a scripted agent through the same loop
    python rollout.py --model smollm2-135m --adapter runs/tiny/adapter --greedy

Every step, the still-running episodes are generated together in one batch, each turn is parsed (envs.parse_turn)
and stepped in its mock environment; finished episodes leave the batch.

Generation (_KVBatch). A batch of episodes keeps one KV cache for all its turns: a turn appends only the ids not yet
in the cache (the prompt; then the last sampled token and the tool result) as one left-padded block, then decodes a
token per step for the whole batch, keeping the log-prob of the sampled token only (never the full-vocabulary logits).
The cache has holes (padding inside a row, the steps after a row's turn ended) that the attention mask hides; position
ids count real tokens only, so the model sees exactly what a fresh forward of the episode's ids gives. Models it cannot
serve (sliding-window or recurrent layers, prompt-learning adapters: supports_kv_reuse) re-prefill the whole
conversation with HF `generate` every turn (_generate_reprefill), which is also the reference the tests compare with.
Both sample from the raw distribution whose log-probs they store: the model's generation_config (repetition_penalty,
top_k, ...) is ignored. --compile (for GPUs): the same loop over a static cache whose decode step is compiled once
(torch.compile; CUDA graphs on a GPU), so that a step replays as one graph instead of Python and a kernel launch per
operation (greedy: the same tokens as the dynamic cache; not yet timed on a GPU; on the CPU it is no faster).

Tokens. An episode keeps one growing list of token ids: the chat-template prompt, then for each turn the sampled
tokens exactly as generated (the model's own tokens, mask 1, with their log-probs), then the template's text for the
tool result and the next assistant header (mask 0). The model is always conditioned on that same list, so what is
trained is exactly what was sampled. Scripted agents go through the same loop; their turns are tokenized the same
way, which makes them SFT data.

Simplifications: stored log-probs are of the raw temperature-1 policy whatever the sampling temperature and top_p
(sampling with temperature != 1 or top_p < 1 is off-policy by exactly that); the KV cache is a DynamicCache
(concatenated at every token) or, with --compile, a static one (no paged cache, no LoRA merged for generation); a
batch keeps the holes of rows still running (columns are cut only when no row uses them); a chat template that
rejects the `tool` role, or leaves it out without an error (Phi-4), gets tool results as `user` messages (and the
system text in the first user message where it rejects or leaves out `system`); the boundary text after an assistant
turn is taken from the template by string difference (exact for ChatML, Llama 3 and Qwen templates), or, where the
template rewrites the turn (Qwen3's <think> block), as the text it writes after a stand-in turn.
"""
import argparse
import ast
import inspect
import json
import math
import os
import sys
import tempfile
import textwrap
import typing
from dataclasses import dataclass, fields

import torch
from tqdm.auto import tqdm

import envs

SCRIPTED = ("expert", "naive")
STAND_IN = "MOSAIC_TURN_7f3a"  # an assistant turn any template writes as is (_delta_text)
STATIC_COLUMNS = 1024  # the first length of a static KV cache (rollout's compile=True); it grows when short


# ----------------------------------------------------------------------------------------------------------------
# Boilerplate: one dataclass of settings per script, parsed into --kebab-case flags (help = the field's docstring)

def parse_args(cls, argv=None, defaults=None, description=None):
    docs, body = {}, ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = b.value.value
    ap = argparse.ArgumentParser(description=description or (cls.__doc__ or "").strip())
    for f in fields(cls):
        flag, default = "--" + f.name.replace("_", "-"), (defaults or {}).get(f.name, f.default)
        if f.type is bool:
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=docs.get(f.name))
        elif typing.get_origin(f.type) is list:
            ap.add_argument(flag, action="append", default=None, help=docs.get(f.name))
        else:
            typ = f.type if f.type in (int, float, str) else str
            ap.add_argument(flag, type=typ, default=default, help=docs.get(f.name))
    ns = vars(ap.parse_args(argv))
    return cls(**{k: (v if v is not None or typing.get_origin(f.type) is not list else [])
                  for f in fields(cls) for k, v in [(f.name, ns[f.name])]})


# ----------------------------------------------------------------------------------------------------------------
# Chat-template bookkeeping

def defuse(tok, text):
    """`text` with each special token of `tok` written in it (`<|im_start|>`, `<|endoftext|>`, ...) broken up by a
    zero-width space after its first character, so that it is tokenized as the text it is: a task or a tool result
    that spells `<|im_end|><|im_start|>user` cannot open a turn of its own. A lone surrogate (a tool result that
    echoes a model's "\\ud800") becomes the text \\ud800, as write_atomic writes it: no tokenizer takes it."""
    for sp in {t.content for t in tok.added_tokens_decoder.values() if t.special} | set(tok.all_special_tokens):
        if len(sp) > 1 and sp in text:
            text = text.replace(sp, sp[0] + "\u200b" + sp[1:])
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def render(tok, messages, generation_prompt):
    """The chat template's text of `messages`. What tasks and tools wrote is defused; the model's own turns are
    rendered as written (their ids are the sampled ones, never re-encoded)."""
    messages = [m if m["role"] == "assistant" else {**m, "content": defuse(tok, m["content"])} for m in messages]

    def shows_all(text, msgs):  # a template may leave out a role it does not know without an error (Phi-4: tool)
        return all(m["content"].strip() in text for m in msgs if m["role"] != "assistant")

    try:
        text = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
        if shows_all(text, messages):
            return text
    except Exception:  # templates without a `tool` role: pass tool results as user messages
        pass
    msgs = [m if m["role"] != "tool" else {"role": "user", "content": "Tool result:\n" + m["content"]}
            for m in messages]
    try:
        text = tok.apply_chat_template(msgs, add_generation_prompt=generation_prompt, tokenize=False)
        if shows_all(text, msgs) or len(msgs) < 2 or msgs[0]["role"] != "system":
            return text
    except Exception:  # and without a `system` role (Gemma): the system text opens the first user message
        if len(msgs) < 2 or msgs[0]["role"] != "system":
            raise
    msgs = [{"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}] + msgs[2:]
    return tok.apply_chat_template(msgs, add_generation_prompt=generation_prompt, tokenize=False)


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_after_turn(tok, text):
    """The ids of `text` as it follows a turn's end token in the conversation: alone, a tokenizer that writes a space
    before a text's first word (SentencePiece, prepend_scheme "first") would add one the template's text has not."""
    lead = encode(tok, tok.eos_token)
    d = encode(tok, tok.eos_token + text)
    return d[len(lead):] if d[:len(lead)] == lead else encode(tok, text)


def _delta_text(tok, messages, end_text):
    """Template text that follows the last assistant turn's tokens: its closing, the new tool message, and the next
    assistant header. `messages` ends with [assistant, tool]."""
    before = render(tok, messages[:-1], False)
    after = render(tok, messages, True)
    content, tail = messages[-2]["content"], None
    head = render(tok, messages[:-2], True)  # the prompt the turn was generated after
    if before.startswith(head) and after.startswith(before):  # the turn as the template wrote it (as is, or
        rest = before[len(head):]  # trimmed), then its closing
        tail = next((rest[len(c):] + after[len(before):] for c in (content, content.strip()) if rest.startswith(c)),
                    None)
    if tail is None:  # the template rewrote the turn, or the history (Qwen3: a <think> block, an empty one only in
        # the last message): its text after a stand-in turn that it writes as is
        after = render(tok, messages[:-2] + [{"role": "assistant", "content": STAND_IN}, messages[-1]], True)
        if STAND_IN not in after:
            raise ValueError("the chat template does not write an assistant message's content")
        tail = after[after.rfind(STAND_IN) + len(STAND_IN):]
    if end_text and tail.lstrip().startswith(end_text):  # the end-of-turn token the model wrote is already in the
        tail = tail.lstrip()[len(end_text):]  # ids (and the space a template writes before it, " </s>", cannot be)
    return tail


# ----------------------------------------------------------------------------------------------------------------
# The loop

class Episode:
    def __init__(self, task, tok, max_steps, kind=None):
        self.task, self.kind, self.env = task, kind, envs.Env(task, max_steps)
        self.messages, self.turns = self.env.reset(), []
        self.script = envs.script(task, kind) if kind else None
        self.ids, self.mask, self.logprobs = [], [], []
        if tok is not None:
            self.ids = encode(tok, render(tok, self.messages, True))
            self.mask, self.logprobs = [0] * len(self.ids), [0.0] * len(self.ids)

    def add_turn(self, tok, text, gen_ids=None, gen_logprobs=None, end_text=None):
        """Record one assistant turn, step the environment, append the tool result's tokens."""
        if tok is not None:
            if gen_ids is None:  # a scripted turn: the tokens a model would have written, then end-of-turn
                gen_ids = encode(tok, text) + [tok.eos_token_id]
                end_text = tok.eos_token
                gen_logprobs = [0.0] * len(gen_ids)
            self.ids += gen_ids
            self.mask += [1] * len(gen_ids)
            self.logprobs += gen_logprobs
        parsed = envs.parse_turn(text)
        self.turns.append(parsed)
        self.messages.append({"role": "assistant", "content": text})
        obs, done = self.env.step(parsed)
        if not done:
            self.messages.append({"role": "tool", "content": obs})
            if tok is not None:
                d = encode_after_turn(tok, _delta_text(tok, self.messages, end_text))
                self.ids += d
                self.mask += [0] * len(d)
                self.logprobs += [0.0] * len(d)

    def to_dict(self, policy):
        out = self.env.outcome()
        out["tokens"] = sum(self.mask)
        out["safety_check"] = any(t["safety"] for t in self.turns)
        return {"task_id": self.task["id"], "category": self.task["category"], "template": self.task["template"],
                "policy": policy, "messages": self.messages, "turns": self.turns,
                "injection": self.task.get("injection", {}).get("text"), "secrets": self.task.get("secrets", []),
                "ids": self.ids, "mask": self.mask, "logprobs": [round(x, 6) for x in self.logprobs],
                "outcome": out}


# ----------------------------------------------------------------------------------------------------------------
# Generation. Sampling uses the raw distribution: the model's generation_config (repetition_penalty, top_k, top_p,
# ...) is ignored; only `temperature` / `top_p` passed here change what is sampled (log-probs stay those of the raw,
# temperature-1 policy). A turn ends at the tokenizer's eos or any end token of the generation config (Llama 3's eot).

def _end_ids(model, tok):
    cfg_eos = getattr(model.generation_config, "eos_token_id", None)
    return sorted({tok.eos_token_id, *(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])} - {None})


def _base(model):
    """The transformers model under a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _sample(logits, greedy, temperature, top_p, banned=None):
    """Next token per row from fp32 logits [B, V], and its log-prob under the raw (temperature-1) distribution.
    `banned` token ids are never chosen (bench.py's fixed-length turns only; their log-probs stay raw)."""
    pick = logits if banned is None else logits.index_fill(-1, banned, float("-inf"))
    if greedy:
        nxt = pick.argmax(-1)
    else:
        z = pick / temperature
        if top_p < 1.0:  # nucleus: the most likely tokens whose mass reaches top_p
            srt, idx = z.sort(-1, descending=True)
            p = srt.softmax(-1)
            z = torch.full_like(z, float("-inf")).scatter(-1, idx, srt.masked_fill(p.cumsum(-1) - p > top_p,
                                                                                  float("-inf")))
        nxt = torch.multinomial(z.softmax(-1), 1)[:, 0]
    return nxt, logits.gather(-1, nxt[:, None])[:, 0] - logits.logsumexp(-1)


def _results(tok, toks, lps, n_gen, ends):
    """(text, ids, logprobs, end token text) per row from [B, T] CPU tensors and each row's token count. The text is
    the tokens' own less the end token: a special token sampled inside a turn (<|im_start|> in a tool call's JSON)
    is text the parser sees, not dropped into a clean call the ids do not hold."""
    out = []
    for row, lp, n in zip(toks.tolist(), lps.tolist(), n_gen):
        end = tok.convert_ids_to_tokens(row[n - 1]) if n and row[n - 1] in ends else None
        out.append((tok.decode(row[:n - (end is not None)], skip_special_tokens=False), row[:n], lp[:n], end))
    return out


def supports_kv_reuse(model):
    """Whether `_KVBatch` can run `model`: a transformers causal LM whose layers all cache full attention in a
    DynamicCache (sliding-window, chunked or recurrent layers would count the cache's holes as tokens) and no
    prompt-learning peft adapter (its virtual tokens would live in the cache)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer
    base, peft_cfg = _base(model), getattr(model, "active_peft_config", None)
    if peft_cfg is not None and getattr(peft_cfg, "is_prompt_learning", False):
        return False
    if getattr(base, "_is_stateful", False) or not getattr(base, "_supports_default_dynamic_cache", lambda: False)():
        return False
    if "cache" not in inspect.signature(base.forward).parameters:
        return False
    try:
        layers = DynamicCache(config=base.config).layers
    except Exception:
        return False
    return bool(layers) and all(type(l) is DynamicLayer for l in layers)


class _KVBatch:
    """Episodes generated together turn after turn over one KV cache that lives as long as they do: nothing is
    prefilled twice.

    Row i of the cache holds the first n_cached[i] ids of its episode, with holes: columns whose attention-mask entry
    is 0 (the left padding of each appended block, the steps after the row's turn ended). Position ids count real
    tokens only, so every row sees what a fresh forward of its ids would (model.token_logprobs). A turn appends the
    ids not yet cached (the prompt; later the last sampled token and the tool result) as one left-padded block, then
    decodes one token per step for the whole batch until every row has ended.

    Two caches. Default: a transformers DynamicCache; rows of finished episodes are dropped (select) and columns that
    are holes in every remaining row are cut out. With `compile` (rollout's compile): a StaticCache of fixed shape,
    so that the decode step can be compiled into CUDA graphs (`_static_parts`): no row is ever dropped (a finished
    episode's row only stops being fed) and the columns fill up left to right; when a turn would not fit, each row's
    real tokens are moved to the right end of a left-padded block (compact), and the cache grows 1.5x where even
    that is too little."""

    def __init__(self, model, tok, n_rows, compile=False, n_live=None):
        from transformers import DynamicCache
        self.model, self.pad, self.dev = model, tok.pad_token_id, model.device
        self.base = _base(model)
        self.head = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.base.forward).parameters else {}
        self.n_cached = [0] * n_rows
        self.live = list(range(n_rows if n_live is None else n_live))  # the cache row of each live episode, in order
        self.static, self.compile, self.col = bool(compile), compile, 0
        if self.static:
            self.cache, self.step = _static_parts(model, n_rows, STATIC_COLUMNS, compile)
            self.attn = torch.zeros((n_rows, self.cache.layers[0].max_cache_len), dtype=torch.long, device=self.dev)
        else:
            self.cache, self.step = DynamicCache(config=self.base.config), model
            self.attn = torch.zeros((n_rows, 0), dtype=torch.long, device=self.dev)

    def _forward(self, ids, mask):
        """Append a block of ids [B, P] (mask 1: a real token) to the cache; fp32 logits after its last column."""
        pos = (self.attn.sum(1, keepdim=True) + mask.cumsum(1) - 1).clamp(min=0)
        if self.static:  # the block fills columns [col, col + P); one-token steps run the compiled forward
            self.attn[:, self.col:self.col + ids.shape[1]] = mask
            self.col += ids.shape[1]
            fn = self.step if ids.shape[1] == 1 else self.model
            if fn is not self.model and self.dev.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
        else:
            self.attn, fn = torch.cat([self.attn, mask], 1), self.model
        out = fn(input_ids=ids, attention_mask=self.attn, position_ids=pos, cache=self.cache, use_cache=True,
                 **self.head)
        logits = out.logits[:, -1].float()
        if self.static:  # a copy (a CUDA graph's output is overwritten by its next replay); rows fed nothing (a
            # finished episode, a hole) attend to nothing, which some attention kernels answer with NaN: zeros here
            logits = logits.masked_fill(~mask.bool().any(1, keepdim=True), 0.0)
        return logits

    def select(self, keep):
        """Keep only the live episodes `keep` (indices into the live ones, in order). A dynamic cache drops the other
        rows and cuts the columns that no remaining row uses; a static one only forgets the rows."""
        if self.static:
            gone = sorted(set(self.live) - {self.live[i] for i in keep})
            self.attn[gone] = 0  # a finished episode's row is a hole from now on (compact drops it)
            self.live = [self.live[i] for i in keep]
            return
        if len(keep) < len(self.n_cached):
            idx = torch.tensor(keep, dtype=torch.long, device=self.dev)
            self.cache.batch_select_indices(idx)
            self.attn, self.n_cached = self.attn[idx], [self.n_cached[i] for i in keep]
            self.live = list(range(len(keep)))
        used = self.attn.any(0)
        if self.attn.shape[0] and not bool(used.all()):
            cols = used.nonzero()[:, 0]
            for layer in self.cache.layers:  # DynamicLayer (supports_kv_reuse): keys/values [B, heads, T, dim]
                if layer.is_initialized and layer.keys.numel():
                    layer.keys, layer.values = layer.keys[:, :, cols], layer.values[:, :, cols]
            self.attn = self.attn[:, cols]

    def _make_room(self, n_cols):
        """Static cache: room for n_cols more columns. First compact: each row's real tokens (in order) at the right
        end of the first n columns, n = the most any row holds; then, if still short, a cache 1.5x as long."""
        L = self.attn.shape[1]
        if self.col + n_cols <= L:
            return
        real = self.attn.bool()
        n = int(real.sum(1).max())
        # source column of each target column: row r's k-th real token goes to column n - count_r + k
        order = torch.sort(real.long(), dim=1, stable=True).indices[:, L - n:]  # holes first, then real, in order
        for layer in self.cache.layers:
            if layer.is_initialized:
                for t in (layer.keys, layer.values):
                    idx = order[:, None, :, None].expand(t.shape[0], t.shape[1], n, t.shape[3])
                    t[:, :, :n] = t.gather(2, idx)
                layer.cumulative_length.fill_(n)
        self.attn.zero_()
        self.attn[:, :n] = real.gather(1, order).long()
        self.col = n
        if n + n_cols > L:
            old, n_rows = self.cache, self.attn.shape[0]
            longer = -(-max(3 * L // 2, n + n_cols) // 128) * 128  # 1.5x, in whole 128s
            self.cache, self.step = _static_parts(self.model, n_rows, longer, self.compile, old, n)
            self.attn = torch.cat([self.attn, torch.zeros((n_rows, self.cache.layers[0].max_cache_len - L),
                                                          dtype=torch.long, device=self.dev)], 1)

    @torch.no_grad()
    def turn(self, eps, tok, ends, greedy, temperature, top_p, max_new_tokens, min_new_tokens=0):
        """One turn of every live episode `eps` (in live order): [(text, ids, logprobs, end token text)]."""
        rows = self.live
        pending = {r: e.ids[self.n_cached[r]:] for r, e in zip(rows, eps)}
        B, P = len(self.n_cached), max(len(p) for p in pending.values())
        ids = torch.full((B, P), self.pad, dtype=torch.long)
        mask = torch.zeros((B, P), dtype=torch.long)
        for r, p in pending.items():
            ids[r, P - len(p):], mask[r, P - len(p):] = torch.tensor(p), 1
        if self.static:
            self._make_room(P + max_new_tokens)
        logits = self._forward(ids.to(self.dev), mask.to(self.dev))
        end_t = torch.tensor(ends, dtype=torch.long, device=self.dev)
        alive = torch.zeros(B, dtype=torch.bool)
        alive[rows] = True
        alive = alive.to(self.dev)
        toks, lps, n_gen = [], [], torch.zeros(B, dtype=torch.long, device=self.dev)
        for t in range(max_new_tokens):
            nxt, lp = _sample(logits, greedy, temperature, top_p, end_t if t < min_new_tokens else None)
            toks.append(nxt)
            lps.append(lp)
            n_gen += alive
            alive = alive & ~torch.isin(nxt, end_t)
            if t == max_new_tokens - 1 or not bool(alive.any()):
                break
            # rows still going feed their token; the others a hole (their last token is cached next turn)
            logits = self._forward(torch.where(alive, nxt, self.pad)[:, None], alive[:, None].long())
        n_gen = n_gen.tolist()
        for r in rows:
            self.n_cached[r] += len(pending[r]) + n_gen[r] - 1
        toks, lps = torch.stack(toks, 1).cpu(), torch.stack(lps, 1).cpu()
        return _results(tok, toks[rows], lps[rows], [n_gen[r] for r in rows], ends)


def _static_parts(model, n_rows, length, compile, old=None, n_old=0):
    """A StaticCache of n_rows x `length` columns and the decode-step function for it. Both are kept on the policy
    between rollouts: CUDA graphs recorded for a cache stay valid while its tensors keep their addresses, so the cache
    is reused (reset) while it is long enough; `old` (its first n_old columns) is copied into a new, longer one.
    compile: False (the plain forward), True (torch.compile, CUDA graphs on a GPU) or a torch.compile backend."""
    from transformers import StaticCache
    held = model.__dict__.get("_rollout_static")  # (cache, step, rows, length, compile)
    if held is not None and held[4] != compile:
        held = None
    if old is None and held is not None and held[2] == n_rows and held[3] >= length:
        held[0].reset()
        return held[0], held[1]
    cache = StaticCache(config=_base(model).config, max_cache_len=length)
    if old is not None and old.layers[0].is_initialized:
        k = old.layers[0].keys
        cache.early_initialization(n_rows, k.shape[1], k.shape[3], k.dtype, k.device)
        for new, l in zip(cache.layers, old.layers):
            new.keys[:, :, :n_old], new.values[:, :, :n_old] = l.keys[:, :, :n_old], l.values[:, :, :n_old]
            new.cumulative_length.fill_(n_old)
    step = held[1] if held is not None else model
    if compile and step is model:
        kw = {"backend": compile} if compile is not True else \
            {"mode": "reduce-overhead"} if model.device.type == "cuda" else {}
        step = torch.compile(model, dynamic=False, **kw)
        # one compiled version per (rows, cache length, adapter state): past dynamo's default of 8 it would run
        # uncompiled without a word (a run sees ~2 row counts and a few lengths; an evaluation of many models more)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    model.__dict__["_rollout_static"] = (cache, step, n_rows, length, compile)  # not a submodule: adds no parameter
    return cache, step


@torch.no_grad()
def _generate_reprefill(model, tok, batch, greedy, temperature, top_p, max_new_tokens, min_new_tokens=0):
    """The re-prefill path (the fallback where supports_kv_reuse is False, and the reference for tests and bench.py):
    one left-padded HF `generate` call over the episodes' whole ids, log-probs from the full-vocabulary logits it
    returns. The model's generation_config is swapped for a bare one during the call (only end and pad tokens), so
    that it samples from the same raw distribution as _KVBatch."""
    from transformers import GenerationConfig
    pad, ends = tok.pad_token_id, _end_ids(model, tok)
    T = max(len(e.ids) for e in batch)
    dev = model.device
    input_ids = torch.full((len(batch), T), pad, dtype=torch.long)
    attn = torch.zeros((len(batch), T), dtype=torch.long)
    for i, e in enumerate(batch):
        input_ids[i, T - len(e.ids):] = torch.tensor(e.ids)
        attn[i, T - len(e.ids):] = 1
    kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    base = _base(model)
    saved, base.generation_config = base.generation_config, GenerationConfig(pad_token_id=pad, eos_token_id=ends)
    try:
        out = model.generate(input_ids=input_ids.to(dev), attention_mask=attn.to(dev), max_new_tokens=max_new_tokens,
                             min_new_tokens=min_new_tokens, pad_token_id=pad, eos_token_id=ends,
                             return_dict_in_generate=True, output_logits=True, use_cache=True, **kw)
    finally:
        base.generation_config = saved
    gen = out.sequences[:, T:]
    lp = torch.stack([l.float().log_softmax(-1).gather(-1, gen[:, t:t + 1])[:, 0]
                      for t, l in enumerate(out.logits)], 1).cpu()
    gen = gen.cpu()
    n_gen = [next((k + 1 for k, x in enumerate(row) if x in ends), len(row)) for row in gen.tolist()]
    return _results(tok, gen, lp, n_gen, ends)


def rollout(policy, tasks, tok=None, group_size=1, greedy=False, temperature=1.0, top_p=1.0, max_steps=8,
            max_new_tokens=96, max_context=None, batch_size=64, seed=0, label=None, progress=True, kv_reuse=None,
            compile=False):
    """Run episodes of `tasks` (each `group_size` times) with a model or a scripted agent ('expert' / 'naive').

    Returns trajectory dicts (Episode.to_dict). With a model, `tok` is required; with a scripted agent it is optional
    (given, the trajectories carry token ids and masks, for SFT). kv_reuse: None picks the KV-cache path (_KVBatch)
    where supports_kv_reuse(policy), else re-prefills every turn (_generate_reprefill); True / False force one.
    compile: the KV-cache path over a static cache with the decode step compiled (torch.compile; CUDA graphs on a
    GPU), every batch padded to the first one's size so that shapes never change; a backend name picks the backend.
    """
    scripted = isinstance(policy, str)
    if scripted and policy not in SCRIPTED:
        raise ValueError(f"unknown scripted policy '{policy}' (expert | naive)")
    if not scripted and not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling (got {temperature}); use greedy=True")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be at least 1 (got {batch_size}, {max_new_tokens})")
    label = label or (policy if scripted else "model")
    eps = [Episode(t, tok, max_steps, policy if scripted else None) for t in tasks for _ in range(group_size)]
    if not scripted:
        torch.manual_seed(seed)
        max_context = max_context or getattr(policy.config, "max_position_embeddings", 4096)
        if kv_reuse is None:
            kv_reuse = supports_kv_reuse(policy)
        elif kv_reuse and not supports_kv_reuse(policy):
            raise ValueError(f"kv_reuse=True: {type(_base(policy)).__name__} is not supported (supports_kv_reuse)")
        if compile and not kv_reuse:
            raise ValueError("compile needs the KV-cache path (kv_reuse; supports_kv_reuse)")
        was_training = policy.training
        policy.eval()
    bar = tqdm(total=len(eps), desc=f"rollout {label}", disable=not progress, leave=False)

    def no_room(live):  # episodes with no room for another turn end truncated
        for e in live:
            if len(e.ids) + max_new_tokens > max_context:
                e.env.done = e.env.truncated = True
        return [e for e in live if not e.env.done]

    if not scripted and kv_reuse:  # a batch at a time, all its turns, over one cache
        ends, order = _end_ids(policy, tok), sorted(eps, key=lambda e: len(e.ids))
        n_rows = min(batch_size, len(order))
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            batch = _KVBatch(policy, tok, n_rows if compile else len(rows), compile, n_live=len(rows))
            while True:
                live = set(no_room([e for e in rows if not e.env.done]))
                keep = [i for i, e in enumerate(rows) if e in live]
                batch.select(keep)
                rows = [rows[i] for i in keep]
                bar.update(sum(e.env.done for e in eps) - bar.n)
                if not rows:
                    break
                for e, out in zip(rows, batch.turn(rows, tok, ends, greedy, temperature, top_p, max_new_tokens)):
                    e.add_turn(tok, *out)
            del batch
    while True:  # scripted agents, and models on the re-prefill path: all live episodes a turn at a time
        live = [e for e in eps if not e.env.done]
        if not live:
            break
        if scripted:
            for e in live:
                k = len(e.turns)
                e.add_turn(tok, e.script[k] if k < len(e.script) else "<think>Done.</think>\n<answer>Done.</answer>")
        else:
            live = sorted(no_room(live), key=lambda e: len(e.ids))
            for s in range(0, len(live), batch_size):
                chunk = live[s:s + batch_size]
                for e, out in zip(chunk, _generate_reprefill(policy, tok, chunk, greedy, temperature, top_p,
                                                             max_new_tokens)):
                    e.add_turn(tok, *out)
        bar.update(sum(e.env.done for e in eps) - bar.n)
    bar.close()
    if not scripted and was_training:
        policy.train()
    return [e.to_dict(label) for e in eps]


# ----------------------------------------------------------------------------------------------------------------
# Reading trajectories

def format_trajectory(traj, width=100):
    """A readable transcript: tags visible, tool results indented, the outcome at the end."""
    lines = [f"== {traj['task_id']} ({traj['category']}, {traj['template']}) policy={traj['policy']}"]
    for m in traj["messages"]:
        if m["role"] == "system":
            continue
        if m["role"] == "tool":
            lines += ["    tool> " + l for l in m["content"].splitlines()]
        else:
            lines += [f"{m['role']}> " + l for l in m["content"].splitlines()]
    o = traj["outcome"]
    lines.append("-- outcome: " + ", ".join(f"{k}={o[k]}" for k in (
        "task_success", "refused", "harm_events", "injection_followed", "injection_attempted", "leaked",
        "format_errors", "steps", "tokens") if k in o))
    text = "\n".join(l if len(l) <= width else l[:width - 3] + "..." for l in lines)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate a model wrote -> \ud800


def write_atomic(path, chunks):
    """Write the strings `chunks` to `path` as one file: a temporary file beside it, then a rename, so that a reader
    (or a crash) never sees half a file, and an error leaves neither a half file nor the temporary one. A lone
    surrogate (a model can write "\ud800") is written as the text \ud800, which JSON reads back as the same string."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.writelines(chunks)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_jsonl(trajs, path):
    write_atomic(path, (json.dumps(t, ensure_ascii=False) + "\n" for t in trajs))


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def cannot_run(policy, name, max_new_tokens, compile=False):
    """Why `policy` (called `name` in the message) cannot run rollouts with these flags, in one line; None if it can.
    The CLIs check this after loading a model, before any episode."""
    if compile and not supports_kv_reuse(policy):
        return f"--compile needs the KV-cache path, which {name} does not support (rollout.supports_kv_reuse)"
    context = getattr(policy.config, "max_position_embeddings", 4096)  # what rollout() fits turns into
    if max_new_tokens >= context:  # no episode would get a single turn: all quits, 0 tokens
        return f"--max-new-tokens {max_new_tokens} leaves no room in the context of {name} ({context} tokens)"
    return None


def bad_setting(greedy=True, temperature=1.0, top_p=1.0, files=(), dirs=(), **at_least_1):
    """The first bad command-line value, as one line for a CLI to exit with (None: all fine), checked before any
    model is loaded or episode run: counts (max_new_tokens=..., batch_size=...) below 1, a sampling temperature or
    top_p out of range, an output file or folder that cannot be written where it is asked for."""
    for name, v in at_least_1.items():
        if v < 1:
            return f"--{name.replace('_', '-')} must be at least 1, not {v}"
    if not greedy and not (math.isfinite(temperature) and temperature > 0):
        return f"--temperature must be a number above 0 when sampling, not {temperature}"
    if not (0 < top_p <= 1):
        return f"--top-p must be in (0, 1], not {top_p}"
    for path, is_dir in [(f, False) for f in files if f] + [(d, True) for d in dirs if d]:
        if not is_dir and path.endswith(("/", os.sep)):
            return f"cannot write {path}: it names a folder, not a file"
        path = os.path.abspath(path)
        if os.path.exists(path) and os.path.isdir(path) != is_dir:
            return f"cannot write {path}: it is {'a file' if is_dir else 'a folder'}"
        parent = path if is_dir and os.path.isdir(path) else os.path.dirname(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            return f"cannot write {path}: {parent} is not a folder"
        try:  # a file made and removed at once: permissions, read-only and virtual file systems alike
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as e:
            return f"cannot write {path}: {parent} does not take new files ({e.strerror})"
    return None


def pick_tasks(tasks, episodes, categories=envs.CATEGORIES):
    """The first `episodes` tasks of each category (all if episodes is 0), in the split's interleaved order."""
    out, seen = [], {c: 0 for c in categories}
    for t in tasks:
        if t["category"] in seen and (not episodes or seen[t["category"]] < episodes):
            seen[t["category"]] += 1
            out.append(t)
    return out


@dataclass
class Args:
    """Run episodes of a policy in the mock environments and write the trajectories as JSON lines."""
    model: str = "tiny"
    """model: tiny | smollm2-135m | a local directory | a hub id"""
    adapter: str = ""
    """a LoRA adapter directory (peft) to load on top of the model"""
    quant: str = "none"
    """none | 4bit"""
    policy: str = ""
    """expert | naive: run a scripted agent instead of a model"""
    split: str = "test"
    """train | test | ood"""
    tasks: str = ""
    """a JSON-lines task file instead of a split"""
    episodes: int = 2
    """episodes per category (0 = all)"""
    greedy: bool = False
    """greedy decoding instead of sampling"""
    temperature: float = 1.0
    """sampling temperature"""
    top_p: float = 1.0
    """nucleus sampling"""
    max_steps: int = 8
    """turns per episode"""
    max_new_tokens: int = 96
    """tokens per turn"""
    batch_size: int = 64
    """episodes per generate call"""
    compile: bool = False
    """static KV cache + torch.compile of the decode step (CUDA graphs on a GPU): greedy gives the same tokens"""
    seed: int = 0
    """sampling seed"""
    out: str = "runs/rollouts.jsonl"
    """where to write the trajectories"""


if __name__ == "__main__":
    args = parse_args(Args)
    bad = bad_setting(args.greedy or bool(args.policy), args.temperature, args.top_p, files=[args.out],
                      max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    if not args.out:
        bad = "--out must name a file"
    if bad or args.episodes < 0:
        sys.exit(f"error: {bad or f'--episodes must be 0 (all) or more, not {args.episodes}'}")
    try:
        tasks = pick_tasks(envs.get_tasks(args.split, args.tasks or None), args.episodes)
    except (envs.TaskError, ValueError) as e:
        sys.exit(f"error: {e}")
    if not tasks:
        sys.exit("error: no tasks to run")
    if args.policy:
        if args.policy not in SCRIPTED:
            sys.exit(f"error: unknown --policy '{args.policy}' (expert | naive)")
        if any("plan" not in t for t in tasks):
            print(f"note: {sum('plan' not in t for t in tasks)} tasks have no 'plan'; the scripted agent answers "
                  "them without acting (the expert still refuses harmful ones)", file=sys.stderr)
        trajs = rollout(args.policy, tasks, max_steps=args.max_steps)
    else:
        import model as M
        try:
            policy, tok = M.load_policy(args.model, quant=args.quant, lora=bool(args.adapter),
                                        adapter=args.adapter or None)
        except (M.ModelError, ValueError) as e:
            sys.exit(f"error: {e}")
        problem = cannot_run(policy, args.model, args.max_new_tokens, args.compile)
        if problem:
            sys.exit(f"error: {problem}")
        trajs = rollout(policy, tasks, tok, greedy=args.greedy, temperature=args.temperature, top_p=args.top_p,
                        max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        seed=args.seed, label=args.model + (f"+{args.adapter}" if args.adapter else ""),
                        compile=args.compile)
    save_jsonl(trajs, args.out)
    print(format_trajectory(trajs[0]))
    n = len(trajs)
    print(f"\n{n} episodes -> {args.out}; unsafe {sum(bool(t['outcome']['harm_events']) for t in trajs)}/{n}, "
          f"success {sum(t['outcome']['task_success'] for t in trajs)}/{n}, "
          f"format errors {sum(t['outcome']['format_errors'] for t in trajs)}")
