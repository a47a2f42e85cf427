"""evaluate.py's HTML page (a reader does not need this file to understand MOSAIC): one self-contained file with the
metric tables and every trajectory, filterable by policy, category and outcome, each turn's think / safety_thoughts /
tool call / tool result shown apart, injected text and secrets highlighted. Every piece of text is escaped, and a
Content-Security-Policy lets only the page's own script (allowed by its hash) run and nothing load from the network.
"""
import base64
import hashlib
import html
import json
import re

import envs
from plumbing.report import fmt

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;
color:#1f2328;background:#f6f8fa}
h1{font-size:22px;margin:4px 0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 6px}.sub{color:#59636e;margin:0 0 8px}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;background:#fff;margin:4px 0 8px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 10px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#eef1f4}tr.grp td{background:#f6f8fa;font-weight:600}
.ci{color:#6e7781;font-size:11px}.grid{display:flex;flex-wrap:wrap;gap:6px 24px}
.bar{position:sticky;top:0;background:#f6f8fa;padding:8px 0;z-index:1;display:flex;gap:12px;align-items:center;
flex-wrap:wrap;border-bottom:1px solid #d0d7de}
select,button{font:inherit;padding:2px 6px}
details.ep{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:6px 0}
details.ep>summary{cursor:pointer;padding:6px 10px;display:flex;gap:8px;align-items:center;overflow:hidden}
details.ep>summary .ins{color:#59636e;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;flex:1}
.body{padding:4px 12px 10px}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff;
white-space:nowrap}
.b-unsafe{background:#cf222e}.b-success{background:#1a7f37}.b-failed{background:#6e7781}
.b-refused{background:#9a6700}.b-refused.good{background:#1a7f37}
.b-fmt{background:#fff;color:#cf222e;border:1px solid #cf222e}
.b-trunc{background:#fff;color:#59636e;border:1px solid #8c959f}
.pol{font-weight:600}.meta{color:#59636e}
.msg{margin:6px 0;padding:6px 10px;border-left:4px solid #d0d7de;white-space:pre-wrap;word-break:break-word;
background:#fff}
.lab{display:block;font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.04em;color:#59636e;
white-space:normal}
.user{border-color:#8250df;background:#fbf8ff}
.think{border-color:#8c959f;color:#424a53;font-style:italic;background:#f6f8fa}
.safety{border-color:#bf8700;background:#fff8c5}
.call{border-color:#0969da;background:#f1f8ff}.refuse{border-color:#cf222e;background:#ffebe9}
.answer{border-color:#1a7f37;background:#dafbe1}
.tool{border-color:#afb8c1;background:#f6f8fa;margin-left:28px;color:#424a53}
.raw{border-color:#cf222e;border-left-style:dashed;background:#fff}
mark.inj{background:#ffd8b5;color:#7d2e00;border-bottom:2px solid #e16f24;padding:0 1px}
mark.secret{background:#ffc1c0;color:#82071e;font-weight:600;padding:0 1px}
.out{margin-top:6px;color:#424a53;font-size:12px}
[hidden]{display:none!important}
"""

JS = """
const $ = id => document.getElementById(id);
function apply() {
  const p = $('f-policy').value, c = $('f-cat').value, o = $('f-out').value;
  let n = 0;
  for (const e of document.querySelectorAll('details.ep')) {
    const show = (!p || e.dataset.policy === p) && (!c || e.dataset.cat === c) &&
                 (!o || e.dataset.out.split(' ').includes(o));
    e.hidden = !show; n += show;
  }
  $('f-count').textContent = n + ' shown';
}
for (const id of ['f-policy', 'f-cat', 'f-out']) $(id).addEventListener('change', apply);
function setOpen(selector, open) { document.querySelectorAll(selector).forEach(e => e.open = open); }
$('f-open').addEventListener('click', () => setOpen('details.ep:not([hidden])', true));
$('f-close').addEventListener('click', () => setOpen('details.ep', false));
apply();
"""
E = html.escape
_BLOCK = re.compile(r"<(think|safety_thoughts|tool_call|answer)>(.*?)</\1>", re.S)


def _marked(text, needles, cls):
    """Escape `text`, wrapping each occurrence of a needle (matched on the raw text) in <mark class=cls>."""
    spans = []  # every occurrence of every needle, overlapping ones too ('abcd' and 'cdef' in 'abcdef')
    for n in {n for n in needles if n and n.strip()}:
        i = text.find(n)
        while i >= 0:
            spans.append((i, i + len(n)))
            i = text.find(n, i + 1)
    merged = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, pos = [], 0
    for a, b in merged:
        out += [E(text[pos:a]), f'<mark class="{cls}">{E(text[a:b])}</mark>']
        pos = b
    return "".join(out) + E(text[pos:])


def _msg(cls, label, inner):
    return f'<div class="msg {cls}"><span class="lab">{E(label)}</span>{inner}</div>'


def _assistant_html(text, secrets):
    """One assistant turn, each tag block shown in its own style; text outside the tags as 'unparsed'."""
    out, pos = [], 0
    for m in _BLOCK.finditer(text):
        if text[pos:m.start()].strip():
            out.append(_msg("raw", "unparsed text", E(text[pos:m.start()].strip())))
        tag, body = m.group(1), m.group(2).strip()
        if tag == "tool_call":
            try:
                call = json.loads(body)
            except (ValueError, RecursionError):
                call = None
            if isinstance(call, dict) and call.get("name") == "refuse":
                args = call.get("arguments")
                out.append(_msg("refuse", "refuse", E(str(args.get("reason", "")) if isinstance(args, dict) else "")))
            else:
                out.append(_msg("call", "tool call", _marked(body, secrets, "secret")))
        else:
            cls, label = {"think": ("think", "think"), "safety_thoughts": ("safety", "safety thoughts"),
                          "answer": ("answer", "answer")}[tag]
            out.append(_msg(cls, label, E(body)))
        pos = m.end()
    if text[pos:].strip() or not out:
        out.append(_msg("raw", "unparsed text", E(text[pos:].strip()) or "(empty)"))
    return "".join(out)


def verdict(traj):
    """Outcome tags of one episode, first the main one: unsafe | refused | success | failed, then 'format'."""
    o = traj["outcome"]
    main = "unsafe" if o["harm_events"] else "refused" if o["refused"] else "success" if o["task_success"] else "failed"
    return [main] + (["format"] if o["format_errors"] else [])


def _episode_html(traj, policy_index, task):
    tags = verdict(traj)
    o = traj["outcome"]
    good = " good" if tags[0] == "refused" and traj["category"] == "harmful" else ""
    badges = f'<span class="badge b-{tags[0]}{good}">{tags[0]}</span>'
    if "format" in tags:
        badges += f'<span class="badge b-fmt">format errors: {int(o["format_errors"])}</span>'
    if o.get("truncated"):
        badges += '<span class="badge b-trunc">step limit</span>'
    instruction = next((m["content"] for m in traj["messages"] if m["role"] == "user"), "")
    # secrets as written, and as they look inside a JSON tool call ("\n", "\u00e9" ...)
    secrets = [v for x in traj.get("secrets") or []
               for v in (x, json.dumps(x)[1:-1], json.dumps(x, ensure_ascii=False)[1:-1])]
    body = []
    for m in traj["messages"]:
        if m["role"] == "user":
            body.append(_msg("user", "user", E(m["content"])))
        elif m["role"] == "assistant":
            body.append(_assistant_html(m["content"], secrets))
        elif m["role"] == "tool":
            body.append(_msg("tool", "tool result", _marked(m["content"], [traj.get("injection") or ""], "inj")))
    keys = ("task_success", "refused", "harm_events", "injection_followed", "injection_attempted", "injection_seen",
            "leaked", "format_errors", "steps", "tokens", "truncated")
    out_line = ", ".join(f"{k}={json.dumps(o.get(k), ensure_ascii=False)}" for k in keys)
    tools = ", ".join(t for t in (task or {}).get("tools", []))
    return (f'<details class="ep" data-policy="{policy_index}" data-cat="{E(traj["category"])}" '
            f'data-out="{" ".join(tags)}"><summary>{badges}<span class="pol">{E(traj["policy"])}</span>'
            f'<span class="mono meta">{E(traj["task_id"])}</span><span class="meta">{E(traj["template"])}</span>'
            f'<span class="ins">{E(instruction)}</span></summary><div class="body">'
            + (f'<div class="meta mono">tools: {E(tools)}</div>' if tools else "")
            + "".join(body) + f'<div class="out mono">outcome: {E(out_line)}</div></div></details>')


def _html_table(results, metrics):
    labels = list(results)
    rows = ["<tr><th>metric</th>" + "".join(f"<th>{E(lab)}</th>" for lab in labels) + "</tr>"]
    for g, names in metrics.items():
        rows.append(f'<tr class="grp"><td>{g}</td>' + "".join(f"<td>n = {results[lab][g]['n']}</td>" for lab in labels)
                    + "</tr>")
        for name in names:
            cells = []
            for lab in labels:
                v, ci = results[lab][g][name], results[lab]["ci"][g].get(name)
                txt = fmt(v, decimals=1 if name == "mean_tokens" else 2)
                cells.append(f"<td>{txt}" + (f' <span class="ci">[{ci[0]:.2f}, {ci[1]:.2f}]</span>' if ci else "")
                             + "</td>")
            rows.append(f"<tr><td>&nbsp;&nbsp;{name}</td>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _heat(v, higher_is_better):
    if v is None:
        return ""
    good = v if higher_is_better else 1 - v
    return f' style="background:hsl({int(good * 120)},70%,88%)"'


def _html_breakdown(results, main):
    labels, parts = list(results), []
    for c, axes in results[labels[0]]["breakdown"].items():
        tables = []
        for axis, cells in axes.items():
            rows = ["<tr><th>" + E(axis) + "</th>" + "".join(f"<th>{E(lab)}</th>" for lab in labels) + "</tr>"]
            for v in cells:
                tds = []
                for lab in labels:
                    cell = results[lab]["breakdown"][c][axis][v]
                    x = cell[main[c]]
                    tds.append(f'<td{_heat(x, c == "benign")}>{fmt(x)} <span class="ci">n={cell["n"]}</span></td>')
                rows.append(f"<tr><td>{E(v)}</td>" + "".join(tds) + "</tr>")
            tables.append(f"<div><table>{''.join(rows)}</table></div>")
        parts.append(f"<h3>{c}: {main[c]}</h3><div class=grid>{''.join(tables)}</div>")
    return "".join(parts)


def render_html(results, trajs, tasks, title, subtitle, baseline, metrics, headline, main):
    """One self-contained page: the tables, then every trajectory with filters. `trajs` is {label: [traj, ...]};
    metrics ({group: [metric names]}), headline (names) and main ({category: its main metric}) name the tables' rows."""
    by_id = {t["id"]: t for t in tasks or []}
    labels = list(results)
    head = ""
    if baseline and len(labels) > 1:
        others = [lab for lab in labels if lab != baseline]
        rows = ["<tr><th>vs " + E(baseline) + "</th>" + "".join(f"<th>{E(lab)}</th>" for lab in others) + "</tr>"]
        for k in headline:
            rows.append(f"<tr><td>{k}</td>" + "".join(
                f"<td>{fmt(results[lab]['headline'][k], signed=k.startswith('delta'))}</td>" for lab in others)
                + "</tr>")
        head = f"<h2>Headline (vs baseline {E(baseline)})</h2><table>{''.join(rows)}</table>"
    order = {t["task_id"]: i for i, t in enumerate(next(iter(trajs.values()), []))}
    eps = sorted(((order.get(t["task_id"], 0), i, t) for i, lab in enumerate(labels) for t in trajs[lab]),
                 key=lambda x: (x[0], x[1]))
    cats = [c for c in envs.CATEGORIES if any(t["category"] == c for _, _, t in eps)]
    opt = lambda v, text: f'<option value="{E(str(v))}">{E(text)}</option>'
    bar = ('<div class="bar"><label>policy <select id="f-policy">' + opt("", "all")
           + "".join(opt(i, lab) for i, lab in enumerate(labels)) + '</select></label><label>category '
           '<select id="f-cat">' + opt("", "all") + "".join(opt(c, c) for c in cats) + '</select></label>'
           '<label>outcome <select id="f-out">' + opt("", "all")
           + "".join(opt(v, t) for v, t in [("unsafe", "unsafe"), ("refused", "refused"), ("success", "success"),
                                              ("failed", "failed"), ("format", "format error")])
           + '</select></label><button id="f-open">expand shown</button><button id="f-close">collapse all</button>'
           '<span id="f-count" class="meta"></span></div>')
    script_hash = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{E(title)}</title><style>{CSS}</style></head><body>"
            f'<h1>{E(title)}</h1><p class="sub">{E(subtitle)}</p>'
            f"<h2>Metrics (95% Wilson intervals)</h2>{_html_table(results, metrics)}{head}"
            f"<h2>Breakdown</h2>{_html_breakdown(results, main)}"
            f"<h2>Trajectories</h2>{bar}"
            + "".join(_episode_html(t, i, by_id.get(t["task_id"])) for _, i, t in eps)
            + f"<script>{JS}</script></body></html>\n")
