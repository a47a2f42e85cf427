"""Command-line plumbing (a reader does not need this file to understand MOSAIC): every script's `Args` dataclass
parsed into --kebab-case flags, bad values answered with one line, files written whole or not at all."""
import argparse
import ast
import contextlib
import inspect
import io
import json
import math
import os
import shutil
import sys
import tempfile
import textwrap
import typing
from dataclasses import fields


def parse_args(cls, argv=None, defaults=None, description=None):
    docs, body = {}, ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = b.value.value
    ap = argparse.ArgumentParser(description=description or (cls.__doc__ or "").strip())
    for f in fields(cls):
        flag, default = "--" + f.name.replace("_", "-"), (defaults or {}).get(f.name, f.default)
        if f.type is bool:
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=docs.get(f.name))
        elif typing.get_origin(f.type) is list:
            ap.add_argument(flag, action="append", default=None, help=docs.get(f.name))
        else:
            typ = f.type if f.type in (int, float, str) else str
            ap.add_argument(flag, type=typ, default=default, help=docs.get(f.name))
    ns = vars(ap.parse_args(argv))
    return cls(**{k: (v if v is not None or typing.get_origin(f.type) is not list else [])
                  for f in fields(cls) for k, v in [(f.name, ns[f.name])]})


def parse_flags(cls, argv=None, defaults=None, exit_code=1):
    """parse_args, with argparse's own errors (an unknown flag, a value of the wrong type) as one line on stderr and
    exit code `exit_code` instead of a usage block; --help prints the help as usual."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse_args(cls, argv, defaults=defaults)
    except SystemExit as e:
        if e.code:
            fail(err.getvalue().strip().splitlines()[-1].split("error: ", 1)[-1], exit_code)
        raise


def fail(msg, exit_code=1):
    """Exit with one line on stderr, `error: msg` (exit code 1: as sys.exit(line) does, the line is the SystemExit's
    code)."""
    if exit_code == 1:
        sys.exit(f"error: {msg}")
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(exit_code)


def bad_setting(greedy=True, temperature=1.0, top_p=1.0, files=(), dirs=(), **at_least_1):
    """The first bad command-line value, as one line for a CLI to exit with (None: all fine), checked before any
    model is loaded or episode run: counts (max_new_tokens=..., batch_size=...) below 1, a sampling temperature or
    top_p out of range, an output file or folder that cannot be written where it is asked for."""
    for name, v in at_least_1.items():
        if v < 1:
            return f"--{name.replace('_', '-')} must be at least 1, not {v}"
    if not greedy and not (math.isfinite(temperature) and temperature > 0):
        return f"--temperature must be a number above 0 when sampling, not {temperature}"
    if not (0 < top_p <= 1):
        return f"--top-p must be in (0, 1], not {top_p}"
    for path, is_dir in [(f, False) for f in files if f] + [(d, True) for d in dirs if d]:
        if not is_dir and path.endswith(("/", os.sep)):
            return f"cannot write {path}: it names a folder, not a file"
        path = os.path.abspath(path)
        if os.path.exists(path) and os.path.isdir(path) != is_dir:
            return f"cannot write {path}: it is {'a file' if is_dir else 'a folder'}"
        parent = path if is_dir and os.path.isdir(path) else os.path.dirname(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            return f"cannot write {path}: {parent} is not a folder"
        try:  # a file made and removed at once: permissions, read-only and virtual file systems alike
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as e:
            return f"cannot write {path}: {parent} does not take new files ({e.strerror})"
    return None


def write_atomic(path, chunks):
    """Write the strings `chunks` to `path` as one file: a temporary file beside it, then a rename, so that a reader
    (or a crash) never sees half a file, and an error leaves neither a half file nor the temporary one. A lone
    surrogate (a model can write "\ud800") is written as the text \ud800, which JSON reads back as the same string."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.writelines(chunks)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_folder_atomic(path, fill, keep_existing=False):
    """Write a folder whole or not at all: `fill(tmp)` writes it into a temporary sibling, which then takes its place
    by renames. An earlier folder at `path` is moved to `path`.old first and removed last, so a kill at any point
    leaves the old folder or the new one (checkpoints read `.old` when `path` is missing). keep_existing: a folder
    another process put at `path` meanwhile wins (a shared model cache)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(path) + "-")
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model cache is shared like any other folder
    old = path + ".old"
    try:
        fill(tmp)
        if keep_existing:
            try:
                os.replace(tmp, path)
            except OSError:  # another process was first: keep theirs
                if not os.path.isdir(path):
                    raise
            return path
        if os.path.exists(path):
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return path


def read_trajectories(path):
    """The trajectories of a JSON-lines file (rollout.py's), or exit with one line naming the first that is not
    one: what the judge reads of a trajectory must be there, with the right types."""
    try:
        with open(path, encoding="utf-8") as f:
            trajs = [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError) as e:
        sys.exit(f"error: cannot read trajectories from {path}: {e}")
    outcome = {"format_errors": int, "harm_events": list, "refused": bool, "refused_at": (int, type(None)),
               "task_success": bool, "progress": (int, float), "tokens": int}
    for i, t in enumerate(trajs, 1):  # what the judge reads of a trajectory (rollout.Episode.to_dict)
        o = t.get("outcome") if isinstance(t, dict) else None
        if not (isinstance(o, dict) and all(isinstance(o.get(k, ...), ty) for k, ty in outcome.items())
                and isinstance(t.get("task_id"), str)
                and t.get("category") and isinstance(t.get("turns"), list)
                and all(isinstance(p, dict) and "action" in p and "think" in p for p in t["turns"])):
            sys.exit(f"error: {path}: line {i} is not a trajectory (rollout.py writes them)")
    return trajs
