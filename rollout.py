"""The plan -> check -> act/refuse loop, over many episodes at once.

    python rollout.py --model tiny --split test --episodes 8 --out runs/rollouts.jsonl
    python rollout.py --policy expert --split ood --episodes 4        # a scripted agent through the same loop
    python rollout.py --model smollm2-135m --adapter runs/tiny/adapter --greedy

An episode is a task's mock environment plus one growing list of token ids: the chat-template prompt, then for each
turn the sampled tokens exactly as generated (the model's own tokens, mask 1, with their log-probs), then the
template's text for the tool result and the next assistant header (mask 0). The model is always conditioned on that
same list, so what is trained is exactly what was sampled. Every turn, a batch's running episodes are generated
together, each turn is parsed (envs.parse_turn) and stepped in its environment, and finished episodes leave the batch.
Scripted agents ('expert', 'naive') go through the same loop; their turns are tokenized the same way (SFT data).

Generation has two paths that give the same episodes: `generate` below, the readable one (HF `generate` over each
episode's whole ids every turn; the reference of the tests), and engine.py's KV cache, which appends only the new ids
each turn (the default where the model supports it; --compile adds CUDA graphs).

Simplifications: stored log-probs are of the raw temperature-1 policy whatever the sampling temperature and top_p
(sampling with temperature != 1 or top_p < 1 is off-policy by exactly that); the model's generation_config is
ignored; chat templates of other families go through plumbing/chat.py's fallbacks.
"""
import contextlib
import json
import sys
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

import engine
import envs
from tasks import TaskError, get_tasks, script
from plumbing.chat import delta_text, encode, encode_after_turn, render
from plumbing.cli import bad_setting, parse_args, write_atomic

SCRIPTED = ("expert", "naive")


# ----------------------------------------------------------------------------------------------------------------
# The loop

class Episode:
    def __init__(self, task, tok, max_steps, kind=None):
        self.task, self.kind, self.env = task, kind, envs.Env(task, max_steps)
        self.messages, self.turns = self.env.reset(), []
        self.script = script(task, kind) if kind else None
        self.ids, self.mask, self.logprobs = [], [], []
        if tok is not None:
            self.ids = encode(tok, render(tok, self.messages, True))
            self.mask, self.logprobs = [0] * len(self.ids), [0.0] * len(self.ids)

    def add_turn(self, tok, text, gen_ids=None, gen_logprobs=None, end_text=None):
        """Record one assistant turn, step the environment, append the tool result's tokens."""
        if tok is not None:
            if gen_ids is None:  # a scripted turn: the tokens a model would have written, then end-of-turn
                gen_ids = encode(tok, text) + [tok.eos_token_id]
                end_text = tok.eos_token
                gen_logprobs = [0.0] * len(gen_ids)
            self.ids += gen_ids
            self.mask += [1] * len(gen_ids)
            self.logprobs += gen_logprobs
        parsed = envs.parse_turn(text)
        self.turns.append(parsed)
        self.messages.append({"role": "assistant", "content": text})
        obs, done = self.env.step(parsed)
        if not done:
            self.messages.append({"role": "tool", "content": obs})
            if tok is not None:
                d = encode_after_turn(tok, delta_text(tok, self.messages, end_text))
                self.ids += d
                self.mask += [0] * len(d)
                self.logprobs += [0.0] * len(d)

    def scripted_turn(self):
        """A scripted agent's next turn; past its script's end, the agent says it is done."""
        if len(self.turns) < len(self.script):
            return self.script[len(self.turns)]
        return "<think>Done.</think>\n<answer>Done.</answer>"

    def to_dict(self, policy):
        out = self.env.outcome()
        out["tokens"] = sum(self.mask)
        out["safety_check"] = any(t["safety"] for t in self.turns)
        return {"task_id": self.task["id"], "category": self.task["category"], "template": self.task["template"],
                "policy": policy, "messages": self.messages, "turns": self.turns,
                "injection": self.task.get("injection", {}).get("text"), "secrets": self.task.get("secrets", []),
                "ids": self.ids, "mask": self.mask, "logprobs": [round(x, 6) for x in self.logprobs],
                "outcome": out}


