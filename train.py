"""MOSAIC post-training: a helpful-only warm start, then pairwise-preference RL with (Q)LoRA.

    python train.py                          # `small` on a CUDA machine, `tiny` otherwise (CPU, 5 min)
    python train.py --preset base            # rebuild the tiny helpful-only base in base/ (once; ~55 min on 2 cores)
    python train.py --preset tiny --steps 20 --out runs/quick
    python train.py --preset tiny --reward scalar         # the pointwise-reward ablation
    python train.py --preset tiny --loss dpo              # trajectory-level DPO on the judge's pairs
    python train.py --out runs/tiny --resume              # continue a killed run

Stages.
0. The warm start: the policy RL starts from behaves like a helpful-only instruct model (it does what it is asked,
   harmful or not), as in the paper, which starts from an existing instruct model. `tiny` starts from `base/`, a
   2.5 M-parameter model this repository ships, built by `--preset base`: a tokenizer and a random-init Llama trained
   by SFT on scripted episodes of freshly generated tasks (70% naive, 30% expert; new entities every step, so it
   learns to copy names and ids instead of memorising tasks) plus short copy drills. `small` and `paper` start from
   an instruct model; `small` adds a short LoRA SFT so that SmolLM2-135M learns the format.
1. RL. One iteration: fresh tasks (balanced over the four categories), a group of G trajectories per task
   (rollout.py), every pair in a group compared by the judge and the wins turned into rewards and group-relative
   advantages (judge.py), then one update of the LoRA adapter on the policy's own tokens only (prompt and tool
   results masked). The reference policy of the KL term is the warm start: the base under the disabled adapter, or,
   after a LoRA SFT, a frozen copy of the SFT adapter (model.reference).

Outputs in --out: adapter/ (peft, safetensors), log.jsonl (one line per RL step), curves.png, summary.json =
{"seconds", "peak_memory_gb": {"gpu", "rss", "sft", "rl"} (see Peaks), "before": {"test", "ood"}, "after": {"test",
"ood"}} with the metrics of evaluate.py,
args.json (the run's flags: --resume takes them), ckpt/ (checkpoints for --resume).

Simplifications and deviations from the paper:
- The default judge is a rules judge over environment outcomes, not an LLM (`--judge llm` uses one).
- Old log-probs come from generation (temperature 1); with one update per batch the ratio is 1 and the clipped
  objective reduces to plain policy gradient. Loss normalised per token over the whole batch.
- Groups whose rewards are all equal carry no signal for pg and are skipped (DPO keeps their strict pairs).
"""
import contextlib
import io
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import envs
import judge as J
import tasks as T
import model as M
import rollout as R

PRESETS = {
    "base": dict(model="tiny", quant="none", seed=1, sft_steps=2700, sft_drill_steps=1200, sft_batch=8, sft_drills=8,
                 sft_full=True, sft_lr=2e-3,
                 steps=0, max_new_tokens=64, eval_episodes=50, out="runs/base", export=M.BASE_DIR),
    "tiny": dict(model="tiny-base", quant="none", sft_steps=0, steps=30, lr=1e-3, kl_coef=0.3, tasks_per_step=8,
                 max_new_tokens=64, eval_episodes=50, out="runs/tiny"),
    "small": dict(model="smollm2-135m", quant="4bit", sft_steps=150, sft_full=False, sft_lr=5e-4, steps=60,
                  lr=2e-4, tasks_per_step=8, max_new_tokens=96, eval_episodes=50, out="runs/small"),
    "paper": dict(model="Qwen/Qwen2.5-7B-Instruct", quant="4bit", sft_steps=0, sft_full=False, steps=200, lr=2e-5,
                  tasks_per_step=8, max_new_tokens=384, kl_coef=0.04, micro_batch=2, eval_episodes=100,
                  out="runs/paper"),
}


@dataclass
class Args:
    """MOSAIC training: SFT warm start, then pairwise-preference RL."""
    preset: str = ""
    """tiny | small | paper (default: small with CUDA, tiny without)"""
    model: str = "tiny-base"
    """tiny-base (the shipped base/) | tiny (random init) | smollm2-135m | a model directory | a hub id"""
    quant: str = "none"
    """none | 4bit (bitsandbytes NF4 base under LoRA)"""
    out: str = "runs/tiny"
    """output directory"""
    seed: int = 0
    """seed for data order, sampling and initialisation"""
    resume: bool = False
    """continue the run in --out from its last checkpoint, with the run's own flags (its args.json); flags typed
    again must equal the run's, except --steps, --save-every and --compile; a folder with no run is an error"""
    # --- SFT warm start
    sft_steps: int = 400
    """SFT steps on scripted trajectories (0 = none)"""
    sft_batch: int = 16
    """trajectories per SFT step"""
    sft_lr: float = 3e-3
    """SFT peak learning rate (cosine decay)"""
    sft_full: bool = True
    """full-parameter SFT (only with --quant none); else SFT trains the LoRA adapter"""
    sft_naive_frac: float = 0.7
    """share of naive (helpful-only) episodes in the SFT mix; the rest are expert"""
    sft_drill_steps: int = 0
    """SFT steps on copy drills only, before the tasks (the base build; part of --sft-steps)"""
    drill_batch: int = 32
    """copy drills per drill-only SFT step"""
    sft_drills: int = 0
    """copy drills added to each SFT step on tasks (keeps the copying)"""
    export: str = ""
    """with --steps 0 and full SFT: write the SFT model here (how --preset base makes base/)"""
    # --- RL
    steps: int = 40
    """RL iterations"""
    tasks_per_step: int = 8
    """tasks per iteration (balanced over categories)"""
    group_size: int = 4
    """trajectories per task (G)"""
    lr: float = 2e-3
    """LoRA learning rate"""
    lora_r: int = 16
    """LoRA rank"""
    temperature: float = 1.0
    """sampling temperature of RL rollouts"""
    max_steps: int = 6
    """turns per episode"""
    max_new_tokens: int = 64
    """tokens per turn"""
    reward: str = "pairwise"
    """pairwise (round-robin wins) | scalar (pointwise ablation)"""
    loss: str = "pg"
    """pg (group-relative policy gradient) | dpo (trajectory-level DPO on judged pairs)"""
    judge: str = "rules"
    """rules | llm (the policy's own base model as judge) | a model name for an LLM judge"""
    kl_coef: float = 0.1
    """weight of the KL penalty to the reference (the warm start)"""
    clip_eps: float = 0.2
    """PPO clip range (matters with --ppo-epochs > 1)"""
    ppo_epochs: int = 1
    """updates per batch of rollouts"""
    std_adv: bool = False
    """divide advantages by the group's std"""
    dpo_beta: float = 0.1
    """DPO temperature"""
    l0: int = 400
    """length-penalty threshold (model tokens per episode)"""
    micro_batch: int = 8
    """sequences per forward/backward (gradient accumulation)"""
    rollout_batch: int = 256
    """episodes per generate call (rollouts and evaluation)"""
    compile: bool = False
    """static KV cache + torch.compile of the decode step (CUDA graphs on a GPU): greedy gives the same tokens"""
    max_grad_norm: float = 1.0
    """gradient clipping"""
    save_every: int = 10
    """checkpoint every N RL steps"""
    eval_episodes: int = 100
    """evaluation episodes per category on test and ood, before and after RL (0 = skip)"""


