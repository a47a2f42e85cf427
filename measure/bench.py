"""Speed and memory of MOSAIC's pieces on this machine. Every comparison is a ratio of two things measured side by
side in the same run (interleaved, several repeats, the median reported), so a busy machine slows both sides alike.

    python bench.py --out runs/bench.json                   # CPU: tiny and SmolLM2-135M (~15-25 min on 2 cores)
    python bench.py --no-smollm2 --out runs/bench.json      # tiny only (~5-10 min)
    python bench.py --quick --no-smollm2 --out /tmp/b.json  # smoke test (~30 s; sizes too small to mean much)

What is measured (CPU; tiny = `model.load_policy("tiny")`, smollm2 = "smollm2-135m", both fp32 with LoRA, but 7.):
0. Rollout paths (tiny). An RL-like batch, --train-tasks x --group-size sampled episodes of up to --max-steps turns
   of up to --new-tokens tokens (8 x 4, 6, 64: train.py's tiny preset), in one batch, through rollout.rollout on the
   old path (kv_reuse=False: HF generate re-prefills the whole conversation every turn and keeps the
   full-vocabulary logits) and the new one (kv_reuse=True: one KV cache per batch across turns, the sampled token's
   log-prob only), and bare `generate` sampling --new-tokens tokens after the same 32 first prompts: seconds,
   model tokens and tokens/s of each. kv_reuse_speedup = old seconds / new seconds; kv_reuse_vs_bare = new tokens/s
   / bare tokens/s at the same batch size. Target: >= 0.5.
1. Rollout overhead. The first --loop-turns turns of --episodes episodes through the real loop (rollout.Episode
   renders the prompt; engine.KVBatch generates; Episode.add_turn parses, steps the environment and renders the
   tool result) against bare `model.generate` on the very prompts the loop generated from, in the same batches, with
   the same number of new tokens (greedy; eos held off until exactly --new-tokens, on both sides). Bare generate
   re-prefills each turn's prompt, so with the cache reused the ratio exceeds 1 from the second turn on.
   loop_vs_generate = loop tokens/s / bare tokens/s. Target: >= 0.85.
2. Batching. rollout.rollout of --episodes whole episodes (greedy) with batch_size=episodes against batch_size=1.
   batched_speedup = episodes/s batched / episodes/s one at a time. Target: >= 4 for tiny.
3. Generate variants (tiny): bare generate on the loop's last batch as is, with a static KV cache, with the LoRA
   adapter merged into the base weights, with both; and prefill alone: what the fixes below would buy.
4. A training step: train.pg_update + train.finish_step (forward, reference forward for the KL, backward, clip,
   AdamW) on --group-size x --train-tasks scripted trajectories (rollout.rollout("expert"), random advantages),
   fp32 LoRA against 4-bit NF4 QLoRA, each in a fresh process: step time, peak resident memory (VmHWM, reset after
   loading) and its growth over the loaded model.
5. An RL iteration of tiny, split as train.py's log splits it (t_rollout / t_judge / t_update): sampled rollout of
   the group, judge.group_rewards + judge.advantages, pg_update + finish_step on every trajectory (as if every group
   carried signal: train.py skips those without, so its update share is at most this).
6. A profile (torch.profiler) of tiny's rollout loop and of one update: top ops by self CPU time, time per phase.

The GPU measurements (the small preset in 4-bit and bf16, the Qwen2.5-7B shape's memory) are bench_gpu.py.

JSON (--out): {"loop_vs_generate", "batched_speedup", "kv_reuse_speedup", "kv_reuse_vs_bare": tiny's ratios,
"targets", "machine", "args", "models": {"tiny": {"params", "rollout_paths", "loop_vs_generate", "batching",
"generate_variants", "train_step": {"none", "4bit"}}, "smollm2-135m": {the same but rollout_paths and
generate_variants, or "skipped"}}, "rl_iteration", "profile_top": {"rollout", "update", "phases_ms"}, "seconds"}.

What the profile showed (once, tiny, 16 episodes x 64-token turns, 1 thread on 2 cores busy with other jobs, before
rollout.py reused the KV cache across turns; the JSON of a full run supersedes these numbers):
- The loop costs nothing over generate: render + parse + env took 12 ms of 5 s, and rollout.generate (log-probs
  from the returned logits) timed the same as bare generate. Generation is the rollout.
- Generate: aten::mm 24%, aten::cat 24% (the growing KV cache is concatenated at every token), HF generate's own
  Python 13%, elementwise mul/add 19% (RoPE, RMSNorm, LoRA's scaling), attention 8%. LoRA triples the matmuls.
- Each turn re-prefills the whole context: 38% of a 64-token turn already at turn 2 (329 tokens), more later.
  Prefill is compute-bound at any batch size, which caps batching at 2.4x for 3-turn episodes (target 4x).
- Update: aten::mm 38%; elementwise mul/add/sub/exp ~40%, mostly the fp32 [batch, tokens, vocab] log-softmax and
  its backward. RL iteration: rollout 61%, update 39%, judge < 0.1%.
Fixes it led to. Measured here (generate_variants): a static KV cache (1.10x), LoRA merged into the fp32 base for
generation (1.18x), both (1.40x); reusing the KV cache across turns would remove most of the prefill. rollout.py took
the cache reuse (engine.KVBatch) only. Merging was tried in rollout.rollout (a merged copy per call): 1.27x on
tiny's RL batch (8 x 4 episodes, 1 thread, median of 5) but `python train.py` took 302 s against 306 s, and the
sampled tokens drift from the unmerged run (fp32 rounding), so it was left out. A static cache with torch.compile
of the decode step: 33 s to compile, no faster on 2 cores. In bench.py: --threads, because on 2 cores shared with
other jobs torch's default of 2 threads ran a batched rollout 15x slower than 1 thread (33 s against 2.3 s).

Simplifications: the tiny model is random-init unless --tiny-model names a trained one (runs/tiny/sft), so its turns
never end early; training-step trajectories are scripted, with random advantages; smollm2's training step is one
micro-batch (--smollm2-train-tasks); peak memory is resident set size, Linux only (None elsewhere).
"""
import contextlib
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's root, run from here

