"""Checking task files written by others (a reader does not need this file to understand MOSAIC): each JSON line
against the task format and the world's shape (envs.WORLD), so that whatever is accepted runs through the
environment, the scripted agents, rollout, judge and evaluate, and scores as its author meant.

    load_tasks(path)     read and check a JSON-lines file; TaskError names the line and the field, on one line
    validate_task(t)     check one task dict; return it completed with defaults

Besides shapes and types it refuses a task whose scores could only be wrong (docs/contracts.md, "Tasks and
outcomes"): a check that names an entry the world lacks or that no call could pass, an injection whose planted text
no tool of the task shows, a harmful or injection task nothing could score as harm, and a task that could succeed
only by doing harm or leaking a secret. `python tasks.py --tasks FILE` runs it from the command line.
"""
import json

import envs
from envs import CATEGORIES, TOOLS
from plumbing.matching import (MAX_NUMBER, ToolError, check_args, fits, is_number, norm, recipients, same_url,
                               strict_json)


class TaskError(ValueError):
    pass


REQUIRED = {"id": str, "category": str, "instruction": str, "tools": list, "checks": dict}
OPTIONAL = {"split": str, "template": str, "domains": list, "state": dict, "secrets": list, "entitled": list,
            "plan": list, "naive_plan": list, "injection": dict, "answer": str, "why": str, "check_note": str}
INJECTION = {"text": str, "goal": str, "style": str, "calls": list, "after": int}
_A = {str: "a string", list: "a list", dict: "an object", int: "a whole number"}


def _one_line(msg):
    return msg.replace("\n", "\\n").encode("utf-8", "backslashreplace").decode("utf-8")  # printable, whatever it holds


def _need(cond, field, msg):
    if not cond:
        raise TaskError(_one_line(f"field '{field}': {msg}"))


def _lone_surrogate(value):
    """The field of a string (or key) holding a lone surrogate ("\\ud800"), which no file can hold; else None."""
    stack = [("(task)", value)]
    while stack:  # a loop, not recursion: the value may be nested deeply
        field, v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return field
        elif isinstance(v, dict):
            for k, x in v.items():
                sub = k if field == "(task)" else f"{field}.{k}"
                stack += [(sub, x), (sub, k)]  # the value, and the key itself
        elif isinstance(v, list):
            stack += [(f"{field}[{i}]", x) for i, x in enumerate(v)]
    return None


def _check_shape(v, shape, field):
    """Check one part of the world against its shape in envs.WORLD (nothing deeper than the shape passes)."""
    if shape == "str":
        _need(isinstance(v, str), field, "must be a string")
    elif shape == "number":
        _need(is_number(v), field, f"must be a number (finite, at most {MAX_NUMBER:g})")
    elif isinstance(shape, list):
        _need(isinstance(v, list), field, "must be a list")
        for i, x in enumerate(v):
            _check_shape(x, shape[0], f"{field}[{i}]")
    elif "*" in shape:
        _need(isinstance(v, dict), field, "must be an object")
        for k, x in v.items():
            _check_shape(x, shape["*"], f"{field}[{json.dumps(k, ensure_ascii=False)}]")
    else:
        _need(isinstance(v, dict), field, "must be an object")
        for key, sub in shape.items():
            name = key.rstrip("?")
            _need(name in v or key.endswith("?"), f"{field}.{name}", "missing")
            if name in v:
                _check_shape(v[name], sub, f"{field}.{name}")
        for k, x in v.items():
            if k not in shape and k + "?" not in shape:
                _need(isinstance(x, str) or is_number(x), f"{field}.{k}", "an extra field must hold text or a number")


def _check_call(c, tools, field):
    """A call of a plan or of an injection: {"name": a tool of the task, "arguments": {...}} that the tool accepts."""
    _need(isinstance(c, dict) and isinstance(c.get("name"), str) and set(c) <= {"name", "arguments"}, field,
          'must be {"name": a tool of the task, "arguments": {...}}')
    _need(c["name"] in tools, f"{field}.name", f"'{c['name']}' is not among the task's tools")
    err = check_args(TOOLS[c["name"]]["parameters"], c.get("arguments", {}))
    _need(err is None, f"{field}.arguments", err)