@torch.no_grad()
def generate(model, tok, batch, greedy, temperature, top_p, max_new_tokens, min_new_tokens=0):
    """One turn of every episode in `batch`, the readable way (the reference of the tests and bench.py, and the path
    of models engine.py cannot serve): one left-padded HF `generate` call over the episodes' whole ids, log-probs from
    the full-vocabulary logits it returns. The model's generation_config is swapped for a bare one during the call
    (only end and pad tokens), so that it samples from the same raw distribution as engine.KVBatch."""
    from transformers import GenerationConfig
    pad, ends = tok.pad_token_id, engine.end_ids(model, tok)
    T = max(len(e.ids) for e in batch)
    dev = model.device
    input_ids = torch.full((len(batch), T), pad, dtype=torch.long)
    attn = torch.zeros((len(batch), T), dtype=torch.long)
    for i, e in enumerate(batch):
        input_ids[i, T - len(e.ids):] = torch.tensor(e.ids)
        attn[i, T - len(e.ids):] = 1
    kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    base = engine.base_model(model)
    saved, base.generation_config = base.generation_config, GenerationConfig(pad_token_id=pad, eos_token_id=ends)
    try:
        out = model.generate(input_ids=input_ids.to(dev), attention_mask=attn.to(dev), max_new_tokens=max_new_tokens,
                             min_new_tokens=min_new_tokens, pad_token_id=pad, eos_token_id=ends,
                             return_dict_in_generate=True, output_logits=True, use_cache=True, **kw)
    finally:
        base.generation_config = saved
    gen = out.sequences[:, T:]
    lp = torch.stack([l.float().log_softmax(-1).gather(-1, gen[:, t:t + 1])[:, 0]
                      for t, l in enumerate(out.logits)], 1).cpu()
    gen = gen.cpu()
    n_gen = [next((k + 1 for k, x in enumerate(row) if x in ends), len(row)) for row in gen.tolist()]
    return engine.results(tok, gen, lp, n_gen, ends)


def rollout(policy, tasks, tok=None, group_size=1, greedy=False, temperature=1.0, top_p=1.0, max_steps=8,
            max_new_tokens=96, max_context=None, batch_size=64, seed=0, label=None, progress=True, kv_reuse=None,
            compile=False):
    """Run episodes of `tasks` (each `group_size` times, task by task) with a model or a scripted agent ('expert' /
    'naive'). Returns trajectory dicts (Episode.to_dict), in that order.

    With a model, `tok` is required; with a scripted agent it is optional (given, the trajectories carry token ids and
    masks, for SFT). kv_reuse and compile pick the generation path (generation_path). The flags' values are checked
    by the CLIs (plumbing.cli.bad_setting, engine.cannot_run) before any episode.
    """
    scripted = isinstance(policy, str)
    if scripted and policy not in SCRIPTED:
        raise ValueError(f"unknown scripted policy '{policy}' (expert | naive)")
    label = label or (policy if scripted else "model")
    eps = [Episode(t, tok, max_steps, policy if scripted else None) for t in tasks for _ in range(group_size)]
    order = eps
    if not scripted:
        torch.manual_seed(seed)
        kv_reuse = generation_path(policy, kv_reuse, compile)
        max_context = max_context or getattr(policy.config, "max_position_embeddings", 4096)
        was_training = policy.training
        policy.eval()
        ends, order = engine.end_ids(policy, tok), sorted(eps, key=lambda e: len(e.ids))  # similar lengths together
    bar = tqdm(total=len(eps), desc=f"rollout {label}", disable=not progress, leave=False)
    n_rows = min(batch_size, len(order))
    # a bf16 base generates with its LoRA adapter merged in (engine.merged_lora: the same policy, ~2x faster on a CPU);
    # not under --compile, whose CUDA graphs hold the weights' addresses
    with contextlib.nullcontext() if scripted or compile else engine.merged_lora(policy):
        for s in range(0, len(order), batch_size):  # a batch of episodes at a time, through all their turns
            rows, cache = order[s:s + batch_size], None
            if not scripted and kv_reuse:  # one KV cache for all the batch's turns (engine.py)
                cache = engine.KVBatch(policy, tok, n_rows if compile else len(rows), compile, n_live=len(rows))
            while True:
                for e in rows:  # a model's episode with no room for another turn ends truncated
                    if not scripted and len(e.ids) + max_new_tokens > max_context:
                        e.env.done = e.env.truncated = True
                keep = [i for i, e in enumerate(rows) if not e.env.done]
                if cache is not None:
                    cache.select(keep)
                rows = [rows[i] for i in keep]
                bar.update(sum(e.env.done for e in eps) - bar.n)
                if not rows:
                    break
                if scripted:
                    outs = [(e.scripted_turn(),) for e in rows]
                elif cache is not None:
                    outs = cache.turn(rows, tok, ends, greedy, temperature, top_p, max_new_tokens)
                else:
                    outs = generate(policy, tok, rows, greedy, temperature, top_p, max_new_tokens)
                for e, out in zip(rows, outs):
                    e.add_turn(tok, *out)
            del cache
    bar.close()
    if not scripted and was_training:
        policy.train()
    return [e.to_dict(label) for e in eps]


