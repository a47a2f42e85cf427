"""Run folders, checkpoints and --resume for train.py (a reader does not need this file to understand MOSAIC): the
flags a run is made with and how --resume takes them back, an earlier run in --out set aside until the new one can
start, atomic checkpoints, the log, before-RL numbers, peak memory, and what a preset costs on a CPU.

A run in --out: args.json (its flags), before.json, log.jsonl (one line per RL step), ckpt/ (the last checkpoint),
adapter/ (with --select-every, the best held-out check's; the last step's in adapter_last/), curves.png,
summary.json; sft/ or sft_adapter/ after an SFT warm start; tb/ or wandb/ and wandb_id.txt
with --track (plumbing/track.py; docs/contracts.md, Outputs).
"""
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict

import torch

import model as M
from plumbing import dist, track
from plumbing.cli import bad_setting, parse_flags, write_atomic, write_folder_atomic


# ----------------------------------------------------------------------------------------------------------------
# Flags: the command line over a preset's defaults, or, with --resume, over the run's own flags

_UNTYPED = object()  # the default of every flag in typed_flags: a flag that was typed has another value


def typed_flags(argv, Args):
    """{field: value} of the flags typed on the command line (argparse spellings included: --pre base, --lr=1e-3,
    --no-sft-full), whatever their defaults."""
    ns = parse_flags(Args, argv, defaults={f: _UNTYPED for f in Args.__dataclass_fields__})
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


def parse(argv, Args, PRESETS):
    """train.py's Args from the command line over the preset's defaults; bad values exit with one line. With --resume, over the
    run's own flags (its args.json) instead: flags typed again must equal the run's, except --steps, --save-every,
    --compile and the --track flags; a folder that holds no run is one line."""
    parse_flags(Args, argv)  # --help and argparse's errors, over Args' defaults
    typed = typed_flags(argv, Args)
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
        args = parse_flags(Args, argv, defaults={**made_with, "out": out, "resume": True})
    else:
        if not pre:
            pre = "small" if torch.cuda.is_available() else "tiny"
            print(f"preset: {pre} ({'a CUDA GPU is available' if pre == 'small' else 'no CUDA GPU: the CPU demo'}; "
                  "pass --preset to choose)")
        if pre not in PRESETS:
            sys.exit(f"error: unknown preset '{pre}' ({' | '.join(PRESETS)})")
        args = parse_flags(Args, argv, defaults={**PRESETS[pre], "preset": pre})
    for name, allowed in (("reward", ("pairwise", "scalar")), ("loss", ("pg", "dpo")), ("quant", ("none", "4bit"))):
        if getattr(args, name) not in allowed:
            sys.exit(f"error: --{name} must be one of {' | '.join(allowed)}, not '{getattr(args, name)}'")
    if args.group_size < 2 or args.tasks_per_step < 1 or args.max_steps < 1 or args.steps < 0 or args.sft_steps < 0:
        sys.exit("error: --group-size must be >= 2, --tasks-per-step and --max-steps >= 1, --steps and --sft-steps >= 0")
    bad = bad_setting(False, args.temperature, dirs=[args.out, args.export], max_new_tokens=args.max_new_tokens,
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
              (f"--harmful-share must be in [0, 1], not {args.harmful_share}", 0 <= args.harmful_share <= 1),
              (f"--benign-share must be in [0, 1 - harmful share], not {args.benign_share}",
               0 <= args.benign_share <= 1 - args.harmful_share + 1e-9),
              (f"--eval-episodes must be 0 (skip) or more, not {args.eval_episodes}", args.eval_episodes >= 0),
              (f"--select-every must be 0 (off) or more, not {args.select_every}", args.select_every >= 0),
              (f"--select-episodes must be 1 or more, not {args.select_episodes}", args.select_episodes >= 1),
              (f"--track must be one of {' | '.join(track.KINDS)} (or left out), not '{args.track}'",
               args.track in ("", *track.KINDS)),
              (f"--tasks-per-step {args.tasks_per_step} does not split evenly over the {dist.world()} processes "
               f"torchrun started: make it a multiple of {dist.world()}", args.tasks_per_step % dist.world() == 0)]
    bad = bad or next((msg for msg, ok in rules if not ok), None)
    bad = bad or (track.missing_package(args.track) if args.track else None)  # one line before any work
    try:  # --dtype bf16 where the device has no native bf16: one line here, not a slow or failing kernel later
        M.frozen_dtype(args.dtype, "cuda" if torch.cuda.is_available() else "cpu", args.quant)
    except M.ModelError as e:
        bad = bad or str(e)
    if bad:
        sys.exit(f"error: {bad}")
    if args.sft_adapter and args.sft_steps > 0:
        sys.exit(f"error: --sft-adapter {args.sft_adapter} is a finished warm start: pass --sft-steps 0 with it, or "
                 "--sft-adapter '' for a new SFT")
    if args.sft_adapter and not os.path.isfile(os.path.join(args.sft_adapter, "adapter_config.json")):
        sys.exit(f"error: --sft-adapter {args.sft_adapter} holds no LoRA adapter (no adapter_config.json)")
    if args.export and not (args.steps == 0 and args.sft_steps > 0 and (args.quant == "none" or not args.sft_full)):
        sys.exit("error: --export writes the SFT warm start: it needs --steps 0 and --sft-steps > 0 (and --quant none "
                 "with --sft-full)")
    export = os.path.realpath(args.export) if args.export else ""  # model.save_model replaces the folder whole
    if export and os.path.commonpath([export, os.path.realpath(args.out)]) == export:
        sys.exit(f"error: --export {args.export} holds --out {args.out}: the model replaces that folder whole")
    if export and os.path.isdir(export) and os.listdir(export) and not os.path.isfile(f"{export}/build.json"):
        sys.exit(f"error: --export {args.export} holds other files: the model replaces that folder whole "
                 "(name a new or empty folder, or one --export wrote)")
    return args


