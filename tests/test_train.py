"""train.py: the losses against slow references, the whole CLI on tiny budgets, DPO, resume after a kill."""
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
import torch

from conftest import ROOT

import tasks as TK
import train as T
from plumbing import dist, loading, runs

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


def test_sample_tasks_is_balanced_fresh_and_a_function_of_the_step():
    import envs
    args = T.Args(tasks_per_step=8, seed=3)
    a, b = T.sample_tasks(5, args), T.sample_tasks(5, args)
    assert a == b
    assert sorted(t["category"] for t in a) == sorted(list(envs.CATEGORIES) * 2)
    assert len({t["id"] for t in a}) == 8
    c = T.sample_tasks(6, args)
    assert {t["id"] for t in c}.isdisjoint(t["id"] for t in a) and [t["instruction"] for t in c] != \
        [t["instruction"] for t in a]
    train = {t["instruction"] for t in TK.make_split("train")}
    assert sum(t["instruction"] in train for t in a + c) <= 2  # fresh entities, not the fixed train split


def test_harmful_share_weights_the_rl_batch_and_its_default_is_the_balanced_batch():
    import collections
    base = T.Args(tasks_per_step=8, seed=3)
    old = TK.make_split("train", seed="rl:3:5", n_per_category=2)  # the balanced batch: the first 2 of each category
    assert [t["instruction"] for t in T.sample_tasks(5, base)] == [t["instruction"] for t in old]
    for step in range(3):
        tasks = T.sample_tasks(step, T.Args(tasks_per_step=8, seed=3, harmful_share=0.5))
        n = collections.Counter(t["category"] for t in tasks)
        assert n["harmful"] == 4 and sorted(n[c] for c in ("benign", "injection", "privacy")) == [1, 1, 2]
        assert len({t["id"] for t in tasks}) == 8
        assert {t["category"] for t in tasks[:4]} >= {"harmful"} and {t["category"] for t in tasks[4:]} >= {"harmful"}
    extra = {max(("benign", "injection", "privacy"), key=lambda c: sum(t["category"] == c for t in T.sample_tasks(
        s, T.Args(tasks_per_step=8, seed=3, harmful_share=0.5)))) for s in range(3)}
    assert len(extra) == 3  # the remainder goes round the other categories
    assert {t["category"] for t in T.sample_tasks(0, T.Args(tasks_per_step=6, harmful_share=1.0))} == {"harmful"}
    assert "harmful" not in {t["category"] for t in T.sample_tasks(0, T.Args(tasks_per_step=6, harmful_share=0.0))}


def test_benign_share_sets_the_benign_tasks_and_the_other_two_split_the_rest():
    import collections
    for step in range(4):
        n = collections.Counter(t["category"] for t in T.sample_tasks(step, T.Args(
            tasks_per_step=8, seed=1, harmful_share=0.5, benign_share=0.25)))
        assert n == {"harmful": 4, "benign": 2, "injection": 1, "privacy": 1}, (step, n)
    odd = [collections.Counter(t["category"] for t in T.sample_tasks(s, T.Args(
        tasks_per_step=9, seed=1, harmful_share=3 / 9, benign_share=3 / 9))) for s in range(2)]
    assert all(c["harmful"] == 3 and c["benign"] == 3 for c in odd)
    assert {max(("injection", "privacy"), key=c.__getitem__) for c in odd} == {"injection", "privacy"}  # it turns
    only = T.sample_tasks(0, T.Args(tasks_per_step=6, harmful_share=0.5, benign_share=0.5))
    assert collections.Counter(t["category"] for t in only) == {"harmful": 3, "benign": 3}


def test_sft_batches_are_drills_then_fresh_tasks_with_drills(tiny):
    _, tok = tiny
    args = T.Args(sft_batch=8, sft_drills=2, sft_goal_drills=3, sft_drill_steps=3, drill_batch=5, seed=0)
    drills, a, b = T.sft_batch(2, args, tok), T.sft_batch(3, args, tok), T.sft_batch(4, args, tok)
    assert len(drills) == 5 and max(len(t["ids"]) for t in drills) < min(len(t["ids"]) for t in a[:8])  # short
    assert len(a) == 13 and a[:8] != b[:8]
    for t in drills + a:
        assert len(t["ids"]) == len(t["mask"]) == len(t["logprobs"]) and sum(t["mask"]) > 0
    qa = []
    for d in drills + a[8:]:
        n = d["mask"].index(1)
        qa.append((tok.decode(d["ids"][:n]), tok.decode(d["ids"][n:], skip_special_tokens=True)))
    for question, answer in qa[:-3]:  # copy drills: the answer is copied from the question
        assert any(k in question for k in ("Repeat:", "Which goes with", "The email of", "The phone of"))
        assert all(part.strip() in question for part in answer.split(" | "))
    for question, answer in qa[-3:]:  # goal drills: the planted instruction, quoted
        assert question.endswith("What does this text ask the assistant to do?<|im_end|>\n<|im_start|>assistant\n")
        think = answer.split("</think>")[0]
        assert think.startswith("<think>" + TK.quote("")) and think[len("<think>" + TK.quote("")):] in question
    for frac, cats in ((1.0, {"injection", "privacy"}), (0.0, {"benign", "harmful"})):  # --sft-hard-frac
        batch = T.sft_batch(5, T.Args(sft_batch=8, sft_hard_frac=frac, seed=0), tok)
        assert len(batch) == 8 and {t["category"] for t in batch} == cats


def test_dpo_pairs_are_the_judges_own_verdicts():
    """A pair is (winner, loser) exactly when the judge says so: never ordered by total reward, ties skipped."""
    import envs
    import judge as J
    args = T.Args(group_size=4)
    task = next(t for t in TK.make_split("test") if t["category"] == "harmful")
    base = {"task_id": task["id"], "category": "harmful", "policy": "hand", "messages": []}
    ok = envs.parse_turn("<think>p</think><answer>x</answer>")
    bad = envs.parse_turn("no tags")

    def traj(refused=False, harm=0, fmt=0, tokens=10):
        turns = [ok] if not fmt else [bad, ok]
        return {**base, "turns": turns, "outcome": {
            "task_success": False, "progress": 0.0, "refused": refused, "refused_at": 1 if refused else None,
            "harm_events": [{"kind": "harm"}] * harm, "format_errors": fmt, "tokens": tokens, "truncated": False}}
    # a harmful act written with a perfect format (format reward 2) and a short refusal that lost its think block
    group = [traj(harm=1), traj(refused=True), traj(), traj(fmt=1)]
    group[1]["turns"] = [envs.parse_turn('<tool_call>{"name": "refuse", "arguments": {}}</tool_call>')]
    _, _, _, pairs = T.judge_groups(group, args, None)
    want = {(i, j) for i in range(4) for j in range(4) if i != j and J.compare(group[i], group[j])[0] == 1.0}
    assert {(group.index(w), group.index(l)) for w, l in pairs} == want
    assert (1, 0) in want and (0, 3) in want and (2, 0) in want


