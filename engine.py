"""The fast generation path: a batch of episodes generated turn after turn over one KV cache (KVBatch), so that
nothing is prefilled twice. rollout.py's loop calls it where the model supports it (supports_kv_reuse); the tests
check that it gives what rollout.py's readable path (HF `generate` over each episode's whole ids every turn) gives.
A reader can skip this file: it changes how fast episodes are generated, not which.

    KVBatch.turn: append the ids not yet cached (the prompt; later the last sampled token and the tool result) as one
    left-padded block, then decode a token per step for the whole batch, keeping the log-prob of the sampled token only.

The cache has holes (padding inside a row, the steps after a row's turn ended) that the attention mask hides; position
ids count real tokens only, so the model sees exactly what a fresh forward of the episode's ids gives. Sampling uses the
raw distribution whose log-probs are stored: the model's generation_config (repetition_penalty, top_k, ...) is ignored;
a turn ends at the tokenizer's eos or any end token of the generation config (Llama 3's eot).

--compile (for GPUs): the same loop over a static cache whose one-token decode step is compiled once (torch.compile;
CUDA graphs on a GPU), so that a step replays as one graph instead of Python and a kernel launch per operation (greedy:
the same tokens as the dynamic cache; on the CPU it is no faster). Shapes never change: rows are never dropped, batches
are padded to the first one's row count, columns fill left to right and are compacted (or the cache grows) when full.

Simplifications: a DynamicCache concatenated at every token, or a static one (no paged cache, no LoRA merged for
generation); a batch keeps the holes of rows still running (columns are cut only when no row uses them).
"""
import contextlib
import inspect

import torch

STATIC_COLUMNS = 1024  # the first length of a static KV cache (rollout's compile=True); it grows when short


@contextlib.contextmanager
def merged_lora(model):
    """Generate with the active LoRA adapter folded into the frozen weights, where those are bf16 or fp16: an unmerged
    adapter runs fp32 matmuls and dtype casts beside every bf16 one (about half of a SmolLM2 decode step on a CPU).
    Each adapted weight is swapped for W + scale * B @ A (summed in fp32, rounded once to the weight's dtype) and the
    adapters are disabled; on the way out the original tensors are put back untouched (never merged and unmerged:
    subtracting in bf16 would drift). The merged copy costs one more set of the adapted weights while it lives.
    fp32 bases (tiny), 4-bit bases, DoRA and other adapter kinds generate unmerged, exactly as before."""
    from peft.tuners.lora import Linear, LoraLayer
    name = getattr(model, "active_adapter", None)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if not layers or not all(type(m) is Linear and name in m.lora_A and not m.use_dora.get(name, False)
                             and m.get_base_layer().weight.dtype in (torch.bfloat16, torch.float16) for m in layers):
        yield model
        return
    saved = []
    try:
        with torch.no_grad():
            for m in layers:
                w = m.get_base_layer().weight
                saved.append((w, w.data))
                w.data = (w.data.float() + m.get_delta_weight(name).float()).to(w.dtype)
        with model.disable_adapter():
            yield model
    finally:
        for w, data in saved:
            w.data = data


def end_ids(model, tok):
    cfg_eos = getattr(model.generation_config, "eos_token_id", None)
    return sorted({tok.eos_token_id, *(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])} - {None})