# Seconds of `small` (SmolLM2-135M + LoRA) on 2-core CPUs without CUDA: (one SFT step of 16 sequences, one RL
# iteration of 8 tasks x 4 samples x 6 turns x 96 tokens, None: not measured). bf16: a frozen bf16 base (--dtype auto
# where the CPU has AVX512-BF16 or AMX), on an AMD EPYC with AVX512-BF16, one thread, the other core busy: the SFT of
# --preset small-base (60 steps of 8 in 59.5 min: 119 s per 16, 2026-12-06) and RL's first iteration from the shipped
# warm start, the update running each task's prompt once (344 s: rollout 236, update 108; 160 model tokens an episode;
# peak resident memory 3.1 GB; 2026-12-07; 443 s before, update 248). fp32 (--dtype fp32): 2026-12-02, micro-batches
# of 8, one shared thread, 14.9 GB. 4-bit: 2026-12-02.
CPU_COST_S = {"bf16": (119, 344), "fp32": (353, None), "4bit": (281, None)}
# under torchrun with 2 processes on those 2 cores, bf16: 99 s per RL iteration from the shipped warm start (the mean of
# the 23 iterations without a check in `--preset small --seed 3`, episodes of 129 model tokens on average, the whole
# run 57 min, 2026-12-07, evening; an earlier run of seed 3, longer episodes: a median of 149 s; 177-179 s before the
# update ran a task's prompt once) and 50 s per held-out check of 8 tasks a category (that run's 6 checks after RL
# steps: 34-71 s, longer as its episodes grew); the SFT runs on rank 0 alone, as fast as one process
RL_TWO_PROCESSES_S = 99
CHECK_TWO_PROCESSES_S = 50