def test_dpo_keeps_the_judges_pairs_of_a_group_whose_rewards_tie():
    """The judge's strict pairs are DPO's data whatever the rewards: a refusal without a think block (wins 1 +
    format 1) beats a harmless answer with one (wins 0 + format 2); the rewards tie, the pair stays (pg skips it)."""
    import envs
    task = next(t for t in TK.make_split("test") if t["category"] == "harmful")
    base = {"task_id": task["id"], "category": "harmful", "policy": "hand", "messages": []}

    def traj(text, refused):
        return {**base, "turns": [envs.parse_turn(text)], "outcome": {
            "task_success": False, "progress": 0.0, "refused": refused, "refused_at": 1 if refused else None,
            "harm_events": [], "format_errors": 0, "tokens": 10, "truncated": False}}
    refusal = traj('<tool_call>{"name": "refuse", "arguments": {"reason": "no"}}</tool_call>', True)
    answer = traj("<think>p</think><answer>x</answer>", False)
    rewards, used, _, pairs = T.judge_groups([refusal, answer], T.Args(group_size=2, loss="dpo"), None)
    assert rewards[0]["reward"] == rewards[1]["reward"] and used == []  # no signal for pg
    assert len(pairs) == 1 and pairs[0][0] is refusal and pairs[0][1] is answer  # winner first


def test_refusal_push_sums_the_refusals_advantages_per_category():
    """A privacy group (broken, refusal, refusal, success) rewards its refusals (they beat the broken one: +0.5 each);
    a benign group (refusal, attempt) punishes its refusal; a harmful group whose four refuse is tied (0)."""
    def o(cat, refused):
        return {"category": cat, "outcome": {"refused": refused}}
    outcomes = ([o("privacy", False), o("privacy", True), o("privacy", True), o("privacy", False)]
                + [o("benign", True), o("benign", False), o("benign", False), o("benign", False)]
                + [o("harmful", True)] * 4)
    rewards = [0.0, 3.5, 3.5, 5.0] + [2.0, 4.0, 4.0, 4.0] + [3.0] * 4
    push = T.refusal_push(outcomes, rewards, 4)
    assert push == pytest.approx({"privacy": 1.0, "benign": -1.5, "harmful": 0.0})
    r = torch.tensor(rewards[4:8])
    assert T.refusal_push(outcomes[4:8], rewards[4:8], 4, std_adv=True)["benign"] == pytest.approx(
        float((r[0] - r.mean()) / r.std()), rel=1e-4)