def generation_path(policy, kv_reuse=None, compile=False):
    """Whether rollout generates through engine.py's KV cache (True) or `generate` (False). kv_reuse None picks the
    KV cache where engine.supports_kv_reuse(policy), else `generate`, which re-reads every episode each turn; True /
    False force one. compile (the KV cache static, its decode step compiled: torch.compile, CUDA graphs on a GPU; every
    batch padded to the first one's size so that shapes never change; a backend name picks the backend) needs the KV
    cache. A forced path the model cannot take is a ValueError."""
    supported = engine.supports_kv_reuse(policy)
    if kv_reuse and not supported:
        raise ValueError(f"kv_reuse=True: {type(engine.base_model(policy)).__name__} is not supported "
                         "(supports_kv_reuse)")
    kv_reuse = supported if kv_reuse is None else kv_reuse
    if compile and not kv_reuse:
        raise ValueError("compile needs the KV-cache path (kv_reuse; supports_kv_reuse)")
    return kv_reuse


# ----------------------------------------------------------------------------------------------------------------
# Reading trajectories

def format_trajectory(traj, width=100):
    """A readable transcript: tags visible, tool results indented, the outcome at the end."""
    lines = [f"== {traj['task_id']} ({traj['category']}, {traj['template']}) policy={traj['policy']}"]
    for m in traj["messages"]:
        if m["role"] == "system":
            continue
        if m["role"] == "tool":
            lines += ["    tool> " + l for l in m["content"].splitlines()]
        else:
            lines += [f"{m['role']}> " + l for l in m["content"].splitlines()]
    o = traj["outcome"]
    lines.append("-- outcome: " + ", ".join(f"{k}={o[k]}" for k in (
        "task_success", "refused", "harm_events", "injection_followed", "injection_attempted", "injection_seen",
        "leaked", "format_errors", "steps", "tokens") if k in o))
    text = "\n".join(l if len(l) <= width else l[:width - 3] + "..." for l in lines)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate a model wrote -> \ud800


def save_jsonl(trajs, path):
    write_atomic(path, (json.dumps(t, ensure_ascii=False) + "\n" for t in trajs))


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def pick_tasks(tasks, episodes, categories=envs.CATEGORIES):
    """The first `episodes` tasks of each category (all if episodes is 0), in the split's interleaved order."""
    out, seen = [], {c: 0 for c in categories}
    for t in tasks:
        if t["category"] in seen and (not episodes or seen[t["category"]] < episodes):
            seen[t["category"]] += 1
            out.append(t)
    return out


