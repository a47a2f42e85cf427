"""The layout of docs/layout.md stays true: the top level holds the reading path only, imports flow one way (no
cycle among the project's modules), every plumbing module says that a reader can skip it, and no file points to a
document the repository does not have."""
import ast
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP = {"train.py", "rollout.py", "judge.py", "evaluate.py", "envs.py", "model.py", "tasks.py", "engine.py"}


def project_files():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return sorted(f for f in out if not f.startswith("tests/") and os.path.exists(os.path.join(ROOT, f)))


def module_name(path):
    name = path[:-3].replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def imports(path, modules):
    """The project modules `path` imports, at any depth of its code (a lazy import is an import too)."""
    found = set()
    for node in ast.walk(ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found - {module_name(path)}


def test_top_level_holds_the_reading_path_only():
    top = {f for f in os.listdir(ROOT) if f.endswith(".py")}
    assert top == TOP, f"top-level scripts other than the reading path: {sorted(top - TOP)}; missing {TOP - top}"
    for folder in ("plumbing", "measure", "extras", "warmstart"):
        assert os.path.isfile(os.path.join(ROOT, folder, "__init__.py"))


def test_no_import_cycle():
    files = project_files()
    modules = {module_name(f): f for f in files}
    graph = {m: imports(f, modules) for m, f in modules.items()}
    assert graph["train"] >= {"judge", "rollout"} and "rollout" in graph["judge"] | graph["train"]
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            assert state.get(n) != "open", "import cycle: " + " -> ".join(path + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_data_flows_one_way():
    """The reading path imports only what comes before it: envs, tasks, model, engine, rollout, judge, train (and
    train the evaluation and the warm start's drills)."""
    order = ["envs", "tasks", "model", "engine", "rollout", "judge", "train"]
    modules = {module_name(f): f for f in project_files()}
    allowed = {"train": {"evaluate", "warmstart"}}  # train runs the evaluation and the warm start's drills
    for i, m in enumerate(order):
        later = set(order[i + 1:]) | {"evaluate", "measure", "extras", "warmstart"}
        bad = {n for n in imports(modules[m], modules) if n.split(".")[0] in later - allowed.get(m, set())}
        assert not bad, f"{m}.py imports {sorted(bad)}, which come after it"


def test_plumbing_modules_say_a_reader_can_skip_them():
    for f in project_files():
        if f.startswith("plumbing/"):
            doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, f), encoding="utf-8").read())) or ""
            assert "a reader does not need" in doc.split("\n\n")[0].lower(), f


def test_no_pointer_to_a_missing_document():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in tracked + ["docs/layout.md"]:
        if f.endswith((".py", ".md", ".txt", "Makefile")) and os.path.exists(os.path.join(ROOT, f)):
            text = re.sub(r"https?://\S+", "", open(os.path.join(ROOT, f), encoding="utf-8").read())
            for doc in set(re.findall(r"([\w.-]+(?:/[\w.-]+)*\.md)\b", text)):
                here = [os.path.join(ROOT, d, doc) for d in ("", os.path.dirname(f), "docs")]
                assert any(os.path.exists(p) for p in here), f"{f} points to {doc}, which the repository does not have"


def test_the_import_list_of_layout_md_is_the_code_s():
    """Each module in docs/layout.md's import list imports exactly the project modules listed after its arrow (lazy
    imports included, named in its parentheses), and every module outside measure/ is listed; measure.* may import
    anything."""
    text = open(os.path.join(ROOT, "docs", "layout.md"), encoding="utf-8").read()
    block = text.split("## Imports", 1)[1].split("```")[1]
    modules = {module_name(f): f for f in project_files()}
    packages = {"plumbing", "extras", "measure", "warmstart"}
    named = lambda s: {m for m in modules if m not in packages and re.search(rf"(?<![\w.]){re.escape(m)}(?!\w)", s)}
    rows = []
    for line in block.strip().splitlines():
        if line.startswith(" "):  # a row continued
            rows[-1][1] += " " + line
        else:
            left, _, right = line.partition("<-") if "<-" in line else line.partition("(")
            rows.append([left, right])
    listed = set()
    for left, right in rows:
        for m in named(left) if left.strip() != "measure.*" else ():
            listed.add(m)
            assert imports(modules[m], modules) - packages == named(right), f"docs/layout.md's row of {m}"
    unlisted = {m for m in modules if m not in packages and not m.startswith("measure.")} - listed
    assert not unlisted, f"not in docs/layout.md's import list: {sorted(unlisted)}"
