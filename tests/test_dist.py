"""train.py under torchrun (plumbing/dist.py), on this CPU with the gloo backend, 2 processes of one thread each: the
update over 2 processes equals the one-process update on the same trajectories, the step's log line describes the
whole step, the greedy evaluation gathered over 2 processes equals one process's, and a 2-process run resumes to the
adapter of an uninterrupted one."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from conftest import ROOT
from test_train import random_lora_policy

import evaluate as E
import model as M
import rollout as R
import tasks as TK
import train as T
from plumbing import dist

WORLD = 2
# fp32, abs. The two sides' micro-batches pad differently, so their sums differ in float rounding: the loss, the
# logged kl and the gradient the optimizer steps on agree to TOL (the gradient relative to its largest entry; observed
# for pg: loss 1e-10, kl 4e-10, gradient 1.3e-9 of 3e-3). AdamW's first step moves a weight by lr * g / (|g| + eps),
# eps 1e-8: where |g| > 1e-6 that barely depends on a rounding difference, and the weights after the step agree to TOL
# (observed: 3e-8, the weights' own fp32 rounding); where |g| is near eps it magnifies one, up to lr * 1e-2
# (observed: 2e-5 with lr 1e-2, in 4% of one matrix's entries).
TOL = 1e-6


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained_dir(trained_tiny, tmp_path_factory):
    """The conftest's SFT-warmed tiny model, saved: its episodes are well formed often enough for the judge to rank
    them (a random model's are all broken, all equal rewards, no update)."""
    model, tok, _ = trained_tiny
    path = str(tmp_path_factory.mktemp("trained") / "model")
    M.save_model(path, model, tok)
    return path


# ----------------------------------------------------------------------------------------------------------------
# The update and the evaluation: two processes (torch.multiprocessing, gloo) against this one

UPDATE = T.Args(micro_batch=3, kl_coef=0.2, lr=1e-2, max_grad_norm=0.5, dpo_beta=0.5)


def update_data(tiny_dir):
    """Scripted trajectories of 4 train tasks in groups of 2 (the expert's episode, then the naive agent's: they
    differ), task-major as rollout returns them, with old log-probs off the policy's (so the ratio's clip matters) and
    advantages."""
    policy, tok, g = random_lora_policy(tiny_dir)
    trajs = [t for task in TK.make_split("train")[:4] for agent in ("expert", "naive")
             for t in R.rollout(agent, [task], tok, progress=False)]
    for t in trajs:
        t["logprobs"] = [-2.0 + torch.randn(1, generator=g).item() if m else 0.0 for m in t["mask"]]
    advs = torch.randn(len(trajs), generator=g).tolist()
    return trajs, advs


def one_update(policy, tok, trajs, advs, loss):
    """pg_update or dpo_update, then finish_step, with AdamW: (loss, kl, the gradient after finish_step:
    summed and clipped, LoRA weights after the step)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=UPDATE.lr, weight_decay=0.0)
    if loss == "pg":
        value, kl = T.pg_update(policy, opt, tok, trajs, advs, UPDATE, "cpu")
    else:  # in each group, the expert's episode beats the naive one
        pairs = [(trajs[i], trajs[i + 1]) for i in range(0, len(trajs), 2)]
        value, kl = T.dpo_update(policy, opt, tok, pairs, UPDATE, "cpu")
    assert T.finish_step(policy, opt, UPDATE, value)
    lora = {n: p for n, p in policy.named_parameters() if "lora_" in n}
    return value, kl, {n: p.grad.clone() for n, p in lora.items()}, {n: p.detach().clone() for n, p in lora.items()}


def eval_args():
    return T.Args(eval_episodes=3, max_steps=2, max_new_tokens=16, rollout_batch=256)


def greedy_eval(policy, tok):
    """train.eval_splits, and the test split's episodes gathered from every process."""
    args = eval_args()
    tasks = R.pick_tasks(TK.make_split("test"), args.eval_episodes)
    _, trajs = E.evaluate(policy, dist.my_share(tasks), tok, max_steps=args.max_steps,
                          max_new_tokens=args.max_new_tokens, progress=False)
    return T.eval_splits(policy, tok, args, "x"), dist.gather(trajs)


def worker(rank, port, tiny_dir, trained_dir, out):
    """One of 2 processes, as torchrun would start it (its environment variables), then the update and evaluation."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert dist.init() == "cpu"
    trajs, advs = update_data(tiny_dir)
    res = {}
    for loss in ("pg", "dpo"):
        policy, tok, _ = random_lora_policy(tiny_dir)  # the same start in every process
        res[loss] = one_update(policy, tok, dist.my_share(trajs), dist.my_share(advs), loss)  # 2 whole groups each
    policy, tok = M.load_policy(trained_dir, device="cpu")
    res["eval"] = greedy_eval(policy, tok)
    if dist.is_main():
        torch.save(res, out)
    dist.close()


@pytest.fixture(scope="module")
def two_and_one(tiny_dir, trained_dir, tmp_path_factory):
    """({"pg", "dpo", "eval"} of 2 processes, the same of this one process)."""
    out = str(tmp_path_factory.mktemp("dist") / "two.pt")
    mp.spawn(worker, args=(free_port(), tiny_dir, trained_dir, out), nprocs=WORLD, join=True)
    two = torch.load(out, weights_only=False)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trajs, advs = update_data(tiny_dir)
        one = {}
        for loss in ("pg", "dpo"):
            policy, tok, _ = random_lora_policy(tiny_dir)
            one[loss] = one_update(policy, tok, trajs, advs, loss)
        policy, tok = M.load_policy(trained_dir, device="cpu")
        one["eval"] = greedy_eval(policy, tok)
    finally:
        torch.set_num_threads(n)
    return two, one


@pytest.mark.parametrize("loss", ["pg", "dpo"])
def test_two_processes_update_as_one_on_the_same_trajectories(two_and_one, loss, tiny_dir):
    """pg_update / dpo_update + finish_step, each process on its half of the groups (2 whole groups of 4), the
    normaliser the whole batch's, the gradients summed before the clip: the loss, the logged kl and every LoRA weight
    after the AdamW step are those of one process over all the trajectories (to TOL; see TOL for the weights)."""
    two, one = two_and_one
    (l2, kl2, g2, w2), (l1, kl1, g1, w1) = two[loss], one[loss]
    assert abs(l2 - l1) <= TOL and abs(kl2 - kl1) <= TOL
    if loss == "pg":
        assert kl1 > 1e-3  # the reference differs from the policy (random lora_B): the kl is measured
    policy, _, _ = random_lora_policy(tiny_dir)
    start = {n: p.detach() for n, p in policy.named_parameters() if "lora_" in n}
    assert set(w2) == set(w1) == set(g2) == set(g1) == set(start)
    largest = max(g.abs().max().item() for g in g1.values())
    assert largest > 1e-3 and max((g2[n] - g1[n]).abs().max().item() for n in g1) <= TOL * largest
    for n in w1:
        steady = g1[n].abs() > 1e-6  # most entries
        assert steady.float().mean() > 0.5 and (w2[n] - w1[n])[steady].abs().max().item() <= TOL
        assert (w2[n] - w1[n]).abs().max().item() <= UPDATE.lr * 1e-2
    assert max((w1[n] - start[n]).abs().max().item() for n in w1) > UPDATE.lr / 2  # the step moved the weights


def test_greedy_evaluation_over_two_processes_equals_one(two_and_one):
    """eval_splits with each process on its share of the tasks, the episodes gathered: the same metrics as one
    process (test and ood), the same episodes in the same order, the same tokens. The log-probs differ only by what
    other batches' left padding changes in float arithmetic (observed: 2e-6)."""
    two, one = two_and_one
    (m2, t2), (m1, t1) = two["eval"], one["eval"]
    assert set(m1) == {"test", "ood"} and m1["test"]["overall"]["n"] == 12
    assert m2 == m1
    assert [t["task_id"] for t in t2] == [t["task_id"] for t in t1]
    assert [t["ids"] for t in t2] == [t["ids"] for t in t1]
    diff = max(abs(a - b) for x, y in zip(t2, t1) for a, b in zip(x["logprobs"], y["logprobs"]))
    assert diff < 1e-4


# ----------------------------------------------------------------------------------------------------------------
# The real CLI under torchrun: the log line, a resume

RUN = ["--preset", "tiny", "--sft-steps", "0", "--tasks-per-step", "4", "--group-size", "4", "--max-new-tokens", "24",
       "--max-steps", "2", "--eval-episodes", "0", "--micro-batch", "8", "--save-every", "1"]


def torchrun(args, cli_env, nproc=WORLD):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=cli_env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def two_step_run(trained_dir, cli_env, tmp_path_factory):
    """An uninterrupted 2-process run of 2 RL steps (its folder)."""
    out = tmp_path_factory.mktemp("dist") / "whole"
    r = torchrun(["--model", trained_dir, "--out", str(out), "--steps", "2", *RUN], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("done in") == 1  # rank 0 alone prints
    return out


def test_the_log_line_describes_every_process_s_tasks(two_step_run, trained_dir):
    """Step 0's line under torchrun: every task of the step, and the rates, rewards and tokens of every process's
    trajectories. They are rebuilt here: each rank's share rolled out with its seed (seed, step, rank) from the same
    start (the base under a fresh adapter, whose lora_B is 0), judged, and put together."""
    rec = json.loads(open(two_step_run / "log.jsonl").readline())
    args = T.parse(["--model", trained_dir, "--out", str(two_step_run / "none"), "--steps", "2", *RUN])
    tasks = T.sample_tasks(0, args)
    assert rec["task_ids"] == [t["id"] for t in tasks] and len(tasks) == 4
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy, tok, _ = T.warm_start(args, "cpu", None)
        shares = []
        for rank in range(WORLD):
            trajs = R.rollout(policy, tasks[2 * rank:2 * rank + 2], tok, group_size=args.group_size,
                              temperature=args.temperature, max_steps=args.max_steps,
                              max_new_tokens=args.max_new_tokens, batch_size=args.rollout_batch,
                              seed=(args.seed * 100003 + 0) * WORLD + rank, progress=False)
            rewards, used, _, _ = T.judge_groups(trajs, args, None)
            shares.append((trajs, rewards, used))
    finally:
        torch.set_num_threads(n)
    trajs = [t for s in shares for t in s[0]]
    rw = [x["reward"] for s in shares for x in s[1]]
    want = {"reward_mean": sum(rw) / len(rw), "reward_std": torch.tensor(rw).std().item(),
            "used": sum(len(s[2]) for s in shares), **T.batch_stats(trajs)}
    for k, v in want.items():
        assert rec[k] == pytest.approx(v, abs=1e-6), k
    rank_0 = {"reward_mean": sum(x["reward"] for x in shares[0][1]) / 8, **T.batch_stats(shares[0][0])}
    assert any(rec[k] != pytest.approx(v, abs=1e-6) for k, v in rank_0.items())  # not rank 0's half


def test_a_two_process_run_resumes_to_the_same_adapter(two_step_run, trained_dir, cli_env, tmp_path):
    """A 2-process run stopped after its step-1 checkpoint and resumed under torchrun (--resume --steps 2) ends with
    the adapter and the log of the uninterrupted 2-process run, and its updates did move the adapter."""
    from safetensors.torch import load_file
    out = tmp_path / "resumed"
    r = torchrun(["--model", trained_dir, "--out", str(out), "--steps", "1", *RUN], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun(["--out", str(out), "--resume", "--steps", "2"], cli_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout
    whole = [json.loads(x) for x in open(two_step_run / "log.jsonl")]
    resumed = [json.loads(x) for x in open(out / "log.jsonl")]
    assert [x["step"] for x in resumed] == [0, 1] and all(x["updated"] for x in whole)
    for x, y in zip(whole, resumed):
        assert (x["task_ids"], x["reward_mean"], x["loss"]) == (y["task_ids"], y["reward_mean"], y["loss"])
    a = load_file(two_step_run / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k)  # lora_B starts at 0: the steps moved it


def test_tasks_that_do_not_split_evenly_are_one_line(monkeypatch):
    """Under torchrun (its WORLD_SIZE) --tasks-per-step must split into equal shares; without it, any count."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as e:
        T.parse([*RUN, "--tasks-per-step", "3"])
    assert str(e.value) == ("error: --tasks-per-step 3 does not split evenly over the 2 processes torchrun started: "
                            "make it a multiple of 2")
    assert T.parse([*RUN, "--tasks-per-step", "6"]).tasks_per_step == 6
    monkeypatch.delenv("WORLD_SIZE")
    assert T.parse([*RUN, "--tasks-per-step", "3"]).tasks_per_step == 3