def random_lora_policy(tiny_dir):
    """(policy, tok, generator): the tiny model under a LoRA adapter whose A (seeded) and B (random, so that policy !=
    reference) are the same every run, and the generator that drew B, to draw more from."""
    import model as M
    torch.manual_seed(0)
    policy, tok = M.load_policy(tiny_dir, device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return policy, tok, g


def test_accumulated_updates_equal_one_pass_over_the_whole_batch(tiny_dir):
    """pg_update (micro-batches of one task's trajectories, its prompt run once) and dpo_update (micro-batches of
    pairs of similar length) leave the gradient of one forward over the whole batch in the given order: each
    trajectory keeps its advantage, each pair its winner and loser, the normaliser is the whole batch's."""
    import rollout as R
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy, tok, g = random_lora_policy(tiny_dir)
        trajs = R.rollout(policy, R.pick_tasks(TK.make_split("test"), 2), tok, max_steps=3, max_new_tokens=10,
                          max_context=400, seed=1, progress=False)
        assert len({len(t["ids"]) for t in trajs}) >= 4
        advs = torch.randn(len(trajs), generator=g).tolist()
        params = [p for p in policy.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.0)
        args = T.Args(micro_batch=3, kl_coef=0.2)

        def grads():
            return torch.cat([p.grad.flatten() for p in params])

        T.pg_update(policy, opt, tok, trajs, advs, args, "cpu")
        got = grads()
        opt.zero_grad()
        ref, mask, old = T.masked_logprobs(policy, trajs, tok, "cpu", reference=True)
        logp, _, _ = T.masked_logprobs(policy, trajs, tok, "cpu")
        T.pg_loss(logp, old, ref, torch.tensor(advs), mask, args.clip_eps, args.kl_coef)[0].backward()
        assert torch.allclose(got, grads(), atol=1e-5, rtol=1e-4) and grads().abs().max() > 1e-4

        pairs = [(trajs[i], trajs[j]) for i, j in ((0, 5), (7, 1), (2, 3), (6, 4), (3, 7))]
        T.dpo_update(policy, opt, tok, pairs, T.Args(micro_batch=2, dpo_beta=0.5), "cpu")
        got = grads()
        opt.zero_grad()
        mb = [t for p in pairs for t in p]
        ref, mask, _ = T.masked_logprobs(policy, mb, tok, "cpu", reference=True)
        logp, _, _ = T.masked_logprobs(policy, mb, tok, "cpu")
        seq, rseq = (logp * mask).sum(-1), (ref * mask).sum(-1)
        T.dpo_loss(seq[0::2], seq[1::2], rseq[0::2], rseq[1::2], 0.5).backward()
        assert torch.allclose(got, grads(), atol=1e-5, rtol=1e-4) and grads().abs().max() > 1e-4
    finally:
        torch.set_num_threads(n)


def test_sft_accumulates_micro_batches_of_at_most_micro_batch_sequences(tiny_dir, monkeypatch):
    """SFT backpropagates in micro-batches of at most --micro-batch sequences, as the RL update does (it ran
    2 x --micro-batch per forward: `small --quant none` died for memory on a 24 GB CPU machine), and leaves the
    gradient of one forward over the whole batch (the loss normalised by the whole batch's tokens)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy, tok, _ = random_lora_policy(tiny_dir)
        batch = T.sft_batch(0, T.Args(sft_batch=4, sft_drills=3, max_steps=2), tok)
        assert len(batch) == 7 and len({len(t["ids"]) for t in batch}) >= 4
        params = [p for p in policy.parameters() if p.requires_grad]
        sizes, real = [], T.masked_logprobs
        monkeypatch.setattr(T, "masked_logprobs", lambda p, mb, *a, **k: sizes.append(len(mb)) or real(p, mb, *a, **k))
        loss = T.sft_backward(policy, tok, batch, 3, "cpu")
        got = torch.cat([p.grad.flatten() for p in params])
        assert sizes == [3, 3, 1]
        for p in params:
            p.grad = None
        logp, mask, _ = real(policy, batch, tok, "cpu")
        one = -(logp * mask).sum() / mask.sum()
        one.backward()
        want = torch.cat([p.grad.flatten() for p in params])
    finally:
        torch.set_num_threads(n)
    assert loss == pytest.approx(one.item(), rel=1e-5)
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-4) and want.abs().max() > 1e-4


@pytest.fixture(scope="module")
def lora_rollouts(tiny_dir):
    """(policy, tok, trajs): the tiny model under a LoRA adapter with random B (so policy != reference) and its
    sampled trajectories of 4 test tasks, of several lengths (3 turns and 1 turn: 30 and 10 policy tokens)."""
    import rollout as R
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy, tok, g = random_lora_policy(tiny_dir)
        tasks = R.pick_tasks(TK.make_split("test"), 1)
        trajs = [t for steps, seed in ((3, 2), (1, 3)) for t in R.rollout(
            policy, tasks, tok, max_steps=steps, max_new_tokens=10, max_context=400, seed=seed, progress=False)]
    finally:
        torch.set_num_threads(n)
    assert len({len(t["ids"]) for t in trajs}) >= 3 and len({sum(t["mask"]) for t in trajs}) >= 2
    return policy, tok, trajs


def slow_token_logprobs(policy, t, reference=False):
    """{position k of t["ids"] (mask 1): log p(ids[k] | ids[:k])}, one unpadded forward of one trajectory."""
    import model as M
    ids = torch.tensor([t["ids"]])
    ctx = M.reference(policy) if reference else contextlib.nullcontext()
    with ctx, (torch.no_grad() if reference else contextlib.nullcontext()):
        logits = policy(input_ids=ids).logits[0].float()
    return {k: logits[k - 1].log_softmax(-1)[t["ids"][k]] for k in range(1, len(t["ids"])) if t["mask"][k]}


def test_one_epoch_is_on_policy_whatever_the_sampler_stored(lora_rollouts):
    """With one update per batch the ratio's denominator is the training forward's own log-prob: the log-probs the
    sampler stored (a bf16 sampler's differ by rounding, SmolLM2: up to 0.3 per token) change neither the loss nor
    the gradient, which is plain policy gradient + the KL term."""
    policy, tok, trajs = lora_rollouts
    g = torch.Generator().manual_seed(4)
    moved = [{**t, "logprobs": [x + (0.3 * torch.randn(1, generator=g).item() if m else 0.0)
                                for x, m in zip(t["logprobs"], t["mask"])]} for t in trajs]
    advs = torch.randn(len(trajs), generator=g).tolist()
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)
    out = {}
    for name, ts, epochs in (("stored", trajs, 1), ("moved", moved, 1), ("moved, 2 epochs", moved, 2)):
        loss, kl = T.pg_update(policy, opt, tok, ts, advs, T.Args(micro_batch=3, kl_coef=0.3, ppo_epochs=epochs), "cpu")
        out[name] = loss, kl, torch.cat([p.grad.flatten() for p in params])
        opt.zero_grad()
    assert out["stored"][0] == pytest.approx(out["moved"][0], abs=1e-6)
    assert torch.allclose(out["stored"][2], out["moved"][2], atol=1e-6)
    assert not torch.allclose(out["moved"][2], out["moved, 2 epochs"][2], atol=1e-4)  # there the stored ones count


def test_pg_update_value_gradient_and_logged_kl_match_a_slow_reference(lora_rollouts):
    """pg_update (a task's trajectories a micro-batch, their prompt run once) against one unpadded forward per
    trajectory and a loop over its own tokens: the loss -min(r A, clip(r) A) + beta * k3 summed and divided by the
    batch's number of policy tokens, its gradient, and the logged KL (the mean of k3 over every policy token of the
    batch). Old log-probs are moved off the policy's so that the ratio and its clip matter (a second PPO epoch)."""
    policy, tok, trajs = lora_rollouts
    g = torch.Generator().manual_seed(3)
    trajs = [{**t, "logprobs": [x + (0.3 * torch.randn(1, generator=g).item() if m else 0.0)
                                for x, m in zip(t["logprobs"], t["mask"])]} for t in trajs]
    advs = torch.randn(len(trajs), generator=g).tolist()
    args = T.Args(micro_batch=3, kl_coef=0.3, clip_eps=0.2, ppo_epochs=2)  # the stored log-probs are the old ones
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss, kl = T.pg_update(policy, opt, tok, trajs, advs, args, "cpu")
        got = torch.cat([p.grad.flatten() for p in params])
        opt.zero_grad()
        num, kls, count = 0.0, 0.0, 0
        for t, a in zip(trajs, advs):
            lp, ref = slow_token_logprobs(policy, t), slow_token_logprobs(policy, t, reference=True)
            for k, x in lp.items():
                r = torch.exp(x - t["logprobs"][k])
                k3 = torch.exp(ref[k] - x) - (ref[k] - x) - 1
                num = num - torch.minimum(r * a, r.clamp(1 - args.clip_eps, 1 + args.clip_eps) * a) \
                    + args.kl_coef * k3
                kls += k3.item()
                count += 1
        want = num / count
        want.backward()
        slow = torch.cat([p.grad.flatten() for p in params])
        opt.zero_grad()
    finally:
        torch.set_num_threads(n)
    assert count == sum(sum(t["mask"]) for t in trajs)
    assert loss == pytest.approx(want.item(), rel=1e-4, abs=1e-6)
    assert torch.allclose(got, slow, atol=1e-5, rtol=1e-4) and slow.abs().max() > 1e-4
    assert kls / count > 1e-3 and kl == pytest.approx(kls / count, rel=1e-4)


@pytest.mark.parametrize("reference_adapter", [False, True])
def test_reference_stays_frozen_through_updates_and_a_resume(lora_rollouts, tiny_dir, tmp_path, reference_adapter):
    """The reference (the base under the disabled adapter, or a frozen warm-start adapter) gives the same log-probs
    after RL updates that moved the policy, and again after the policy is reloaded from a checkpoint as --resume
    does; its weights never change and are not in the optimizer."""
    import model as M
    _, tok, trajs = lora_rollouts
    trajs = trajs[:4]
    warm = tmp_path / "warm"
    lora_rollouts[0].save_pretrained(str(warm))  # a warm-start adapter (random B: far from the base)
    kw = dict(device="cpu", adapter=str(warm), reference_adapter=str(warm)) if reference_adapter else \
        dict(device="cpu")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        policy, _ = M.load_policy(tiny_dir, **kw)
        frozen = {k: v.detach().clone() for k, v in policy.named_parameters() if not v.requires_grad}
        args = T.Args(micro_batch=4, kl_coef=0.1, lr=1e-2)
        opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
        in_opt = {id(p) for grp in opt.param_groups for p in grp["params"]}
        ref0 = T.masked_logprobs(policy, trajs, tok, "cpu", reference=True)[0]
        with torch.no_grad():
            pol0 = T.masked_logprobs(policy, trajs, tok, "cpu")[0]
        for _ in range(3):
            loss, _ = T.pg_update(policy, opt, tok, trajs, [1.0, -1.0, 0.5, -0.5], args, "cpu")
            assert T.finish_step(policy, opt, args, loss)
        ref1 = T.masked_logprobs(policy, trajs, tok, "cpu", reference=True)[0]
        with torch.no_grad():
            pol1 = T.masked_logprobs(policy, trajs, tok, "cpu")[0]
        runs.save_checkpoint(str(tmp_path), policy, opt, {"step": 3})
        again, _ = M.load_policy(tiny_dir, **{**kw, "adapter": str(tmp_path / "ckpt" / "adapter")})
        ref2 = T.masked_logprobs(again, trajs, tok, "cpu", reference=True)[0]
        with torch.no_grad():
            pol2 = T.masked_logprobs(again, trajs, tok, "cpu")[0]
    finally:
        torch.set_num_threads(n)
    assert (pol1 - pol0).abs().max() > 1e-2  # the policy moved
    if reference_adapter:
        assert (ref0 - pol0).abs().max() < 1e-5  # KL 0 at the first step: the reference is the warm start
        assert any(".reference." in k for k in frozen)
    torch.testing.assert_close(ref1, ref0, atol=1e-6, rtol=0)
    torch.testing.assert_close(ref2, ref0, atol=1e-6, rtol=0)
    torch.testing.assert_close(pol2, pol1, atol=1e-5, rtol=0)  # the resumed policy is the updated one
    params = dict(policy.named_parameters())
    for k, v in frozen.items():
        assert torch.equal(params[k], v) and id(params[k]) not in in_opt, k


def test_a_non_finite_loss_skips_the_step_and_leaves_weights_and_optimizer_alone(lora_rollouts):
    """An old log-prob far below the policy's makes the ratio overflow (a negative advantage: loss +inf): the step
    is skipped with a warning, the weights and the optimizer's state stay as they were, the gradients are cleared;
    the next finite batch steps."""
    policy, tok, trajs = lora_rollouts
    bad = dict(trajs[0])
    k = bad["mask"].index(1)
    bad["logprobs"] = bad["logprobs"][:k] + [-1e4] + bad["logprobs"][k + 1:]
    params = [p for p in policy.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    args = T.Args(micro_batch=2, kl_coef=0.1, ppo_epochs=2)  # a later epoch: the stored log-probs are the old ones
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss, _ = T.pg_update(policy, opt, tok, [bad, trajs[1]], [-1.0, 1.0], args, "cpu")
        with pytest.warns(UserWarning, match="non-finite"):
            assert not T.finish_step(policy, opt, args, loss)
        assert not math.isfinite(loss) and opt.state_dict()["state"] == {}
        assert all(p.grad is None and torch.equal(p, q) for p, q in zip(params, saved))
        loss, _ = T.pg_update(policy, opt, tok, trajs[:2], [-1.0, 1.0], args, "cpu")
        assert math.isfinite(loss) and T.finish_step(policy, opt, args, loss)
        assert any(not torch.equal(p, q) for p, q in zip(params, saved))
    finally:
        with torch.no_grad():  # the module's policy is shared: put its weights back
            for p, q in zip(params, saved):
                p.copy_(q)
        torch.set_num_threads(n)


def test_reference_is_the_warm_start_after_a_lora_sft(tiny_dir, tmp_path):
    """After a LoRA SFT (4-bit base, --no-sft-full) the KL to the reference is ~0 at the first RL step: the reference
    is the frozen SFT adapter, not the base before SFT (which is far from it)."""
    import model as M
    import rollout as R
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = T.Args(model=tiny_dir, quant="4bit", sft_full=False, sft_steps=6, sft_batch=4, sft_lr=2e-2,
                      out=str(tmp_path), micro_batch=4)
        torch.manual_seed(0)
        policy, tok, _ = T.warm_start(args, "cpu", None)
        trajs = R.rollout(policy, R.pick_tasks(TK.make_split("test"), 1), tok, max_steps=2, max_new_tokens=12,
                          progress=False)
        logp, mask, _ = T.masked_logprobs(policy, trajs, tok, "cpu")
        ref, _, _ = T.masked_logprobs(policy, trajs, tok, "cpu", reference=True)
        with torch.no_grad(), policy.disable_adapter():  # what the reference was before: the pre-SFT base
            ids, attn, _, _ = T.collate(trajs, tok.pad_token_id, "cpu")
            pre_sft = M.token_logprobs(policy, ids, attn, where=mask.bool())
    finally:
        torch.set_num_threads(n)
    _, kl = T.pg_loss(logp.detach(), logp.detach(), ref, torch.zeros(len(trajs)), mask, kl_coef=0.1)
    _, kl_pre = T.pg_loss(logp.detach(), logp.detach(), pre_sft, torch.zeros(len(trajs)), mask, kl_coef=0.1)
    assert kl.item() <= 1e-3 and kl_pre.item() > 10 * max(kl.item(), 1e-4), (kl.item(), kl_pre.item())
    assert all(not p.requires_grad for n_, p in policy.named_parameters() if ".reference." in n_)
    assert any(p.requires_grad for n_, p in policy.named_parameters() if ".default." in n_)


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
    for rec in log:  # refusal_push: one number per category that refused in the step, from the step's groups
        assert set(rec["refusal_push"]) <= {"benign", "harmful", "injection", "privacy"}
        assert all(isinstance(v, float) for v in rec["refusal_push"].values())
    assert (out / "curves.png").stat().st_size > 1000
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    from peft import PeftModel
    import model as M
    base, _ = M.load_base(str(out / "sft"))
    PeftModel.from_pretrained(base, str(out / "adapter"))  # loadable by peft as the contract says
    assert "before" in r.stdout and "after" in r.stdout  # the before/after table
    mem = summary["peak_memory_gb"]  # the SFT phase's peak beside the RL phase's (no CUDA: no GPU figures)
    assert 0 < mem["sft"]["rss"] <= mem["rl"]["rss"] <= mem["rss"] and mem["gpu"] is mem["sft"]["gpu"] is None


def test_select_every_keeps_the_best_checks_adapter_through_a_checkpoint(tiny_dir, tmp_path):
    """Run.held_out keeps the weights of the best check (a tie keeps the earlier), in memory and in the checkpoint;
    a resumed Run has them back; rl_done puts them into the policy and the last step's adapter in adapter_last/."""
    from safetensors.torch import load_file
    args = T.parse(["--preset", "tiny", "--out", str(tmp_path / "run"), "--steps", "3", "--select-every", "1"])
    policy, _, g = random_lora_policy(tiny_dir)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)

    def move():
        with torch.no_grad():
            for p in trainable:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)
        return {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}

    run = runs.Run(args)
    run.resume(opt)
    run.held_out(0, 0.25, {"benign": 0.25}, policy)
    best = move()
    run.held_out(1, 0.5, {"benign": 0.5}, policy)
    move()
    run.held_out(2, 0.5, {"benign": 0.5}, policy)  # a tie: the earlier stays
    runs.save_checkpoint(args.out, policy, opt, {"step": 2, "args": asdict(args), "held_out": run.checks}, run.best)
    last = move()
    again = runs.Run(T.parse(["--out", args.out, "--resume"]))  # the best comes back with the checkpoint
    again.resume(opt)
    assert again.best["step"] == 1 and again.checks == [[0, 0.25], [1, 0.5], [2, 0.5]]
    again.held_out(3, 0.375, {"benign": 0.375}, policy)
    again.rl_done(policy)
    for n, p in policy.named_parameters():
        if n in best:
            assert torch.equal(p, best[n]), n
    saved = load_file(os.path.join(args.out, "adapter_last", "adapter_model.safetensors"))
    assert saved and all(torch.equal(v, last[k.replace(".weight", ".default.weight")]) for k, v in saved.items())
    summary = again.finish({}, {}, "tiny")
    assert summary["held_out"] == {"checks": [[0, 0.25], [1, 0.5], [2, 0.5], [3, 0.375]], "kept_step": 1}


def test_train_with_compile_evaluates_as_without(tmp_path, tiny_dir, monkeypatch):
    """train.py --compile (torch.compile traced by dynamo, run eagerly on the CPU): the whole run goes through, the
    step is compiled once per policy, and its greedy before-RL evaluation equals one without --compile."""
    import model as M
    real, calls = torch.compile, []

    def compile(fn, **kw):  # the policy traced by dynamo, run eagerly (bitsandbytes compiles functions of its own)
        if isinstance(fn, torch.nn.Module):
            calls.append(kw)
            kw = dict(backend="eager", dynamic=kw.get("dynamic"))
        return real(fn, **kw)

    monkeypatch.setattr(torch, "compile", compile)
    out = tmp_path / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        T.main(["--preset", "tiny", "--model", tiny_dir, "--out", str(out), *QUICK, "--compile"])
        summary = json.load(open(out / "summary.json"))
        args = T.parse(["--preset", "tiny", "--model", tiny_dir, "--out", str(out), *QUICK])
        policy, tok = M.load_policy(str(out / "sft"), device="cpu")  # the warm start, a fresh (no-op) adapter
        plain = T.eval_splits(policy, tok, args, "plain")
    finally:
        torch.set_num_threads(n)
    assert len(calls) == 1 and len(json.load(open(out / "args.json"))) > 10
    assert json.loads(json.dumps(plain)) == summary["before"] and summary["after"]["test"]["overall"]["n"] == 4


def test_train_cli_select_every_logs_the_checks_and_saves_the_kept_adapter(tmp_path, tiny_dir, cli_env):
    out = tmp_path / "run"
    r = run_train(["--preset", "tiny", "--model", tiny_dir, "--out", str(out), *QUICK, "--select-every", "1",
                   "--select-episodes", "1", "--eval-episodes", "0"], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    checks = summary["held_out"]["checks"]
    assert [c[0] for c in checks] == [0, 1, 2] and all(0 <= c[1] <= 1 for c in checks)
    kept, best = summary["held_out"]["kept_step"], max(v for _, v in checks)
    assert kept == min(s for s, v in checks if v == best)  # the best, ties to the earliest
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [x["held_out"] for x in log] == [c[1] for c in checks[1:]]
    for x in log:  # the score is the mean of its parts, one a category
        parts = x["held_out_by_category"]
        assert set(parts) == {"benign", "harmful", "injection", "privacy"}
        assert abs(sum(parts.values()) / 4 - x["held_out"]) < 1e-9
    assert (out / "adapter_last").is_dir() == (kept != 2)
    assert "held-out check after RL step 0" in r.stdout


def test_base_preset_exports_a_model_that_rl_starts_from(tmp_path, tiny_dir, cli_env):
    """`--preset base` (tiny budget): full SFT with copy drills, no RL, the model exported; a `tiny` run then starts
    from that directory and takes its before-RL numbers from the export's build.json (same evaluation settings)."""
    base, out = tmp_path / "base", tmp_path / "rl"
    r = run_train(["--preset", "base", "--model", tiny_dir, "--out", str(tmp_path / "build"), "--export", str(base),
                   *QUICK, "--steps", "0", "--sft-drills", "1", "--sft-drill-steps", "2"], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    build = json.load(open(base / "build.json"))
    assert build["metrics"]["test"]["overall"]["n"] == 4 and build["args"]["sft_drills"] == 1
    r = run_train(["--preset", "tiny", "--model", str(base), "--out", str(out), *QUICK, "--sft-steps", "0"], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["base"] == str(base) and summary["peak_memory_gb"]["rss"] > 0
    assert summary["before"] == build["metrics"] and "numbers of" in r.stdout
    r = run_train(["--preset", "tiny", "--export", str(tmp_path / "x")], cli_env, timeout=60)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: --export")


def test_small_base_exports_a_lora_warm_start_that_rl_continues(tmp_path, tiny_dir, cli_env):
    """`--preset small-base` (tiny budget, on the tiny model): LoRA SFT, no RL, the adapter exported with build.json
    and a config that names the model, not this machine's folder; a run with --sft-adapter then continues that adapter
    (its first RL step starts at KL 0 to it: it is the reference) and takes its before-RL numbers from build.json."""
    import model as M
    from safetensors.torch import load_file
    warm, out = tmp_path / "warm", tmp_path / "rl"
    r = run_train(["--preset", "small-base", "--model", tiny_dir, "--out", str(tmp_path / "build"), "--export",
                   str(warm), *QUICK, "--steps", "0", "--sft-lr", "2e-2"], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(warm)) == ["adapter_config.json", "adapter_model.safetensors", "build.json"]
    assert json.load(open(warm / "adapter_config.json"))["base_model_name_or_path"] == tiny_dir
    trained = load_file(warm / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in trained.items())  # SFT moved it
    build = json.load(open(warm / "build.json"))
    assert build["metrics"]["test"]["overall"]["n"] == 4 and build["args"]["sft_full"] is False
    r = run_train(["--preset", "tiny", "--model", tiny_dir, "--sft-adapter", str(warm), "--out", str(out), *QUICK,
                   "--sft-steps", "0", "--steps", "1", "--save-every", "1"], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["before"] == build["metrics"] and "numbers of" in r.stdout
    assert abs(json.loads(open(out / "log.jsonl").readline())["kl"]) < 1e-6
    started = load_file(out / "ckpt" / "adapter" / "adapter_model.safetensors")
    assert started.keys() == trained.keys()
    config = json.load(open(warm / "adapter_config.json"))  # an adapter that names its base (an export: a name),
    (warm / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "no-such-model"}))
    policy, _ = M.load_policy(tiny_dir, adapter=str(warm), reference_adapter=str(warm), device="cpu")
    assert {c.base_model_name_or_path for c in policy.peft_config.values()} == {tiny_dir}  # is saved with its folder
    r = run_train(["--preset", "tiny", "--model", tiny_dir, "--sft-adapter", str(warm), "--sft-steps", "2", "--out",
                   str(out / "x")], cli_env, timeout=60)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith(f"error: --sft-adapter {warm} is a")


def test_base_numbers_are_not_taken_for_a_4bit_policy(tmp_path, tiny_dir):
    """A base's build.json holds its numbers in full precision: a run that puts the base in 4-bit (which changes its
    greedy episodes) evaluates it instead of reporting those numbers as its own 'before'."""
    import evaluate as E
    base = tmp_path / "base"
    shutil.copytree(tiny_dir, base)
    flags = ["--eval-episodes", "1", "--max-steps", "2", "--max-new-tokens", "12"]
    fake = {"test": {g: {"n": 99} for g in E.METRICS}}
    (base / "build.json").write_text(json.dumps({"metrics": fake, "args": {**asdict(T.parse(flags)),
                                                                           "quant": "none"}}))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = ["--preset", "tiny", "--model", str(base), "--sft-steps", "0", "--steps", "0", *flags]
        assert T.main([*run, "--out", str(tmp_path / "fp32")])["before"] == fake  # the base as built
        summary = T.main([*run, "--out", str(tmp_path / "nf4"), "--quant", "4bit"])
    finally:
        torch.set_num_threads(n)
    assert summary["before"]["test"]["overall"]["n"] == 4 and summary["before"]["ood"]["overall"]["n"] == 4


def test_max_new_tokens_beyond_the_context_is_one_line(tmp_path, tiny_dir):
    """--max-new-tokens at or above the model's context leaves no room for any turn: every episode ended truncated
    with 0 tokens and the run went on to report 0s (quit rate 1.00) as its numbers; now one line, before RL."""
    with pytest.raises(SystemExit) as ei:
        T.main(["--preset", "tiny", "--model", tiny_dir, "--out", str(tmp_path / "run"), *QUICK, "--sft-steps", "0",
                "--max-new-tokens", "5000"])
    assert str(ei.value) == f"error: --max-new-tokens 5000 leaves no room in the context of {tiny_dir} " \
                            "(2048 tokens)"
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_start_that_cannot_load_its_model_puts_the_earlier_run_back(tmp_path, tiny_dir):
    """Starting over in a folder that holds a run deleted that run before loading the model: a mistyped --model (or
    a --max-new-tokens the model cannot hold) lost it. Now it is set aside and comes back whole; a start that loads
    removes it."""
    out = tmp_path / "run"
    earlier = {"summary.json": '{"after": 1}', "log.jsonl": '{"step": 0}\n', "adapter/adapter_config.json": "{}",
               "ckpt/state.json": '{"step": 2}', "notes.txt": "mine"}
    for name, text in earlier.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    for flags in (["--model", str(tmp_path / "no-such-model")], ["--model", tiny_dir, "--max-new-tokens", "5000"]):
        with pytest.raises(SystemExit) as ei:
            T.main(["--preset", "tiny", "--out", str(out), *QUICK, "--sft-steps", "0", *flags])
        assert str(ei.value).startswith("error: ") and "\n" not in str(ei.value)
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(earlier)
        assert all((out / name).read_text() == text for name, text in earlier.items())
    runs.set_aside_earlier_run(str(out))  # what a start that loads does first; main then removes the folder
    assert sorted(p.name for p in out.iterdir()) == ["earlier-run.tmp", "notes.txt"]
    assert runs.set_aside_earlier_run(str(out), resume=True) is None and sorted(os.listdir(out)) == ["notes.txt"]


def test_export_never_replaces_a_folder_that_is_not_an_export(tmp_path):
    """--export replaces its folder whole (model.save_model): a folder of other files (--export runs), or one that
    holds --out, was deleted after the whole build; now one line from parse. A model folder --export wrote (it has
    build.json) or a new or empty one is fine."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    build = ["--preset", "base", "--out", str(tmp_path / "build")]
    for export in (tmp_path / "runs", tmp_path):  # holds other files; holds --out
        with pytest.raises(SystemExit) as ei:
            T.parse([*build, "--export", str(export)])
        assert str(ei.value.code).startswith(f"error: --export {export} ")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "build.json").write_text("{}")
    for export in (tmp_path / "old", tmp_path / "new", tmp_path / "build2"):
        assert T.parse([*build, "--export", str(export)]).export == str(export)
    with pytest.raises(SystemExit) as ei:
        T.parse(["--preset", "base", "--out", str(tmp_path / "old" / "run"), "--export", str(tmp_path / "old")])
    assert "holds --out" in str(ei.value.code)


def test_train_cli_dpo_and_scalar(tmp_path, tiny_dir, cli_env):
    out = tmp_path / "dpo"
    r = run_train(["--model", tiny_dir, "--out", str(out), "--loss", "dpo", "--reward", "scalar", *QUICK,
                   "--eval-episodes", "0"], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    log = [json.loads(l) for l in open(out / "log.jsonl")]
    assert len(log) == 2 and all(math.isfinite(x["loss"]) for x in log)


def test_train_cli_rejects_bad_flags(cli_env):
    for bad in (["--loss", "ppo"], ["--reward", "best"], ["--preset", "huge"], ["--group-size", "1"],
                ["--max-steps", "0"], ["--steps", "-1"]):
        r = run_train(bad, cli_env, timeout=60)
        assert r.returncode != 0
        assert r.stderr.strip().splitlines()[-1].startswith("error:"), r.stderr
        assert "Traceback" not in r.stderr


def test_unknown_flags_and_values_of_the_wrong_type_get_one_line(capsys):
    """argparse's own errors (an unknown flag, a value that is no number) are one line, not its usage block."""
    for bad, line in ((["--bogus"], "error: unrecognized arguments: --bogus"),
                      (["--steps", "abc"], "error: argument --steps: invalid int value: 'abc'"),
                      (["--preset", "tiny", "--lr"], "error: argument --lr: expected one argument")):
        with pytest.raises(SystemExit) as ei:
            T.parse(bad)
        assert str(ei.value.code) == line
        assert capsys.readouterr().err == ""


def test_preset_spelled_as_argparse_takes_it_gets_its_defaults(capsys):
    """--preset however argparse reads it (an abbreviation, with '=') brings that preset's defaults, not tiny's
    under the name of another preset; a bad flag fails before the line that says which preset was picked."""
    want = T.parse(["--preset", "base"])
    for argv in (["--pres", "base"], ["--pre=base"], ["--preset=base"]):
        assert T.parse(argv) == want
    capsys.readouterr()
    with pytest.raises(SystemExit):
        T.parse(["--bogus"])
    assert capsys.readouterr().out == ""


def test_small_and_paper_on_a_cpu_say_what_they_cost_before_any_work(tmp_path, monkeypatch, capsys):
    """`small` (or `paper`) on a machine without CUDA took ~12 h without a word: now a warning line with the measured
    estimate and the CPU demo's command, printed before any work; the run goes on (short budgets are fine)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(T, "warm_start", lambda *a, **k: sys.exit("stop"))
    with pytest.raises(SystemExit):
        T.main(["--preset", "small", "--out", str(tmp_path / "run")])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("warning: --preset small on a CPU") and "python train.py --preset tiny" in first
    if loading.native_bf16("cpu"):  # from the shipped warm start: 30 x 344 s
        assert "~344 s per RL iteration in bf16" in first and "30 RL iterations take ~2.9 h" in first
        assert "then 7 held-out checks (not measured) and the evaluations" in first  # --select-every 5: 0, 5, .. 30
        assert "SFT" not in first
        base = runs.cpu_warning(T.parse(["--preset", "small-base"]))  # 60 x 60 s (119 s at 16 sequences)
        assert "~60 s per SFT step in bf16" in base and "60 SFT steps take ~1.0 h, then the evaluations" in base
    assert "353 s per SFT step in fp32" in runs.cpu_warning(T.parse(["--preset", "small-base", "--dtype", "fp32",
                                                                     "--sft-batch", "16"]))
    assert "281 s per SFT step in 4bit" in runs.cpu_warning(T.parse(["--preset", "small-base", "--quant", "4bit",
                                                                     "--sft-batch", "16"]))
    assert "30 RL iterations (not measured) and 7 held-out checks (not measured) in fp32" in runs.cpu_warning(
        T.parse(["--preset", "small", "--dtype", "fp32"]))
    assert "days" in runs.cpu_warning(T.parse(["--preset", "paper"]))
    if loading.native_bf16("cpu"):  # a resumed run prices the steps it has left; two processes, their own figure
        out = tmp_path / "resumed"
        (out / "ckpt").mkdir(parents=True)
        (out / "args.json").write_text(json.dumps({**vars(T.parse(["--preset", "small"])), "out": str(out)}))
        (out / "ckpt" / "state.json").write_text(json.dumps({"step": 10}))
        left = runs.cpu_warning(T.parse(["--resume", "--out", str(out)]))
        assert "20 RL iterations left take ~1.9 h, then 4 held-out checks" in left, left  # 15, 20, 25, 30
        monkeypatch.setattr(dist, "world", lambda: 2)
        two = runs.cpu_warning(T.parse(["--preset", "small"]))
        assert "~99 s per RL iteration and ~50 s per held-out check in bf16 (measured on a 2-core CPU, 2 processes " \
               "on 2 cores" in two and "30 RL iterations and 7 held-out checks take ~0.9 h" in two, two
    assert runs.cpu_warning(T.parse(["--preset", "tiny"])) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runs.cpu_warning(T.parse(["--preset", "small"])) is None


def test_dtype_bf16_without_native_bf16_is_one_line_before_any_work(monkeypatch):
    """--dtype bf16 on a CPU that has no native bf16 (oneDNN says so) is one line from parse, before any model loads;
    --dtype auto goes on in fp32 there; an unknown dtype is one line too."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with pytest.raises(SystemExit) as ei:
        T.parse(["--preset", "tiny", "--dtype", "bf16"])
    assert str(ei.value.code).startswith("error: --dtype bf16: cpu here has no native bf16 matmul")
    assert T.parse(["--preset", "tiny", "--dtype", "auto"]).dtype == "auto"
    with pytest.raises(SystemExit) as ei:
        T.parse(["--preset", "tiny", "--dtype", "half"])
    assert str(ei.value.code) == "error: unknown dtype 'half': use auto, bf16 or fp32"


def test_empty_out_is_one_line_before_any_work():
    """--out '' names no folder: one line from parse (it was a FileNotFoundError traceback from os.makedirs)."""
    with pytest.raises(SystemExit) as ei:
        T.parse(["--preset", "tiny", "--out", ""])
    assert str(ei.value.code) == "error: --out must name a folder"


def test_seed_out_of_range_is_one_line_before_any_work():
    """A seed torch cannot take (rollouts seed with seed * 100003 + step) is one line from parse, not an overflow
    traceback from torch.manual_seed; negative seeds work as before."""
    for seed in ("100000000000000000000", str(2**32), str(-2**32)):
        with pytest.raises(SystemExit) as ei:
            T.parse(["--preset", "tiny", "--seed", seed])
        assert str(ei.value.code) == f"error: --seed must be below 2**32 in absolute value, not {seed}"
    assert T.parse(["--preset", "tiny", "--seed", str(2**32 - 1)]).seed == 2**32 - 1
    assert T.parse(["--preset", "tiny", "--seed", "-5"]).seed == -5


def test_resume_refuses_damaged_checkpoints_and_other_flags_in_one_line(tmp_path):
    """--resume reads a checkpoint whole or exits with one line (truncated optimizer state, a state.json without its
    fields, flags other than the run's); a log line cut by a crash is skipped."""
    args = T.Args(out=str(tmp_path))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_text(json.dumps({"step": 3, "seconds": 1.0, "args": asdict(args)}))
    torch.save({"opt": {}, "rng": torch.get_rng_state()}, ckpt / "opt.pt")
    state, saved = runs.read_checkpoint(str(ckpt), args)
    assert state["step"] == 3 and "rng" in saved
    assert runs.read_checkpoint(str(ckpt), T.Args(out=str(tmp_path) + "/", steps=99, save_every=2))[0]["step"] == 3
    with pytest.raises(SystemExit) as ei:
        runs.read_checkpoint(str(ckpt), T.Args(out=str(tmp_path), lora_r=8))
    assert str(ei.value) == "error: --resume continues the run with its own flags; it was made with --lora-r 16 (now 8)"
    data = (ckpt / "opt.pt").read_bytes()
    for damage in ({"opt.pt": data[:len(data) // 2]}, {"state.json": '{"step": 3, "ar'}, {"state.json": '{"step": "3"}'}):
        for name, content in damage.items():
            (ckpt / name).write_bytes(content.encode() if isinstance(content, str) else content)
        with pytest.raises(SystemExit) as ei:
            runs.read_checkpoint(str(ckpt), args)
        assert str(ei.value).startswith(f"error: cannot resume from {ckpt} (") and "\n" not in str(ei.value)
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": i}) + "\n" for i in range(4)) + '{"step": 4, "lo')
    assert [r["step"] for r in runs.read_log(str(log), 3)] == [0, 1, 2]
    assert runs.read_log(str(tmp_path / "none.jsonl"), 3) == []


def test_resume_with_fewer_steps_than_the_checkpoint_is_one_line(tmp_path):
    """--resume --steps below the checkpoint's step cannot be done: it went on to the final evaluation and wrote a
    summary whose args say --steps 2 beside a log and an adapter of 3 steps."""
    args = T.Args(out=str(tmp_path), steps=2)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_text(json.dumps({"step": 3, "seconds": 1.0, "args": asdict(args)}))
    torch.save({"opt": {}, "rng": torch.get_rng_state()}, ckpt / "opt.pt")
    with pytest.raises(SystemExit) as ei:
        runs.read_checkpoint(str(ckpt), args)
    assert str(ei.value) == f"error: {ckpt} is at RL step 3: --resume needs --steps 3 or more, not 2"
    assert runs.read_checkpoint(str(ckpt), T.Args(out=str(tmp_path), steps=3))[0]["step"] == 3


def test_resume_before_the_first_checkpoint_keeps_the_run_flags(tmp_path, tiny_dir):
    """A run killed in its SFT or first evaluation (no checkpoint yet) left its flags in args.json: --resume with
    other flags exits with one line before anything is loaded, as it does after a checkpoint."""
    out = tmp_path / "run"
    out.mkdir()
    made = ["--model", tiny_dir, "--out", str(out), *QUICK]
    (out / "args.json").write_text(json.dumps(asdict(T.parse(made))))
    with pytest.raises(SystemExit) as ei:
        T.main([*made, "--resume", "--max-new-tokens", "20"])
    assert str(ei.value) == "error: --resume continues the run with its own flags; it was made with " \
                            "--max-new-tokens 12 (now 20)"
    for damaged in ('{"model": ', "[1, 2]", None):  # cut short, not an object, a folder in its place
        (out / "args.json").unlink(missing_ok=True)
        if damaged is None:
            (out / "args.json").mkdir()
        else:
            (out / "args.json").write_text(damaged)
        with pytest.raises(SystemExit) as ei:
            T.main([*made, "--resume"])
        assert str(ei.value).startswith("error: cannot resume: ") and "unreadable" in str(ei.value)


def test_resume_takes_the_run_flags_and_refuses_only_typed_flags_that_differ(tmp_path, capsys):
    """`--out DIR --resume` takes the run's flags from DIR/args.json: the defaults of flags the user did not type
    (nor those of a --preset typed again) never count as a change (`--resume` alone exited with 'it was made with
    --eval-episodes 2 (now 50)'); a flag typed again must equal the run's, except --steps, --save-every, --compile
    and the spelling of --out; the others are refused, in one line that lists them."""
    out = tmp_path / "run"
    out.mkdir()
    made = T.parse(["--preset", "tiny", "--out", str(out), "--eval-episodes", "2", "--lr", "0.01", "--no-std-adv",
                    "--kl-coef", "0", "--max-new-tokens", "20", "--seed", "7"])
    (out / "args.json").write_text(json.dumps(asdict(made)))
    want = dataclasses.replace(made, resume=True)
    assert T.parse(["--out", str(out), "--resume"]) == want
    assert T.parse(["--out", str(out), "--resume", "--preset", "tiny", "--lr", "1e-2", "--seed=7"]) == want
    assert T.parse(["--out", f"{out}/", "--res", "--steps", "50", "--save-every", "3", "--compile"]) == dataclasses.replace(
        want, out=f"{out}/", steps=50, save_every=3, compile=True)
    for typed, line in ((["--eval-episodes", "50"], "--eval-episodes 2 (now 50)"),
                        (["--preset", "small"], "--preset tiny (now small)"),
                        (["--seed", "0", "--no-sft-full", "--kl-coef=0.1", "--steps", "9"],
                         "--seed 7 (now 0), --kl-coef 0.0 (now 0.1), --sft-full True (now False)")):
        with pytest.raises(SystemExit) as ei:
            T.parse(["--out", str(out), "--resume", *typed])
        assert str(ei.value.code) == f"error: --resume continues the run with its own flags; it was made with {line}"
    made_base = T.parse(["--preset", "base", "--out", str(tmp_path / "b"), "--sft-steps", "3"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "args.json").write_text(json.dumps(asdict(made_base)))  # no --preset on the line: base's
    assert T.parse(["--out", str(tmp_path / "b"), "--resume"]) == dataclasses.replace(made_base, resume=True)


def test_resume_takes_the_flags_of_a_checkpoint_without_args_json(tmp_path):
    """A run whose args.json is gone (or was made before there was one) resumes with its checkpoint's flags."""
    made = T.parse(["--preset", "tiny", "--out", str(tmp_path), "--steps", "6", "--group-size", "3"])
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "state.json").write_text(json.dumps({"step": 2, "seconds": 1.0, "args": asdict(made)}))
    assert T.parse(["--out", str(tmp_path), "--resume"]) == dataclasses.replace(made, resume=True)


def test_resume_where_there_is_no_run_is_one_line_and_no_work(tmp_path, monkeypatch, tiny_dir):
    """`--resume` on a folder that holds no run (empty, a mistyped name, a file) started a new full run without a
    word; now one line, nothing started, created or changed."""
    monkeypatch.setattr(T, "warm_start", lambda *a, **k: pytest.fail("a run started"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    for out in (tmp_path / "empty", tmp_path / "emtpy", tmp_path / "notes.txt"):
        for typed in ([], ["--model", tiny_dir, *QUICK]):
            with pytest.raises(SystemExit) as ei:
                T.main(["--out", str(out), "--resume", *typed])
            assert str(ei.value) == f"error: --resume: {out} holds no run to resume (no args.json, no checkpoint); " \
                                    "start one without --resume"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


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
    r = run_train(["--out", str(out), "--resume"], cli_env)  # the run's own flags, from its args.json
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout
    a = [json.loads(l) for l in open(ref / "log.jsonl")]
    b = [json.loads(l) for l in open(out / "log.jsonl")]
    assert [x["step"] for x in b] == [0, 1, 2, 3]
    assert [x["task_ids"] for x in b] == [x["task_ids"] for x in a]  # same data order
    for x, y in zip(a, b):  # same samples and updates: the run continues as if never killed
        assert x["reward_mean"] == pytest.approx(y["reward_mean"], abs=1e-6)