def base_model(model):
    """The transformers model under a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sample(logits, greedy, temperature, top_p, banned=None):
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


def results(tok, toks, lps, n_gen, ends):
    """(text, ids, logprobs, end token text) per row from [B, T] CPU tensors and each row's token count. The text is
    the tokens' own less the end token: a special token sampled inside a turn (<|im_start|> in a tool call's JSON)
    is text the parser sees, not dropped into a clean call the ids do not hold."""
    out = []
    for row, lp, n in zip(toks.tolist(), lps.tolist(), n_gen):
        end = tok.convert_ids_to_tokens(row[n - 1]) if n and row[n - 1] in ends else None
        out.append((tok.decode(row[:n - (end is not None)], skip_special_tokens=False), row[:n], lp[:n], end))
    return out


def supports_kv_reuse(model):
    """Whether `KVBatch` can run `model`: a transformers causal LM whose layers all cache full attention in a
    DynamicCache (sliding-window, chunked or recurrent layers would count the cache's holes as tokens) and no
    prompt-learning peft adapter (its virtual tokens would live in the cache)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer
    base, peft_cfg = base_model(model), getattr(model, "active_peft_config", None)
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


class KVBatch:
    """Episodes generated together turn after turn over one KV cache that lives as long as they do: nothing is
    prefilled twice.

    Row i of the cache holds the first n_cached[i] ids of its episode, with holes: columns whose attention-mask entry
    is 0 (the left padding of each appended block, the steps after the row's turn ended). Position ids count real
    tokens only, so every row sees what a fresh forward of its ids would (model.token_logprobs). A turn appends the
    ids not yet cached (the prompt; later the last sampled token and the tool result) as one left-padded block, then
    decodes one token per step for the whole batch until every row has ended.

    Two caches. Default: a transformers DynamicCache; rows of finished episodes are dropped (select) and columns that
    are holes in every remaining row are cut out. With `compile` (rollout's compile): a StaticCache of fixed shape,
    so that the decode step can be compiled into CUDA graphs (`static_parts`): no row is ever dropped (a finished
    episode's row only stops being fed) and the columns fill up left to right; when a turn would not fit, each row's
    real tokens are moved to the right end of a left-padded block (compact), and the cache grows 1.5x where even
    that is too little."""

    def __init__(self, model, tok, n_rows, compile=False, n_live=None):
        from transformers import DynamicCache
        self.model, self.pad, self.dev = model, tok.pad_token_id, model.device
        self.base = base_model(model)
        self.head = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.base.forward).parameters else {}
        self.n_cached = [0] * n_rows
        self.live = list(range(n_rows if n_live is None else n_live))  # the cache row of each live episode, in order
        self.static, self.compile, self.col = bool(compile), compile, 0
        if self.static:
            self.cache, self.step = static_parts(model, n_rows, STATIC_COLUMNS, compile)
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

    def _prefill(self, pending, B):
        """Dynamic cache, first turn: each distinct prompt prefilled once, alone (no padding; the G samples of a group
        share one), then stacked left-padded into the cache. fp32 logits after each row's prompt [B, V]."""
        from transformers import DynamicCache
        rows_of = {}
        for r, p in pending.items():
            rows_of.setdefault(tuple(p), []).append(r)
        P = max(len(p) for p in rows_of)
        parts, logits = [], [None] * B
        for p, rows in rows_of.items():
            cache = DynamicCache(config=self.base.config)
            ids = torch.tensor([p], device=self.dev)
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(
                len(p), device=self.dev)[None], cache=cache, use_cache=True, **self.head)
            parts.append((rows, len(p), cache))
            for r in rows:
                logits[r] = out.logits[0, -1].float()
        self.attn = torch.zeros((B, P), dtype=torch.long, device=self.dev)
        for rows, n, _ in parts:
            self.attn[rows, P - n:] = 1
        for i in range(len(self.cache.layers)):
            k0 = parts[0][2].layers[i].keys
            keys = k0.new_zeros((B, k0.shape[1], P, k0.shape[3]))
            values = keys.clone()
            for rows, n, cache in parts:
                keys[rows, :, P - n:] = cache.layers[i].keys[0]
                values[rows, :, P - n:] = cache.layers[i].values[0]
            self.cache.update(keys, values, i)
        return torch.stack(logits)

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
            self.cache, self.step = static_parts(self.model, n_rows, longer, self.compile, old, n)
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
        if not self.static and not any(self.n_cached):  # the first turn: the prompts
            logits = self._prefill(pending, B)
        else:
            logits = self._forward(ids.to(self.dev), mask.to(self.dev))
        end_t = torch.tensor(ends, dtype=torch.long, device=self.dev)
        alive = torch.zeros(B, dtype=torch.bool)
        alive[rows] = True
        alive = alive.to(self.dev)
        toks, lps, n_gen = [], [], torch.zeros(B, dtype=torch.long, device=self.dev)
        for t in range(max_new_tokens):
            nxt, lp = sample(logits, greedy, temperature, top_p, end_t if t < min_new_tokens else None)
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
        return results(tok, toks[rows], lps[rows], [n_gen[r] for r in rows], ends)


def static_parts(model, n_rows, length, compile, old=None, n_old=0):
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
    cache = StaticCache(config=base_model(model).config, max_cache_len=length)
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


def cannot_run(policy, name, max_new_tokens, compile=False):
    """Why `policy` (called `name` in the message) cannot run rollouts with these flags, in one line; None if it can.
    The CLIs check this after loading a model, before any episode."""
    if compile and not supports_kv_reuse(policy):
        return f"--compile needs the KV-cache path, which {name} does not support (engine.supports_kv_reuse)"
    context = getattr(policy.config, "max_position_embeddings", 4096)  # what rollout() fits turns into
    if max_new_tokens >= context:  # no episode would get a single turn: all quits, 0 tokens
        return f"--max-new-tokens {max_new_tokens} leaves no room in the context of {name} ({context} tokens)"
    return None
