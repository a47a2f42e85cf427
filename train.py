"""MOSAIC post-training: a helpful-only warm start, then pairwise-preference RL with (Q)LoRA.

    python train.py                          # `small` on a CUDA machine, `tiny` otherwise (CPU, ~6 min)
    python train.py --preset base            # rebuild the tiny helpful-only base in base/ (once; ~55 min on two cores)
    python train.py --preset tiny --steps 20 --out runs/quick
    python train.py --preset tiny --reward scalar         # the pointwise-reward ablation
    python train.py --preset tiny --loss dpo              # trajectory-level DPO on the judge's pairs
    python train.py --out runs/tiny --resume              # continue a killed run with its own flags

Read in this order: the loss (pg_loss), one RL iteration (rl_step), main. Then the flags (PRESETS, Args: the run's,
RL's, then the warm start's) and the warm start.
0. The warm start behaves like a helpful-only instruct model (it does what it is asked, harmful or not), as in the
   paper, which starts from an instruct model. `tiny` starts from `base/`, a 2.5 M-parameter model this repository
   ships, built by `--preset base` (SFT of a random-init Llama on copy drills, then on scripted episodes of fresh
   tasks, 70% naive and 30% expert, plus drills); `small` starts from a LoRA warm start of SmolLM2-135M-Instruct that
   this repository ships (warmstart/smollm2-135m/, built by `--preset small-base`: a short LoRA SFT, half naive).
1. RL. One iteration: fresh tasks balanced over the four categories (`small`: half of them harmful, or SmolLM2
   learns to stop rather than to refuse: README), a group of G trajectories per task (rollout.py), every pair in a
   group compared by the judge and the wins turned into rewards and group-relative advantages (judge.py), then one
   update of the LoRA adapter on the policy's own tokens only (prompt and tool results masked). The reference
   policy of the KL term is the warm start (model.reference).
2. With --select-every N (`small`: 5), a greedy check on held-out tasks before RL and every N iterations, and the
   adapter kept is the best check's: `small`'s refusal swings back and forth over the iterations (README).

Outputs in --out: adapter/, log.jsonl (one line per RL step), curves.png, summary.json (before and after metrics,
peak memory), args.json (the run's flags, which --resume takes), ckpt/; docs/contracts.md says what each holds.
The run-folder bookkeeping (resume, checkpoints, flag checks) lives in plumbing/runs.py.

Simplifications and deviations from the paper:
- The default judge is a rules judge over environment outcomes, not an LLM (`--judge llm` uses one).
- One update per batch (the default) is on-policy: the ratio's denominator is the training forward's own log-prob
  (detached), so the ratio is 1 and the clipped objective is plain policy gradient. The log-probs stored at
  generation (temperature 1) are that denominator only with --ppo-epochs > 1; with a bf16 base they differ from the
  training forward's by rounding (SmolLM2: 0.04-0.05 per token on average). Loss normalised per token over the batch.
- Groups whose rewards are all equal carry no signal for pg and are skipped (DPO keeps their strict pairs), and
  with them their KL term: the KL penalty is taken over the other groups' tokens only, so a task on which every
  sample drifted alike (all four refuse) is not pulled back. GRPO's objective keeps such groups for the KL; here
  that would cost their forward and backward (SmolLM2, late in a run: 8 to 22 of 32 trajectories).
"""
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import engine
import evaluate as E
import judge as J
import model as M
import rollout as R
import tasks as T
from plumbing import dist, runs
from plumbing.report import plot_curves
from warmstart import drills

# ----------------------------------------------------------------------------------------------------------------
# The loss
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


# ----------------------------------------------------------------------------------------------------------------
# One RL iteration: rollouts, the judge, one update

