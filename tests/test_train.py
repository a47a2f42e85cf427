"""train.py: the losses against slow references, the whole CLI on tiny budgets, DPO, resume after a kill."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT

import train as T

# ----------------------------------------------------------------------------------------------------------------
# losses vs slow references


def slow_pg_loss(logp, old, ref, adv, mask, clip_eps, kl_coef):
    num, den, kls, kln = 0.0, 0.0, 0.0, 0.0
    B, L = len(logp), len(logp[0])
    for i in range(B):
        for t in range(L):
            if mask[i][t] == 0:
                continue
            r = math.exp(logp[i][t] - old[i][t])
            a = adv[i]
            rc = min(max(r, 1 - clip_eps), 1 + clip_eps)
            pg = -min(r * a, rc * a)
            kl = 0.0
            if ref is not None:
                kl = math.exp(ref[i][t] - logp[i][t]) - (ref[i][t] - logp[i][t]) - 1
            num += pg + kl_coef * kl
            den += 1
            kls += kl
            kln += 1
    return num / den, kls / kln


@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_pg_loss_matches_slow_reference(kl_coef):
    g = torch.Generator().manual_seed(0)
    B, L = 5, 9
    logp = -torch.rand(B, L, generator=g) * 3
    old = logp + 0.3 * torch.randn(B, L, generator=g)  # ratios far from 1: the clip matters
    ref = logp + 0.2 * torch.randn(B, L, generator=g)
    adv = torch.tensor([1.5, -0.5, 0.0, -1.0, 0.7])
    mask = (torch.rand(B, L, generator=g) > 0.3).float()
    loss, kl = T.pg_loss(logp, old, ref, adv, mask, clip_eps=0.2, kl_coef=kl_coef)
    want, want_kl = slow_pg_loss(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), 0.2, kl_coef)
    assert loss.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert kl.item() == pytest.approx(want_kl, rel=1e-5, abs=1e-6)
    assert kl.item() >= 0


def test_pg_loss_gradient_direction():
    """Raising the log-prob of a positive-advantage trajectory lowers the loss; of a negative one, raises it."""
    logp = torch.full((2, 4), -1.0, requires_grad=True)
    mask = torch.ones(2, 4)
    loss, _ = T.pg_loss(logp, logp.detach(), None, torch.tensor([1.0, -1.0]), mask)
    loss.backward()
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()
    masked = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    logp.grad = None
    T.pg_loss(logp, logp.detach(), None, torch.tensor([1.0, -1.0]), masked)[0].backward()
    assert (logp.grad[0, 2:] == 0).all()  # masked tokens (tool output, prompt) get no gradient


def test_pg_loss_normalises_over_the_whole_batch():
    """Micro-batches with a shared token count sum to the loss of the full batch (gradient accumulation)."""
    g = torch.Generator().manual_seed(1)
    logp, adv, mask = -torch.rand(6, 5, generator=g), torch.randn(6, generator=g), (torch.rand(6, 5, generator=g) > .2)
    mask = mask.float()
    full, _ = T.pg_loss(logp, logp, None, adv, mask)
    n = mask.sum()
    parts = sum(T.pg_loss(logp[s:s + 2], logp[s:s + 2], None, adv[s:s + 2], mask[s:s + 2], n_tokens=n)[0]
                for s in range(0, 6, 2))
    assert parts.item() == pytest.approx(full.item(), rel=1e-6)


def test_dpo_loss_matches_formula_and_prefers_the_winner():
    lw, ll = torch.tensor([-10.0, -5.0], requires_grad=True), torch.tensor([-12.0, -4.0], requires_grad=True)
    rw, rl = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])
    loss = T.dpo_loss(lw, ll, rw, rl, beta=0.5)
    want = sum(-math.log(1 / (1 + math.exp(-0.5 * ((a - c) - (b - d)))))
               for a, b, c, d in zip([-10, -5], [-12, -4], [-11, -5], [-11, -5])) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    assert (lw.grad < 0).all() and (ll.grad > 0).all()


def test_collate_left_pads_and_aligns_masks():
    trajs = [{"ids": [5, 6, 7], "mask": [0, 1, 1], "logprobs": [0, -1.0, -2.0]},
             {"ids": [8, 9], "mask": [0, 1], "logprobs": [0, -3.0]}]
    ids, attn, mask, old = T.collate(trajs, pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 8, 9]]
    assert attn.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert mask.tolist() == [[1, 1], [0, 1]]  # shifted: mask[:, t] scores token t + 1
    assert old.tolist() == [[-1.0, -2.0], [0.0, -3.0]]


def test_sample_tasks_is_balanced_and_a_function_of_the_step():
    import envs
    by_cat = {c: [t for t in envs.make_split("train") if t["category"] == c] for c in envs.CATEGORIES}
    args = T.Args(tasks_per_step=8, seed=3)
    a, b = T.sample_tasks(by_cat, 5, args), T.sample_tasks(by_cat, 5, args)
    assert [t["id"] for t in a] == [t["id"] for t in b]
    assert sorted(t["category"] for t in a) == sorted(list(envs.CATEGORIES) * 2)
    assert [t["id"] for t in T.sample_tasks(by_cat, 6, args)] != [t["id"] for t in a]


# ----------------------------------------------------------------------------------------------------------------
# the real CLI, tiny budgets

QUICK = ["--sft-steps", "4", "--sft-batch", "4", "--steps", "2", "--tasks-per-step", "4", "--group-size", "2",
         "--max-new-tokens", "12", "--max-steps", "2", "--eval-episodes", "1", "--micro-batch", "4"]


def run_train(args, cli_env, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=cli_env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_cli_smoke(tmp_path, tiny_dir, cli_env):
    out = tmp_path / "run"
    r = run_train(["--preset", "tiny", "--model", tiny_dir, "--out", str(out), *QUICK], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["seconds"] > 0
    for when in ("before", "after"):
        for split in ("test", "ood"):
            m = summary[when][split]
            assert set(m) >= {"benign", "harmful", "injection", "privacy", "overall"}
            assert m["overall"]["n"] == 4
    log = [json.loads(l) for l in open(out / "log.jsonl")]
    assert [r["step"] for r in log] == [0, 1]
    assert {"loss", "reward_mean", "reward_std", "unsafe", "success", "kl", "tokens", "seconds"} <= set(log[0])
    assert (out / "curves.png").stat().st_size > 1000
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    from peft import PeftModel
    import model as M
    base, _ = M.load_base(str(out / "sft"))
    PeftModel.from_pretrained(base, str(out / "adapter"))  # loadable by peft as the contract says
    assert "before" in r.stdout and "after" in r.stdout  # the before/after table


def test_train_cli_dpo_and_scalar(tmp_path, tiny_dir, cli_env):
    out = tmp_path / "dpo"
    r = run_train(["--model", tiny_dir, "--out", str(out), "--loss", "dpo", "--reward", "scalar", *QUICK,
                   "--eval-episodes", "0"], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    log = [json.loads(l) for l in open(out / "log.jsonl")]
    assert len(log) == 2 and all(math.isfinite(x["loss"]) for x in log)


def test_train_cli_rejects_bad_flags(cli_env):
    for bad in (["--loss", "ppo"], ["--reward", "best"], ["--preset", "huge"], ["--group-size", "1"]):
        r = run_train(bad, cli_env, timeout=60)
        assert r.returncode != 0
        assert r.stderr.strip().splitlines()[-1].startswith("error:"), r.stderr
        assert "Traceback" not in r.stderr


def test_resume_after_kill_continues_the_same_run(tmp_path, tiny_dir, cli_env):
    common = ["--model", tiny_dir, *QUICK, "--steps", "4", "--save-every", "2", "--eval-episodes", "0"]
    ref = tmp_path / "ref"
    assert run_train([*common, "--out", str(ref)], cli_env).returncode == 0
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *common, "--out", str(out)], cwd=ROOT,
                         env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "ckpt" / "state.json"
    t0 = time.time()
    while not state.exists() and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert state.exists(), "the run never wrote a checkpoint"
    r = run_train([*common, "--out", str(out), "--resume"], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout
    a = [json.loads(l) for l in open(ref / "log.jsonl")]
    b = [json.loads(l) for l in open(out / "log.jsonl")]
    assert [x["step"] for x in b] == [0, 1, 2, 3]
    assert [x["task_ids"] for x in b] == [x["task_ids"] for x in a]  # same data order
    for x, y in zip(a, b):  # same samples and updates: the run continues as if never killed
        assert x["reward_mean"] == pytest.approx(y["reward_mean"], abs=1e-6)
