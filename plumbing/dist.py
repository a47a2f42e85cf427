"""Data parallelism under torchrun for train.py (a reader does not need this file to understand MOSAIC). In a run of
one process (no torchrun) every function here does nothing but return its input (init: the device).

    torchrun --standalone --nproc_per_node 2 train.py [flags]     # 2 processes: 2 GPUs (nccl), or 2 CPU ranks (gloo)

torchrun starts one process per GPU and tells each its place in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); init() joins them into one process group. Every process holds the whole model; an RL step
gives each its contiguous share of the step's tasks (my_share; a task's whole group stays on one process, where the
judge compares it), and the update is made equal to one process's over all the tasks:
- the loss is normalised by the whole step's count (of policy tokens for pg, of pairs for dpo: total()), so each
  process's gradient is its share of the one-process gradient, and sum_grads() adds the shares up (an all_reduce
  SUM of the LoRA gradients) before the gradient is clipped: every process then clips and steps identically, and
  the adapters stay equal without ever being sent;
- what is logged is gathered from every process (gather), in the order of the tasks.
Why an explicit all_reduce rather than torch's DistributedDataParallel: the trainable tensors are a few LoRA
matrices, the update is one backward pass per micro-batch with no overlap to win, and DDP's wrapper would sit
between peft's model and the reference-adapter switching (model.reference), whose forwards must not sync.

Ranks other than 0 print nothing (their stdout goes to os.devnull); errors and warnings still reach stderr.
"""
import contextlib
import datetime
import os
import sys

import torch
import torch.distributed as td


def world():
    """How many processes run this training (torchrun's WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank():
    """This process's place among them (torchrun's RANK; 0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main():
    """Rank 0: the process that prints and writes the run folder."""
    return rank() == 0


def init():
    """Join torchrun's process group (nccl on GPUs, gloo on CPUs) and return this process's device: cuda:LOCAL_RANK
    with CUDA, else cpu. Without torchrun: "cuda" or "cpu", and nothing else happens."""
    if world() == 1:
        return "cuda" if torch.cuda.is_available() else "cpu"
    # a long timeout: rank 0 alone runs a warm-start SFT (minutes) while the others wait for it at a barrier
    timeout = datetime.timedelta(hours=2)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = f"cuda:{local}"
        td.init_process_group("nccl", timeout=timeout, device_id=torch.device(dev))
    else:
        dev = "cpu"
        td.init_process_group("gloo", timeout=timeout)
    if not is_main():
        sys.stdout = open(os.devnull, "w")
    return dev


def close():
    """Leave the process group (the end of a run)."""
    if td.is_initialized():
        td.destroy_process_group()


def barrier():
    """Wait until every process gets here."""
    if td.is_initialized():
        td.barrier()


@contextlib.contextmanager
def rank_0_first():
    """Rank 0 runs the block alone, then the others run it: what rank 0 builds and saves there (a warm-start SFT,
    a model converted into the cache), the others find and load instead of building it at the same time."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def my_share(items):
    """This process's contiguous share of `items` (sizes differ by at most one; all of them in one process)."""
    n, k, r = len(items), world(), rank()
    return items[r * n // k:(r + 1) * n // k]


def total(x):
    """The sum of the number `x` (an int or a float) over every process, of the same type (added in float64:
    counts exactly)."""
    if not td.is_initialized():
        return x
    t = torch.tensor(float(x), dtype=torch.float64, device=_device())
    td.all_reduce(t)
    return type(x)(t.item())


def sum_grads(params):
    """Replace each parameter's gradient by its sum over every process (a process with no gradient, no trajectory
    in the batch, adds zeros). The loss of each process is its share of the whole batch's loss, so the sum is the
    one-process gradient."""
    if not td.is_initialized():
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        td.all_reduce(p.grad)


def gather(items):
    """Every process's list `items`, concatenated in rank order (so in the order of my_share's shares), on every
    process. The items are pickled (all_gather_object): small dicts and lists, not tensors on a GPU."""
    if not td.is_initialized():
        return items
    out = [None] * world()
    td.all_gather_object(out, items)
    return [x for part in out for x in part]


def _device():
    return torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")
