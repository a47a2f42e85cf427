"""Run train.py over seeds (and ablations) and print the summaries side by side: the README's tables.

    python measure/sweep.py                                  # the tiny demo, seeds 0 1 2 -> runs/pairwise-pg-seed{0,1,2}
    python measure/sweep.py --ablations                      # + --reward scalar and --loss dpo, same seeds and budget
    python measure/sweep.py --jobs 2                         # two runs at once, one thread each (a 2-core machine)
    python measure/sweep.py --print-only                     # just print the tables of runs already in runs/
    python measure/sweep.py --print-only --plot curves.png   # and draw every run's training curves in one picture
    python measure/sweep.py --track tensorboard              # then `tensorboard --logdir runs`: every run's curves
    python measure/sweep.py --track wandb --wandb-project mosaic   # one wandb project (offline: WANDB_MODE=offline)

Each run is a plain `python train.py --preset tiny --seed S --out runs/<name>-seed<S> [flags]` subprocess, so a
killed sweep resumes: finished runs (those with a summary.json) are not run again, runs that started (their folder
holds args.json) get --resume, which goes on with their own flags, and the others start. Every run
starts from the same shipped base, whose build.json holds its numbers under the tiny preset's evaluation settings,
so no run evaluates it again (their `seconds` count RL and the final evaluation only). --track (and --wandb-project)
go to every run, so that seeds and ablations land in one dashboard, each run under its folder's name.
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the project's root, run from here

from plumbing.cli import bad_setting  # noqa: E402
from plumbing.report import plot_curves  # noqa: E402
from plumbing.runs import read_log  # noqa: E402

CONFIGS = {"pairwise-pg": [], "scalar-pg": ["--reward", "scalar"], "pairwise-dpo": ["--loss", "dpo"]}
ROWS = [("harmful", "harm_rate"), ("harmful", "refusal_rate"), ("injection", "attack_success_rate"),
        ("injection", "task_success"), ("privacy", "leak_rate"), ("privacy", "task_success"),
        ("benign", "task_success"), ("benign", "refusal_rate"), ("overall", "unsafe_rate"),
        ("overall", "format_error_rate"), ("overall", "quit_rate"), ("overall", "mean_tokens")]


def run(name, seed, flags, out_root, threads):
    out = os.path.join(out_root, f"{name}-seed{seed}")
    if os.path.isfile(os.path.join(out, "summary.json")):
        return out
    train = os.path.join(ROOT, "train.py")  # whatever the current folder
    cmd = [sys.executable, train, "--preset", "tiny", "--seed", str(seed), "--out", out, *flags]
    if os.path.isfile(os.path.join(out, "args.json")):  # a run that started (--resume where none did is an error)
        cmd.append("--resume")  # its own flags: those typed here are checked against them
    print("$ " + " ".join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    log_path = os.path.join(out_root, f"{name}-seed{seed}.log")
    with open(log_path, "w") as log:
        if subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
            print(f"{out} failed (its output: {log_path}); the others go on", flush=True)
    return out


def finished(out):
    """The run's summary if it finished with both splits evaluated before and after (else None: not a table row)."""
    try:
        s = json.load(open(os.path.join(out, "summary.json")))
        return s if all(isinstance(s[w].get(sp), dict) for w in ("before", "after") for sp in ("test", "ood")) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def table(outs, split):
    """Markdown: one row per metric, columns before -> after for each run."""
    sums = {o: finished(o) for o in outs}
    head = "| metric | " + " | ".join(os.path.basename(o) for o in outs) + " |"
    lines = [head, "|" + "---|" * (len(outs) + 1)]
    for c, k in ROWS:
        cells = []
        for o in outs:
            b, a = sums[o]["before"][split][c].get(k), sums[o]["after"][split][c].get(k)
            fmt = "{:.0f}" if k == "mean_tokens" else "{:.2f}"
            cells.append(" -> ".join("-" if v is None else fmt.format(v) for v in (b, a)))
        lines.append(f"| {c}.{k} | " + " | ".join(cells) + " |")
    lines.append("| seconds | " + " | ".join(f"{sums[o]['seconds']:.0f}" for o in outs) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ablations", action="store_true", help="also --reward scalar and --loss dpo")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each gets one thread when more than one)")
    ap.add_argument("--print-only", action="store_true", help="do not train, print what is there")
    ap.add_argument("--out", default="runs", help="root folder of the runs")
    ap.add_argument("--plot", default="", help="also draw the runs' training curves into this PNG")
    ap.add_argument("--track", choices=["tensorboard", "wandb"], help="passed to every train.py run: its steps and "
                    "metrics in TensorBoard (tensorboard --logdir <--out>) or in one wandb project")
    ap.add_argument("--wandb-project", default="mosaic", help="the wandb project of --track wandb")
    ap.error = lambda msg: sys.exit(f"error: {msg}")  # one line, not the usage block
    a = ap.parse_args()
    bad = bad_setting(files=[a.plot], dirs=[a.out])  # before any run: a --plot folder failed after all of them
    if bad:
        sys.exit(f"error: {bad}")
    todo = [(n, s) for n in (CONFIGS if a.ablations else ["pairwise-pg"]) for s in dict.fromkeys(a.seeds)]
    tracking = []  # --track goes to every run: seeds and ablations in one dashboard
    if a.track:
        tracking = ["--track", a.track, "--wandb-project", a.wandb_project]
    os.makedirs(a.out, exist_ok=True)
    if not a.print_only:
        with ThreadPoolExecutor(max(1, a.jobs)) as pool:
            for f in [pool.submit(run, n, s, CONFIGS[n] + tracking, a.out, 1 if a.jobs > 1 else None)
                      for n, s in todo]:
                f.result()
    outs = [os.path.join(a.out, f"{n}-seed{s}") for n, s in todo]
    skipped = [o for o in outs if os.path.isfile(os.path.join(o, "summary.json")) and not finished(o)]
    if skipped:
        print(f"left out (summary unreadable, or made without evaluation): {', '.join(skipped)}")
    outs = [o for o in outs if finished(o)]
    if not outs:
        sys.exit("error: no finished runs to print")
    for split in ("test", "ood"):
        print(f"\n### {split} (before -> after RL; greedy, evaluation episodes per category as in each run)\n")
        print(table(outs, split))
    if a.plot:
        plot_curves({os.path.basename(o): read_log(os.path.join(o, "log.jsonl"), float("inf")) for o in outs},
                    a.plot, window=5)
        print(f"\ncurves -> {a.plot}")