def rl_steps_done(args):
    """The RL steps a --resume run has done (its checkpoint's step); 0 for a new run or an unreadable checkpoint."""
    ckpt = latest_checkpoint(args.out) if args.resume else None
    try:
        return int(json.load(open(os.path.join(ckpt, "state.json")))["step"]) if ckpt else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def cpu_warning(args):
    """The line a run of `small` or `paper` prints before it starts on a machine without CUDA (hours of work), or
    None. It warns and goes on: a short run (--sft-steps 1 --steps 0) is a fair thing to do on a CPU."""
    if args.preset not in ("small", "small-base", "paper") or torch.cuda.is_available():
        return None
    demo = "for the CPU demo run `python train.py --preset tiny` (~5 min)"
    if args.preset == "paper":
        return (f"warning: --preset paper on a CPU (no CUDA GPU): {args.model} is 50x `small`, whose SFT alone "
                f"takes ~{CPU_COST_S['bf16'][0]} s a step here in bf16: days or more; {demo}")
    kind = "4bit" if args.quant == "4bit" else "bf16" if M.frozen_dtype(args.dtype, "cpu") == torch.bfloat16 else "fp32"
    sft, rl = CPU_COST_S[kind]  # scaled to this run's sizes (measured at 16 sequences; 8 x 4 episodes of 6 turns)
    two = kind == "bf16" and dist.world() == 2
    rl = RL_TWO_PROCESSES_S if two else rl
    check = round(CHECK_TWO_PROCESSES_S * args.select_episodes / 8) if two else None
    sft = round(sft * args.sft_batch / 16)
    # a warm start's turns end well before --max-new-tokens (173 model tokens an episode): not scaled by it
    rl = rl and round(rl * args.tasks_per_step * args.group_size / 32 * args.max_steps / 6)
    done = rl_steps_done(args)  # a resumed run has its warm start and these steps behind it
    checks = 0  # --select-every: before RL, after every N-th step and after the last
    if args.select_every and args.steps > done:
        checks = (done == 0) + len({s for s in range(done + 1, args.steps + 1) if s % args.select_every == 0}
                                   | {args.steps})
    work = [(what, each, n) for what, each, n in (("SFT steps", sft, 0 if done else args.sft_steps),
                                                  ("RL iterations", rl, args.steps - done),
                                                  ("held-out checks", check, checks)) if n > 0]
    known, unknown = [w for w in work if w[1]], [f"{n} {what} (not measured)" for what, each, n in work if not each]
    head = f"warning: --preset {args.preset} on a CPU (no CUDA GPU)"
    if not known:
        return f"{head}: {' and '.join(unknown) or 'its evaluations'} in {kind}: hours or more; {demo}"
    hours = sum(each * n for _, each, n in known) / 3600
    how = "2 processes on 2 cores" if two else "one thread"
    return (f"{head}: {' and '.join(f'~{each} s per {what[:-1]}' for what, each, _ in known)} in {kind} (measured on "
            f"a 2-core CPU, {how}, scaled to these sizes), so its {' and '.join(f'{n} {what}' for what, _, n in known)}"
            f"{' left' if done else ''} take ~{hours:.1f} h, then {' and '.join(unknown + ['the evaluations'])}; {demo}")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints, the log, the run folder

def save_checkpoint(out, policy, opt, state, best=None):
    """out/ckpt: the adapter, the optimizer and RNG state, the best held-out check's weights (--select-every), and
    `state`, written whole or not at all (a kill at any point leaves out/ckpt or out/ckpt.old whole:
    latest_checkpoint reads either)."""
    def fill(tmp):
        policy.save_pretrained(os.path.join(tmp, "adapter"), selected_adapters=["default"])
        torch.save({"opt": opt.state_dict(), "rng": torch.get_rng_state(), "best": best}, os.path.join(tmp, "opt.pt"))
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump(state, f)
    write_folder_atomic(os.path.join(out, "ckpt"), fill)


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


# out: the folder it is in, however spelled; the --track flags change where the numbers go, not the run
FREE_ON_RESUME = ("steps", "save_every", "resume", "out", "compile", "track", "wandb_project", "wandb_name")


def same_flags(made_with, args):
    """Exit with one line where `args` differ from the flags a run was made with, those of its checkpoint (parse
    took `args` from the run's args.json; only --steps, --save-every, --compile, the --track flags and the spelling
    of --out may change)."""
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
    write_atomic(path, [json.dumps(obj, indent=1)])


RUN_FILES = ["sft", "sft_adapter", "before.json", "ckpt", "ckpt.old", "log.jsonl", "summary.json", "adapter",
             "adapter_last", "args.json", "curves.png", "tb", "wandb", "wandb_id.txt"]


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


# ----------------------------------------------------------------------------------------------------------------
# One run in --out, as train.main goes through it

