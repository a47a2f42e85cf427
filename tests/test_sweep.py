"""sweep.py over finished runs: the README's table (before -> after per run) and the picture of every run's
curves, from the files train.py writes (summary.json, log.jsonl)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATS = {"harmful": ["harm_rate", "refusal_rate"], "injection": ["attack_success_rate", "task_success"],
        "privacy": ["leak_rate", "task_success"], "benign": ["task_success", "refusal_rate"],
        "overall": ["unsafe_rate", "format_error_rate", "quit_rate", "mean_tokens"]}


def fake_run(path, harm_after, steps=7):
    os.makedirs(path)
    metrics = lambda harm: {split: {c: {k: (harm if k == "harm_rate" else 0.5) for k in ks} for c, ks in CATS.items()}
                            for split in ("test", "ood")}
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump({"seconds": 12.0, "before": metrics(0.9), "after": metrics(harm_after)}, f)
    with open(os.path.join(path, "log.jsonl"), "w") as f:
        for s in range(steps):  # a batch without harmful tasks logs None for their rates
            f.write(json.dumps({"step": s, "harmful_refusal": None if s == 2 else s / steps, "unsafe": 0.1,
                                "success": 0.2, "benign_refusal": 0.0, "format_errors": 0.3, "kl": 0.01 * s}) + "\n")


def test_print_only_tables_and_plot(tmp_path):
    fake_run(tmp_path / "pairwise-pg-seed0", 0.1)
    fake_run(tmp_path / "pairwise-pg-seed1", 0.2)
    fake_run(tmp_path / "pairwise-pg-seed2", 0.3)  # made with --eval-episodes 0: nothing to tabulate
    (tmp_path / "pairwise-pg-seed2" / "summary.json").write_text(json.dumps({"seconds": 1, "before": {}, "after": {}}))
    fake_run(tmp_path / "pairwise-pg-seed3", 0.3)  # a summary cut short
    (tmp_path / "pairwise-pg-seed3" / "summary.json").write_text('{"seconds": 1, "bef')
    with open(tmp_path / "pairwise-pg-seed1" / "log.jsonl", "a") as f:
        f.write('{"step": 7, "harmful_ref')  # a line cut by a crash
    png = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "measure", "sweep.py"), "--print-only", "--out", str(tmp_path),
                           "--seeds", "0", "1", "2", "3", "--plot", str(png)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| harmful.harm_rate | 0.90 -> 0.10 | 0.90 -> 0.20 |" in proc.stdout
    assert "left out" in proc.stdout and "seed2" in proc.stdout and "seed3" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_print_only_without_runs_says_so(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "measure", "sweep.py"), "--print-only", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "no finished runs" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_flags_and_outputs_get_one_line_before_any_work(tmp_path):
    """argparse's errors, an --out that is a file and a --plot that is a folder: one line, before any run or table
    (a --plot folder failed with a traceback at the very end, after every run)."""
    fake_run(tmp_path / "pairwise-pg-seed0", 0.1)
    (tmp_path / "f.txt").write_text("a file")
    for flags, line in ((["--bogus"], "error: unrecognized arguments: --bogus"),
                        (["--jobs", "x"], "error: argument --jobs: invalid int value: 'x'"),
                        (["--out", str(tmp_path / "f.txt")], f"error: cannot write {tmp_path / 'f.txt'}: it is a file"),
                        (["--out", str(tmp_path), "--seeds", "0", "--plot", str(tmp_path)],
                         f"error: cannot write {tmp_path}: it is a folder")):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "measure", "sweep.py"), "--print-only", *flags], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and proc.stderr.strip() == line, proc.stderr
        assert "###" not in proc.stdout


def test_a_seed_given_twice_is_one_run(tmp_path):
    """--seeds 0 0 names one run: it was two columns of it, and with --jobs 2 two train.py at once in its folder."""
    fake_run(tmp_path / "pairwise-pg-seed0", 0.1)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "measure", "sweep.py"), "--print-only", "--out", str(tmp_path),
                           "--seeds", "0", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "| metric | pairwise-pg-seed0 |\n" in proc.stdout


def test_runs_train_py_beside_it_from_any_folder(tmp_path):
    """Run from another folder, sweep.py starts the train.py beside it (it ran 'train.py' of the current folder:
    every run failed with "can't open file"). A seed train.py refuses shows that train.py ran: its one line."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "measure", "sweep.py"), "--out", "runs", "--seeds", str(2**32)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no finished runs" in proc.stderr
    log = (tmp_path / "runs" / f"pairwise-pg-seed{2**32}.log").read_text()
    assert "error: --seed must be below 2**32" in log, log


def test_resumes_the_runs_that_started_and_starts_the_others(tmp_path, monkeypatch):
    """A killed sweep: a run that started (its folder holds args.json) gets --resume, one that never started is
    started without it (sweep passed --resume to every run, relying on train.py's silent fresh start where there was
    no run; train.py now refuses that), a finished one is not run again."""
    sys.path.insert(0, ROOT)
    from measure import sweep
    cmds = []
    monkeypatch.setattr(sweep.subprocess, "run", lambda cmd, **kw: cmds.append(cmd) or subprocess.CompletedProcess(
        cmd, 0))
    (tmp_path / "pairwise-dpo-seed0").mkdir()
    (tmp_path / "pairwise-dpo-seed0" / "args.json").write_text("{}")
    fake_run(tmp_path / "pairwise-dpo-seed2", 0.1)
    for seed in (0, 1, 2):
        sweep.run("pairwise-dpo", seed, ["--loss", "dpo"], str(tmp_path), None)
    train = os.path.join(ROOT, "train.py")
    assert [c[1:] for c in cmds] == [
        [train, "--preset", "tiny", "--seed", "0", "--out", str(tmp_path / "pairwise-dpo-seed0"), "--loss", "dpo",
         "--resume"],
        [train, "--preset", "tiny", "--seed", "1", "--out", str(tmp_path / "pairwise-dpo-seed1"), "--loss", "dpo"]]
    assert not (tmp_path / "pairwise-dpo-seed1").exists()  # train.py makes it


def test_track_goes_to_every_run(tmp_path):
    """--track and --wandb-project reach each train.py run (its command line), and train.py reads them as its flags
    (an unknown flag would be its first error; here it goes on to refuse the seed). A --track value no tracker has:
    one line, before any run."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "measure", "sweep.py"), "--out", str(tmp_path),
                           "--seeds", str(2**32), "--track", "wandb", "--wandb-project", "p1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no finished runs" in proc.stderr
    assert proc.stdout.splitlines()[0].endswith(f"--out {tmp_path}/pairwise-pg-seed{2**32} --track wandb "
                                                "--wandb-project p1")
    log = (tmp_path / f"pairwise-pg-seed{2**32}.log").read_text()
    assert "error: --seed must be below 2**32" in log, log
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "measure", "sweep.py"), "--out", str(tmp_path),
                           "--track", "mlflow"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error: argument --track: invalid choice: 'mlflow'")
    assert proc.stdout == ""