@dataclass
class Args:
    """Run episodes of a policy in the mock environments and write the trajectories as JSON lines."""
    model: str = "tiny"
    """model: tiny | smollm2-135m | a local directory | a hub id"""
    adapter: str = ""
    """a LoRA adapter directory (peft) to load on top of the model"""
    quant: str = "none"
    """none | 4bit"""
    dtype: str = "auto"
    """the base under a LoRA adapter: auto (bf16 where the device runs it natively, for 20 M+ parameters) | bf16 | fp32"""
    policy: str = ""
    """expert | naive: run a scripted agent instead of a model"""
    split: str = "test"
    """train | test | ood"""
    tasks: str = ""
    """a JSON-lines task file instead of a split"""
    episodes: int = 2
    """episodes per category (0 = all)"""
    greedy: bool = False
    """greedy decoding instead of sampling"""
    temperature: float = 1.0
    """sampling temperature"""
    top_p: float = 1.0
    """nucleus sampling"""
    max_steps: int = 8
    """turns per episode"""
    max_new_tokens: int = 96
    """tokens per turn"""
    batch_size: int = 64
    """episodes per generate call"""
    compile: bool = False
    """static KV cache + torch.compile of the decode step (CUDA graphs on a GPU): greedy gives the same tokens"""
    seed: int = 0
    """sampling seed"""
    out: str = "runs/rollouts.jsonl"
    """where to write the trajectories"""


if __name__ == "__main__":
    args = parse_args(Args)
    bad = bad_setting(args.greedy or bool(args.policy), args.temperature, args.top_p, files=[args.out],
                      max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    if not args.out:
        bad = "--out must name a file"
    if bad or args.episodes < 0:
        sys.exit(f"error: {bad or f'--episodes must be 0 (all) or more, not {args.episodes}'}")
    try:
        tasks = pick_tasks(get_tasks(args.split, args.tasks or None), args.episodes)
    except (TaskError, ValueError) as e:
        sys.exit(f"error: {e}")
    if not tasks:
        sys.exit("error: no tasks to run")
    if args.policy:
        if args.policy not in SCRIPTED:
            sys.exit(f"error: unknown --policy '{args.policy}' (expert | naive)")
        if any("plan" not in t for t in tasks):
            print(f"note: {sum('plan' not in t for t in tasks)} tasks have no 'plan'; the scripted agent answers "
                  "them without acting (the expert still refuses harmful ones)", file=sys.stderr)
        trajs = rollout(args.policy, tasks, max_steps=args.max_steps)
    else:
        import model as M
        try:
            policy, tok = M.load_policy(args.model, quant=args.quant, dtype=args.dtype, lora=bool(args.adapter),
                                        adapter=args.adapter or None)
        except (M.ModelError, ValueError) as e:
            sys.exit(f"error: {e}")
        problem = engine.cannot_run(policy, args.model, args.max_new_tokens, args.compile)
        if problem:
            sys.exit(f"error: {problem}")
        trajs = rollout(policy, tasks, tok, greedy=args.greedy, temperature=args.temperature, top_p=args.top_p,
                        max_steps=args.max_steps, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        seed=args.seed, label=args.model + (f"+{args.adapter}" if args.adapter else ""),
                        compile=args.compile)
    save_jsonl(trajs, args.out)
    print(format_trajectory(trajs[0]))
    n = len(trajs)
    print(f"\n{n} episodes -> {args.out}; unsafe {sum(bool(t['outcome']['harm_events']) for t in trajs)}/{n}, "
          f"success {sum(t['outcome']['task_success'] for t in trajs)}/{n}, "
          f"format errors {sum(t['outcome']['format_errors'] for t in trajs)}")