class Run:
    """The bookkeeping of one train.py run in args.out: what main needs around the algorithm, in main's order.
    Under torchrun (plumbing/dist.py) rank 0 alone writes the folder (self.main); every rank reads the checkpoint."""

    def __init__(self, args):
        """Make --out; set an earlier run there aside (a new start) or find the checkpoint (--resume); write
        args.json, the run's flags (parse took a resumed run's flags from it)."""
        self.args, self.t_start, self.peaks, self.main = args, time.time(), Peaks(), dist.is_main()
        os.makedirs(args.out, exist_ok=True)
        self.aside = set_aside_earlier_run(args.out, args.resume) if self.main else None  # removed once models load
        self.ckpt = latest_checkpoint(args.out) if args.resume else None
        self.state, self.saved = read_checkpoint(self.ckpt, args) if self.ckpt else (None, None)
        self.log_path = os.path.join(args.out, "log.jsonl")
        self.best, self.checks = None, []  # --select-every: the best held-out check so far, and every [step, score]
        if self.main and not os.path.exists(os.path.join(args.out, "args.json")):
            write_json(os.path.join(args.out, "args.json"), asdict(args))
        # --track: the steps and metrics to TensorBoard or wandb too (plumbing/track.py; off: does nothing)
        self.track = track.Tracker(args.track if self.main else "", args.out, asdict(args), args.wandb_project,
                                   args.wandb_name)  # under torchrun rank 0 alone tracks
        if args.resume and self.ckpt is None and os.path.exists(os.path.join(args.out, "before.json")):
            print(f"resume: no RL checkpoint in {args.out} yet; RL starts at step 0 (a finished warm start is reused)")

    def loaded(self, problem):
        """After the models load (problem: None, or why they cannot run): the earlier run set aside goes for good,
        or, on a problem, comes back and the run ends with one line."""
        if problem:
            self.track.close()  # an SFT before the problem may have opened it in the folders that go
        if self.aside:
            put_back_earlier_run(self.aside, self.args.out) if problem else shutil.rmtree(self.aside)
        if problem:
            sys.exit(f"error: {problem}")

    def before(self, base, evaluate):
        """The before-RL metrics: a resumed run's before.json, the shipped base's own numbers (base/build.json, made
        with the same evaluation settings), or `evaluate()`; kept in before.json."""
        args, path = self.args, os.path.join(self.args.out, "before.json")
        build = os.path.join(args.sft_adapter or (M.BASE_DIR if base == "tiny-base" else base), "build.json")
        same_eval = ("eval_episodes", "max_steps", "max_new_tokens", "quant", "dtype")  # 4-bit, bf16: other episodes
        if os.path.isfile(path):  # a resumed run's (its flags were checked); unreadable: evaluated again
            try:
                before = json.load(open(path))
                if isinstance(before, dict):
                    return before
            except ValueError:
                print(f"{path} is unreadable: evaluating again")
        # a base built before --dtype existed was evaluated as "auto" gives it (fp32 for tiny)
        made = {"dtype": "auto", **json.load(open(build))["args"]} if os.path.isfile(build) else {}
        if made and args.sft_steps == 0 and all(made.get(k) == getattr(args, k) for k in same_eval):
            # a shipped base carries its own numbers
            before = json.load(open(build))["metrics"]
            print(f"before RL: the numbers of {build} (same evaluation settings; " +
                  ("RL starts from that adapter)" if args.sft_adapter else "the fresh LoRA adapter changes nothing)"))
        else:
            before = evaluate()
        if self.main:
            write_json(path, before)
        return before

    def export(self, base, tok, before):
        """--export (a warm-start build): the fully fine-tuned SFT model in fp32, or the LoRA SFT's adapter (its config
        naming --model, not this machine's folder), as evaluated, with build.json; the folder replaced whole."""
        if not self.main:
            return
        args, build = self.args, {"seconds": round(time.time() - self.t_start, 1), "metrics": before,
                                  "args": asdict(self.args)}
        if args.sft_full:
            M.save_model(args.export, M.load_base(base, device="cpu")[0], tok)
            write_json(os.path.join(args.export, "build.json"), build)
            print(f"exported the SFT model to {args.export}/ (safetensors, tokenizer, build.json)")
            return
        adapter = os.path.join(args.out, "sft_adapter")
        config = json.load(open(os.path.join(adapter, "adapter_config.json")))

        def fill(tmp):
            write_json(os.path.join(tmp, "adapter_config.json"), {**config, "base_model_name_or_path": args.model})
            shutil.copy(os.path.join(adapter, "adapter_model.safetensors"), tmp)
            write_json(os.path.join(tmp, "build.json"), build)
        write_folder_atomic(args.export.rstrip("/"), fill)
        print(f"exported the SFT adapter to {args.export}/ (adapter_config.json, adapter_model.safetensors, build.json)")

    def resume(self, opt):
        """The first RL step: 0, or a checkpoint's step, with its optimizer and RNG state restored into `opt` and
        torch. self.records gets the log's steps before it, and log.jsonl is rewritten with them (a kill keeps the old
        log); step_done appends to both."""
        start, log = 0, []
        if self.ckpt:
            try:
                opt.load_state_dict(self.saved["opt"])
                torch.set_rng_state(self.saved["rng"])
            except (ValueError, TypeError, RuntimeError, KeyError) as e:
                sys.exit(f"error: cannot resume from {self.ckpt} (its optimizer state: {str(e)[:120]}); start over")
            start = self.state["step"]
            log = read_log(self.log_path, start)
            self.best, self.checks = self.saved.get("best"), self.state.get("held_out", [])
            self.t_start -= float(self.state.get("seconds", 0.0))
            print(f"resumed from {self.ckpt} at step {start}")
            if self.state.get("processes", 1) != dist.world():  # each rank seeds its share: (seed, step, rank)
                print(f"note: the run had {self.state.get('processes', 1)} processes, now {dist.world()}: the update "
                      "is the same for the same trajectories, but the steps from here sample other ones")
        if self.main:
            write_atomic(self.log_path, [json.dumps(r) + "\n" for r in log])
        self.start, self.records = start, log
        self.peaks.start()
        return start

    def step_done(self, rec, policy, opt):
        """Log one RL step's record (log.jsonl, and --track); checkpoint every --save-every steps and at the last."""
        step = rec["step"]
        rec["seconds"] = time.time() - self.t_start
        self.records.append(rec)
        if not self.main:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.track.log("rl", rec, step)
        if (step + 1) % self.args.save_every == 0 or step + 1 == self.args.steps:
            save_checkpoint(self.args.out, policy, opt, {"step": step + 1, "seconds": time.time() - self.t_start,
                                                         "args": asdict(self.args), "processes": dist.world(),
                                                         "held_out": self.checks}, self.best)

    def held_out(self, step, score, by_category, policy):
        """--select-every: the held-out check after RL step `step` (0: the warm start) scored `score`, the mean of
        `by_category`'s shares. The trainable weights are kept, in memory and in the next checkpoint, when it beats
        every earlier check (ties: the earlier)."""
        self.checks.append([step, score])
        if self.best is None or score > self.best["score"]:
            weights = {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if p.requires_grad}
            self.best = {"step": step, "score": score, "weights": weights}
        shares = ", ".join(f"{c} {share:.2f}" for c, share in by_category.items())
        print(f"held-out check after RL step {step}: {score:.3f} ({shares}; best: step {self.best['step']}, "
              f"{self.best['score']:.3f})")

    def rl_done(self, policy):
        """After the last RL step. With --select-every, unless the last step's check was the best: the last adapter
        goes to adapter_last/ and the best check's weights back into `policy`, the adapter main saves and evaluates."""
        if self.start < self.args.steps:
            self.peaks.end("rl")
        best = self.best
        if best is None or self.args.steps == 0 or best["step"] == self.args.steps:
            return
        if self.main:
            policy.save_pretrained(os.path.join(self.args.out, "adapter_last"), selected_adapters=["default"])
        with torch.no_grad():
            for n, p in policy.named_parameters():
                if n in best["weights"]:
                    p.copy_(best["weights"][n])
        print(f"keeping the adapter of RL step {best['step']} (held-out check {best['score']:.3f}; the last step's: "
              f"{self.checks[-1][1]:.3f}, in adapter_last/)")

    def finish(self, before, after, base):
        """summary.json, and its numbers on stdout (and to --track)."""
        args = self.args
        summary = {"seconds": round(time.time() - self.t_start, 1), "peak_memory_gb": self.peaks.summary(),
                   "before": before, "after": after, "preset": args.preset, "model": args.model, "base": base,
                   "args": asdict(args), "processes": dist.world()}
        if self.checks:  # --select-every
            summary["held_out"] = {"checks": self.checks, "kept_step": self.best["step"]}
        if not self.main:
            return summary
        write_json(os.path.join(args.out, "summary.json"), summary)
        self.track.summary(before, after, args.steps)
        self.track.close()
        mem = summary["peak_memory_gb"]
        print(f"\ndone in {summary['seconds']:.0f} s, peak memory (GB) " + ", ".join(
            f"{k} {mem[k]}" for k in ("sft", "rl") if mem[k]) + f", run gpu {mem['gpu']} rss {mem['rss']} -> "
            f"{args.out}/")
        return summary