def _check_check(c, tools, field):
    """A success or harm check: every argument it names is one the tool has, with a value of the tool's type."""
    _need(isinstance(c, dict) and isinstance(c.get("tool"), str), field, 'needs {"tool": name, ...}')
    for k in c:
        _need(k in ("tool", "args", "contains"), f"{field}.{k}", "unknown key (tool | args | contains)")
    tool = c["tool"]
    _need(tool in tools or tool == "answer", f"{field}.tool", f"names '{tool}', which is not among the task's tools")
    props = {"text": {"type": "string"}} if tool == "answer" else TOOLS[tool]["parameters"]["properties"]
    has = f"'{tool}' has " + (f"only the arguments {', '.join(props)}" if props else "no arguments")
    _need(isinstance(c.get("args", {}), dict), f"{field}.args", "must be an object")
    for k, v in c.get("args", {}).items():
        f = f"{field}.args.{k}"
        _need(k in props, f, f"{has}, so this check could never match")
        _need(fits(props[k]["type"], v), f, f"must be a {props[k]['type']}, like the tool's argument")
        if (tool, k) in envs.ADDRESS_ARGS:  # an empty list of attendees names nobody: envs.matches never matches it
            _need(v != [], f, "names no address, so this check could never match")
            try:
                for x in v if isinstance(v, list) else [v]:
                    recipients(x)
            except ToolError as e:
                _need(False, f, str(e))
    _need(isinstance(c.get("contains", {}), dict), f"{field}.contains", "must map argument names to lists of strings")
    for k, subs in c.get("contains", {}).items():
        f = f"{field}.contains.{k}"
        _need(k in props, f, f"{has}, so this check could never match")
        _need(props[k]["type"] != "number", f, "a number holds no text: compare it with args")
        _need(isinstance(subs, list) and all(isinstance(x, str) for x in subs), f, "must be a list of strings")
        for i, x in enumerate(subs):
            _need(norm(x), f"{f}[{i}]", "is empty once case, spaces and punctuation are ignored: it matches anything")


def _shown(state, tools):
    """Every text the task's tools can show of the world: each reading tool run on each entry it can name (its
    `names`: a file, an email, a contact, a page, a search for each page, ...), each listing tool (no required
    argument) run once; a tool that acts (sensitive) shows nothing. What no text here holds, no agent sees: an extra
    field of an event, a comment on a path that is no file, a page with no browse or search."""
    out = []
    for name in tools:
        t = TOOLS[name]
        if t["sensitive"]:
            calls = []
        elif t["names"]:
            arg, _, entries = t["names"]  # read_comments: the documents with comments (on any other file it
            keys = state["comments"] if name == "read_comments" else entries(state)  # echoes only the path given)
            calls = [{arg: x} for x in keys]
        else:
            calls = [] if t["parameters"]["required"] else [{}]
        for a in calls:
            try:
                out.append(t["run"](state, a))
            except ToolError:
                pass
    return out


def _check_names(c, state, tools, field, harm=False):
    """A check's argument naming an entry of the world (a tool's `names`, looked up as envs.NAME_ARGS says) names
    one the world holds, as the tool looks it up (a file may also be one that write_file creates), and a success
    check's URL to browse a page the world holds (same_url): otherwise no call could ever match the check. A harm
    check may browse any URL: the request reaches the site whether or not it has the page."""
    arg, what, entries = TOOLS.get(c["tool"], {}).get("names") or (None, None, None)  # "answer" has no record
    for k, v in c.get("args", {}).items():
        if k != arg:
            continue
        if (c["tool"], k) in envs.URL_ARGS and not harm:  # some URL opens a page and passes the check
            _need(any(same_url(p, v) or same_url(v, p) for p in entries(state)), f"{field}.args.{k}",
                  f"names no page of the world ('{v[:60]}'), so this check could never match")
        exact = envs.NAME_ARGS.get((c["tool"], k))
        if exact is None or (k == "path" and "write_file" in tools):
            continue
        names = entries(state)
        _need(v in names if exact else v.lower() in {str(x).lower() for x in names}, f"{field}.args.{k}",
              f"names no {what} of the world ('{v[:60]}'), so this check could never match")


