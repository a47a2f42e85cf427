"""--track: the real CLI on tiny budgets, then what TensorBoard and wandb were sent, read back with their own readers
and compared with log.jsonl and summary.json (plumbing/track.py)."""
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

import train as T
from plumbing import track

QUICK = ["--sft-steps", "4", "--sft-batch", "4", "--steps", "2", "--tasks-per-step", "4", "--group-size", "2",
         "--max-new-tokens", "12", "--max-steps", "2", "--eval-episodes", "1", "--micro-batch", "4"]


def run_train(args, env, timeout=300):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def log_of(out):
    return [json.loads(line) for line in open(out / "log.jsonl")]


def numbers(rec):
    """The keys of a log record a tracker draws: numbers (bools too), not task_ids, not a rate that is None."""
    return {k: float(v) for k, v in rec.items() if isinstance(v, (int, float)) and k != "step"}


def tensorboard_scalars(folder):
    """{tag: [(step, value), ...]} of the event files in `folder`, through TensorBoard's own reader (which applies
    the purge a resumed run's writer asks for)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def test_tensorboard_holds_every_step_of_the_log_and_the_metrics(tmp_path, tiny_dir, cli_env):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    run_train(["--preset", "tiny", "--model", tiny_dir, "--out", str(out), *QUICK, "--track", "tensorboard"], cli_env)
    rl, acc = tensorboard_scalars(out / "tb" / "rl")
    log = log_of(out)
    want = {f"rl/{k}" for r in log for k in numbers(r)}
    assert want <= set(rl) and {"rl/loss", "rl/kl", "rl/reward_mean", "rl/unsafe", "rl/t_rollout"} <= want
    assert not any("task_ids" in t for t in rl)
    for tag in want:  # every logged step once, with the log's value (TensorBoard keeps float32)
        expect = [(r["step"], numbers(r)[tag[3:]]) for r in log if tag[3:] in numbers(r)]
        assert [s for s, _ in rl[tag]] == [s for s, _ in expect], tag
        assert [v for _, v in rl[tag]] == pytest.approx([v for _, v in expect], rel=1e-6, abs=1e-7), tag
    summary = json.load(open(out / "summary.json"))
    for when in ("before", "after"):  # the metrics at the end, at the last RL step
        for cat, metric in (("harmful", "harm_rate"), ("overall", "unsafe_rate"), ("benign", "task_success")):
            assert rl[f"{when}/test/{cat}/{metric}"] == [(2, pytest.approx(summary[when]["test"][cat][metric]))]
    flags = acc.Tensors("flags/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "--track tensorboard" in flags and "--sft-steps 4" in flags
    sft, _ = tensorboard_scalars(out / "tb" / "sft")
    assert [s for s, _ in sft["sft/loss"]] == [0, 1, 2, 3] and all(v > 0 for _, v in sft["sft/loss"])


def test_tensorboard_resume_draws_each_step_once(tmp_path, tiny_dir, cli_env):
    """A run killed after logging step 1 but before its checkpoint there (made here by setting its last checkpoint
    back to step 1) resumes at step 1: TensorBoard drops what the killed process wrote at or after step 1 and draws
    the resumed run's steps 1 and 2, once each, with the values of the final log.jsonl."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    run_train(["--preset", "tiny", "--model", tiny_dir, "--out", str(out), *QUICK, "--save-every", "1",
               "--track", "tensorboard"], cli_env)
    first, _ = tensorboard_scalars(out / "tb" / "rl")
    state = json.load(open(out / "ckpt" / "state.json"))
    assert state["step"] == 2
    json.dump({**state, "step": 1}, open(out / "ckpt" / "state.json", "w"))
    r = run_train(["--out", str(out), "--resume", "--steps", "3"], cli_env)
    assert "resumed from" in r.stdout
    rl, _ = tensorboard_scalars(out / "tb" / "rl")
    log = log_of(out)
    assert [x["step"] for x in log] == [0, 1, 2]
    assert [s for s, _ in rl["rl/reward_mean"]] == [0, 1, 2] and [s for s, _ in rl["rl/t_rollout"]] == [0, 1, 2]
    assert rl["rl/t_rollout"][0] == first["rl/t_rollout"][0]  # step 0: the first process's, kept
    assert [v for _, v in rl["rl/t_rollout"]] == pytest.approx([x["t_rollout"] for x in log], rel=1e-6)
    assert [s for s, _ in rl["before/test/overall/unsafe_rate"]] == [3]  # the first run's end (step 2) is gone
    sft, _ = tensorboard_scalars(out / "tb" / "sft")  # the warm start was not done again: its curve stays whole
    assert [s for s, _ in sft["sft/loss"]] == [0, 1, 2, 3]


