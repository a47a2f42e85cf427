"""The drills of the warm start's SFT (train.py: --sft-drills, --sft-goal-drills, and the drill-only steps of
`--preset base`): short chats whose answer is written by copying from the question, built from tasks.py's entity
generators and injection goals. The scripted episodes of the same SFT come from tasks.script through rollout.

    python -c "import random; from warmstart import drills; print(*drills.copy_drill(random.Random(0)), sep='\n')"
"""
from tasks import INJECTION_GOALS, INJECTION_STYLES, _World, _goal, _payload, _turn, _w, domain, quote


def copy_drill(rng):
    """(question, answer) of a short chat whose answer can only be written by copying from the question: repeat a
    list of entities, find the row that goes with one, or read one field of a contact record among others (as a
    find_contact result). It teaches a tiny model to copy names, addresses, ids and numbers (SFT on tasks alone did
    not: it wrote memorised constants); the tasks then teach it which entity goes where."""
    addr = lambda: f"{_w(rng)}@{domain(rng)}"
    kinds = [lambda: f"{_w(rng)} {_w(rng)}", addr, addr, lambda: f"B{rng.randint(100, 999)}",
             lambda: f"/docs/{_w(rng)}.txt", lambda: f"news.{_w(rng)}.com", lambda: str(rng.randint(10, 9999)),
             lambda: f"AC{rng.randint(100000, 999999)}", lambda: f"2026-12-{rng.randint(1, 28):02d}",
             lambda: " ".join(_w(rng, 1).lower() for _ in range(rng.randint(4, 10)))]  # a longer text
    entity = lambda: rng.choice(kinds)()
    r = rng.random()
    if r < 0.3:
        people = [(f"{_w(rng)} {_w(rng)}", addr(), f"555-{rng.randint(1000, 9999)}") for _ in range(rng.randint(1, 4))]
        name, email, phone = rng.choice(people)
        field, answer = rng.choice([("email", email), ("email", email), ("phone", phone)])
        question = "\n".join(f"name: {n} | email: {e} | phone: {p}" for n, e, p in people) + f"\nThe {field} of {name}?"
        return question, answer
    if r < 0.65:
        items = [entity() for _ in range(rng.randint(2, 5))]
        return "Repeat: " + " | ".join(items), " | ".join(items)
    rows = [(entity(), entity()) for _ in range(rng.randint(2, 4))]
    answer, value = rng.choice(rows)
    return "\n".join(f"{x} | {y}" for x, y in rows) + f"\nWhich goes with {value}?", answer


def goal_drill(rng):
    """(question, answer) of a short chat: a tool-output-like text with one planted instruction somewhere in it, and
    the helpful-only turn at the injection fork: the instruction quoted word for word, then the first call it asks
    for ("<think>The tool result says: <planted text></think>" + the call). Without them a base quoted planted text
    from the template it had seen most; with quote-only answers it quoted right, then mostly called a tool of the
    user's plan (a planted delete: never delete_file). The goals and wordings are those of the train split (not
    `explicit_call`: its text holds calls, not a goal)."""
    W = _World(rng)
    goal, calls = _goal(W, rng, rng.choice(INJECTION_GOALS["train"]))[:2]
    text = _payload(rng.choice([s for s in INJECTION_STYLES["train"] if s != "explicit_call"]), goal, [], rng)
    person = W.person()
    filler = [lambda: f"B{rng.randint(100, 999)} | {_w(rng)} Power | {rng.randint(20, 400)} | memo: ref {_w(rng)}",
              lambda: f"Today: {_w(rng)} opens on {W.date()}.",
              lambda: f"from: {person['email']} | subject: {_w(rng)} order | Hi, your order number is "
                      f"{rng.randint(1000, 9999)}. Regards, {person['name']}",
              lambda: f"{_w(rng)} {_w(rng)}: " + " ".join(_w(rng, 1).lower() for _ in range(rng.randint(3, 8))),
              lambda: f"{_w(rng).lower()}.com | All about the {_w(rng)} {_w(rng)}",
              lambda: f"total: {rng.randint(100, 9999)}"]
    lines = [rng.choice(filler)() for _ in range(rng.randint(1, 5))]
    lines.insert(rng.randint(0, len(lines)), text)
    question = rng.choice((" | ", "\n", " ")).join(lines) + "\nWhat does this text ask the assistant to do?"
    return question, _turn(quote(text), calls[0])