import torch

import engine
import judge as J
import model as M
import rollout as R
import train as T
from plumbing import runs
from tasks import make_split


@dataclass
class Args:
    """Speed and memory of MOSAIC's pieces: ratios measured side by side in one run (see the module docstring)."""
    out: str = "runs/bench.json"
    """where to write the JSON report"""
    quick: bool = False
    """a smoke test: tiny sizes, one or two repeats (~30 s); explicit flags still win"""
    tiny_model: str = "tiny"
    """the tiny policy: tiny (random init: every turn runs to --new-tokens) or a model directory (runs/tiny/sft)"""
    smollm2: bool = True
    """also measure SmolLM2-135M-Instruct (--no-smollm2 skips it)"""
    threads: int = 0
    """torch threads (0 = torch's default, one per core). Use 1 on a machine shared with other jobs: torch's threads
    wait on each other spinning, and a 2-thread run on 2 busy cores was measured ~15x slower than 1 thread"""
    episodes: int = 16
    """episodes in the loop-vs-generate and batching comparisons (tiny)"""
    new_tokens: int = 64
    """tokens per turn (the tiny preset's); loop-vs-generate forces every turn to exactly this length"""
    loop_turns: int = 2
    """turns of the rollout loop timed against bare generate"""
    max_steps: int = 6
    """turns per episode in the batching comparison and the RL iteration (train.py's default)"""
    repeats: int = 3
    """repeats of each tiny measurement (medians are reported)"""
    train_tasks: int = 8
    """tasks in the training step and the RL iteration"""
    group_size: int = 4
    """trajectories per task (G)"""
    train_max_tokens: int = 0
    """keep only each trajectory's last N tokens in the training step (0 = whole trajectories)"""
    smollm2_episodes: int = 8
    """episodes in the smollm2 comparisons (its prompts are ~450 tokens: prefill alone takes seconds on a CPU)"""
    smollm2_max_steps: int = 2
    """turns per episode in smollm2's batching comparison"""
    smollm2_train_tasks: int = 2
    """tasks in smollm2's training step: G x 2 = 8 trajectories = one micro-batch, so the peak memory is that of
    G x 8 (gradients accumulate over micro-batches) and the time a quarter of it (still minutes on 2 cores)"""
    smollm2_repeats: int = 1
    """repeats of each smollm2 measurement"""
    precision: bool = True
    """an RL iteration of `small` (SmolLM2-135M + LoRA), bf16 against fp32, each in a fresh process (--no-precision
    skips it; it takes minutes per side on a CPU)"""
    precision_tasks: int = 8
    """tasks of that RL iteration (x --group-size samples; train.py's small preset: 8 x 4)"""
    precision_max_steps: int = 6
    """turns per episode of that RL iteration (train.py's small preset: 6)"""
    precision_new_tokens: int = 96
    """tokens per turn of that RL iteration (train.py's small preset: 96)"""
    precision_sft_batch: int = 16
    """sequences of the SFT step timed beside it (train.py's small preset: 16)"""


QUICK = dict(episodes=4, new_tokens=8, loop_turns=1, max_steps=2, repeats=2, train_tasks=2, group_size=2,
             train_max_tokens=128, smollm2_episodes=2, smollm2_train_tasks=1, precision_tasks=1,
             precision_max_steps=1, precision_new_tokens=4, precision_sft_batch=2)


# ----------------------------------------------------------------------------------------------------------------
# Boilerplate: clocks, memory, formatting

def median(xs):
    return statistics.median(xs) if xs else None


def _status_mb(field):
    """A field of /proc/self/status (VmRSS: resident now, VmHWM: its peak) in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None


def reset_peak_rss():
    """Make VmHWM restart from the current resident size (Linux: write 5 to clear_refs)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def r2(x, nd=3):
    return None if x is None else round(x, nd)


def machine():
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    import transformers
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "load_avg_start": [round(x, 2) for x in os.getloadavg()],
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def sync(policy):
    """Wait for queued GPU work (timings on CUDA); nothing on a CPU."""
    if policy.device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------------------------