def wandb_records(out):
    """[(folder, {"run": ..., "history": [...], "summary": {...}}), ...] of the offline runs in out/wandb, in the
    order they were written, read from their .wandb files with wandb's own reader."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore
    key = lambda item: item.key or "/".join(item.nested_key)  # wandb writes a key either way
    runs = []
    for folder in sorted(glob.glob(str(out / "wandb" / "offline-run-*"))):
        got = {"run": None, "history": [], "summary": {}}
        ds = datastore.DataStore()
        ds.open_for_scan(glob.glob(os.path.join(folder, "run-*.wandb"))[0])
        while (data := ds.scan_data()) is not None:
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                got["run"] = rec.run
            elif kind == "history":
                got["history"].append({key(i): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary":
                got["summary"].update({key(i): json.loads(i.value_json) for i in rec.summary.update})
        runs.append((folder, got))
    return runs


def test_wandb_offline_run_holds_the_steps_the_config_and_resumes_the_same_run(tmp_path, tiny_dir, cli_env):
    pytest.importorskip("wandb")
    env = {**cli_env, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb_dir"), "WANDB_SILENT": "true",
           "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb_data")}
    out = tmp_path / "run"
    run_train(["--preset", "tiny", "--model", tiny_dir, "--out", str(out), *QUICK, "--track", "wandb",
               "--wandb-project", "mosaic-test", "--save-every", "1"], env)
    [(_, got)] = wandb_records(out)
    run_id = (out / "wandb_id.txt").read_text().strip()
    assert got["run"].run_id == run_id and got["run"].project == "mosaic-test" and got["run"].display_name == "run"
    config = {i.key: json.loads(i.value_json) for i in got["run"].config.update}
    assert config["track"] == "wandb" and config["sft_steps"] == 4 and config["seed"] == 0
    rl = [h for h in got["history"] if "rl/step" in h]
    sft = [h for h in got["history"] if "sft/step" in h]
    log = log_of(out)
    assert [h["rl/step"] for h in rl] == [0, 1] and [h["sft/step"] for h in sft] == [0, 1, 2, 3]
    for h, rec in zip(rl, log):
        assert {k[3:]: v for k, v in h.items() if k.startswith("rl/") and k != "rl/step"} == pytest.approx(numbers(rec))
    assert all(h["sft/loss"] > 0 for h in sft)
    assert [h["_step"] for h in sft + rl] == [0, 1, 2, 3, 4, 5]  # wandb's own counter only rises
    summary = json.load(open(out / "summary.json"))
    assert got["summary"]["after/test/overall/unsafe_rate"] == summary["after"]["test"]["overall"]["unsafe_rate"]
    assert got["summary"]["before/ood/harmful/harm_rate"] == summary["before"]["ood"]["harmful"]["harm_rate"]

    r = run_train(["--out", str(out), "--resume", "--steps", "3"], env)  # the same wandb run goes on
    assert "resumed from" in r.stdout
    [(_, first), (_, second)] = wandb_records(out)
    assert second["run"].run_id == run_id and [h["rl/step"] for h in second["history"] if "rl/step" in h] == [2]
    assert not any("sft/step" in h for h in second["history"])  # the warm start was not done again


def test_a_missing_package_is_one_line_before_any_work(tmp_path, cli_env):
    """The package hidden from train.py (its import fails, as where it is not installed): one line, with the pip
    command, and no run folder."""
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text("import sys\nsys.modules['tensorboard'] = None\n"
                                                         "sys.modules['wandb'] = None\n")
    env = {**cli_env, "PYTHONPATH": str(tmp_path / "hide")}
    for kind in ("tensorboard", "wandb"):
        out = tmp_path / kind
        r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--preset", "tiny", "--out", str(out),
                            "--track", kind], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and r.stderr.strip() == \
            f"error: --track {kind} needs the {kind} package: pip install {kind}", r.stderr
        assert not out.exists()


def test_a_bad_track_value_is_one_line_and_off_needs_no_package(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        T.parse(["--preset", "tiny", "--out", str(tmp_path), "--track", "mlflow"])
    assert str(ei.value) == "error: --track must be one of tensorboard | wandb (or left out), not 'mlflow'"
    assert T.parse(["--preset", "tiny", "--out", str(tmp_path)]).track == ""
    off = track.Tracker("", str(tmp_path / "off"), {})
    off.log("rl", {"step": 0, "loss": 1.0}, 0)
    off.summary({}, {}, 0)
    off.close()
    assert not (tmp_path / "off").exists()


def test_only_numbers_go_out():
    rec = {"step": 3, "task_ids": ["a"], "loss": 0.5, "updated": True, "unsafe": None, "used": 4, "name": "x",
           "held_out_by_category": {"benign": 0.25, "harmful": 1}}
    assert track.scalars(rec) == {"step": 3.0, "loss": 0.5, "updated": 1.0, "used": 4.0,
                                  "held_out_by_category/benign": 0.25, "held_out_by_category/harmful": 1.0}
    metrics = {"test": {"harmful": {"harm_rate": 0.25, "n": 4}, "behaviour": {"harmful": {"refused": 0.5}}}}
    assert track.flat_metrics(metrics, "after") == {"after/test/harmful/harm_rate": 0.25, "after/test/harmful/n": 4.0}
