"""Score stored trajectories again with today's environment, and print their tables: no model runs.

    python measure/rescore.py runs/a.jsonl --split test                     # one column
    python measure/rescore.py before=runs/w_A.jsonl,runs/w_B.jsonl after=runs/r.jsonl --split test --out runs/rescored

Each episode's assistant turns are replayed in order through a fresh envs.Env of its task (found by id in --tasks, or
in the built-in --split), and its outcome is computed anew. For when an outcome's definition changes and the
episodes behind a table are on disk (the 800 greedy episodes of a `small` evaluation take half an hour to generate;
their replay, seconds): on Dec 8, 2026 `injection_attempted` began to count only calls made after a tool's output
showed the planted text, and `injection_seen` was added.

The replay checks itself: every tool result must come out as the stored one (the same world, the same tools); an
episode that differs is reported and keeps its stored outcome. `tokens` and `safety_check` are the rollout's and are
kept. An episode that ended truncated (out of turns, or of context) stays truncated.

Arguments: each positional is FILE or LABEL=FILE[,FILE...] (files of one label are one column, e.g. the two halves of
an evaluation). --out DIR writes each column's rescored episodes to DIR/LABEL.jsonl. Printed: how many outcomes
changed and in which fields, the metric table and the behaviour table (evaluate.py's), and safe_success.
"""
import argparse
import json
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's root, run from here

import envs  # noqa: E402
import evaluate as E  # noqa: E402
from plumbing.cli import read_trajectories, write_atomic  # noqa: E402
from tasks import TaskError, get_tasks  # noqa: E402

KEPT = ("tokens", "safety_check")  # the rollout's, not the environment's


def replay(traj, task):
    """The outcome of `traj`'s assistant turns replayed in a fresh Env of `task`, or None where a tool result comes
    out other than the stored one (the task or the tools are not those the episode ran on)."""
    env = envs.Env(task, max_steps=10**6)
    msgs = traj["messages"]
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        obs, _ = env.step(envs.parse_turn(m["content"]))
        if i + 1 < len(msgs) and obs != msgs[i + 1]["content"]:  # the last turn's result was never shown
            return None
    env.truncated = bool(traj["outcome"].get("truncated"))  # out of turns or of context in the rollout
    out = env.outcome()
    out.update({k: traj["outcome"][k] for k in KEPT if k in traj["outcome"]})
    return out


def rescore(trajs, tasks_by_id):
    """(rescored trajectories, Counter of the outcome fields that changed, ids that could not be replayed)."""
    out, changed, failed = [], Counter(), []
    for t in trajs:
        task = tasks_by_id.get(t["task_id"])
        new = replay(t, task) if task is not None else None
        if new is None:
            failed.append(t["task_id"])
            out.append(t)
            continue
        changed.update(k for k in set(new) | set(t["outcome"]) if new.get(k) != t["outcome"].get(k))
        out.append({**t, "outcome": new})
    return out, changed, failed


def main(argv=None):
    ap = argparse.ArgumentParser(description="Replay stored trajectories through today's environment; print tables.")
    ap.add_argument("columns", nargs="+", help="FILE or LABEL=FILE[,FILE...]")
    ap.add_argument("--split", default="test", help="the built-in split the episodes' tasks come from")
    ap.add_argument("--tasks", default="", help="a JSON-lines task file instead of --split")
    ap.add_argument("--out", default="", help="a folder for each column's rescored episodes (LABEL.jsonl)")
    a = ap.parse_args(argv)
    try:
        tasks = get_tasks(a.split, a.tasks or None)
    except (TaskError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    by_id = {t["id"]: t for t in tasks}
    results = {}
    for col in a.columns:
        label, files = col.split("=", 1) if "=" in col else (os.path.splitext(os.path.basename(col))[0], col)
        trajs = [t for f in files.split(",") for t in read_trajectories(f)]
        new, changed, failed = rescore(trajs, by_id)
        print(f"{label}: {len(trajs)} episodes, {len(failed)} not replayed"
              + (f" (e.g. {failed[0]})" if failed else "") + "; changed: "
              + (", ".join(f"{k} {n}" for k, n in changed.most_common()) or "nothing"))
        if a.out:
            write_atomic(os.path.join(a.out, f"{label}.jsonl"), [json.dumps(t, ensure_ascii=False) + "\n"
                                                                for t in new])
        results[label] = {**E.report(new), "safe_success": E.safe_success(new)}
    print("\n" + E.format_table(results) + "\n\n" + E.format_behaviour(results))
    print("\nsafe_success: " + ", ".join(f"{k} {v['safe_success']:.3f}" for k, v in results.items()
                                         if v["safe_success"] is not None))
    return results


if __name__ == "__main__":
    main()
