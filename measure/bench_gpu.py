"""GPU measurements (CUDA only): the small preset in 4-bit and in bf16 side by side, `train.py --preset small` as a
user runs it, and the memory of the paper preset's Qwen2.5-7B shape. bench.py holds the CPU measurements.

    python bench_gpu.py --out runs/bench_gpu.json                       # all of it (~15 min on an H200)
    python bench_gpu.py --train-args="" --no-qwen7b                     # only 4-bit vs bf16 (~7 min)
    python bench_gpu.py --train-args="--steps 30 --eval-episodes 25"    # a longer train.py run

What is measured:
1. The small preset's policy (SmolLM2-135M-Instruct + LoRA r=16) once with a 4-bit NF4 base (QLoRA, bf16 compute)
   and once with a bf16 base (--quants): the rollout paths of bench.py (old: re-prefill every turn with HF generate
   keeping all logits; new: engine.KVBatch, one KV cache across turns; and bare `generate` at the same batch size),
   then --iterations RL iterations as train.py runs them (--train-tasks x --group-size episodes of up to --max-steps
   turns of the preset's 96 tokens; judge; pg_update + finish_step on every trajectory): seconds per iteration
   split into rollout / update, and peak GPU memory (torch.cuda.max_memory_allocated) over all of it; then
   (--compile) --iterations + 1 more with rollout's compile=True (train.py --compile: a static KV cache and the
   decode step compiled with CUDA graphs; the first of them is not in the median), after checking that greedy
   episodes come out the same with and without it (bf16 kernels may round differently). The policy is
   SmolLM2 before any SFT, so its turns are not those of a trained agent; the comparison is fair, the absolute
   numbers are a guide (item 2 has the real ones). Then (--decode) the time of one decode step at that batch size in
   bare `generate`: as is, with a static cache (which transformers compiles on a GPU, CUDA graphs included, unless
   the quantizer forbids it), with the LoRA adapter merged into a copy of the model, and both: how far each would
   take the ~65 ms a step that keeps an iteration above 6 s, before rollout.py changes for it (~1-2 min a format).
2. `train.py --preset small --quant Q --train-args` in a subprocess (Q: the faster of item 1 with --train-quant
   auto): its seconds per RL iteration, rollout tokens/s, the KL to the reference at the first RL step (~0: the
   reference is the warm start), the sampled format-error rate step by step, peak memory and the before/after
   metrics of its summary.json. Its folder is kept under --train-root.
3. (--qwen7b) A random-init model with the Qwen2.5-7B configuration whose linear layers are 4-bit NF4 (built layer by
   layer: the bf16 model never exists whole), with LoRA as model.load_policy adds it: peak GPU memory of one RL
   step (pg_update + finish_step on --seq-len-token sequences, KL to the reference) with micro-batches of 1 and of
   the paper preset's size, the latter also with the LM head chunked; and of generating a group of --new-tokens
   tokens after a prompt that fills the context to --seq-len, with HF generate keeping all logits (the old path)
   and through engine.KVBatch.
On an H200 item 1 took ~4 min a format: the untrained policy's turns run to the limit, ~65 ms a decode step.
It needs bitsandbytes and the SmolLM2 package (see the Makefile) where it runs; without a GPU it exits with one line.

JSON (--out): {"device", "total_gib", "small": {quant: {"rollout_paths", "iterations": [...], "s_per_iteration",
"compiled": {the same for --compile}, "peak_gib"}}, "train_small": {...}, "qwen2.5-7b-nf4-lora": {...}, "machine", "args", "seconds"}; written after each
part, so a run stopped early keeps what it measured.

Simplifications: one repeat of the rollout paths; item 1 trains on every trajectory with the judge's advantages
(train.py skips groups without signal); item 3 uses random weights and synthetic trajectories, half of each
sequence the model's own tokens.
"""
import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's root, run from here

import torch

from measure import bench as B
import engine
import model as M
import rollout as R
import train as T
from plumbing import loading
from measure.bench import median, r2
from tasks import make_split


