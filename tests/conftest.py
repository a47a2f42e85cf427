"""Shared fixtures: a private model cache for the whole session, a tiny random model built once, and a copy of it
warmed up by a few SFT steps on scripted trajectories (so that its rollouts contain real tool calls).

Nothing here writes to ~/.cache/mosaic: model.CACHE_DIR points to a session temporary directory (tests that need
the real cache, like the SmolLM2 ones, say so themselves). Subprocesses get it as MOSAIC_CACHE via `cli_env`.
"""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tasks import corpus_texts, make_split  # noqa: E402
import model as M  # noqa: E402
from plumbing import hub, loading  # noqa: E402

# Small enough for a shared 2-core machine: ~0.1 M parameters, a 1,000-token BPE trained on 50 train tasks' text.
TINY_TEST = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2)


def pytest_configure(config):
    """pytest resets warning filters per test: apply the list of known noise (plumbing/loading.NOISE) here too."""
    for pattern in loading.NOISE:
        config.addinivalue_line("filterwarnings", f"ignore:{pattern}")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """A private MOSAIC cache for this test session (path as a string)."""
    return str(tmp_path_factory.mktemp("mosaic_cache"))


@pytest.fixture(scope="session", autouse=True)
def _private_model_cache(session_cache):
    """model.CACHE_DIR -> the session cache, so no test builds or converts into ~/.cache by accident."""
    saved = M.CACHE_DIR
    M.CACHE_DIR = session_cache
    yield
    M.CACHE_DIR = saved


@pytest.fixture(scope="session")
def cli_env(session_cache):
    """Environment for subprocess runs of the scripts: private cache, offline hub, one thread (shared CPUs)."""
    return {**os.environ, "MOSAIC_CACHE": session_cache, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def one_thread():
    """torch on one thread for the test (2 shared cores: two threads fighting over them are ~40x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny random-init Llama + tokenizer (tags as tokens, ChatML template) saved once per session."""
    return hub.build_tiny(str(tmp_path_factory.mktemp("tiny") / "model"), corpus_texts(n=50), **TINY_TEST)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """(model, tokenizer) of the tiny random model, in eval mode. Tests must not change its weights."""
    model, tok = M.load_base(tiny_dir, device="cpu")
    return model.eval(), tok


def _sft(model, trajs, pad_id, steps, lr, batch=4, seed=0):
    """A few steps of plain SFT on the model's own tokens of scripted trajectories (mask 1), as train.py does."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        mb = [trajs[i] for i in torch.randint(len(trajs), (batch,), generator=g).tolist()]
        T = max(len(t["ids"]) for t in mb)
        ids = torch.full((batch, T), pad_id, dtype=torch.long)
        attn, mask = torch.zeros(batch, T, dtype=torch.long), torch.zeros(batch, T)
        for i, t in enumerate(mb):
            n = len(t["ids"])
            ids[i, T - n:], attn[i, T - n:] = torch.tensor(t["ids"]), 1
            mask[i, T - n:] = torch.tensor(t["mask"], dtype=torch.float)
        lp = M.token_logprobs(model, ids, attn)
        loss = -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


@pytest.fixture(scope="session")
def trained_tiny(tiny_dir):
    """(model, tokenizer, sft_tasks): a separate copy of the tiny model after ~4 s of SFT on expert and naive
    episodes of 8 train tasks. It writes well-formed tool calls often, format errors sometimes."""
    import rollout as R
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tok = M.load_base(tiny_dir, device="cpu")
        tasks = make_split("train")[:8]
        data = R.rollout("expert", tasks, tok, progress=False) + R.rollout("naive", tasks, tok, progress=False)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model, loss = _sft(model, data, tok.pad_token_id, steps=60, lr=5e-3)
    finally:
        torch.set_num_threads(n)
    assert loss < 2.0, f"SFT warm-up did not learn ({loss:.2f})"
    return model, tok, tasks
