"""Smoke tests of measure/bench.py: the CLI in --quick mode writes the report with its headline ratios (and the old vs new
rollout paths), the rollout-path comparison on the tiny test model, and measure/bench_gpu.py's model builder
(random-init 4-bit NF4 + LoRA, from a config) and its generation through engine.KVBatch work on a CPU with a tiny
config. No timing is asserted: these numbers belong to the benchmark, not to the tests."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from measure import bench as B  # noqa: E402
from measure import bench_gpu as BG  # noqa: E402
import model as M  # noqa: E402
from plumbing import loading  # noqa: E402

with loading.quiet():  # bitsandbytes' import warnings (pytest resets the filters loading.py set)
    import bitsandbytes as bnb  # noqa: E402


def test_quick_cli_writes_the_ratios(tmp_path, cli_env):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(ROOT, "measure", "bench.py"), "--quick", "--no-smollm2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    for key in ("loop_vs_generate", "batched_speedup", "kv_reuse_speedup", "kv_reuse_vs_bare"):
        assert isinstance(rep[key], float) and rep[key] > 0, (key, rep[key])
    tiny = rep["models"]["tiny"]
    assert set(tiny["train_step"]) == {"none", "4bit"}
    for q in ("none", "4bit"):
        assert tiny["train_step"][q]["step_s"] > 0 and tiny["train_step"][q]["trajectories"] == 4
    assert set(rep["rl_iteration"]["shares"]) == {"rollout", "judge", "update"}
    assert rep["profile_top"]["rollout"] and rep["profile_top"]["update"]
    assert "loop / bare generate" in proc.stdout  # the table
    paths = tiny["rollout_paths"]
    assert paths["episodes"] == 4 and all(paths[k]["tokens"] > 0 for k in ("reprefill", "kv_reuse", "bare_generate"))
    assert "kv_reuse / reprefill" in proc.stdout


@pytest.mark.usefixtures("one_thread")
def test_rollout_paths_compares_old_new_and_bare(tiny):
    from tasks import make_split
    import rollout as R
    model, tok = tiny
    tasks = R.pick_tasks(make_split("train"), 0)[:2]
    res = B.rollout_paths(model, tok, tasks, group=2, max_steps=2, new_tokens=6, repeats=1)
    assert res["episodes"] == 4 and res["device"] == "cpu"
    for k in ("reprefill", "kv_reuse", "bare_generate"):
        assert res[k]["s"] > 0 and 0 < res[k]["tokens"] <= 4 * 2 * 6 and res[k]["tokens_per_s"] > 0
    assert res["bare_generate"]["tokens"] == 4 * 6  # eos held off: exactly new_tokens per row
    assert res["speedup"] > 0 and res["kv_reuse_vs_bare"] > 0
    B.print_paths("tiny", res)


@pytest.mark.usefixtures("one_thread")
def test_decode_variants_time_every_variant_and_leave_the_policy(tiny_dir):
    """bench_gpu's decode-step comparison on the CPU (no compilation here): every variant timed, the LoRA policy it
    was given still a LoRA policy with the same weights."""
    from tasks import make_split
    import model as M
    import rollout as R
    policy, tok = M.load_policy(tiny_dir, device="cpu")
    before = {n: p.clone() for n, p in policy.named_parameters()}
    res = BG.decode_variants(policy.eval(), tok, R.pick_tasks(make_split("train"), 0)[:2], 2, 5)
    assert res["batch"] == 4 and res["new_tokens"] == 5
    for k in ("as_is", "static", "merged", "merged+static"):
        assert math.isfinite(res[k]["ms_per_step"])  # two timings' difference: on a tiny model it may be < 0
        assert res[k]["first_call_s"] > 0 and (k == "as_is" or res[k]["speedup"] is not None)
    assert hasattr(policy, "peft_config") and all(torch.equal(p, before[n]) for n, p in policy.named_parameters())


@pytest.mark.usefixtures("one_thread")
def test_random_4bit_model_with_lora_trains_on_cpu():
    from transformers import Qwen2Config
    cfg = Qwen2Config(**{**BG.QWEN25_7B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
                         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})
    model = BG.random_4bit_model(cfg, "cpu", torch.float32)
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 2 * 7 and all(m.weight.bnb_quantized for m in linears)  # q k v o gate up down
    assert type(model.get_output_embeddings()) is torch.nn.Linear  # the LM head stays unquantized
    assert not any(p.is_meta for p in model.parameters()) and not any(b.is_meta for b in model.buffers())
    res = BG.qlora_memory(cfg, "cpu", seq_len=48, group=4, new_tokens=8, chunk=16)
    steps = [k for k in res if k.startswith("rl_step")]
    assert len(steps) == 3 and all(res[k]["s"] > 0 for k in steps)
    assert res["generate_group"]["new_tokens"] == 8 and res["trainable_params"] > 0
    assert res["kv_batch_turn_group"]["new_tokens"] == 8 and res["kv_batch_turn_group"]["s"] > 0


@pytest.mark.usefixtures("one_thread")
def test_lora_gradients_flow_through_the_4bit_model():
    """After LoRA, one backward gives finite, non-zero gradients to the adapters only."""
    from transformers import Qwen2Config
    cfg = Qwen2Config(**{**BG.QWEN25_7B, "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
                         "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2})
    model = BG.with_lora(BG.random_4bit_model(cfg, "cpu", torch.float32)).train()
    ids = torch.randint(1, 256, (2, 24))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads)
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_bench_gpu_without_a_gpu_says_so_in_one_line(cli_env):
    env = {**cli_env, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "measure", "bench_gpu.py"), "--out", "/nonexistent/x.json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