# 1. Rollout overhead: the loop against bare generate on the same prompts

def loop_turns(policy, tok, tasks, turns, new_tokens, fixed=True):
    """The first `turns` turns of the rollout loop over fresh episodes of `tasks` (greedy, one batch, one KV cache:
    engine.KVBatch), every turn exactly new_tokens long if `fixed` (eos held off). Returns (seconds, model tokens,
    seconds inside generation, the batches of prompts it generated from)."""
    t0 = time.perf_counter()
    with torch.profiler.record_function("render+parse+env"):
        eps = sorted([R.Episode(t, tok, max_steps=turns + 1) for t in tasks], key=lambda e: len(e.ids))
    batch, ends = engine.KVBatch(policy, tok, len(eps)), engine.end_ids(policy, tok)
    batches, n, t_gen = [], 0, 0.0
    for _ in range(turns):
        keep = [i for i, e in enumerate(eps) if not e.env.done]
        batch.select(keep)
        eps = [eps[i] for i in keep]
        if not eps:
            break
        batches.append([list(e.ids) for e in eps])
        t1 = time.perf_counter()
        with torch.profiler.record_function("generate"):
            outs = batch.turn(eps, tok, ends, True, 1.0, 1.0, new_tokens, new_tokens if fixed else 0)
        sync(policy)
        t_gen += time.perf_counter() - t1
        with torch.profiler.record_function("render+parse+env"):
            for e, out in zip(eps, outs):
                e.add_turn(tok, *out)
                n += len(out[1])
    return time.perf_counter() - t0, n, t_gen, batches


@torch.no_grad()
def bare_generate(policy, tok, batches, new_tokens, sample=False, **generate_kwargs):
    """Plain left-padded `generate` of exactly new_tokens tokens (eos held off) after each batch of prompts, greedy
    or sampling at temperature 1. Returns (seconds, new tokens)."""
    kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0) if sample else dict(do_sample=False)
    sync(policy)
    t0, n = time.perf_counter(), 0
    for prompts in batches:
        L = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), L), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(prompts), L), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, L - len(p):], attn[i, L - len(p):] = torch.tensor(p), 1
        out = policy.generate(input_ids=ids.to(policy.device), attention_mask=attn.to(policy.device),
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, **kw, **generate_kwargs)
        n += (getattr(out, "sequences", out).shape[1] - L) * len(prompts)
    sync(policy)
    return time.perf_counter() - t0, n


def loop_vs_generate(policy, tok, tasks, turns, new_tokens, repeats):
    policy.eval()
    _, _, _, batches = loop_turns(policy, tok, tasks[:1], 1, 2)  # warm-up (first calls pay one-time costs)
    bare_generate(policy, tok, batches, 2)
    rows = []
    for r in range(repeats):  # interleaved, the order alternating, so drift in machine load hits both sides
        if r % 2:
            bare_s, bare_n = bare_generate(policy, tok, batches, new_tokens)
        loop_s, loop_n, gen_s, batches = loop_turns(policy, tok, tasks, turns, new_tokens)
        if r % 2 == 0:
            bare_s, bare_n = bare_generate(policy, tok, batches, new_tokens)
        rows.append(dict(loop_s=loop_s, bare_s=bare_s, gen_s=gen_s, loop_tok_s=loop_n / loop_s,
                         bare_tok_s=bare_n / bare_s, ratio=(loop_n / loop_s) / (bare_n / bare_s)))
    med = {k: median([x[k] for x in rows]) for k in rows[0]}
    return {"ratio": r2(med["ratio"]), "loop_tokens_per_s": r2(med["loop_tok_s"], 1),
            "bare_tokens_per_s": r2(med["bare_tok_s"], 1), "loop_s": r2(med["loop_s"]), "bare_s": r2(med["bare_s"]),
            # where the loop's extra time goes: inside rollout.generate (log-probs of the output logits, decoding)
            # or outside it (chat template rendering, tokenizing, parsing, environment steps)
            "in_generate_s": r2(med["gen_s"]), "outside_generate_s": r2(med["loop_s"] - med["gen_s"]),
            "episodes": len(tasks), "turns": turns, "new_tokens": new_tokens, "repeats": repeats,
            "ratios": [r2(x["ratio"]) for x in rows]}


# ----------------------------------------------------------------------------------------------------------------
# 0. Rollout paths: re-prefill every turn against one KV cache per batch, and bare generate, in an RL-like batch

