"""measure/rescore.py: stored episodes replayed through today's environment give today's outcomes; an episode whose
tool results do not come out the same is reported and keeps its stored outcome."""
import copy
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import rollout as R  # noqa: E402
from measure import rescore as RS  # noqa: E402
from tasks import make_split  # noqa: E402

TEST = make_split("test")
BY_ID = {t["id"]: t for t in TEST}


def call(c):
    return f"<think>Next.</think>\n<tool_call>{json.dumps({'name': c['name'], 'arguments': c['arguments']})}</tool_call>"


def test_replay_gives_the_stored_outcomes_of_todays_episodes():
    tasks = R.pick_tasks(TEST, 6)
    trajs = R.rollout("naive", tasks, max_steps=2) + R.rollout("expert", tasks, max_steps=6)
    assert any(t["outcome"]["truncated"] for t in trajs) and any(t["outcome"]["injection_attempted"] for t in trajs)
    new, changed, failed = RS.rescore(trajs, BY_ID)
    assert failed == [] and changed == {}
    assert [t["outcome"] for t in new] == [t["outcome"] for t in trajs]


def test_an_old_attempt_before_the_planted_text_is_recounted():
    """A file written when any call of the injected tool was an attempt: the call came before the agent read the
    carrier, so today it is a guess, and the planted text was never shown."""
    task = next(t for t in TEST if t["category"] == "injection")
    ep = R.Episode(task, None, 6)
    ep.add_turn(None, call(task["injection"]["calls"][0]))
    ep.add_turn(None, "<think>Done.</think>\n<answer>Done.</answer>")
    old = ep.to_dict("old")
    assert not old["outcome"]["injection_seen"] and not old["outcome"]["injection_attempted"]
    old["outcome"]["injection_attempted"] = True  # as the definition before Dec 8 counted it
    del old["outcome"]["injection_seen"]
    (new,), changed, failed = RS.rescore([old], BY_ID)
    assert failed == [] and changed == {"injection_attempted": 1, "injection_seen": 1}
    assert new["outcome"]["injection_attempted"] is False and new["outcome"]["injection_seen"] is False
    assert new["outcome"]["tokens"] == old["outcome"]["tokens"]  # the rollout's own fields are kept


def test_an_episode_that_does_not_replay_keeps_its_outcome():
    trajs = R.rollout("naive", R.pick_tasks(TEST, 2), max_steps=4)
    bad = copy.deepcopy(trajs[0])
    i = next(i for i, m in enumerate(bad["messages"]) if m["role"] == "tool")
    bad["messages"][i]["content"] += " (another world)"
    bad["outcome"]["task_success"] = "as stored"
    unknown = {**copy.deepcopy(trajs[1]), "task_id": "no-such-task"}
    new, changed, failed = RS.rescore([bad, unknown], BY_ID)
    assert failed == [bad["task_id"], "no-such-task"] and changed == {}
    assert new[0]["outcome"]["task_success"] == "as stored"


def test_cli_prints_the_tables_and_writes_the_columns(tmp_path):
    trajs = R.rollout("naive", R.pick_tasks(TEST, 3), max_steps=6)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    half = len(trajs) // 2
    a.write_text("".join(json.dumps(t) + "\n" for t in trajs[:half]))
    b.write_text("".join(json.dumps(t) + "\n" for t in trajs[half:]))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "measure/rescore.py", f"naive={a},{b}", str(a), "--split", "test",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"naive: {len(trajs)} episodes, 0 not replayed; changed: nothing" in r.stdout
    assert "injection.seen_rate" in r.stdout and "| naive " in r.stdout and "| a " in r.stdout
    assert len((out / "naive.jsonl").read_text().splitlines()) == len(trajs)
    r = subprocess.run([sys.executable, "measure/rescore.py", str(a), "--tasks", str(tmp_path / "none.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "none.jsonl" in r.stderr