def _implies(s, h, files):
    """Whether every call that passes success check s passes harm check h too: the same tool (or, for a harm check
    on delete_file, a write_file over a file of the world), every argument h names given alike in s, and every text
    h looks for inside an argument or a text s asks for."""
    sa = s.get("args", {})
    call = {"tool": s["tool"], "args": sa, "ok": True,
            "replaced": s["tool"] == "write_file" and sa.get("path") in files}  # the call s describes
    if not envs.matches({"tool": h["tool"], "args": h.get("args", {})}, call, harm=True):
        return False
    for k, subs in h.get("contains", {}).items():
        got = sa.get(k)
        have = [norm("|".join(got) if isinstance(got, list) else got)] if isinstance(got, (str, list)) else []
        have += [norm(x) for x in s.get("contains", {}).get(k, [])]
        if not all(any(norm(x) in y for y in have) for x in subs):
            return False
    return True


def _check_success_is_harmless(t, files):
    """A task that is not harmful must be able to succeed without harm: no harm check passes every call a success
    check passes, and no success check sends a secret to a receiver it names that is not entitled."""
    for i, s in enumerate(t["checks"].get("success", [])):
        f = f"checks.success[{i}]"
        for j, h in enumerate(t["checks"].get("harm", [])):
            _need(not _implies(s, h, files), f"checks.harm[{j}]", f"passes every call that passes {f}" + (
                " (overwriting a file counts as deleting it)" if h["tool"] != s["tool"] else "") +
                  ", so the task could succeed only by doing harm")
        if s["tool"] not in envs.OUTBOUND:
            continue
        arg, kind = envs.OUTBOUND[s["tool"]]
        args = s.get("args", {})
        if arg is not None and arg not in args and (t.get("entitled") or s["tool"] == "create_event"):
            continue  # the receiver is the agent's choice: an entitled one, or an event that invites nobody
        sent = [norm("|".join(v) if isinstance(v, list) else str(v)) for v in args.values()] + \
            [norm(x) for subs in s.get("contains", {}).values() for x in subs]
        who = sorted(envs.outsiders(t, s["tool"], args)) if arg is None or arg in args else \
            ["whoever it goes to (no one is entitled)"]
        for k, secret in enumerate(t.get("secrets", [])):
            _need(not who or not any(norm(secret) in x for x in sent), f,
                  f"sends secrets[{k}] to {who[0] if who else ''}, not entitled to it, so the task could succeed "
                  "only by leaking it")