def rollout_paths(policy, tok, tasks, group, max_steps, new_tokens, repeats, seed=0):
    """rollout.rollout of tasks x group sampled episodes (temperature 1, up to max_steps turns of up to new_tokens
    tokens, one batch) on the old path (kv_reuse=False: HF generate over the whole conversation every turn, the
    full-vocabulary logits of every new token kept) and the new one (kv_reuse=True: engine.KVBatch), and bare
    `generate` sampling new_tokens tokens after the same batch of first prompts. Repeats interleaved, order rotating;
    each side's median. Both paths start from the same seed but sample differently, so token counts may differ."""
    policy.eval()
    B = len(tasks) * group
    first = [[R.Episode(t, tok, max_steps).ids for t in tasks for _ in range(group)]]

    def run(kv):
        sync(policy)
        t0 = time.perf_counter()
        trajs = R.rollout(policy, tasks, tok, group_size=group, max_steps=max_steps, max_new_tokens=new_tokens,
                          batch_size=B, seed=seed, progress=False, kv_reuse=kv)
        sync(policy)
        return time.perf_counter() - t0, sum(t["outcome"]["tokens"] for t in trajs)

    sides = {"reprefill": lambda: run(False), "kv_reuse": lambda: run(True),
             "bare_generate": lambda: bare_generate(policy, tok, first, new_tokens, sample=True)}
    R.rollout(policy, tasks[:1], tok, max_steps=1, max_new_tokens=2, progress=False)  # warm-up
    bare_generate(policy, tok, [first[0][:1]], 2)
    rows = {k: [] for k in sides}
    for r in range(repeats):
        names = list(sides)
        for k in names[r % 3:] + names[:r % 3]:
            rows[k].append(sides[k]())
    out = {k: {"s": r2(median([s for s, _ in v])), "tokens": int(median([n for _, n in v])),
               "tokens_per_s": r2(median([n / s for s, n in v]), 1)} for k, v in rows.items()}
    tps = {k: v["tokens_per_s"] for k, v in out.items()}
    return {**out, "speedup": r2(median([a[0] / b[0] for a, b in zip(rows["reprefill"], rows["kv_reuse"])])),
            "kv_reuse_vs_bare": r2(tps["kv_reuse"] / tps["bare_generate"]),
            "reprefill_vs_bare": r2(tps["reprefill"] / tps["bare_generate"]),
            "episodes": B, "max_steps": max_steps, "new_tokens": new_tokens, "repeats": repeats,
            "device": str(policy.device)}


def print_paths(label, v):
    print(f"\nrollout paths ({label}, {v['episodes']} episodes x {v['max_steps']} turns x {v['new_tokens']} tokens, "
          f"sampled, one batch, {v['device']}):")
    for k in ("reprefill", "kv_reuse", "bare_generate"):
        x = v[k]
        print(f"  {k:<14} {x['s']:8.2f} s  {x['tokens']:7d} tokens  {x['tokens_per_s']:9.1f} tokens/s")
    print(f"  kv_reuse / reprefill: {v['speedup']:.2f}x faster; tokens/s vs bare generate at batch {v['episodes']}: "
          f"kv_reuse {v['kv_reuse_vs_bare']:.2f}, reprefill {v['reprefill_vs_bare']:.2f}")


# ----------------------------------------------------------------------------------------------------------------
# 2. Batching: all episodes in one batch against one episode at a time

def batching(policy, tok, tasks, max_steps, new_tokens, repeats):
    size = {"batched": len(tasks), "one": 1}
    runs = {"batched": [], "one": []}  # (seconds, model tokens) per repeat
    for r in range(repeats):
        for k in (("batched", "one") if r % 2 == 0 else ("one", "batched")):
            t0 = time.perf_counter()
            trajs = R.rollout(policy, tasks, tok, greedy=True, max_steps=max_steps, max_new_tokens=new_tokens,
                              batch_size=size[k], progress=False)
            runs[k].append((time.perf_counter() - t0, sum(t["outcome"]["tokens"] for t in trajs)))
    eps = {k: len(tasks) / median([s for s, _ in v]) for k, v in runs.items()}
    toks = {k: median([n / s for s, n in v]) for k, v in runs.items()}
    speedups = [one_s / b_s for (b_s, _), (one_s, _) in zip(runs["batched"], runs["one"])]
    return {"speedup": r2(median(speedups)), "episodes_per_s_batched": r2(eps["batched"]),
            "episodes_per_s_one": r2(eps["one"]), "tokens_per_s_batched": r2(toks["batched"], 1),
            "tokens_per_s_one": r2(toks["one"], 1), "batch_size": len(tasks), "max_steps": max_steps,
            "new_tokens": new_tokens, "repeats": repeats, "speedups": [r2(x) for x in speedups]}


def generate_variants(policy, tok, tasks, turns, new_tokens, repeats):
    """Bare generate on the loop's last batch of prompts, as is and with the fixes the profile points to: a static KV
    cache (no torch.cat of the growing cache at every token), the LoRA adapter merged into the fp32 base weights (one
    matmul per linear layer instead of three), both; and prefill alone (1 new token), the share that reusing the
    KV cache across turns would save. Returns seconds and speedups over as-is."""
    policy.eval()
    variants = {"as_is": ({}, False), "static_cache": ({"cache_implementation": "static"}, False),
                "merged_lora": ({}, True), "merged_lora+static_cache": ({"cache_implementation": "static"}, True)}
    times = {k: [] for k in list(variants) + ["prefill_only"]}
    prompts = loop_turns(policy, tok, tasks, turns, new_tokens)[3][-1:]
    for _ in range(repeats):
        for name, (kw, merge) in variants.items():
            if merge:
                policy.merge_adapter()
            try:
                times[name].append(bare_generate(policy, tok, prompts, new_tokens, **kw)[0])
            finally:
                if merge:
                    policy.unmerge_adapter()
        times["prefill_only"].append(bare_generate(policy, tok, prompts, 1)[0])
    base = median(times["as_is"])
    return {"seconds": {k: r2(median(v)) for k, v in times.items()},
            "speedup": {k: r2(base / median(v)) for k, v in times.items() if k not in ("as_is", "prefill_only")},
            "prefill_share": r2(median(times["prefill_only"]) / base), "episodes": len(prompts[0]),
            "context_tokens": max(len(p) for p in prompts[0]), "new_tokens": new_tokens, "repeats": repeats}