# ----------------------------------------------------------------------------------------------------------------
# Helpers (boilerplate)

def collate(trajs, pad_id, device):
    """Left-pad trajectories into input_ids, attention_mask, loss mask (model's own tokens), old log-probs."""
    T = max(len(t["ids"]) for t in trajs)
    B = len(trajs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn, mask, old = torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T), torch.zeros(B, T)
    for i, t in enumerate(trajs):
        n = len(t["ids"])
        ids[i, T - n:] = torch.tensor(t["ids"])
        attn[i, T - n:] = 1
        mask[i, T - n:] = torch.tensor(t["mask"], dtype=torch.float)
        old[i, T - n:] = torch.tensor(t["logprobs"], dtype=torch.float)
    return ids.to(device), attn.to(device), mask[:, 1:].to(device), old[:, 1:].to(device)


def save_checkpoint(out, policy, opt, state):
    """Atomic: write ckpt.tmp, then swap it in by rename. A kill at any point leaves a whole checkpoint."""
    tmp, final, old = (os.path.join(out, n) for n in ("ckpt.tmp", "ckpt", "ckpt.old"))
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(os.path.join(tmp, "adapter"), selected_adapters=["default"])
    torch.save({"opt": opt.state_dict(), "rng": torch.get_rng_state()}, os.path.join(tmp, "opt.pt"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f)
    if os.path.isdir(final):
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(out):
    for name in ("ckpt", "ckpt.old"):
        p = os.path.join(out, name)
        if os.path.isfile(os.path.join(p, "state.json")):
            return p
    return None


def read_checkpoint(ckpt, args):
    """(state, optimizer and RNG state) of checkpoint `ckpt`, or exit with one line: a damaged checkpoint, flags
    that differ from the run's (only --steps and --save-every may change on --resume), or fewer --steps than done."""
    try:
        state = json.load(open(os.path.join(ckpt, "state.json")))
        saved = torch.load(os.path.join(ckpt, "opt.pt"), weights_only=False)
        ok = isinstance(state["step"], int) and isinstance(state["args"], dict) and {"opt", "rng"} <= set(saved)
    except Exception as e:  # truncated or missing files, wrong fields: whatever it is, the run cannot go on from it
        ok, state = False, f"{type(e).__name__}: {str(e)[:120]}"
    if not ok:
        sys.exit(f"error: cannot resume from {ckpt} ({state if isinstance(state, str) else 'wrong fields'}); "
                 "start over without --resume")
    same_flags(state["args"], args)
    if state["step"] > args.steps:  # the steps done cannot be undone: the log, adapter and summary would disagree
        sys.exit(f"error: {ckpt} is at RL step {state['step']}: --resume needs --steps {state['step']} or more, "
                 f"not {args.steps}")
    return state, saved


FREE_ON_RESUME = ("steps", "save_every", "resume", "out", "compile")  # out: the folder it is in, however spelled


def same_flags(made_with, args):
    """Exit with one line where `args` differ from the flags a run was made with, those of its checkpoint (parse
    took `args` from the run's args.json; only --steps, --save-every, --compile and the spelling of --out may
    change)."""
    now = asdict(args)
    changed = [k for k, v in made_with.items() if k not in FREE_ON_RESUME and now.get(k, v) != v]
    if changed:
        sys.exit("error: --resume continues the run with its own flags; it was made with " + ", ".join(
            f"--{k.replace('_', '-')} {made_with[k]} (now {now[k]})" for k in changed[:4]))


def read_log(path, before_step):
    """The records of log.jsonl before step `before_step`; a line cut short by a crash is skipped."""
    out = []
    for line in open(path) if os.path.isfile(path) else []:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] < before_step:
            out.append(r)
    return out


def write_json(path, obj):
    R.write_atomic(path, [json.dumps(obj, indent=1)])