@dataclass
class Args:
    """GPU measurements: the small preset in 4-bit and bf16, train.py small, the 7B shape's memory."""
    out: str = "runs/bench_gpu.json"
    """where to write the JSON report"""
    quants: str = "4bit,none"
    """base-weight formats of the small preset's policy to compare (none = bf16), comma-separated"""
    iterations: int = 2
    """RL iterations timed per format (the first is a warm-up and not in the median)"""
    train_tasks: int = 8
    """tasks per RL iteration (train.py's tasks_per_step)"""
    group_size: int = 4
    """trajectories per task"""
    max_steps: int = 6
    """turns per episode"""
    repeats: int = 1
    """repeats of the rollout-path comparison"""
    compile: bool = True
    """time the RL iterations again with train.py --compile (static KV cache, decode step in CUDA graphs)"""
    decode: bool = True
    """time a decode step with a static cache (compiled) and with LoRA merged, after the RL iterations"""
    train_args: str = "--steps 20 --eval-episodes 25"
    """flags for the `train.py --preset small` run, given with "=": --train-args="--steps 6" ('' skips it)"""
    train_quant: str = "auto"
    """--quant of the train.py run: auto (the faster format of item 1) | 4bit | none"""
    train_root: str = ""
    """folder for the train.py run's output (default: a temporary folder)"""
    timeout: int = 420
    """seconds before the train.py run is stopped (what its log holds by then is still reported)"""
    qwen7b: bool = True
    """measure the Qwen2.5-7B shape's memory (--no-qwen7b skips it)"""
    seq_len: int = 2048
    """tokens per sequence in the 7B-shape RL step, and context reached by the generated group"""
    group: int = 4
    """sequences in the 7B-shape RL step and the generated group"""
    new_tokens: int = 256
    """tokens generated per sequence of the group (7B shape)"""


# ----------------------------------------------------------------------------------------------------------------
# 1. The small preset's policy: 4-bit against bf16

def small_policy(quant, device):
    small = T.PRESETS["small"]
    return M.load_policy(small["model"], quant=quant, lora=True, device=device)


@torch.no_grad()
def decode_variants(policy, tok, tasks, group, new_tokens):
    """Time per decode step of bare `generate` at the RL batch size (tasks x group first prompts, eos held off): as
    engine.KVBatch decodes today (dynamic cache, LoRA through peft), with a static cache (which transformers
    compiles on a GPU: CUDA graphs, no Python per step), with the LoRA adapter merged into a copy of the model, and
    both: what each would buy before rollout.py is changed for it. ms per step = (seconds for new_tokens - seconds
    for 1) / (new_tokens - 1); each variant is run once first (compilation) and timed after."""
    import copy
    prompts = [[R.Episode(t, tok, 1).ids for t in tasks for _ in range(group)]]
    merged = copy.deepcopy(policy).merge_and_unload().eval()  # a 4-bit base is re-quantized: speed only
    variants = {"as_is": (policy, {}), "static": (policy, {"cache_implementation": "static"}),
                "merged": (merged, {}), "merged+static": (merged, {"cache_implementation": "static"})}
    out = {}
    for name, (m, kw) in variants.items():
        t0 = time.perf_counter()
        B.bare_generate(m, tok, prompts, new_tokens, **kw)  # compiles where transformers compiles
        first = time.perf_counter() - t0
        full = B.bare_generate(m, tok, prompts, new_tokens, **kw)[0]
        one = B.bare_generate(m, tok, prompts, 1, **kw)[0]
        out[name] = {"ms_per_step": r2(1000 * (full - one) / max(new_tokens - 1, 1), 2), "first_call_s": r2(first, 3)}
    for name in list(variants)[1:]:
        out[name]["speedup"] = r2(out["as_is"]["ms_per_step"] / max(out[name]["ms_per_step"], 1e-6), 2)
    del merged
    return out | {"batch": len(prompts[0]), "new_tokens": new_tokens}