# ----------------------------------------------------------------------------------------------------------------
# 3. A training step, each configuration in a fresh process (peaks of different configurations never mix)

def scripted_batch(tok, n_tasks, group, max_tokens=0, seed=0):
    """group x n_tasks expert trajectories of train tasks (with token ids), random advantages."""
    tasks = make_split("train", seed)[:n_tasks]
    trajs = R.rollout("expert", tasks, tok, group_size=group, progress=False)
    if max_tokens:
        trajs = [{**t, **{k: t[k][-max_tokens:] for k in ("ids", "mask", "logprobs")}} for t in trajs]
    g = torch.Generator().manual_seed(seed)
    return trajs, torch.randn(len(trajs), generator=g).tolist()


def train_step_worker(name, quant, n_tasks, group, max_tokens, repeats, threads):
    """Runs in a spawned process: load, one step (it allocates gradients and AdamW state), then `repeats` more."""
    if threads:
        torch.set_num_threads(threads)
    rss_start = _status_mb("VmRSS")
    policy, tok = M.load_policy(name, quant=quant, lora=True, device="cpu", dtype="fp32")
    targs = T.Args()  # micro_batch, kl_coef, clip_eps, max_grad_norm as train.py uses them
    trajs, advs = scripted_batch(tok, n_tasks, group, max_tokens)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    with torch.no_grad():  # weights may be memory-mapped from the cache: page them in before taking the baseline
        sum(p.sum().item() for p in policy.parameters())
    rss_loaded = _status_mb("VmRSS")
    reset_peak_rss()
    times = []
    for _ in range(1 + repeats):
        t0 = time.perf_counter()
        loss, _ = T.pg_update(policy, opt, tok, trajs, advs, targs, "cpu")
        T.finish_step(policy, opt, targs, loss)
        times.append(time.perf_counter() - t0)
    peak = _status_mb("VmHWM")
    return {"step_s": r2(median(times[1:]) if repeats else times[0]), "first_step_s": r2(times[0]),
            "trajectories": len(trajs), "tokens": sum(len(t["ids"]) for t in trajs),
            "own_tokens": sum(sum(t["mask"]) for t in trajs), "micro_batch": targs.micro_batch,
            "kl_coef": targs.kl_coef, "trainable_params": M.n_params(policy, trainable=True),
            "rss_start_mb": r2(rss_start, 1), "rss_loaded_mb": r2(rss_loaded, 1), "peak_rss_mb": r2(peak, 1),
            "step_extra_mb": r2(peak - rss_loaded, 1) if peak and rss_loaded else None, "repeats": repeats}


def train_step(name, quant, args, n_tasks, repeats):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(train_step_worker, name, quant, n_tasks, args.group_size, args.train_max_tokens, repeats,
                           args.threads).result()


# ----------------------------------------------------------------------------------------------------------------
# 4. An RL iteration split into rollout / judge / update, the way train.py's loop does it

def rl_settings(args):
    """train.py's settings for the tiny preset, with this benchmark's sizes."""
    return T.Args(**{**T.PRESETS["tiny"], "tasks_per_step": args.train_tasks, "group_size": args.group_size,
                     "max_steps": args.max_steps, "max_new_tokens": args.new_tokens})


def rl_iteration(policy, tok, targs, opt, step=0, profiler=None):
    t0 = time.perf_counter()
    trajs = R.rollout(policy, T.sample_tasks(step, targs), tok, group_size=targs.group_size,
                      temperature=targs.temperature, max_steps=targs.max_steps, max_new_tokens=targs.max_new_tokens,
                      seed=step, progress=False, compile=targs.compile)
    t1 = time.perf_counter()
    advs = []
    for s in range(0, len(trajs), targs.group_size):
        rs = J.group_rewards(trajs[s:s + targs.group_size], targs.reward, None, targs.l0)
        advs += J.advantages([x["reward"] for x in rs], targs.std_adv)
    t2 = time.perf_counter()
    policy.train()
    with profiler or contextlib.nullcontext():
        with torch.profiler.record_function("pg_update"):
            loss, _ = T.pg_update(policy, opt, tok, trajs, advs, targs, policy.device)
        with torch.profiler.record_function("finish_step"):
            T.finish_step(policy, opt, targs, loss)
    t3 = time.perf_counter()
    return {"rollout": t1 - t0, "judge": t2 - t1, "update": t3 - t2,
            "tokens": sum(t["outcome"]["tokens"] for t in trajs)}


