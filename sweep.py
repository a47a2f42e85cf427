"""Run train.py over seeds (and ablations) and print the summaries side by side: the README's tables.

    python sweep.py                                  # the default tiny demo, seeds 0 1 2 -> runs/seed{0,1,2}
    python sweep.py --ablations                      # + --reward scalar and --loss dpo, same seeds and budget
    python sweep.py --print-only                     # just print the tables of runs already in runs/

Each run is a plain `python train.py --seed S --out runs/<name>-seed<S> [flags]` subprocess (so a killed sweep
resumes with `--resume` semantics: finished runs, those with a summary.json, are not run again).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

CONFIGS = {"pairwise-pg": [], "scalar-pg": ["--reward", "scalar"], "pairwise-dpo": ["--loss", "dpo"]}
ROWS = [("harmful", "harm_rate"), ("harmful", "refusal_rate"), ("injection", "attack_success_rate"),
        ("privacy", "leak_rate"), ("benign", "task_success"), ("benign", "refusal_rate"), ("overall", "unsafe_rate"),
        ("overall", "format_error_rate"), ("overall", "mean_tokens")]


def run(name, seed, flags, out_root):
    out = os.path.join(out_root, f"{name}-seed{seed}")
    if os.path.isfile(os.path.join(out, "summary.json")):
        return out
    base = os.path.join(out_root, f"pairwise-pg-seed{seed}")
    if name != "pairwise-pg" and os.path.isdir(os.path.join(base, "sft")) and not os.path.exists(out):
        # Same seed, same SFT data and steps: the warm start and its "before" numbers are identical; reuse them.
        os.makedirs(out)
        shutil.copytree(os.path.join(base, "sft"), os.path.join(out, "sft"))
        shutil.copy(os.path.join(base, "before.json"), os.path.join(out, "before.json"))
    cmd = [sys.executable, "train.py", "--preset", "tiny", "--seed", str(seed), "--out", out, "--resume", *flags]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return out


def table(outs, split):
    """Markdown: one row per metric, columns before -> after for each run."""
    sums = {o: json.load(open(os.path.join(o, "summary.json"))) for o in outs}
    head = "| metric | " + " | ".join(os.path.basename(o) for o in outs) + " |"
    lines = [head, "|" + "---|" * (len(outs) + 1)]
    for c, k in ROWS:
        cells = []
        for o in outs:
            b, a = sums[o]["before"][split][c][k], sums[o]["after"][split][c][k]
            cells.append(f"{b:.2f} -> {a:.2f}" if k != "mean_tokens" else f"{b:.0f} -> {a:.0f}")
        lines.append(f"| {c}.{k} | " + " | ".join(cells) + " |")
    lines.append("| seconds | " + " | ".join(f"{sums[o]['seconds']:.0f}" for o in outs) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ablations", action="store_true", help="also --reward scalar and --loss dpo")
    ap.add_argument("--ablation-seeds", type=int, nargs="+", default=None, help="seeds of the ablations (default: --seeds)")
    ap.add_argument("--print-only", action="store_true", help="do not train, print what is there")
    ap.add_argument("--out", default="runs", help="root folder of the runs")
    a = ap.parse_args()
    names = list(CONFIGS) if a.ablations else ["pairwise-pg"]
    outs = []
    for name in names:
        for s in (a.seeds if name == "pairwise-pg" or a.ablation_seeds is None else a.ablation_seeds):
            out = os.path.join(a.out, f"{name}-seed{s}")
            if not a.print_only:
                run(name, s, CONFIGS[name], a.out)
            if os.path.isfile(os.path.join(out, "summary.json")):
                outs.append(out)
    if not outs:
        sys.exit("error: no finished runs to print")
    for split in ("test", "ood"):
        print(f"\n### {split} (before -> after RL; greedy, evaluation episodes per category as in each run)\n")
        print(table(outs, split))
