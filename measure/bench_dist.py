"""The RL iteration's wall time with 1 and 2 processes of one thread each (train.py under torchrun, gloo on this CPU),
side by side in one run.

    python measure/bench_dist.py --out runs/bench_dist.json          # the tiny preset's iteration (~5 min on 2 cores)
    python measure/bench_dist.py --quick --out /tmp/bench_dist.json  # smoke test (~1 min; sizes too small to mean much)

Each configuration is N fresh processes started as torchrun starts them (its environment variables; here by
torch.multiprocessing), each with --threads torch threads, holding the whole model (train.warm_start, the tiny
preset's shipped base under a fresh LoRA adapter). Every process runs train.rl_step on steps 0..--steps: step 0 warms
up, the others are timed from a barrier before the step to a barrier after it (the slowest process's time). Rounds
alternate 1 and 2 processes, so a busy machine slows both alike; the median over rounds and steps is reported.
speedup = seconds with 1 process / seconds with 2; 2.0 is the ceiling: the step's tasks split in two, the update's
all-reduce is a few LoRA matrices. The two configurations run the same tasks but sample differently (each rank
seeds its own share), so their trajectories, and how long they run, differ a little.

cpu_s, the CPU seconds of the busiest process in the step (time.process_time, up to the step's end), tells how the
work splits whatever else the machine runs: on cores shared with other jobs the wall-clock speedup falls short of it.

JSON (--out): {"seconds": {"1": s, "2": s}, "speedup", "per_step": {"1": [...], "2": [...]}, "cpu_s", "t_rollout",
"t_update": medians per configuration (t_*: rank 0's clock, as log.jsonl; waiting for the other rank falls in
t_update), "updated", "args", "machine", "wall_seconds"}.
"""
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's root, run from here

import torch
import torch.multiprocessing as mp

import rollout as R
import train as T
from plumbing import dist, runs


@dataclass
class Args:
    """The RL iteration's wall time with 1 and 2 processes (see the module docstring)."""
    out: str = "runs/bench_dist.json"
    """where to write the JSON report"""
    quick: bool = False
    """a smoke test: tiny sizes, one round (~1 min); explicit flags still win"""
    model: str = "tiny-base"
    """the policy's base (train.py --model)"""
    threads: int = 1
    """torch threads per process"""
    rounds: int = 2
    """rounds of (1 process, 2 processes)"""
    steps: int = 2
    """timed RL iterations per round and configuration (after one untimed)"""
    tasks_per_step: int = 8
    """tasks per iteration, over all processes (the tiny preset's)"""
    group_size: int = 4
    """trajectories per task"""
    max_steps: int = 6
    """turns per episode"""
    max_new_tokens: int = 96
    """tokens per turn (the tiny preset's)"""


QUICK = dict(rounds=1, steps=1, tasks_per_step=4, group_size=2, max_steps=2, max_new_tokens=16)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, args, out):
    """One process of `world`, as torchrun would start it: rl_step on steps 0..args.steps, timed between barriers."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dev = dist.init()
    targs = T.Args(**{**T.PRESETS["tiny"], "model": args.model, "tasks_per_step": args.tasks_per_step,
                      "group_size": args.group_size, "max_steps": args.max_steps,
                      "max_new_tokens": args.max_new_tokens})
    policy, tok, _ = T.warm_start(targs, dev, None)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=targs.lr, weight_decay=0.0)
    rows = []
    for step in range(args.steps + 1):
        dist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        rec = T.rl_step(policy, opt, tok, step, targs, dev, None)
        cpu = dist.gather([time.process_time() - c0])  # before the barrier: gloo's waits may spin
        dist.barrier()
        rows.append({"seconds": time.perf_counter() - t0, "cpu_s": max(cpu), "t_rollout": rec["t_rollout"],
                     "t_update": rec["t_update"], "tokens": rec["tokens"], "updated": rec["updated"]})
    if dist.is_main():
        with open(out, "w") as f:
            json.dump(rows[1:], f)
    dist.close()


def run(world, args):
    """The timed steps' rows of one configuration of `world` fresh processes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        mp.spawn(worker, args=(world, free_port(), args, out), nprocs=world, join=True)
        return json.load(open(out))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = R.parse_args(Args, argv, defaults=QUICK if "--quick" in argv else None)
    if args.tasks_per_step % 2:
        sys.exit(f"error: --tasks-per-step must split over 2 processes, not {args.tasks_per_step}")
    t_start = time.time()
    rows = {1: [], 2: []}
    for r in range(args.rounds):
        for world in (1, 2):
            print(f"round {r + 1}/{args.rounds}: {world} process{'es' if world > 1 else ''} ...", flush=True)
            rows[world] += run(world, args)
    med = {w: {k: statistics.median(x[k] for x in rows[w]) for k in ("seconds", "cpu_s", "t_rollout", "t_update")}
           for w in rows}
    rep = {"seconds": {str(w): round(med[w]["seconds"], 3) for w in rows},
           "speedup": round(med[1]["seconds"] / med[2]["seconds"], 2),
           "per_step": {str(w): [round(x["seconds"], 3) for x in rows[w]] for w in rows},
           "cpu_s": {str(w): round(med[w]["cpu_s"], 3) for w in rows},
           "t_rollout": {str(w): round(med[w]["t_rollout"], 3) for w in rows},
           "t_update": {str(w): round(med[w]["t_update"], 3) for w in rows},
           "updated": {str(w): [x["updated"] for x in rows[w]] for w in rows},
           "args": asdict(args), "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                                             "platform": platform.platform()},
           "wall_seconds": round(time.time() - t_start, 1)}
    print(f"RL iteration ({args.tasks_per_step} tasks x {args.group_size}, {args.threads} thread per process): "
          f"1 process {rep['seconds']['1']:.2f} s, 2 processes {rep['seconds']['2']:.2f} s, "
          f"speedup {rep['speedup']:.2f}x; CPU seconds of the busiest process {rep['cpu_s']['1']:.2f} and "
          f"{rep['cpu_s']['2']:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    runs.write_json(args.out, rep)
    return rep


if __name__ == "__main__":
    main()