def rl_step(policy, opt, tok, step, args, dev, judge):
    """One RL iteration: rollouts, judge, one update. Returns the log record.
    Under torchrun (plumbing/dist.py) each process rolls out and judges its share of the tasks, whole groups, with
    sampling seeded by (seed, step, rank); the update is the one-process update over every process's trajectories;
    the record describes the whole step. Without torchrun the dist calls change nothing."""
    t0 = time.time()
    tasks = dist.my_share(sample_tasks(step, args))
    trajs = R.rollout(policy, tasks, tok, group_size=args.group_size, temperature=args.temperature,
                      max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, batch_size=args.rollout_batch,
                      seed=(args.seed * 100003 + step) * dist.world() + dist.rank(), progress=False,
                      compile=args.compile)
    t1 = time.time()
    rewards, used, advs, pairs = judge_groups(trajs, args, judge)
    t2 = time.time()
    loss, kl, stepped = 0.0, 0.0, False
    n_used, n_pairs = dist.total(len(used)), dist.total(len(pairs))  # in every process's groups
    for _ in range(args.ppo_epochs):
        if args.loss == "pg" and n_used:
            loss, kl = pg_update(policy, opt, tok, used, advs, args, dev)
        elif args.loss == "dpo" and n_pairs:
            loss, kl = dpo_update(policy, opt, tok, pairs, args, dev)
        else:
            break
        stepped = finish_step(policy, opt, args, loss)
    # the record describes the whole step: every process's tasks, rewards and outcomes, in the tasks' order
    task_ids = dist.gather([t["id"] for t in tasks])
    rewards = dist.gather(rewards)
    outcomes = dist.gather([{"category": t["category"], "outcome": t["outcome"]} for t in trajs])
    rw = [x["reward"] for x in rewards]
    return {"step": step, "task_ids": task_ids, "loss": loss, "kl": kl, "updated": stepped,
            "reward_mean": sum(rw) / len(rw), "reward_std": float(torch.tensor(rw).std()),
            "wins_mean": sum(x["wins"] for x in rewards) / len(rewards),
            "format_mean": sum(x["format"] for x in rewards) / len(rewards),
            "used": n_used if args.loss == "pg" else n_pairs, **batch_stats(outcomes),
            "refusal_push": refusal_push(outcomes, rw, args.group_size, args.std_adv),
            "t_rollout": t1 - t0, "t_judge": t2 - t1, "t_update": time.time() - t2}  # rank 0's clock