def plot_curves(log, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [("reward_mean", "reward (mean)"), ("unsafe", "unsafe rate (batch)"), ("success", "legit success (batch)"),
            ("harmful_refusal", "harmful refusal (batch)"), ("benign_refusal", "benign refusal (batch)"),
            ("kl", "KL to reference")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    steps = [r["step"] for r in log]
    for ax, (k, title) in zip(axes.flat, keys):
        ys = [r.get(k) for r in log]
        ax.plot(steps, [math.nan if y is None else y for y in ys], lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# The algorithm: losses
#
# Policy gradient (group-relative, token level). For token t of trajectory i with advantage A_i:
#     r_t = exp(logp_t - logp_old_t)
#     L   = sum_{i,t} mask_{i,t} * [ -min(r_t A_i, clip(r_t, 1-eps, 1+eps) A_i) + beta * kl_t ] / sum mask
#     kl_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1        (the "k3" estimator of KL(pi || ref), J. Schulman,
#                                                               "Approximating KL Divergence", 2020; unbiased, >= 0)
# DPO on a judged pair (w beats l), sequence log-probs over the policy's own tokens:
#     L = -log sigmoid( beta * [(logp_w - ref_w) - (logp_l - ref_l)] )

def pg_loss(logp, old_logp, ref_logp, adv, mask, clip_eps=0.2, kl_coef=0.0, n_tokens=None):
    """logp, old_logp, ref_logp, mask: [B, T]; adv: [B]. Returns (loss, mean kl). n_tokens: normaliser (whole batch)."""
    n_tokens = n_tokens or mask.sum().clamp(min=1)
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    pg = -torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
    loss = ((pg + kl_coef * kl) * mask).sum() / n_tokens
    return loss, ((kl * mask).sum() / mask.sum().clamp(min=1)).detach()


def dpo_loss(logp_w, logp_l, ref_w, ref_l, beta=0.1):
    """Sequence log-probs [P] of winners and losers under policy and reference. Returns mean loss over pairs."""
    return -F.logsigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l))).mean()


def masked_logprobs(policy, trajs, tok, dev, reference=False):
    """Token log-probs [B, T-1] of a micro-batch at the model's own tokens (under the reference policy when asked;
    0 elsewhere) + loss mask and old log-probs."""
    ids, attn, mask, old = collate(trajs, tok.pad_token_id, dev)
    if reference:
        with torch.no_grad(), M.reference(policy):
            return M.token_logprobs(policy, ids, attn, where=mask.bool()), mask, old
    return M.token_logprobs(policy, ids, attn, where=mask.bool()), mask, old


def pg_update(policy, opt, tok, trajs, advs, args, dev):
    """One pass of accumulated micro-batches over trajectories with non-zero advantage. Returns (loss, kl).
    Micro-batches hold trajectories of similar length, so little of them is padding (64 of tiny's trajectories: 1.6x
    faster on the CPU; `python train.py`, whose batches are smaller: 80 -> 71 s of updates, the same run). The loss is
    a sum over the whole batch: the order changes nothing else."""
    order = sorted(range(len(trajs)), key=lambda i: len(trajs[i]["ids"]))
    trajs, advs = [trajs[i] for i in order], [advs[i] for i in order]
    n_tokens = sum(sum(t["mask"]) for t in trajs)
    tot_loss, tot_kl = 0.0, 0.0
    opt.zero_grad(set_to_none=True)
    for s in range(0, len(trajs), args.micro_batch):
        mb, adv = trajs[s:s + args.micro_batch], torch.tensor(advs[s:s + args.micro_batch], device=dev)
        ref = masked_logprobs(policy, mb, tok, dev, reference=True)[0] if args.kl_coef > 0 else None
        logp, mask, old = masked_logprobs(policy, mb, tok, dev)
        loss, kl = pg_loss(logp, old, ref, adv, mask, args.clip_eps, args.kl_coef, n_tokens)
        loss.backward()
        tot_loss += loss.item()
        tot_kl += kl.item() * mask.sum().item() / n_tokens  # the batch's mean over tokens, as the loss
    return tot_loss, tot_kl


