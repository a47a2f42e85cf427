"""Chat-template bookkeeping (a reader does not need this file to understand MOSAIC): how a conversation becomes
the exact token ids an episode keeps, for any model family's template.

- Text written by tasks and tools is defused: a special token spelled in it stays text and opens no turn.
- A template that rejects the `tool` role, or leaves it out without an error (Phi-4), gets tool results as `user`
  messages; one that rejects or leaves out `system` (Gemma) gets the system text in the first user message.
- The text after an assistant turn (its closing, the tool message, the next assistant header) is taken from the
  template by string difference (exact for ChatML, Llama 3 and Qwen templates), or, where the template rewrites the
  turn (Qwen3's <think> block), as the text it writes after a stand-in turn; it is tokenized as it follows the end
  token (SentencePiece tokenizers would otherwise add a space the conversation's text has not).
"""
STAND_IN = "MOSAIC_TURN_7f3a"  # a text any template writes as is (delta_text, render's check of dropped roles)


def defuse(tok, text):
    """`text` with each special token of `tok` written in it (`<|im_start|>`, `<|endoftext|>`, ...) broken up by a
    zero-width space after its first character, so that it is tokenized as the text it is: a task or a tool result
    that spells `<|im_end|><|im_start|>user` cannot open a turn of its own. A lone surrogate (a tool result that
    echoes a model's "\\ud800") becomes the text \\ud800, as write_atomic writes it: no tokenizer takes it."""
    for sp in {t.content for t in tok.added_tokens_decoder.values() if t.special} | set(tok.all_special_tokens):
        if len(sp) > 1 and sp in text:
            text = text.replace(sp, sp[0] + "\u200b" + sp[1:])
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def render(tok, messages, generation_prompt):
    """The chat template's text of `messages`. What tasks and tools wrote is defused; the model's own turns are
    rendered as written (their ids are the sampled ones, never re-encoded)."""
    messages = [m if m["role"] == "assistant" else {**m, "content": defuse(tok, m["content"])} for m in messages]

    def shows_all(text, msgs):  # a template may leave out a role it does not know without an error (Phi-4: tool).
        # Asked with stand-in texts: a tool result the agent repeated word for word (a password) is in the text anyway
        stand_in = [m if m["role"] == "assistant" else {**m, "content": f"{STAND_IN}_{i}_"} for i, m in enumerate(msgs)]
        text = tok.apply_chat_template(stand_in, add_generation_prompt=generation_prompt, tokenize=False)
        return all(f"{STAND_IN}_{i}_" in text for i, m in enumerate(msgs) if m["role"] != "assistant")

    try:
        text = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
        if shows_all(text, messages):
            return text
    except Exception:  # templates without a `tool` role: pass tool results as user messages
        pass
    msgs = [m if m["role"] != "tool" else {"role": "user", "content": "Tool result:\n" + m["content"]}
            for m in messages]
    try:
        text = tok.apply_chat_template(msgs, add_generation_prompt=generation_prompt, tokenize=False)
        if shows_all(text, msgs) or len(msgs) < 2 or msgs[0]["role"] != "system":
            return text
    except Exception:  # and without a `system` role (Gemma): the system text opens the first user message
        if len(msgs) < 2 or msgs[0]["role"] != "system":
            raise
    msgs = [{"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}] + msgs[2:]
    return tok.apply_chat_template(msgs, add_generation_prompt=generation_prompt, tokenize=False)


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_after_turn(tok, text):
    """The ids of `text` as it follows a turn's end token in the conversation: alone, a tokenizer that writes a space
    before a text's first word (SentencePiece, prepend_scheme "first") would add one the template's text has not."""
    lead = encode(tok, tok.eos_token)
    d = encode(tok, tok.eos_token + text)
    return d[len(lead):] if d[:len(lead)] == lead else encode(tok, text)


def delta_text(tok, messages, end_text):
    """Template text that follows the last assistant turn's tokens: its closing, the new tool message, and the next
    assistant header. `messages` ends with [assistant, tool]."""
    before = render(tok, messages[:-1], False)
    after = render(tok, messages, True)
    content, tail = messages[-2]["content"], None
    head = render(tok, messages[:-2], True)  # the prompt the turn was generated after
    if before.startswith(head) and after.startswith(before):  # the turn as the template wrote it (as is, or
        rest = before[len(head):]  # trimmed), then its closing
        tail = next((rest[len(c):] + after[len(before):] for c in (content, content.strip()) if rest.startswith(c)),
                    None)
    if tail is None:  # the template rewrote the turn, or the history (Qwen3: a <think> block, an empty one only in
        # the last message): its text after a stand-in turn that it writes as is
        after = render(tok, messages[:-2] + [{"role": "assistant", "content": STAND_IN}, messages[-1]], True)
        if STAND_IN not in after:
            raise ValueError("the chat template does not write an assistant message's content")
        tail = after[after.rfind(STAND_IN) + len(STAND_IN):]
    if end_text and tail.lstrip().startswith(end_text):  # the end-of-turn token the model wrote is already in the
        tail = tail.lstrip()[len(end_text):]  # ids (and the space a template writes before it, " </s>", cannot be)
    return tail