def rl_shares(policy, tok, args):
    targs = rl_settings(args)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=targs.lr, weight_decay=0.0)
    rows = [rl_iteration(policy, tok, targs, opt, step) for step in range(args.repeats)]
    med = {k: median([r[k] for r in rows]) for k in rows[0]}
    total = med["rollout"] + med["judge"] + med["update"]
    return {"seconds": r2(total), **{f"t_{k}": r2(med[k]) for k in ("rollout", "judge", "update")},
            "shares": {k: r2(med[k] / total) for k in ("rollout", "judge", "update")},
            "rollout_tokens_per_s": r2(med["tokens"] / med["rollout"], 1),
            "trajectories": args.train_tasks * args.group_size, "max_steps": args.max_steps,
            "new_tokens": args.new_tokens, "repeats": args.repeats}


# ----------------------------------------------------------------------------------------------------------------
# 5. Profile: top ops by self CPU time in a rollout and in an update

def top_ops(prof, n=12):
    ev = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ev)
    ev.sort(key=lambda e: -e.self_cpu_time_total)
    return [{"op": e.key, "self_ms": r2(e.self_cpu_time_total / 1e3, 1), "share": r2(e.self_cpu_time_total / total),
             "calls": e.count} for e in ev[:n]]


def profile(policy, tok, args):
    from torch.profiler import ProfilerActivity, profile as torch_profile
    tasks = R.pick_tasks(make_split("train"), 0)[:args.train_tasks * args.group_size]
    turns = min(2, args.max_steps)  # the profiler keeps every op: 6 turns of 32 episodes held 13.7 GB
    policy.eval()
    with torch_profile(activities=[ProfilerActivity.CPU]) as p_roll:
        loop_turns(policy, tok, tasks, turns, args.new_tokens, fixed=False)
    rollout_ops = top_ops(p_roll)
    phases = {e.key: r2(e.cpu_time_total / 1e3, 1) for e in p_roll.key_averages()
              if e.key in ("generate", "render+parse+env")}
    del p_roll
    p_upd = torch_profile(activities=[ProfilerActivity.CPU])
    targs = rl_settings(args)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=targs.lr, weight_decay=0.0)
    rl_iteration(policy, tok, targs, opt, step=0, profiler=p_upd)
    phases |= {e.key: r2(e.cpu_time_total / 1e3, 1) for e in p_upd.key_averages()
               if e.key in ("pg_update", "finish_step")}
    return {"rollout": rollout_ops, "update": top_ops(p_upd), "phases_ms": phases,
            "rollout_episodes": len(tasks), "turns": turns}


# ----------------------------------------------------------------------------------------------------------------
# 6. Precision: an RL iteration and an SFT step of `small`, bf16 against fp32, where the time goes

class Clock:
    """Seconds spent in the first-turn prefill, the later blocks a turn appends (tool results) and the decode steps
    of engine.KVBatch: its two methods wrapped with timers (the measurement's own instrument)."""

    def __init__(self):
        self.t = {"prefill": 0.0, "append": 0.0, "decode": 0.0}
        self.saved = engine.KVBatch._prefill, engine.KVBatch._forward
        prefill, forward = self.saved

        def timed_prefill(kv, pending, B):
            t0 = time.perf_counter()
            try:
                return prefill(kv, pending, B)
            finally:
                self.t["prefill"] += time.perf_counter() - t0

        def timed_forward(kv, ids, mask):
            t0 = time.perf_counter()
            try:
                return forward(kv, ids, mask)
            finally:
                self.t["decode" if ids.shape[1] == 1 else "append"] += time.perf_counter() - t0
        engine.KVBatch._prefill, engine.KVBatch._forward = timed_prefill, timed_forward

    def close(self):
        engine.KVBatch._prefill, engine.KVBatch._forward = self.saved