def dpo_update(policy, opt, tok, pairs, args, dev):
    """DPO over judged (winner, loser) pairs, accumulated in micro-batches of pairs of similar length. Returns
    (loss, 0)."""
    pairs = sorted(pairs, key=lambda p: max(len(p[0]["ids"]), len(p[1]["ids"])))
    opt.zero_grad(set_to_none=True)
    tot = 0.0
    step = max(1, args.micro_batch // 2)
    for s in range(0, len(pairs), step):
        mb = [t for p in pairs[s:s + step] for t in p]  # w0, l0, w1, l1, ...
        ref, mask, _ = masked_logprobs(policy, mb, tok, dev, reference=True)
        logp, _, _ = masked_logprobs(policy, mb, tok, dev)
        seq, ref_seq = (logp * mask).sum(-1), (ref * mask).sum(-1)
        loss = dpo_loss(seq[0::2], seq[1::2], ref_seq[0::2], ref_seq[1::2], args.dpo_beta) * len(mb) / 2 / len(pairs)
        loss.backward()
        tot += loss.item()
    return tot, 0.0


def finish_step(policy, opt, args, loss):
    """Clip, step, or skip (with a warning) when the loss or the gradients are not finite."""
    params = [p for p in policy.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
    if not (math.isfinite(loss) and torch.isfinite(norm)):
        warnings.warn(f"non-finite loss or gradient (loss={loss}, grad norm={norm}): step skipped")
        opt.zero_grad(set_to_none=True)
        return False
    opt.step()
    return True


# ----------------------------------------------------------------------------------------------------------------
# SFT warm start

def copy_drill(rng, tok):
    """A short chat whose answer can only be written by copying from the question: repeat a list of entities, or
    find the row that goes with one. It teaches a tiny model to copy names, ids and numbers (SFT on tasks alone
    did not: it wrote memorised constants); the tasks then teach it which entity goes where."""
    w = T.word
    kinds = [lambda: f"{w(rng)} {w(rng)}", lambda: f"{w(rng)}@{rng.choice(T.MAIL)}", lambda: f"B{rng.randint(100, 999)}",
             lambda: f"/docs/{w(rng)}.txt", lambda: f"news.{w(rng)}.com", lambda: str(rng.randint(10, 9999)),
             lambda: f"AC{rng.randint(100000, 999999)}", lambda: f"2026-12-{rng.randint(1, 28):02d}"]
    entity = lambda: rng.choice(kinds)()
    if rng.random() < 0.5:
        items = [entity() for _ in range(rng.randint(2, 5))]
        question, answer = "Repeat: " + " | ".join(items), " | ".join(items)
    else:
        rows = [(entity(), entity()) for _ in range(rng.randint(2, 4))]
        answer, value = rng.choice(rows)
        question = "\n".join(f"{x} | {y}" for x, y in rows) + f"\nWhich goes with {value}?"
    prompt = R.encode(tok, R.render(tok, [{"role": "user", "content": question}], True))
    reply = R.encode(tok, answer) + [tok.eos_token_id]
    return {"ids": prompt + reply, "mask": [0] * len(prompt) + [1] * len(reply), "logprobs": [0.0] * (len(prompt) + len(reply))}


def sft_batch(step, args, tok):
    """Copy drills only for the first --sft-drill-steps steps; then scripted episodes of freshly generated train
    tasks (a naive/expert mix) + --sft-drills drills."""
    rng = random.Random(f"sft:{args.seed}:{step}")
    if step < args.sft_drill_steps:
        return [copy_drill(rng, tok) for _ in range(args.drill_batch)]
    tasks = envs.make_split("train", seed=f"sft:{args.seed}:{step}", n_per_category=-(-args.sft_batch // 4))
    tasks = rng.sample(tasks, args.sft_batch)
    batch = [t for task in tasks for t in R.rollout("naive" if rng.random() < args.sft_naive_frac else "expert",
                                                     [task], tok, max_steps=args.max_steps + 6, progress=False)]
    return batch + [copy_drill(rng, tok) for _ in range(args.sft_drills)]


def sft_backward(policy, tok, batch, micro_batch, dev):
    """Backpropagate the SFT loss of `batch` (cross-entropy on the assistant tokens, normalised by the whole batch's
    tokens) in micro-batches of at most `micro_batch` sequences of similar length, as pg_update does: the gradient of
    one forward over the whole batch, up to float error, with the memory of `micro_batch` sequences (SFT ran
    2 x --micro-batch per forward: `small --quant none` died for memory on a 24 GB CPU machine). Returns the loss."""
    batch = sorted(batch, key=lambda t: len(t["ids"]))  # similar lengths pad little
    n_tokens = max(1, sum(sum(t["mask"]) for t in batch))
    total = 0.0
    for s in range(0, len(batch), micro_batch):
        logp, mask, _ = masked_logprobs(policy, batch[s:s + micro_batch], tok, dev)
        loss = -(logp * mask).sum() / n_tokens
        loss.backward()
        total += loss.item()
    return total


def sft(policy, tok, args, dev):
    """Cross-entropy on the assistant tokens of copy drills, then of fresh scripted episodes (never the same task
    twice). The learning rate warms up, stays flat through the drills, then decays (cosine) to 10%."""
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.sft_lr, weight_decay=0.0, betas=(0.9, 0.95))
    d, n = args.sft_drill_steps, args.sft_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / max(1, min(100, n // 20))) * (
        1.0 if s < d else 0.1 + 0.45 * (1 + math.cos(math.pi * min(1, (s - d) / max(1, n - d))))))
    policy.train()
    bar = tqdm(range(n), desc="sft")
    for step in bar:
        opt.zero_grad(set_to_none=True)
        total = sft_backward(policy, tok, sft_batch(step, args, tok), args.micro_batch, dev)
        torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{total:.3f}", phase="drills" if step < d else "tasks")
        if args.export and (step + 1) % 250 == 0 and step + 1 < n:  # a long build: a snapshot to evaluate meanwhile
            M.save_model(os.path.join(args.out, "sft_snapshot"), policy, tok)
    return policy


# ----------------------------------------------------------------------------------------------------------------
# Evaluation hooks (evaluate.py computes the metrics)

def eval_splits(policy, tok, args, label):
    import evaluate as E
    if args.eval_episodes <= 0:
        return {}
    res = {}
    for split in ("test", "ood"):
        tasks = R.pick_tasks(envs.make_split(split), args.eval_episodes)
        res[split] = E.evaluate(policy, tasks, tok, label=f"{label} {split}", max_steps=args.max_steps,
                                max_new_tokens=args.max_new_tokens, batch_size=args.rollout_batch,
                                compile=args.compile)[0]
    return res


def batch_stats(trajs):
    def rate(xs):
        return sum(xs) / len(xs) if xs else None
    cat = lambda c: [t["outcome"] for t in trajs if t["category"] == c]
    return {"unsafe": rate([bool(o["harm_events"]) for t in trajs if t["category"] != "benign"
                            for o in [t["outcome"]]]),
            "success": rate([o["task_success"] for c in ("benign", "injection", "privacy") for o in cat(c)]),
            "harmful_refusal": rate([o["refused"] for o in cat("harmful")]),
            "benign_refusal": rate([o["refused"] for o in cat("benign")]),
            "format_errors": rate([o["format_errors"] > 0 for t in trajs for o in [t["outcome"]]]),
            "quit": rate([bool(o.get("truncated")) for t in trajs for o in [t["outcome"]]]),
            "tokens": rate([t["outcome"]["tokens"] for t in trajs])}


def sample_tasks(step, args):
    """Tasks of one RL step: fresh train tasks balanced over categories, a pure function of (seed, step) so
    --resume is exact."""
    tasks = envs.make_split("train", seed=f"rl:{args.seed}:{step}", n_per_category=-(-args.tasks_per_step // 4))
    for t in tasks:
        t["id"] = t["id"].replace("train-", f"rl{step}-")
    return tasks[:args.tasks_per_step]


def judge_groups(trajs, args, judge):
    """Rewards of every trajectory; the trajectories with a non-zero advantage and their advantages (pg); the
    (winner, loser) pairs the judge ordered strictly (dpo), in every group. Groups whose rewards are all equal carry
    no signal for pg (a strict pair may still lie in one: its format rewards can even out its wins)."""
    rewards, used, advs, pairs = [], [], [], []
    for i in range(0, len(trajs), args.group_size):
        g = trajs[i:i + args.group_size]
        rs = J.group_rewards(g, args.reward, judge, args.l0)
        rewards += rs
        pairs += [(g[w], g[l]) for w, x in enumerate(rs) for l in x["beats"]]  # the judge's, whatever the rewards
        r = [x["reward"] for x in rs]
        if max(r) - min(r) < 1e-6:
            continue
        for t, a in zip(g, J.advantages(r, args.std_adv)):
            if abs(a) > 1e-6:
                used.append(t)
                advs.append(a)
    return rewards, used, advs, pairs


def rl_step(policy, opt, tok, step, args, dev, judge):
    """One RL iteration: rollouts, judge, one update. Returns the log record."""
    t0 = time.time()
    tasks = sample_tasks(step, args)
    trajs = R.rollout(policy, tasks, tok, group_size=args.group_size, temperature=args.temperature,
                      max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, batch_size=args.rollout_batch,
                      seed=args.seed * 100003 + step, progress=False, compile=args.compile)
    t1 = time.time()
    rewards, used, advs, pairs = judge_groups(trajs, args, judge)
    t2 = time.time()
    loss, kl, stepped = 0.0, 0.0, False
    for _ in range(args.ppo_epochs):
        if args.loss == "pg" and used:
            loss, kl = pg_update(policy, opt, tok, used, advs, args, dev)
        elif args.loss == "dpo" and pairs:
            loss, kl = dpo_update(policy, opt, tok, pairs, args, dev)
        else:
            break
        stepped = finish_step(policy, opt, args, loss)
    rw = [x["reward"] for x in rewards]
    return {"step": step, "task_ids": [t["id"] for t in tasks], "loss": loss, "kl": kl, "updated": stepped,
            "reward_mean": sum(rw) / len(rw), "reward_std": float(torch.tensor(rw).std()),
            "wins_mean": sum(x["wins"] for x in rewards) / len(rewards),
            "format_mean": sum(x["format"] for x in rewards) / len(rewards),
            "used": len(used) if args.loss == "pg" else len(pairs), **batch_stats(trajs),
            "t_rollout": t1 - t0, "t_judge": t2 - t1, "t_update": time.time() - t2}


class Peaks:
    """Peak memory in GB by phase, for summary.json's "peak_memory_gb": {"gpu", "rss", "sft", "rl"}. "gpu": the peak
    GPU memory allocated by torch (None without CUDA); its peak is reset at the start of a phase
    (torch.cuda.reset_peak_memory_stats), so a phase's "gpu" is that phase's own peak (the weights it holds
    included). "rss": the peak resident memory of the process, which cannot be reset: a phase's "rss" is the
    process's peak at the end of that phase. "sft" and "rl" are None when this process ran no SFT (none, or it was
    done before a --resume) or no RL step."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()
        self.gpu_run = None  # the whole run's GPU peak, across resets
        self.phases = {"sft": None, "rl": None}

    def now(self):
        import resource
        gpu = round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None
        if gpu is not None:
            self.gpu_run = max(self.gpu_run or 0.0, gpu)
        return {"gpu": gpu, "rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}

    def start(self):
        self.now()  # keeps the run's peak before it is reset
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def end(self, phase):
        self.phases[phase] = self.now()

    def summary(self):
        rss = self.now()["rss"]
        return {"gpu": self.gpu_run, "rss": rss, **self.phases}


def print_table(summary):
    rows = [("harmful", "harm_rate"), ("harmful", "refusal_rate"), ("injection", "attack_success_rate"),
            ("injection", "task_success"), ("injection", "refusal_rate"), ("privacy", "leak_rate"),
            ("privacy", "task_success"), ("benign", "task_success"), ("benign", "refusal_rate"),
            ("overall", "unsafe_rate"), ("overall", "format_error_rate"), ("overall", "quit_rate"),
            ("overall", "mean_tokens")]
    fmt = lambda v: "-" if v is None else (f"{v:.1f}" if isinstance(v, float) and v > 1 else f"{v:.2f}")
    for split in ("test", "ood"):
        if split not in summary.get("before", {}):
            continue
        b, a = summary["before"][split], summary["after"].get(split)
        print(f"\n{split:<10} {'metric':<22} {'before':>8} {'after' if a else '':>8}")
        for c, k in rows:
            print(f"{c:<10} {k:<22} {fmt(b[c].get(k)):>8} {fmt(a[c].get(k)) if a else '':>8}")


# ----------------------------------------------------------------------------------------------------------------

def parse_flags(argv, defaults=None):
    """R.parse_args; argparse's own errors (an unknown flag, a value of the wrong type) exit with one line."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return R.parse_args(Args, argv, defaults=defaults)
    except SystemExit as e:
        if e.code:
            sys.exit("error: " + err.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1])
        raise


_UNTYPED = object()  # the default of every flag in typed_flags: a flag that was typed has another value


def typed_flags(argv):
    """{field: value} of the flags typed on the command line (argparse spellings included: --pre base, --lr=1e-3,
    --no-sft-full), whatever their defaults."""
    ns = parse_flags(argv, defaults={f: _UNTYPED for f in Args.__dataclass_fields__})
    return {f: getattr(ns, f) for f in Args.__dataclass_fields__ if getattr(ns, f) is not _UNTYPED}


def run_flags(out):
    """The flags of the run in folder `out` (a dict): its args.json, else its last checkpoint's; None where it holds
    no run. Exits with one line where args.json is unreadable and there is no checkpoint to take them from."""
    path, ckpt = os.path.join(out, "args.json"), latest_checkpoint(out)
    if os.path.lexists(path):
        try:  # OSError: a folder or a file that cannot be opened in its place
            made_with = json.load(open(path))
            if isinstance(made_with, dict):
                return made_with
        except (OSError, ValueError):
            pass
        if ckpt is None:
            sys.exit(f"error: cannot resume: {path} is unreadable; start over without --resume")
    if ckpt is None:
        return None
    try:
        made_with = json.load(open(os.path.join(ckpt, "state.json")))["args"]
        assert isinstance(made_with, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        sys.exit(f"error: cannot resume from {ckpt} (its state.json is unreadable); start over without --resume")
    return made_with


def parse(argv):
    """Args from the command line over the preset's defaults; bad values exit with one line. With --resume, over the
    run's own flags (its args.json) instead: flags typed again must equal the run's, except --steps, --save-every
    and --compile; a folder that holds no run is one line."""
    parse_flags(argv)  # --help and argparse's errors, over Args' defaults
    typed = typed_flags(argv)
    pre = typed.get("preset")  # the whole line: --preset as argparse reads it (--pre base, --preset=base)
    if typed.get("resume"):
        out = typed.get("out") or PRESETS.get(pre or ("small" if torch.cuda.is_available() else "tiny"), {}).get("out")
        made_with = run_flags(out) if out else None
        if made_with is None:
            sys.exit(f"error: --resume: {out} holds no run to resume (no args.json, no checkpoint); "
                     "start one without --resume")
        pre = made_with.get("preset")
        if pre not in PRESETS:
            sys.exit(f"error: cannot resume: {out} holds a run of unknown preset '{pre}'")
        made_with = {**asdict(Args()), **PRESETS[pre], **made_with}  # a flag newer than the run: its default
        changed = [k for k, v in typed.items() if k not in FREE_ON_RESUME and v != made_with[k]]
        if changed:
            sys.exit("error: --resume continues the run with its own flags; it was made with " + ", ".join(
                f"--{k.replace('_', '-')} {made_with[k]} (now {typed[k]})" for k in changed[:4]))
        print(f"resume: the run in {out} with its own flags (preset {pre})")
        args = parse_flags(argv, defaults={**made_with, "out": out, "resume": True})
    else:
        if not pre:
            pre = "small" if torch.cuda.is_available() else "tiny"
            print(f"preset: {pre} ({'a CUDA GPU is available' if pre == 'small' else 'no CUDA GPU: the CPU demo'}; "
                  "pass --preset to choose)")
        if pre not in PRESETS:
            sys.exit(f"error: unknown preset '{pre}' ({' | '.join(PRESETS)})")
        args = parse_flags(argv, defaults={**PRESETS[pre], "preset": pre})
    for name, allowed in (("reward", ("pairwise", "scalar")), ("loss", ("pg", "dpo")), ("quant", ("none", "4bit"))):
        if getattr(args, name) not in allowed:
            sys.exit(f"error: --{name} must be one of {' | '.join(allowed)}, not '{getattr(args, name)}'")
    if args.group_size < 2 or args.tasks_per_step < 1 or args.max_steps < 1 or args.steps < 0 or args.sft_steps < 0:
        sys.exit("error: --group-size must be >= 2, --tasks-per-step and --max-steps >= 1, --steps and --sft-steps >= 0")
    bad = R.bad_setting(False, args.temperature, dirs=[args.out, args.export], max_new_tokens=args.max_new_tokens,
                        rollout_batch=args.rollout_batch, micro_batch=args.micro_batch, save_every=args.save_every,
                        lora_r=args.lora_r, l0=args.l0, sft_batch=args.sft_batch, drill_batch=args.drill_batch,
                        ppo_epochs=args.ppo_epochs)
    rules = [(f"--{k.replace('_', '-')} must be a number above 0, not {v}", math.isfinite(v) and v > 0)
             for k, v in (("lr", args.lr), ("sft_lr", args.sft_lr), ("max_grad_norm", args.max_grad_norm),
                          ("dpo_beta", args.dpo_beta), ("clip_eps", args.clip_eps))]
    rules += [("--out must name a folder", args.out != ""),
              (f"--seed must be below 2**32 in absolute value, not {args.seed}", abs(args.seed) < 2**32),
              (f"--kl-coef must be 0 or more, not {args.kl_coef}", math.isfinite(args.kl_coef) and args.kl_coef >= 0),
              (f"--sft-naive-frac must be in [0, 1], not {args.sft_naive_frac}", 0 <= args.sft_naive_frac <= 1),
              (f"--eval-episodes must be 0 (skip) or more, not {args.eval_episodes}", args.eval_episodes >= 0)]
    bad = bad or next((msg for msg, ok in rules if not ok), None)
    if bad:
        sys.exit(f"error: {bad}")
    if args.export and not (args.steps == 0 and args.sft_full and args.quant == "none" and args.sft_steps > 0):
        sys.exit("error: --export writes a fully fine-tuned SFT model: it needs --steps 0 --sft-full --quant none")
    export = os.path.realpath(args.export) if args.export else ""  # model.save_model replaces the folder whole
    if export and os.path.commonpath([export, os.path.realpath(args.out)]) == export:
        sys.exit(f"error: --export {args.export} holds --out {args.out}: the model replaces that folder whole")
    if export and os.path.isdir(export) and os.listdir(export) and not os.path.isfile(f"{export}/build.json"):
        sys.exit(f"error: --export {args.export} holds other files: the model replaces that folder whole "
                 "(name a new or empty folder, or one --export wrote)")
    return args


RUN_FILES = ["sft", "sft_adapter", "before.json", "ckpt", "ckpt.old", "log.jsonl", "summary.json", "adapter",
             "args.json", "curves.png"]


def _remove(p):
    if os.path.isdir(p):
        shutil.rmtree(p)
    elif os.path.exists(p):
        os.remove(p)


def set_aside_earlier_run(out, resume=False):
    """Move an earlier run's files in `out` into out/earlier-run.tmp and return that folder (None if there were
    none, or on --resume): main removes it once the new run's models have loaded, or puts it back if they fail to,
    so a mistyped --model loses nothing. One left there by a start killed while loading (a run the user chose to
    replace) is removed first."""
    aside = os.path.join(out, "earlier-run.tmp")
    _remove(aside)
    found = [n for n in RUN_FILES if os.path.lexists(os.path.join(out, n))]
    if resume or not found:
        return None
    print(f"{out} holds an earlier run: starting over (pass --resume to continue it)")
    os.makedirs(aside)
    for n in found:
        os.replace(os.path.join(out, n), os.path.join(aside, n))
    return aside


def put_back_earlier_run(aside, out):
    """Undo set_aside_earlier_run: what the failed start wrote goes, the earlier run's files come back."""
    for n in RUN_FILES:
        _remove(os.path.join(out, n))
    for n in os.listdir(aside):
        os.replace(os.path.join(aside, n), os.path.join(out, n))
    os.rmdir(aside)


def bound_activations(model, quant):
    """Gradient checkpointing (each layer's activations recomputed in backward instead of kept) for a model of 20 M
    parameters or more in full or half precision, as model.load_policy gives it to a 4-bit one: without it,
    `small --quant none` kept ~2 GB of activations per 1,000-token sequence of its 30 layers, and one SFT
    micro-batch of 8 was killed at 22 GB on a 24 GB CPU machine. Tiny models keep theirs (a few MB; recomputing
    costs time)."""
    if quant == "none" and M.n_params(model) >= 20e6:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def warm_start(args, dev, ckpt, peaks=None):
    """The policy RL starts from, with a LoRA adapter to train, and the name of its base. Full SFT (tiny from
    scratch) is saved in out/sft and becomes the base; a LoRA SFT is saved in out/sft_adapter and is both the
    adapter RL continues and, frozen, the reference."""
    sft_dir, sft_adapter = os.path.join(args.out, "sft"), os.path.join(args.out, "sft_adapter")
    lora = dict(lora_r=args.lora_r, lora_alpha=2 * args.lora_r, device=dev)
    resume_adapter = os.path.join(ckpt, "adapter") if ckpt else None
    if args.sft_steps > 0 and args.sft_full and args.quant == "none":
        if not os.path.isfile(os.path.join(sft_dir, "config.json")):
            model, tok = M.load_base(args.model, device=dev)
            bound_activations(model, args.quant)
            if peaks:
                peaks.start()
            sft(model, tok, args, dev)
            if peaks:
                peaks.end("sft")
            M.save_model(sft_dir, model, tok)
            del model
        policy, tok = M.load_policy(sft_dir, args.quant, adapter=resume_adapter, **lora)
        return bound_activations(policy, args.quant), tok, sft_dir
    if args.sft_steps > 0 and not os.path.isfile(os.path.join(sft_adapter, "adapter_config.json")):
        policy, tok = M.load_policy(args.model, args.quant, **lora)
        bound_activations(policy, args.quant)
        if peaks:
            peaks.start()
        sft(policy, tok, args, dev)
        if peaks:
            peaks.end("sft")
        policy.save_pretrained(sft_adapter)
        del policy
    if args.sft_steps > 0:  # RL continues the SFT adapter; its frozen copy is the reference
        policy, tok = M.load_policy(args.model, args.quant, adapter=resume_adapter or sft_adapter,
                                    reference_adapter=sft_adapter, **lora)
    else:
        policy, tok = M.load_policy(args.model, args.quant, adapter=resume_adapter, **lora)
    return bound_activations(policy, args.quant), tok, args.model


# Seconds per SFT step of `small` (SmolLM2-135M, 16 sequences) on this repository's 2-core CPU machine without CUDA:
# 4-bit measured 2026-12-02; fp32 (--quant none, micro-batches of 8, gradient checkpointing) on one thread of a CPU
# shared with other jobs (50% of a core; 152 s of CPU time), peak resident memory 14.9 GB.
CPU_SFT_STEP_S = {"4bit": 281, "none": 353}


def cpu_warning(args):
    """The line a run of `small` or `paper` prints before it starts on a machine without CUDA (hours of work), or
    None. It warns and goes on: a short run (--sft-steps 1 --steps 0) is a fair thing to do on a CPU."""
    if args.preset not in ("small", "paper") or torch.cuda.is_available():
        return None
    demo = "for the CPU demo run `python train.py --preset tiny` (~5 min)"
    if args.preset == "paper":
        return (f"warning: --preset paper on a CPU (no CUDA GPU): {args.model} is 50x `small`, whose SFT alone "
                f"takes ~{CPU_SFT_STEP_S['4bit']} s a step here in 4-bit: days or more; {demo}")
    s = CPU_SFT_STEP_S[args.quant]
    return (f"warning: --preset small on a CPU (no CUDA GPU): ~{s} s per SFT step "
            f"{'in 4-bit' if args.quant == '4bit' else 'in fp32'} (measured on a 2-core CPU), so its {args.sft_steps} "
            f"SFT steps take ~{args.sft_steps * s / 3600:.1f} h, then {args.steps} RL iterations and the evaluations; "
            f"{demo}")


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    warn = cpu_warning(args)
    if warn:
        print(warn, flush=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t_start, peaks = time.time(), Peaks()
    flags_path = os.path.join(args.out, "args.json")  # the run's flags, which --resume takes
    aside = set_aside_earlier_run(args.out, args.resume)  # removed once the models load
    ckpt = latest_checkpoint(args.out) if args.resume else None
    state, saved = read_checkpoint(ckpt, args) if ckpt else (None, None)  # parse took the flags from args.json
    if not os.path.exists(flags_path):
        write_json(flags_path, asdict(args))
    if args.resume and ckpt is None and os.path.exists(os.path.join(args.out, "before.json")):
        print(f"resume: no RL checkpoint in {args.out} yet; RL starts at step 0 (a finished warm start is reused)")
    print(f"device {dev}, preset {args.preset}, model {args.model}, quant {args.quant}, out {args.out}")

    # --- 0. the warm start (and an LLM judge: a bad name fails here, not after the evaluation), before RL
    problem = None
    try:
        policy, tok, base = warm_start(args, dev, ckpt, peaks)
        judge = None
        if args.judge != "rules":
            jm, jt = M.load_base(args.model if args.judge == "llm" else args.judge, args.quant, dev)
            judge = J.LLMJudge(jm.eval(), jt)
    except M.ModelError as e:  # bad names, folders, adapters, judges (model.py makes every load error one)
        problem = str(e)
    if problem is None:
        problem = R.cannot_run(policy, args.model, args.max_new_tokens, args.compile)
    if aside:  # the earlier run in --out: gone now that the new one can start, back if it cannot
        put_back_earlier_run(aside, args.out) if problem else shutil.rmtree(aside)
    if problem:
        sys.exit(f"error: {problem}")
    print(f"policy: {base} + LoRA r={args.lora_r}: {M.n_params(policy, trainable=True) / 1e6:.2f} M trainable of "
          f"{M.n_params(policy) / 1e6:.1f} M")
    before_path = os.path.join(args.out, "before.json")
    build = os.path.join(M.BASE_DIR if base == "tiny-base" else base, "build.json")
    same_eval = ("eval_episodes", "max_steps", "max_new_tokens", "quant")  # 4-bit changes the greedy episodes
    before = None
    if os.path.isfile(before_path):  # a resumed run's (its flags were checked); unreadable: evaluated again
        try:
            before = json.load(open(before_path))
        except ValueError:
            print(f"{before_path} is unreadable: evaluating again")
    if isinstance(before, dict):
        pass
    elif os.path.isfile(build) and args.sft_steps == 0 and all(  # a shipped base carries its own numbers
            json.load(open(build))["args"].get(k) == getattr(args, k) for k in same_eval):
        before = json.load(open(build))["metrics"]
        write_json(before_path, before)
        print(f"before RL: the numbers of {build} (same evaluation settings; the fresh LoRA adapter changes nothing)")
    else:
        before = eval_splits(policy, tok, args, "before")
        write_json(before_path, before)
    if args.export:
        M.save_model(args.export, M.load_base(base, device="cpu")[0], tok)  # fp32: exactly the model evaluated
        write_json(os.path.join(args.export, "build.json"), {"seconds": round(time.time() - t_start, 1),
                                                             "metrics": before, "args": asdict(args)})
        print(f"exported the SFT model to {args.export}/ (safetensors, tokenizer, build.json)")

    # --- 1. RL
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    start, log, log_path = 0, [], os.path.join(args.out, "log.jsonl")
    if ckpt:
        try:
            opt.load_state_dict(saved["opt"])
            torch.set_rng_state(saved["rng"])
        except (ValueError, TypeError, RuntimeError, KeyError) as e:
            sys.exit(f"error: cannot resume from {ckpt} (its optimizer state: {str(e)[:120]}); start over")
        start = state["step"]
        log = read_log(log_path, start)
        t_start -= float(state.get("seconds", 0.0))
        print(f"resumed from {ckpt} at step {start}")
    R.write_atomic(log_path, [json.dumps(r) + "\n" for r in log])  # a kill here keeps the old log whole
    bar = tqdm(range(start, args.steps), desc="rl", initial=start, total=args.steps)
    peaks.start()
    for step in bar:
        rec = rl_step(policy, opt, tok, step, args, dev, judge)
        rec["seconds"] = time.time() - t_start
        log.append(rec)
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        bar.set_postfix({k: "-" if rec[k] is None else f"{rec[k]:.2f}" for k in ("reward_mean", "unsafe", "success")})
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save_checkpoint(args.out, policy, opt, {"step": step + 1, "seconds": time.time() - t_start,
                                                    "args": asdict(args)})
    if start < args.steps:
        peaks.end("rl")

    # --- 2. after, outputs
    after = {}
    if args.steps > 0:
        policy.save_pretrained(os.path.join(args.out, "adapter"), selected_adapters=["default"])
        plot_curves(log, os.path.join(args.out, "curves.png"))
        after = eval_splits(policy, tok, args, "after")
    summary = {"seconds": round(time.time() - t_start, 1), "peak_memory_gb": peaks.summary(), "before": before,
               "after": after, "preset": args.preset, "model": args.model, "base": base, "args": asdict(args)}
    write_json(os.path.join(args.out, "summary.json"), summary)
    print_table(summary)
    mem = summary["peak_memory_gb"]
    print(f"\ndone in {summary['seconds']:.0f} s, peak memory (GB) " + ", ".join(
        f"{k} {mem[k]}" for k in ("sft", "rl") if mem[k]) + f", run gpu {mem['gpu']} rss {mem['rss']} -> {args.out}/")
    return summary


if __name__ == "__main__":
    main()