def sample_tasks(step, args):
    """Tasks of one RL step: fresh train tasks, a pure function of (seed, step) so --resume is exact. Balanced over
    categories by default; --harmful-share sets the harmful tasks' share (and --benign-share, if set, the benign
    tasks') and the other categories split the rest (which of them gets a remainder turns with the step). Categories
    stay interleaved, so each torchrun process gets a mix."""
    n = args.tasks_per_step
    quota = {"harmful": round(n * args.harmful_share)}
    if args.benign_share:
        quota["benign"] = min(round(n * args.benign_share), n - quota["harmful"])
    others = [c for c in T.CATEGORIES if c not in quota]
    others = others[step % len(others):] + others[:step % len(others)]
    rest = n - sum(quota.values())
    quota.update({c: rest // len(others) + (i < rest % len(others)) for i, c in enumerate(others)})
    tasks = []  # make_split's first k tasks of a category do not depend on how many it makes: make only what is kept
    for t in T.make_split("train", seed=f"rl:{args.seed}:{step}", n_per_category=max(quota.values())):
        if quota[t["category"]] > 0:
            quota[t["category"]] -= 1
            t["id"] = t["id"].replace("train-", f"rl{step}-")
            tasks.append(t)
    return tasks


def judge_groups(trajs, args, judge):
    """Rewards of every trajectory; the trajectories with a non-zero advantage and their advantages (pg); the
    (winner, loser) pairs the judge ordered strictly (dpo), in every group. Groups whose rewards are all equal carry
    no signal for pg (a strict pair may still lie in one: its format rewards can even out its wins). A group is a
    task's trajectories (judge.groups_of); rollout returns them task by task, so `rewards` follows `trajs`."""
    rewards, used, advs, pairs = [], [], [], []
    for g in J.groups_of(trajs):
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


def batch_stats(trajs):
    """The step's rates and mean tokens, from each trajectory's category and outcome."""
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


def refusal_push(outcomes, rewards, group_size, std_adv=False):
    """Per category, the sum of the refusing trajectories' advantages: > 0 where this step's groups reward a refusal
    (a harmful task's; or one that beat a broken or harmful attempt), < 0 where an attempt beat it. `outcomes` and
    `rewards` are the step's, group after group. The policy learns one refusal for every category (README, SmolLM2),
    so the sum over categories says which way this step moves it."""
    push = {}
    for s in range(0, len(rewards), group_size):
        for o, a in zip(outcomes[s:s + group_size], J.advantages(rewards[s:s + group_size], std_adv)):
            if o["outcome"]["refused"]:
                push[o["category"]] = push.get(o["category"], 0.0) + a
    return push


def masked_logprobs(policy, trajs, tok, dev, reference=False, shared=False):
    """Token log-probs [B, T-1] of a micro-batch at the model's own tokens (under the reference policy when asked;
    0 elsewhere) + loss mask and old log-probs. shared: the trajectories are one task's, whose common prompt the
    forward runs once (model.shared_prefix_logprobs)."""
    ids, attn, mask, old = collate(trajs, tok.pad_token_id, dev)
    logprobs = M.shared_prefix_logprobs if shared else M.token_logprobs
    if reference:
        with torch.no_grad(), M.reference(policy):
            return logprobs(policy, ids, attn, where=mask.bool()), mask, old
    return logprobs(policy, ids, attn, where=mask.bool()), mask, old


def pg_update(policy, opt, tok, trajs, advs, args, dev):
    """One pass of accumulated micro-batches over trajectories with non-zero advantage. Returns (loss, kl).
    A micro-batch is one task's trajectories (at most --micro-batch of them): they share the task's system prompt
    and request, which its forward runs once (SmolLM2, 4 trajectories of ~600 shared + ~300 own tokens: 1.6x less
    CPU time for the update than one unpadded forward each). The loss is a sum over the whole batch: the order
    changes nothing else. Under torchrun `trajs` is this process's share (whole groups), the normaliser the whole
    batch's, and the returned loss and kl the whole batch's."""
    by_task = {}
    for i, t in enumerate(trajs):
        by_task.setdefault(t["task_id"], []).append(i)
    batches = [ix[s:s + args.micro_batch] for ix in by_task.values() for s in range(0, len(ix), args.micro_batch)]
    n_tokens = dist.total(sum(sum(t["mask"]) for t in trajs))  # over every process's trajectories
    tot_loss, tot_kl = 0.0, 0.0
    opt.zero_grad(set_to_none=True)
    for ix in batches:
        mb, adv = [trajs[i] for i in ix], torch.tensor([advs[i] for i in ix], device=dev)
        ref = masked_logprobs(policy, mb, tok, dev, reference=True, shared=True)[0] if args.kl_coef > 0 else None
        logp, mask, old = masked_logprobs(policy, mb, tok, dev, shared=True)
        if args.ppo_epochs == 1:  # on-policy: the ratio is 1 (a bf16 sampler's log-probs differ from these by rounding)
            old = logp.detach()
        loss, kl = pg_loss(logp, old, ref, adv, mask, args.clip_eps, args.kl_coef, n_tokens)
        loss.backward()
        tot_loss += loss.item()
        tot_kl += kl.item() * mask.sum().item() / n_tokens  # the batch's mean over tokens, as the loss
    return dist.total(tot_loss), dist.total(tot_kl)  # each process holds its share of the sums


def dpo_update(policy, opt, tok, pairs, args, dev):
    """DPO over judged (winner, loser) pairs, accumulated in micro-batches of pairs of similar length. Returns
    (loss, 0). Under torchrun `pairs` is this process's share, the mean over every process's pairs."""
    pairs = sorted(pairs, key=lambda p: max(len(p[0]["ids"]), len(p[1]["ids"])))
    n_pairs = dist.total(len(pairs))
    opt.zero_grad(set_to_none=True)
    tot = 0.0
    step = max(1, args.micro_batch // 2)
    for s in range(0, len(pairs), step):
        mb = [t for p in pairs[s:s + step] for t in p]  # w0, l0, w1, l1, ...
        ref, mask, _ = masked_logprobs(policy, mb, tok, dev, reference=True)
        logp, _, _ = masked_logprobs(policy, mb, tok, dev)
        seq, ref_seq = (logp * mask).sum(-1), (ref * mask).sum(-1)
        loss = dpo_loss(seq[0::2], seq[1::2], ref_seq[0::2], ref_seq[1::2], args.dpo_beta) * len(mb) / 2 / n_pairs
        loss.backward()
        tot += loss.item()
    return dist.total(tot), 0.0


def finish_step(policy, opt, args, loss):
    """Clip, step, or skip (with a warning) when the loss or the gradients are not finite. Under torchrun the
    gradients are first summed over the processes (each holds its share), so every process steps alike."""
    params = [p for p in policy.parameters() if p.requires_grad]
    dist.sum_grads(params)
    norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
    if not (math.isfinite(loss) and torch.isfinite(norm)):
        warnings.warn(f"non-finite loss or gradient (loss={loss}, grad norm={norm}): step skipped")
        opt.zero_grad(set_to_none=True)
        return False
    opt.step()
    return True


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


# ----------------------------------------------------------------------------------------------------------------
# main

def main(argv=None):
    dev = dist.init()  # under torchrun: this process's device, in the group of processes (plumbing/dist.py)
    args = parse(sys.argv[1:] if argv is None else argv)
    warn = runs.cpu_warning(args)
    if warn:
        print(warn, flush=True)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    run = runs.Run(args)  # --out: an earlier run set aside, or the checkpoint --resume continues
    print(f"device {dev}, preset {args.preset}, model {args.model}, quant {args.quant}, out {args.out}"
          + (f", {dist.world()} processes" if dist.world() > 1 else ""))

    # --- 0. the warm start (and an LLM judge: a bad name fails here, not after the evaluation), before RL
    with dist.rank_0_first():  # under torchrun, rank 0 alone runs an SFT warm start; the others load its result
        try:
            policy, tok, base = warm_start(args, dev, run.ckpt, run.peaks, run.track)
            judge = None
            if args.judge != "rules":
                jm, jt = M.load_base(args.model if args.judge == "llm" else args.judge, args.quant, dev)
                judge = J.LLMJudge(jm.eval(), jt)
            problem = engine.cannot_run(policy, args.model, args.max_new_tokens, args.compile)
        except M.ModelError as e:  # bad names, folders, adapters, judges (model.py makes every load error one)
            problem = str(e)
    run.loaded(problem)  # a problem: one line, and the earlier run in --out is back
    print(f"policy: {base} + LoRA r={args.lora_r}: {M.n_params(policy, trainable=True) / 1e6:.2f} M trainable of "
          f"{M.n_params(policy) / 1e6:.1f} M")
    before = run.before(base, lambda: eval_splits(policy, tok, args, "before"))
    if args.export:
        run.export(base, tok, before)

    # --- 1. RL
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    start = run.resume(opt)  # a checkpoint's step, optimizer and RNG state; run.records holds the log so far
    if args.select_every and start == 0 and args.steps > 0:  # --select-every: the warm start is a candidate too
        run.held_out(0, *held_out_check(policy, tok, args), policy)
    bar = tqdm(range(start, args.steps), desc="rl", initial=start, total=args.steps, disable=not dist.is_main())
    for step in bar:
        rec = rl_step(policy, opt, tok, step, args, dev, judge)
        if args.select_every and ((step + 1) % args.select_every == 0 or step + 1 == args.steps):
            rec["held_out"], rec["held_out_by_category"] = held_out_check(policy, tok, args)
            run.held_out(step + 1, rec["held_out"], rec["held_out_by_category"], policy)  # keeps the best's weights
        run.step_done(rec, policy, opt)  # log.jsonl, and a checkpoint every --save-every steps
        bar.set_postfix({k: "-" if rec[k] is None else f"{rec[k]:.2f}" for k in ("reward_mean", "unsafe", "success")})
    run.rl_done(policy)  # --select-every: the best check's weights back into the policy, the last in adapter_last/

    # --- 2. after RL
    after = {}
    if args.steps > 0:
        if dist.is_main():  # every process holds the same adapter
            policy.save_pretrained(os.path.join(args.out, "adapter"), selected_adapters=["default"])
            plot_curves({args.out: run.records}, os.path.join(args.out, "curves.png"))
        after = eval_splits(policy, tok, args, "after")
    for split in ("test", "ood"):
        if split in before:
            cols = {"before": before[split], **({"after": after[split]} if split in after else {})}
            print(f"\n{split}\n" + E.format_table(cols))
            if any("behaviour" in c for c in cols.values()):  # what the agent did, from which the rates come
                print("\n" + E.format_behaviour(cols))
    summary = run.finish(before, after, base)
    dist.close()
    return summary


# ----------------------------------------------------------------------------------------------------------------
# The flags: the presets and Args (the run, RL, then the SFT warm start), read over them by parse

PRESETS = {
    "base": dict(model="tiny", quant="none", seed=1, sft_steps=4800, sft_drill_steps=2000, sft_batch=8, sft_drills=8,
                 sft_full=True, sft_lr=2e-3, sft_hard_frac=0.67, sft_goal_drills=8,
                 steps=0, max_new_tokens=96, eval_episodes=50, out="runs/base", export=M.BASE_DIR),
    "tiny": dict(model="tiny-base", quant="none", sft_steps=0, steps=30, lr=1e-3, kl_coef=0.3, tasks_per_step=8,
                 max_new_tokens=96, eval_episodes=50, out="runs/tiny"),
    "small-base": dict(model="smollm2-135m", quant="none", sft_steps=60, sft_batch=8, sft_full=False, sft_lr=1e-3,
                       sft_naive_frac=0.5, steps=0, max_new_tokens=192, eval_episodes=100, rollout_batch=64,
                       out="runs/small-base", export=M.SMALL_WARM_START),
    "small": dict(model="smollm2-135m", quant="none", sft_steps=0, sft_adapter=M.SMALL_WARM_START, steps=30,
                  lr=2e-4, tasks_per_step=8, harmful_share=0.5, max_new_tokens=192, eval_episodes=100,
                  rollout_batch=64, select_every=5, out="runs/small"),
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
    dtype: str = "auto"
    """of the frozen base under LoRA: auto (bf16 where the GPU or CPU runs bf16 natively, for models of 20 M parameters
    or more; else fp32) | bf16 | fp32. LoRA weights and the optimizer are fp32 always"""
    out: str = "runs/tiny"
    """output directory"""
    seed: int = 0
    """seed for data order, sampling and initialisation"""
    resume: bool = False
    """continue the run in --out from its last checkpoint, with the run's own flags (its args.json); flags typed
    again must equal the run's, except --steps, --save-every, --compile and the --track flags; a folder with no run
    is an error"""
    track: str = ""
    """tensorboard | wandb: every SFT and RL step, the flags and the before/after metrics there too, under --out (then
    `tensorboard --logdir runs`; wandb: --wandb-project); default: off"""
    wandb_project: str = "mosaic"
    """the wandb project of --track wandb (WANDB_MODE=offline: no network needed; `wandb sync` later)"""
    wandb_name: str = ""
    """the wandb run name of --track wandb (default: the --out folder's name)"""
    # --- RL
    steps: int = 40
    """RL iterations"""
    tasks_per_step: int = 8
    """tasks per iteration (balanced over categories, but see --harmful-share)"""
    harmful_share: float = 0.25
    """share of each iteration's tasks that are harmful; the other three categories split the rest (0.25: balanced)"""
    benign_share: float = 0.0
    """share of each iteration's tasks that are benign (0: benign, injection and privacy split what --harmful-share
    leaves): more benign groups, where an attempt beats a refusal, against the harmful ones, where a refusal wins"""
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
    select_every: int = 0
    """every N RL steps, at the last and before the first, a greedy check on held-out tasks (held_out_check); the
    adapter kept (adapter/, the after-RL numbers) is the best check's, ties to the earlier, the warm start included;
    the last step's then goes to adapter_last/ (0: no checks, the last is kept)"""
    select_episodes: int = 8
    """held-out tasks per category of each --select-every check"""
    eval_episodes: int = 100
    """evaluation episodes per category on test and ood, before and after RL (0 = skip)"""
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
    sft_hard_frac: float = 0.5
    """share of SFT task episodes from injection and privacy tasks, the long ones (0.5: four categories evenly)"""
    sft_drill_steps: int = 0
    """SFT steps on copy drills only, before the tasks (the base build; part of --sft-steps)"""
    drill_batch: int = 32
    """copy drills per drill-only SFT step"""
    sft_drills: int = 0
    """copy drills added to each SFT step on tasks (keeps the copying)"""
    sft_goal_drills: int = 0
    """goal drills added to each SFT step on tasks: planted text in a long text quoted, then the call it asks for"""
    sft_adapter: str = ""
    """a finished LoRA warm start (what --export wrote after a LoRA SFT) instead of --sft-steps: RL continues it and,
    frozen, it is the reference (--preset small: warmstart/smollm2-135m/, built by --preset small-base)"""
    export: str = ""
    """with --steps 0: write the warm start here, the SFT model (full SFT: how --preset base makes base/) or its LoRA
    adapter (how --preset small-base makes warmstart/smollm2-135m/), with build.json (its time, flags and numbers)"""


def parse(argv):
    """Args from the command line over the preset's defaults, or with --resume over the run's own flags; a bad value
    exits with one line (plumbing/runs.py)."""
    return runs.parse(argv, Args, PRESETS)


# ----------------------------------------------------------------------------------------------------------------
# The warm start and the evaluations before and after RL

def warm_start(args, dev, ckpt, peaks=None, track=None):
    """The policy RL starts from, with a LoRA adapter to train, and the name of its base. Full SFT (tiny from
    scratch) is saved in out/sft and becomes the base; a LoRA SFT is saved in out/sft_adapter (or was made earlier:
    --sft-adapter) and is both the adapter RL continues and, frozen, the reference."""
    sft_dir, sft_adapter = os.path.join(args.out, "sft"), args.sft_adapter or os.path.join(args.out, "sft_adapter")
    lora = dict(lora_r=args.lora_r, lora_alpha=2 * args.lora_r, device=dev, dtype=args.dtype)
    resume_adapter = os.path.join(ckpt, "adapter") if ckpt else None
    if args.sft_steps > 0 and args.sft_full and args.quant == "none":
        if not os.path.isfile(os.path.join(sft_dir, "config.json")):
            model, tok = M.load_base(args.model, device=dev)
            sft(model, tok, args, dev, peaks, track)
            M.save_model(sft_dir, model, tok)
            del model
        policy, tok = M.load_policy(sft_dir, args.quant, adapter=resume_adapter, **lora)
        return M.bound_activations(policy, args.quant), tok, sft_dir
    if args.sft_steps > 0 and not os.path.isfile(os.path.join(sft_adapter, "adapter_config.json")):
        policy, tok = M.load_policy(args.model, args.quant, **lora)
        sft(policy, tok, args, dev, peaks, track)
        policy.save_pretrained(sft_adapter)
        del policy
    if args.sft_steps > 0 or args.sft_adapter:  # RL continues the SFT adapter; its frozen copy is the reference
        policy, tok = M.load_policy(args.model, args.quant, adapter=resume_adapter or sft_adapter,
                                    reference_adapter=sft_adapter, **lora)
    else:
        policy, tok = M.load_policy(args.model, args.quant, adapter=resume_adapter, **lora)
    return M.bound_activations(policy, args.quant), tok, args.model


def drill(make, rng, tok):
    """One drill (warmstart/drills.py: copy_drill or goal_drill, an answer written by copying from the question) as
    SFT data."""
    question, answer = make(rng)
    prompt = R.encode(tok, R.render(tok, [{"role": "user", "content": question}], True))
    reply = R.encode(tok, answer) + [tok.eos_token_id]
    return {"ids": prompt + reply, "mask": [0] * len(prompt) + [1] * len(reply), "logprobs": [0.0] * (len(prompt) + len(reply))}


def sft_batch(step, args, tok):
    """Copy drills only for the first --sft-drill-steps steps; then scripted episodes of freshly generated train
    tasks (a naive/expert mix) + --sft-drills copy drills + --sft-goal-drills goal drills."""
    rng = random.Random(f"sft:{args.seed}:{step}")
    if step < args.sft_drill_steps:
        return [drill(drills.copy_drill, rng, tok) for _ in range(args.drill_batch)]
    pool = T.make_split("train", seed=f"sft:{args.seed}:{step}", n_per_category=args.sft_batch)
    by_cat = {c: [t for t in pool if t["category"] == c] for c in T.CATEGORIES}
    share = [(args.sft_hard_frac if c in ("injection", "privacy") else 1 - args.sft_hard_frac) / 2 for c in T.CATEGORIES]
    tasks = [by_cat[c].pop() for c in rng.choices(T.CATEGORIES, weights=share, k=args.sft_batch)]
    batch = [t for task in tasks for t in R.rollout("naive" if rng.random() < args.sft_naive_frac else "expert",
                                                     [task], tok, max_steps=args.max_steps + 6, progress=False)]
    return batch + [drill(drills.copy_drill, rng, tok) for _ in range(args.sft_drills)] + \
        [drill(drills.goal_drill, rng, tok) for _ in range(args.sft_goal_drills)]


def sft_backward(policy, tok, batch, micro_batch, dev):
    """Backpropagate the SFT loss of `batch` (cross-entropy on the assistant tokens, normalised by the whole batch's
    tokens) in micro-batches of at most `micro_batch` sequences of similar length: the gradient of one forward over
    the whole batch, up to float error, with the memory of `micro_batch` sequences (SFT ran 2 x --micro-batch per
    forward: `small --quant none` died for memory on a 24 GB CPU machine). Returns the loss."""
    batch = sorted(batch, key=lambda t: len(t["ids"]))  # similar lengths pad little
    n_tokens = max(1, sum(sum(t["mask"]) for t in batch))
    total = 0.0
    for s in range(0, len(batch), micro_batch):
        logp, mask, _ = masked_logprobs(policy, batch[s:s + micro_batch], tok, dev)
        loss = -(logp * mask).sum() / n_tokens
        loss.backward()
        total += loss.item()
    return total


def sft(policy, tok, args, dev, peaks=None, track=None):
    """Cross-entropy on the assistant tokens of copy drills, then of fresh scripted episodes (never the same task
    twice). The learning rate warms up, stays flat through the drills, then decays (cosine) to 10%. `peaks` records
    the phase's peak memory (plumbing/runs.Peaks); `track` gets each step's loss (--track, plumbing/track.py)."""
    M.bound_activations(policy, args.quant)
    if peaks:
        peaks.start()
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
        if track:
            track.log("sft", {"loss": total}, step)
        if args.export and (step + 1) % 250 == 0 and step + 1 < n:  # a long build: a snapshot to evaluate meanwhile
            M.save_model(os.path.join(args.out, "sft_snapshot"), policy, tok)
    if peaks:
        peaks.end("sft")
    return policy


def eval_splits(policy, tok, args, label):
    """{split: the metrics and what the agent did} on test and ood ({} with --eval-episodes 0). Under torchrun each
    process runs its share of the tasks and the metrics come from every process's episodes (greedy: the numbers of
    one process, up to what other batches' padding changes in float arithmetic)."""
    res = {}
    for split in ("test", "ood") if args.eval_episodes > 0 else ():
        tasks = R.pick_tasks(T.make_split(split), args.eval_episodes)
        trajs = greedy_episodes(policy, tok, tasks, args, label=f"{label} {split}")
        res[split] = {**E.metrics(trajs), "behaviour": E.behaviour(trajs)}
    return res


def greedy_episodes(policy, tok, tasks, args, label=None):
    """One greedy episode of each task (evaluate.evaluate); under torchrun each process runs its share and every
    process gets every episode, in the tasks' order."""
    _, trajs = E.evaluate(policy, dist.my_share(tasks), tok, label=label, max_steps=args.max_steps,
                          max_new_tokens=args.max_new_tokens, batch_size=args.rollout_batch, compile=args.compile,
                          progress=label is not None and dist.is_main())
    return dist.gather(trajs)


def held_out_check(policy, tok, args):
    """The score --select-every keeps the best adapter by: evaluate.safe_success (the work done safely, harmful
    requests refused, averaged over the categories) of greedy episodes on --select-episodes tasks a category from the
    train templates, the same tasks at every check and in every run (their own seed: not an RL step's tasks, and not
    test or ood, whose numbers the choice would bias). Under torchrun each process runs its share. Returns the score
    and its parts, evaluate.right_shares (which category swings between checks)."""
    tasks = T.make_split("train", seed="held-out", n_per_category=args.select_episodes)
    trajs = greedy_episodes(policy, tok, tasks, args)
    return E.safe_success(trajs), E.right_shares(trajs)


if __name__ == "__main__":
    main()