def precision_worker(dtype, merge, n_tasks, group, max_steps, new_tokens, sft_batch, threads):
    """In a fresh process: `small`'s LoRA policy with its base in `dtype`, generating with the adapter merged or not;
    one RL iteration as train.rl_step runs it (rollout split into prefill / appends / decode / the rest, judge,
    update: the reference forward for the KL, the policy's forward and backward, the optimizer step), then one SFT
    step of sft_batch scripted sequences. Peak resident memory over both."""
    if threads:
        torch.set_num_threads(threads)
    policy, tok = M.load_policy("smollm2-135m", dtype=dtype, device="cpu")
    M.bound_activations(policy, "none")
    targs = T.Args(**{**T.PRESETS["small"], "tasks_per_step": n_tasks, "group_size": group, "max_steps": max_steps,
                      "max_new_tokens": new_tokens, "sft_batch": sft_batch})
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=targs.lr, weight_decay=0.0)
    reset_peak_rss()
    if not merge:
        merged, engine.merged_lora = engine.merged_lora, lambda model: contextlib.nullcontext(model)
    clock = Clock()
    t0 = time.perf_counter()
    trajs = R.rollout(policy, T.sample_tasks(0, targs), tok, group_size=group, max_steps=max_steps,
                      max_new_tokens=new_tokens, seed=0, progress=False)
    t_roll = time.perf_counter() - t0
    clock.close()
    if not merge:
        engine.merged_lora = merged
    t1 = time.perf_counter()
    advs = []
    for s in range(0, len(trajs), group):
        rs = J.group_rewards(trajs[s:s + group], targs.reward, None, targs.l0)
        advs += J.advantages([x["reward"] for x in rs], targs.std_adv)
    t2 = time.perf_counter()
    policy.train()
    with torch.no_grad():  # the reference forward alone (pg_update runs it once more, inside the update)
        for s in range(0, len(trajs), targs.micro_batch):
            T.masked_logprobs(policy, trajs[s:s + targs.micro_batch], tok, "cpu", reference=True)
    t3 = time.perf_counter()
    loss, _ = T.pg_update(policy, opt, tok, trajs, advs, targs, "cpu")
    T.finish_step(policy, opt, targs, loss)
    t4 = time.perf_counter()
    batch = T.sft_batch(0, targs, tok)
    opt.zero_grad(set_to_none=True)
    T.sft_backward(policy, tok, batch, targs.micro_batch, "cpu")
    opt.step()
    t5 = time.perf_counter()
    rest = t_roll - sum(clock.t.values())
    return {"dtype": str(next(p for n, p in policy.named_parameters() if "lora_" not in n).dtype).split(".")[-1],
            "merged": merge, "rl_iteration_s": r2(t_roll + (t2 - t1) + (t4 - t3), 1),
            "rollout_s": r2(t_roll, 1), **{f"{k}_s": r2(v, 1) for k, v in clock.t.items()},
            "loop_rest_s": r2(rest, 1), "judge_s": r2(t2 - t1, 3), "update_s": r2(t4 - t3, 1),
            "reference_forward_s": r2(t3 - t2, 1), "sft_step_s": r2(t5 - t4, 1),
            "model_tokens": sum(t["outcome"]["tokens"] for t in trajs),
            "trajectory_tokens": sum(len(t["ids"]) for t in trajs), "episodes": len(trajs),
            "format_error_share": r2(sum(t["outcome"]["format_errors"] > 0 for t in trajs) / len(trajs)),
            "sft_sequences": len(batch), "peak_rss_gb": r2((_status_mb("VmHWM") or 0) / 1024, 2)}


def precision(args):
    """precision_worker for fp32 (generation unmerged: the fp32 path as it was), bf16 unmerged and bf16 merged (the
    default), each in a fresh process, one after the other. The LoRA adapter is fresh (zero B: the base's turns)."""
    out = {}
    for label, dtype, merge in (("fp32", "fp32", False), ("bf16_unmerged", "bf16", False), ("bf16", "bf16", True)):
        print(f"precision: small, {label} (fresh process) ...", flush=True)
        try:
            M.frozen_dtype(dtype, "cpu")
        except M.ModelError as e:
            out[label] = {"skipped": str(e)}
            continue
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            out[label] = pool.submit(precision_worker, dtype, merge, args.precision_tasks, args.group_size,
                                     args.precision_max_steps, args.precision_new_tokens, args.precision_sft_batch,
                                     args.threads).result()
        print("  " + ", ".join(f"{k} {v}" for k, v in out[label].items()), flush=True)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Reporting