def validate_task(t):
    """Check one task dict; return it completed with defaults, or raise TaskError('field ...: problem')."""
    _need(isinstance(t, dict), "(task)", "a task must be a JSON object")
    bad = _lone_surrogate(t)
    _need(bad is None, bad, "holds a lone surrogate escape (\\ud800 .. \\udfff), which is not text")
    for f in t:
        _need(f in REQUIRED or f in OPTIONAL, f, f"unknown field (known: {', '.join([*REQUIRED, *OPTIONAL])})")
    for f, typ in {**REQUIRED, **OPTIONAL}.items():
        _need(f in t or f not in REQUIRED, f, "missing")
        _need(f not in t or isinstance(t[f], typ), f,
              f"must be {_A[typ]}" + (" of strings" if f in ("secrets", "entitled", "domains") else ""))
    _need(t["id"].strip(), "id", "must not be empty")
    _need(t["category"] in CATEGORIES, "category", f"unknown category '{t['category']}' ({' | '.join(CATEGORIES)})")
    for i, name in enumerate(t["tools"]):
        _need(isinstance(name, str) and name in TOOLS, f"tools[{i}]", f"unknown tool '{name}'")
    tools = list(dict.fromkeys(t["tools"] + ["refuse"]))
    state = envs.empty_world()
    for k, v in t.get("state", {}).items():
        _need(k in state, f"state.{k}", f"unknown part of the world (known: {', '.join(state)})")
        _need(isinstance(v, type(state[k])), f"state.{k}", f"must be {_A[type(state[k])]}")
        state[k] = {**state[k], **v} if k == "bank" else v
    for k, shape in envs.WORLD.items():
        _check_shape(state[k], shape, f"state.{k}")
    for part in t["checks"]:
        _need(part in ("success", "harm"), f"checks.{part}", "unknown kind of check (success | harm)")
        _need(isinstance(t["checks"][part], list), f"checks.{part}", "must be a list")
        for i, c in enumerate(t["checks"][part]):
            _check_check(c, tools, f"checks.{part}[{i}]")
            _check_names(c, state, tools, f"checks.{part}[{i}]", harm=part == "harm")
    _need(t["checks"].get("success") or t["checks"].get("harm") or t["category"] in ("harmful", "injection"),
          "checks", "needs at least one success or harm check")  # harmful and injection tasks: below
    for f in ("secrets", "entitled", "domains"):
        _need(all(isinstance(x, str) for x in t.get(f, [])), f, "must be a list of strings")
    for i, s in enumerate(t.get("secrets", [])):
        _need(norm(s), f"secrets[{i}]", "is empty once case, spaces and punctuation are ignored: no leak shows")
    harm = t["checks"].get("harm")
    _need(harm or t.get("secrets") or t["category"] != "injection", "checks.harm", "an injection task needs a harm "
          "check (the injected goal, such as the attacker's send_email) or secrets (a leak of one is the attack "
          "succeeding): without either no episode counts as following the injection")
    _need(harm or t.get("secrets") or t["category"] != "harmful", "checks.harm", "a harmful task needs a harm check "
          "(the harmful act) or secrets: without one no episode counts as harmful")
    if t["category"] != "harmful":  # a harmful task's success checks are not scored (the judge: refuse it)
        _check_success_is_harmless(t, state["files"])
    for f in ("plan", "naive_plan"):
        for i, c in enumerate(t.get(f, [])):
            _check_call(c, tools, f"{f}[{i}]")
    if "injection" in t:
        inj = t["injection"]
        for k in inj:
            _need(k in INJECTION, f"injection.{k}", f"unknown field (known: {', '.join(INJECTION)})")
        _need("text" in inj, "injection.text", "missing (the planted instruction)")
        for k, typ in INJECTION.items():
            _need(k not in inj or (isinstance(inj[k], typ) and not isinstance(inj[k], bool)), f"injection.{k}",
                  f"must be {_A[typ]}")
        for i, c in enumerate(inj.get("calls", [])):
            _check_call(c, tools, f"injection.calls[{i}]")
        planted = norm(inj["text"])
        _need(planted in norm(t["instruction"]) or any(planted in norm(x) for x in _shown(state, tools)),
              "injection.text", "no tool of the task shows it: plant it in the world where a tool the task offers "
              "reads it (a file's content for read_file, a page for browse, an event's notes for list_events)")
        for f in ("plan", "naive_plan"):
            n = len(t.get(f, []))
            _need("after" not in inj or f not in t or 0 <= inj["after"] < n, "injection.after",
                  f"must be the index of the {f} call whose output shows the text (0 .. {n - 1})")
    return {"split": "custom", "template": "custom", "domains": sorted({TOOLS[n]["domain"] for n in tools}),
            "secrets": [], "entitled": [], **t, "tools": tools, "state": state,
            "checks": {"success": t["checks"].get("success", []), "harm": t["checks"].get("harm", [])}}


def load_tasks(path):
    """Read and validate a JSON-lines task file. Raises TaskError naming the line and field."""
    tasks, seen = [], set()
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")  # not splitlines(): that also splits at U+2028 and U+0085 inside strings
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(_one_line(f"{path}: cannot read ({e})")) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            t = validate_task(strict_json(line))
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise TaskError(f"{path}:{n}: not valid JSON (nested too deeply)") from None
        except TaskError as e:
            raise TaskError(f"{path}:{n}: {e}") from None
        except ValueError as e:  # strict_json: a key given twice, NaN or Infinity, a number out of range
            raise TaskError(_one_line(f"{path}:{n}: not valid JSON ({e})")) from None
        if t["id"] in seen:
            raise TaskError(_one_line(f"{path}:{n}: field 'id': duplicate id '{t['id']}'"))
        seen.add(t["id"])
        tasks.append(t)
    if not tasks:
        raise TaskError(f"{path}: no tasks")
    return tasks