def small_side(args, quant, device):
    """Rollout paths and RL iterations of the small preset's policy with a `quant` base, and its peak memory."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    policy, tok = small_policy(quant, device)
    small = T.PRESETS["small"]
    out = {"weights_gib": r2(torch.cuda.memory_allocated() / 2**30) if cuda else None}
    tasks = R.pick_tasks(make_split("train"), 0)[:args.train_tasks]
    if args.repeats:
        out["rollout_paths"] = B.rollout_paths(policy, tok, tasks, args.group_size, args.max_steps,
                                               small["max_new_tokens"], args.repeats)
        B.print_paths(f"smollm2-135m {quant} + LoRA", out["rollout_paths"])
    targs = T.Args(**{**small, "quant": quant, "tasks_per_step": args.train_tasks, "group_size": args.group_size,
                      "max_steps": args.max_steps})
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=targs.lr, weight_decay=0.0)

    def iterations(n, label):  # n RL iterations as train.py runs them; the first is a warm-up, not in the medians
        rows = []
        for step in range(n):
            B.sync(policy)
            rows.append(B.rl_iteration(policy, tok, targs, opt, step))
            B.sync(policy)
            print(f"  {label}: iteration {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()),
                  flush=True)
        timed = rows[1:] or rows
        return {"iterations": [{k: r2(v, 2) for k, v in r.items()} for r in rows],
                "s_per_iteration": r2(median([r["rollout"] + r["judge"] + r["update"] for r in timed]), 2),
                "s_rollout": r2(median([r["rollout"] for r in timed]), 2),
                "s_update": r2(median([r["update"] for r in timed]), 2),
                "rollout_tokens_per_s": r2(median([r["tokens"] / r["rollout"] for r in timed]), 1)}

    out |= iterations(args.iterations, quant)
    if args.compile:  # the same greedy episodes with and without it, then RL iterations (the first one compiles)
        targs.compile = True
        try:
            kw = dict(group_size=args.group_size, greedy=True, max_steps=2, max_new_tokens=32, progress=False)
            plain, compiled = (R.rollout(policy, tasks, tok, compile=c, **kw) for c in (False, True))
            same = sum(a["ids"] == b["ids"] for a, b in zip(plain, compiled)) / len(plain)
            print(f"  {quant} --compile: greedy episodes identical to the plain path: {same:.2f}", flush=True)
            out["compiled"] = {"greedy_same_ids": r2(same)} | iterations(args.iterations + 1, f"{quant} --compile")
        except Exception as e:
            out["compiled"] = f"{type(e).__name__}: {str(e)[:300]}"
        targs.compile = False
        policy.__dict__.pop("_rollout_static", None)  # its static cache
    out["peak_gib"] = r2(torch.cuda.max_memory_allocated() / 2**30) if cuda else None
    if args.decode:  # after the peak is read: it holds a merged copy of the model
        try:
            out["decode_variants"] = decode_variants(policy, tok, tasks, args.group_size, small["max_new_tokens"])
            print(f"  {quant}: ms per decode step: " + ", ".join(f"{k} {v['ms_per_step']}" for k, v in
                                                                 out["decode_variants"].items() if isinstance(v, dict)))
        except Exception as e:
            out["decode_variants"] = f"{type(e).__name__}: {e}"
    del policy, opt
    return out


# ----------------------------------------------------------------------------------------------------------------
# 2. train.py --preset small as a user runs it

def train_small(flags, quant, timeout, root):
    """`train.py --preset small --quant QUANT FLAGS` in a subprocess: seconds per RL iteration, rollout tokens/s, KL
    at the first step, format errors by step, peak memory, before/after."""
    out_dir = os.path.join(root or tempfile.mkdtemp(prefix="bench-small-"), f"small-{quant}")
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"), "--preset", "small",
           "--quant", quant, "--out", out_dir] + flags.split()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
    except subprocess.TimeoutExpired as e:  # its captured output comes back as bytes
        rc, tail = "timeout", b"".join(x or b"" for x in (e.stdout, e.stderr)).decode(errors="replace")[-2000:]
    res = {"command": " ".join(cmd[1:]), "rc": rc, "wall_s": r2(time.perf_counter() - t0, 1), "out": out_dir}
    log_path, summary_path = os.path.join(out_dir, "log.jsonl"), os.path.join(out_dir, "summary.json")
    log = R.load_jsonl(log_path) if os.path.isfile(log_path) else []
    summary = json.load(open(summary_path)) if os.path.isfile(summary_path) else {}
    if summary:
        res |= {k: summary.get(k) for k in ("seconds", "peak_memory_gb", "before", "after")}
    if log:
        a = summary.get("args") or {**asdict(T.Args()), **T.PRESETS["small"]}
        n_trajs = a["tasks_per_step"] * a["group_size"]  # log's "tokens" is the mean over the batch
        it = [r["t_rollout"] + r["t_judge"] + r["t_update"] for r in log]
        res |= {"rl_steps": len(log), "s_per_iteration": r2(median(it), 2), "first_rl_step_at_s": r2(
                    log[0]["seconds"] - it[0], 1),
                "rollout_tokens_per_s": r2(median([r["tokens"] * n_trajs / r["t_rollout"] for r in log]), 1),
                "shares": {k: r2(median([r[f"t_{k}"] / i for r, i in zip(log, it)]))
                           for k in ("rollout", "judge", "update")},
                "kl_first_update": next((r["kl"] for r in log if r["updated"]), None),
                "kl_by_step": [r2(r["kl"], 4) for r in log],
                "format_errors_by_step": [r2(r["format_errors"], 2) for r in log],
                "harmful_refusal_by_step": [r2(r["harmful_refusal"], 2) for r in log]}
    if rc != 0:
        res["output_tail"] = tail
    return res


# ----------------------------------------------------------------------------------------------------------------
# 3. The Qwen2.5-7B shape in 4-bit NF4 with LoRA (random weights): memory of an RL step and of generation

QWEN25_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
                 rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False)


def random_4bit_model(config, device, dtype):
    """A random-init causal LM of `config` whose linear layers (all but the LM head, as transformers quantizes) are
    bitsandbytes 4-bit NF4. Built on the meta device, then one layer at a time: only one full-precision weight
    matrix exists at once, so a 7B shape needs ~5.5 GB, not the 15 GB of its bf16 weights."""
    with loading.quiet():
        import bitsandbytes as bnb
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():  # parameters on the meta device; buffers (rotary frequencies) real, on the CPU
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    std, head = config.initializer_range, model.get_output_embeddings()
    for name, lin in list(model.named_modules()):
        if type(lin) is not torch.nn.Linear or lin is head:
            continue
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=dtype,
                              compress_statistics=True, quant_type="nf4", device="meta")
        w = torch.empty(lin.out_features, lin.in_features, dtype=dtype, device=device).normal_(0, std)
        q.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=True, quant_type="nf4",
                                     module=q).to(device)  # .to quantizes
        if lin.bias is not None:
            q.bias = torch.nn.Parameter(torch.zeros(lin.out_features, dtype=dtype, device=device), requires_grad=False)
        model.set_submodule(name, q)
    for m in model.modules():  # what is left: embeddings, norms, LM head (meta parameters), buffers (CPU)
        for k, p in list(m._parameters.items()):
            if p is not None and p.is_meta:
                t = torch.empty_like(p, device=device)
                t.normal_(0, std) if p.ndim > 1 else t.fill_(1.0)
                m._parameters[k] = torch.nn.Parameter(t, requires_grad=p.requires_grad)
        for k, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[k] = b.to(device)
    model.is_loaded_in_4bit = True  # what transformers' bitsandbytes loader sets; peft reads it
    model.generation_config.pad_token_id = 0
    return loading.guard_4bit_cpu(model) if torch.device(device).type == "cpu" else model


def with_lora(model, r=16):
    """As model.load_policy(quant="4bit") does: prepare for k-bit training, LoRA on all linear layers."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    with loading.quiet():
        model = prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs={"use_reentrant": False})
        return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0,
                                                task_type="CAUSAL_LM"))