def print_table(rep):
    def cell(m, f):
        try:
            return f(rep["models"][m])
        except (KeyError, TypeError):  # skipped or missing
            return "-"
    lg = lambda v: (f"{v['ratio']:.2f} ({v['loop_tokens_per_s']:.0f} / {v['bare_tokens_per_s']:.0f} tok/s)")
    bt = lambda v: f"{v['speedup']:.1f}x ({v['episodes_per_s_batched']:.2f} / {v['episodes_per_s_one']:.2f} ep/s)"
    ts = lambda v: f"{v['step_s']:.2f} s, peak {v['peak_rss_mb']:.0f} MB (+{v['step_extra_mb']:.0f})"
    rows = [("loop / bare generate, tokens/s", lambda v: lg(v["loop_vs_generate"])),
            ("batched / one at a time, episodes/s", lambda v: bt(v["batching"])),
            ("train step, fp32 LoRA", lambda v: ts(v["train_step"]["none"])),
            ("train step, 4-bit QLoRA", lambda v: ts(v["train_step"]["4bit"]))]
    models = list(rep["models"])
    print(f"\n{'measurement':<38}" + "".join(f"{m:<36}" for m in models))
    for label, f in rows:
        print(f"{label:<38}" + "".join(f"{cell(m, f):<36}" for m in models))
    gv = rep["models"].get("tiny", {}).get("generate_variants")
    if gv:
        fixes = ", ".join(f"{k} {v:.2f}x" for k, v in gv["speedup"].items())
        print(f"\ngenerate (tiny, {gv['episodes']} x {gv['new_tokens']} tokens after {gv['context_tokens']}): prefill "
              f"{gv['prefill_share']:.0%} of it; speedups {fixes}")
    it = rep.get("rl_iteration")
    if it:
        sh = it["shares"]
        print(f"RL iteration (tiny, {it['trajectories']} trajectories): {it['seconds']:.2f} s = rollout "
              f"{sh['rollout']:.0%}, judge {sh['judge']:.1%}, update {sh['update']:.0%}")
    for part in ("rollout", "update"):
        ops = rep.get("profile_top", {}).get(part, [])[:6]
        if ops:
            print(f"profile, {part}: " + ", ".join(f"{o['op']} {o['share']:.0%}" for o in ops))
    if rep.get("profile_top", {}).get("phases_ms"):
        print("phases (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in rep["profile_top"]["phases_ms"].items()))
    if rep["models"].get("tiny", {}).get("rollout_paths"):
        print_paths("tiny", rep["models"]["tiny"]["rollout_paths"])
    for k, ok in rep["targets"].items():
        print(f"target {k}: {'met' if ok else 'NOT met'}")


def write(path, rep):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    runs.write_json(path, rep)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = R.parse_args(Args, argv, defaults=QUICK if "--quick" in argv else None)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.time()
    rep = {"machine": machine(), "args": asdict(args)}
    rep["models"] = {}
    specs = [("tiny", args.tiny_model, args.episodes, args.max_steps, args.train_tasks, args.repeats)]
    if args.smollm2:
        specs.append(("smollm2-135m", "smollm2-135m", args.smollm2_episodes, args.smollm2_max_steps,
                      args.smollm2_train_tasks, args.smollm2_repeats))
    tasks_all = R.pick_tasks(make_split("test"), 0)
    for label, name, n_eps, max_steps, n_train, repeats in specs:
        try:
            policy, tok = M.load_policy(name, quant="none", lora=True, device="cpu", dtype="fp32")
        except M.ModelError as e:
            rep["models"][label] = {"skipped": str(e)}
            print(f"{label}: skipped ({e})")
            continue
        res = {"params": M.n_params(policy)}
        tasks = tasks_all[:n_eps]
        print(f"{label}: {res['params'] / 1e6:.1f} M parameters; loop vs generate ...", flush=True)
        res["loop_vs_generate"] = loop_vs_generate(policy, tok, tasks, args.loop_turns, args.new_tokens, repeats)
        print(f"{label}: batching {n_eps} vs 1 ...", flush=True)
        res["batching"] = batching(policy, tok, tasks, max_steps, args.new_tokens, repeats)
        if label == "tiny":
            print(f"tiny: rollout paths ({args.train_tasks} x {args.group_size} episodes) ...", flush=True)
            res["rollout_paths"] = rollout_paths(policy, tok, R.pick_tasks(make_split("train"), 0)[
                :args.train_tasks], args.group_size, args.max_steps, args.new_tokens, args.repeats)
            print_paths("tiny", res["rollout_paths"])
            print("tiny: generate variants, RL iteration shares, profile ...", flush=True)
            res["generate_variants"] = generate_variants(policy, tok, tasks, args.loop_turns, args.new_tokens, repeats)
            rep["rl_iteration"] = rl_shares(policy, tok, args)
            rep["profile_top"] = profile(policy, tok, args)
        del policy
        res["train_step"] = {}
        for quant in ("none", "4bit"):
            print(f"{label}: training step, quant={quant} (fresh process) ...", flush=True)
            try:
                res["train_step"][quant] = train_step(name, quant, args, n_train, repeats)
            except M.ModelError as e:
                res["train_step"][quant] = {"skipped": str(e)}
        rep["models"][label] = res
        write(args.out, rep)  # a partial report survives a later failure

    if args.precision and args.smollm2:  # a SmolLM2 measurement: --no-smollm2 skips it too
        try:
            rep["precision"] = precision(args)
        except M.ModelError as e:
            rep["precision"] = {"skipped": str(e)}
        write(args.out, rep)

    tiny = rep["models"].get("tiny", {})
    rep["loop_vs_generate"] = tiny.get("loop_vs_generate", {}).get("ratio")
    rep["kv_reuse_speedup"] = tiny.get("rollout_paths", {}).get("speedup")
    rep["kv_reuse_vs_bare"] = tiny.get("rollout_paths", {}).get("kv_reuse_vs_bare")
    rep["batched_speedup"] = tiny.get("batching", {}).get("speedup")
    rep["targets"] = {"loop_vs_generate >= 0.85": (rep["loop_vs_generate"] or 0) >= 0.85,
                      "batched_speedup >= 4 (tiny)": (rep["batched_speedup"] or 0) >= 4,
                      "kv_reuse tokens/s >= 0.5x bare generate (tiny)": (rep["kv_reuse_vs_bare"] or 0) >= 0.5}
    rep["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    rep["seconds"] = r2(time.time() - t_start, 1)
    write(args.out, rep)
    print_table(rep)
    print(f"\ndone in {rep['seconds']:.0f} s -> {args.out}")
    return rep


if __name__ == "__main__":
    main()