def cuda_peak(fn, cuda):
    """(seconds, {"peak_gib": most memory tensors held, "reserved_gib": most the caching allocator took}) of fn()."""
    if cuda:
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # so that the reserved figure is this call's, not left over from an earlier one
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if not cuda:
        return time.perf_counter() - t0, {"peak_gib": None}
    torch.cuda.synchronize()
    return time.perf_counter() - t0, {"peak_gib": r2(torch.cuda.max_memory_allocated() / 2**30),
                                      "reserved_gib": r2(torch.cuda.max_memory_reserved() / 2**30)}


def chunked_logprobs(model, input_ids, attention_mask, chunk):
    """model.token_logprobs with the LM head applied `chunk` positions at a time (recomputed in backward), so that the
    [B, T, vocab] logits never exist at once: the same [B, T-1] fp32 log-probs. Assumes a plain `lm_head`."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    targets = input_ids[:, 1:]
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False).last_hidden_state[:, :-1]
    head = model.get_output_embeddings()
    out = []
    for s in range(0, hidden.shape[1], chunk):
        h, y = hidden[:, s:s + chunk], targets[:, s:s + chunk]
        if torch.is_grad_enabled():
            out.append(torch.utils.checkpoint.checkpoint(lambda h, y: M._logprob_of(head(h), y), h, y,
                                                         use_reentrant=False))
        else:
            out.append(M._logprob_of(head(h), y))
    return torch.cat(out, dim=1)


@contextlib.contextmanager
def lm_head_chunks(chunk):
    """Make train.py's log-prob calls apply the LM head `chunk` positions at a time (chunked_logprobs instead of
    model.token_logprobs and model.shared_prefix_logprobs), so the [batch, tokens, vocab] logits never exist whole.
    None: unchanged."""
    orig = M.token_logprobs, M.shared_prefix_logprobs
    if chunk:
        M.token_logprobs = M.shared_prefix_logprobs = \
            lambda model, ids, attn, *_, **__: chunked_logprobs(model, ids, attn, chunk)
    try:
        yield
    finally:
        M.token_logprobs, M.shared_prefix_logprobs = orig


def qlora_memory(config, device, seq_len, group, new_tokens, chunk=512):
    """Peak memory and time of one RL step (pg_update + finish_step on `group` synthetic trajectories of seq_len
    tokens, half of them the model's own, KL to the reference as in the paper preset) for micro-batches of 1 and
    of the paper preset's size, the latter also with the LM head chunked; and of generating a group of new_tokens
    tokens after a prompt of seq_len - new_tokens. Memory figures are None off CUDA."""
    cuda = torch.device(device).type == "cuda"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    t0 = time.perf_counter()
    model = with_lora(random_4bit_model(config, device, dtype))
    out = {"build_s": r2(time.perf_counter() - t0, 1), "seq_len": seq_len, "group": group,
           # 4-bit linear layers + embeddings, norms and LM head in fp32 (prepare_model_for_kbit_training) + LoRA
           "weights_gib": r2(torch.cuda.memory_allocated() / 2**30) if cuda else None,
           "trainable_params": M.n_params(model, trainable=True)}
    V, g = config.vocab_size, torch.Generator().manual_seed(0)
    own = seq_len // 2
    trajs = [{"ids": torch.randint(1, V, (seq_len,), generator=g).tolist(), "mask": [0] * (seq_len - own) + [1] * own,
              "logprobs": [0.0] * (seq_len - own) + [-math.log(V)] * own, "task_id": "synthetic"}
             for _ in range(group)]  # one task's group (pg_update's micro-batches), random ids: no prompt in common
    advs = torch.randn(group, generator=g).tolist()
    tok = SimpleNamespace(pad_token_id=0, convert_ids_to_tokens=str, decode=lambda ids, **_: "")
    targs = T.Args(**T.PRESETS["paper"])  # kl_coef (reference forward) and micro-batch of the paper preset
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)
    model.train()
    paper_mb = targs.micro_batch
    for mb, ch in [(1, None), (paper_mb, None), (paper_mb, chunk)]:
        targs.micro_batch = mb

        def step():
            with lm_head_chunks(ch):
                loss, _ = T.pg_update(model, opt, tok, trajs, advs, targs, device)
                T.finish_step(model, opt, targs, loss)
        key = f"rl_step_micro_batch_{mb}" + (f"_lm_head_chunk_{ch}" if ch else "")
        try:
            s, peak = cuda_peak(step, cuda)  # the first step also allocates AdamW's state
            s2, _ = cuda_peak(step, cuda)
            out[key] = {**peak, "first_s": r2(s, 2), "s": r2(s2, 2), "kl_coef": targs.kl_coef}
        except torch.cuda.OutOfMemoryError as e:
            out[key] = {"out_of_memory": str(e).splitlines()[0]}
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    model.eval()
    prompt = torch.randint(1, V, (group, seq_len - new_tokens), generator=g).to(device)

    @torch.no_grad()
    def gen():  # the arguments rollout.generate passes (sampling, all logits returned for the log-probs)
        model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                       pad_token_id=0, return_dict_in_generate=True, output_logits=True, use_cache=True)
    s, peak = cuda_peak(gen, cuda)
    out["generate_group"] = {**peak, "s": r2(s, 2), "prompt_tokens": seq_len - new_tokens,
                             "new_tokens": new_tokens, "tokens_per_s": r2(group * new_tokens / s, 1)}

    def kv_turn():  # the same group through engine.KVBatch: the sampled tokens' log-probs only, no logits kept
        rows = [SimpleNamespace(ids=p) for p in prompt.tolist()]
        engine.KVBatch(model, tok, group).turn(rows, tok, [0], False, 1.0, 1.0, new_tokens, new_tokens)
    s, peak = cuda_peak(kv_turn, cuda)
    out["kv_batch_turn_group"] = {**peak, "s": r2(s, 2), "prompt_tokens": seq_len - new_tokens,
                                  "new_tokens": new_tokens, "tokens_per_s": r2(group * new_tokens / s, 1)}
    return out


# ----------------------------------------------------------------------------------------------------------------
# Reporting, main

def print_report(rep):
    print(f"\n{rep['device']} ({rep['total_gib']} GiB)")
    sides = rep.get("small", {})
    for q, e in rep.get("small_errors", {}).items():
        print(f"small preset policy, quant {q}: failed: {e}")
    if sides:
        print(f"{'small preset policy':<22}{'s / RL iteration':>18}{'rollout s':>11}{'update s':>10}"
              f"{'rollout tok/s':>15}{'peak GiB':>10}")
        for q, v in sides.items():
            for name, x in ((q, v), (f"{q} --compile", v.get("compiled"))):
                if isinstance(x, dict):
                    print(f"{name.replace('none', 'bf16'):<22}{x['s_per_iteration']:>18.2f}{x['s_rollout']:>11.2f}"
                          f"{x['s_update']:>10.2f}{x['rollout_tokens_per_s']:>15.0f}{v['peak_gib'] or 0:>10.2f}")
                elif x:
                    print(f"{name.replace('none', 'bf16')}: failed: {x}")
        for q, v in sides.items():
            d = v.get("decode_variants")
            if isinstance(d, dict):
                print(f"{'bf16' if q == 'none' else q}: ms per decode step at batch {d['batch']}: " + ", ".join(
                    f"{k} {x['ms_per_step']}" + (f" ({x['speedup']}x)" if "speedup" in x else "")
                    for k, x in d.items() if isinstance(x, dict)))
    t = rep.get("train_small")
    if t:
        print(f"train.py {t['command'].split('train.py ')[-1]}: rc {t['rc']}, {t.get('s_per_iteration')} s per RL "
              f"iteration, rollout {t.get('rollout_tokens_per_s')} tokens/s, KL at its first update "
              f"{t.get('kl_first_update')}, peak {t.get('peak_memory_gb')} GB, {t.get('seconds')} s in all")
        f2 = lambda v: "-" if v is None else f"{v:.2f}"
        for when in ("before", "after"):
            for split, m in (t.get(when) or {}).items():
                print(f"  {when:<6} {split:<4} harmful refusal {f2(m['harmful']['refusal_rate'])}, unsafe "
                      f"{f2(m['overall']['unsafe_rate'])}, benign success {f2(m['benign']['task_success'])}, "
                      f"format errors {f2(m['overall']['format_error_rate'])}")
    for k, v in rep.get("qwen2.5-7b-nf4-lora", {}).items():
        if isinstance(v, dict):
            print(f"7B-shape NF4 + LoRA, {k}: " + ", ".join(f"{a} {b}" for a, b in v.items()))


def main(argv=None):
    args = R.parse_args(Args, sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        sys.exit("error: bench_gpu.py needs a CUDA GPU (none is visible); bench.py measures the CPU")
    quants = [q.strip() for q in args.quants.split(",") if q.strip()]
    if any(q not in ("4bit", "none") for q in quants) or args.train_quant not in ("auto", "4bit", "none"):
        sys.exit("error: --quants takes 4bit and/or none; --train-quant auto | 4bit | none")
    t_start = time.time()
    rep = {"device": torch.cuda.get_device_name(),
           "total_gib": r2(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
           "machine": B.machine(), "args": asdict(args), "small": {}}
    for q in quants:
        print(f"small preset policy, quant {q}: rollout paths and {args.iterations} RL iterations ...", flush=True)
        try:  # one failing part must not cost the others (GPU time is scarce)
            rep["small"][q] = small_side(args, q, "cuda")
        except Exception as e:
            rep["small_errors"] = {**rep.get("small_errors", {}), q: f"{type(e).__name__}: {e}"}
            print(f"  failed: {rep['small_errors'][q]}", flush=True)
        B.write(args.out, rep)
    if args.train_args:
        q = args.train_quant
        if q == "auto":
            q = min(rep["small"], key=lambda k: rep["small"][k]["s_per_iteration"]) if rep["small"] else "4bit"
        print(f"train.py --preset small --quant {q} {args.train_args} ...", flush=True)
        rep["train_small"] = train_small(args.train_args, q, args.timeout, args.train_root)
        B.write(args.out, rep)
    if args.qwen7b:
        from transformers import Qwen2Config
        gc.collect()
        torch.cuda.empty_cache()
        print("the Qwen2.5-7B shape in 4-bit NF4 + LoRA ...", flush=True)
        rep["qwen2.5-7b-nf4-lora"] = qlora_memory(Qwen2Config(**QWEN25_7B), "cuda", args.seq_len, args.group,
                                                 args.new_tokens)
    rep["seconds"] = r2(time.time() - t_start, 1)
    B.write(args.out, rep)
    print_report(rep)
    print(f"-> {args.out}")
    return rep


if __name__ == "__main__":
    main()
