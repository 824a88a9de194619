#!/usr/bin/env python3
"""test_sdk.py — `dsv4 serve` through the real `openai` and `anthropic` Python SDKs (and raw HTTP for bad
input), run by tests/cli/test_serve.sh against two servers on loopback over one random-weight checkpoint:

  A  prefix cache on, small limits (--ctx 1024 --max-body 65536), API key required
  B  --no-prefix-cache: the cold reference for the prefix test and the 64-client burst (every KV block must
     come back free afterwards, which residents of a prefix cache would blur)

Usage: test_sdk.py URL_A URL_B API_KEY DSV4_BINARY TOKENIZER_JSON
Checks every endpoint streamed and not, tools and tool history, thinking on and off, stop strings,
logprobs, greedy streamed == non-streamed, prompt token counts == `dsv4 chat-template` + `dsv4 tokenize`,
concurrency with disconnects, prefix reuse, and each bad input's 4xx with a JSON error body.
Prints one line per check and `N passed, N failed` last."""
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import urllib.error
import urllib.request

import anthropic
import openai

from sdk_check import check, finish, guarded

URL_A, URL_B, KEY, DSV4, TOK = sys.argv[1:6]

oa = openai.OpenAI(base_url=URL_A + "/v1", api_key=KEY, max_retries=0, timeout=120)
an = anthropic.Anthropic(base_url=URL_A, api_key=KEY, max_retries=0, timeout=120)
oa_b = openai.OpenAI(base_url=URL_B + "/v1", api_key="unused", max_retries=0, timeout=120)
MODEL = "dsv4"
GREEDY = dict(temperature=0)
T0 = {"temperature": 0}  # newer anthropic SDKs dropped the temperature argument; the API still takes it
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "Call the tool.",
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    {"role": "user", "content": "Thanks. And tomorrow?"},
]


def template_tokens(messages, tools=None, thinking=False):
    """Token count of `dsv4 chat-template` + `dsv4 tokenize` on the same messages and tools."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.json")
        with open(path, "w") as f:
            json.dump({"messages": messages, "tools": tools} if tools else messages, f)
        args = [DSV4, "chat-template", "--messages", path] + (["--thinking"] if thinking else [])
        prompt = subprocess.run(args, check=True, capture_output=True).stdout
        with open(os.path.join(d, "p.txt"), "wb") as f:
            f.write(prompt)
        ids = subprocess.run([DSV4, "tokenize", "--tokenizer", TOK, "--file", os.path.join(d, "p.txt")],
                             check=True, capture_output=True, text=True).stdout
    return len([x for x in re.split(r"[,\s\[\]]+", ids) if x])


def http(method, url, body=None, headers=None, timeout=60):
    """Raw HTTP (stdlib, so the test does not depend on the SDKs' transport): (status, body text)."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def health(url):
    return http("GET", url + "/health")[0]


def metrics(url):
    text = http("GET", url + "/metrics")[1]
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(dsv4_[a-z_]+) ([0-9.e+-]+)$", text, re.M)}


def chat_stream(client, **kw):
    """Streams a chat completion; returns (content, reasoning, finish_reason, usage, n_tool_call_deltas)."""
    content, reasoning, finish, usage, tcs = "", "", None, None, 0
    for ch in client.chat.completions.create(model=MODEL, stream=True, **kw):
        if ch.usage:
            usage = ch.usage
        for c in ch.choices:
            content += c.delta.content or ""
            reasoning += getattr(c.delta, "reasoning_content", None) or ""
            tcs += len(c.delta.tool_calls or [])
            finish = c.finish_reason or finish
    return content, reasoning, finish, usage, tcs


# ---------------------------------------------------------------------------------------------------
def test_basics():
    check("GET /health is 200", health(URL_A) == 200)
    models = oa.models.list().data
    check("GET /v1/models lists the model", len(models) == 1 and models[0].id)
    global MODEL
    MODEL = models[0].id
    m = metrics(URL_A)
    need = ["dsv4_requests_running", "dsv4_requests_waiting", "dsv4_kv_blocks_used", "dsv4_kv_blocks_free",
            "dsv4_prompt_tokens_total", "dsv4_generation_tokens_total", "dsv4_prefix_cache_hit_tokens_total",
            "dsv4_time_to_first_token_seconds_count", "dsv4_time_per_output_token_seconds_count"]
    check("GET /metrics has the issue's metrics", all(k in m for k in need), [k for k in need if k not in m])


def test_chat():
    msgs = [{"role": "user", "content": "Say something."}]
    r = oa.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, **GREEDY)
    c = r.choices[0]
    check("chat: an answer", isinstance(c.message.content, str) and r.usage.completion_tokens > 0,
          f"{c.message} {r.usage}")
    check("chat: prompt_tokens == chat-template token count", r.usage.prompt_tokens == template_tokens(msgs),
          f"{r.usage.prompt_tokens} vs {template_tokens(msgs)}")
    check("chat: thinking off by default (no reasoning)", not getattr(c.message, "reasoning_content", None))
    content, reasoning, finish, usage, _ = chat_stream(oa, messages=msgs, max_tokens=4,
                                                       stream_options={"include_usage": True}, **GREEDY)
    check("chat: greedy streamed == non-streamed", content == c.message.content and finish == c.finish_reason,
          f"{content!r} vs {c.message.content!r}, {finish} vs {c.finish_reason}")
    check("chat: stream_options.include_usage", usage is not None and usage.completion_tokens == r.usage.completion_tokens)
    check("chat: no DSML in content", "DSML" not in c.message.content)
    # role developer and unknown fields
    r2 = oa.chat.completions.create(model=MODEL, messages=[{"role": "developer", "content": "Be brief."}] + msgs,
                                    max_tokens=1, extra_body={"some_unknown_field": {"x": 1}}, **GREEDY)
    check("chat: role developer, unknown fields ignored", r2.choices[0].finish_reason in ("stop", "length"))
    # sampling with a seed is reproducible
    kw = dict(model=MODEL, messages=msgs, max_tokens=3, temperature=0.9, top_p=0.95, seed=11,
              extra_body={"top_k": 50, "min_p": 0.01})
    a, b = oa.chat.completions.create(**kw), oa.chat.completions.create(**kw)
    check("chat: seeded sampling reproducible", a.choices[0].message.content == b.choices[0].message.content)


def test_thinking():
    msgs = [{"role": "user", "content": "Think first."}]
    variants = {"reasoning_effort": dict(reasoning_effort="high"),
                "thinking enabled": dict(extra_body={"thinking": {"type": "enabled"}}),
                "chat_template_kwargs": dict(extra_body={"chat_template_kwargs": {"thinking": True}})}
    answers = []
    for name, kw in variants.items():
        r = oa.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3, **GREEDY, **kw)
        rc = getattr(r.choices[0].message, "reasoning_content", None)
        check(f"thinking on ({name}): reasoning_content returned", isinstance(rc, str) and (rc or r.choices[0].message.content),
              f"{r.choices[0].message}")
        check(f"thinking on ({name}): prompt_tokens == chat-template --thinking",
              r.usage.prompt_tokens == template_tokens(msgs, thinking=True))
        answers.append((rc, r.choices[0].message.content))
    check("thinking: the three dialects give one answer", all(x == answers[0] for x in answers))
    content, reasoning, _, _, _ = chat_stream(oa, messages=msgs, max_tokens=3, reasoning_effort="high", **GREEDY)
    check("thinking: streamed reasoning == non-streamed", (reasoning, content) == answers[0],
          f"{(reasoning, content)} vs {answers[0]}")
    # reasoning_content accepted back in history (the turn renders as chat-template renders it)
    hist = msgs + [{"role": "assistant", "content": "ok", "reasoning_content": "because"},
                   {"role": "user", "content": "again"}]
    r = oa.chat.completions.create(model=MODEL, messages=hist, max_tokens=1, reasoning_effort="high", **GREEDY)
    check("thinking: reasoning_content accepted in history",
          r.usage.prompt_tokens == template_tokens(hist, thinking=True))


def no_dsml_leak(content, finish):
    return "DSML" not in (content or "") or finish == "malformed_tool_call"


def test_tools():
    r = oa.chat.completions.create(model=MODEL, messages=HISTORY, tools=TOOLS, max_tokens=3, **GREEDY)
    check("tools: tool history accepted, prompt_tokens == chat-template",
          r.usage.prompt_tokens == template_tokens(HISTORY, TOOLS), f"{r.usage.prompt_tokens} vs {template_tokens(HISTORY, TOOLS)}")
    c = r.choices[0]
    check("tools: no DSML in content", no_dsml_leak(c.message.content, c.finish_reason), f"{c}")
    # forced tokens count as generated: the named call forces 17 tokens; 3 more are sampled. ("required" is
    # exercised through Anthropic's tool_choice any below; each tools prompt costs seconds under ASan.)
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = oa.chat.completions.create(model=MODEL, messages=HISTORY[:2], tools=TOOLS, tool_choice=choice,
                                   max_tokens=20, parallel_tool_calls=False, **GREEDY)
    c = r.choices[0]
    ok = no_dsml_leak(c.message.content, c.finish_reason) and (
        c.finish_reason in ("malformed_tool_call", "length") or c.message.tool_calls)
    check("tools: a named tool_choice forces a call (or says it is malformed)", ok, f"{c}")
    s = chat_stream(oa, messages=HISTORY[:2], tools=TOOLS, tool_choice=choice, max_tokens=20,
                    parallel_tool_calls=False, **GREEDY)
    check("tools: named tool_choice streamed == non-streamed",
          s[0] == (c.message.content or "") and s[2] == c.finish_reason and s[4] == len(c.message.tool_calls or []),
          f"{s} vs {c}")
    r = oa.chat.completions.create(model=MODEL, messages=HISTORY[:2], tools=TOOLS, tool_choice="none", max_tokens=2, **GREEDY)
    check("tools: tool_choice none leaves the tools out", r.usage.prompt_tokens == template_tokens(HISTORY[:2]))
    r = oa.chat.completions.create(model=MODEL, messages=HISTORY[:2], max_tokens=4,
                                   response_format={"type": "json_object"}, **GREEDY)
    check("response_format json_object accepted", r.choices[0].finish_reason in ("stop", "length"))


def test_stop_and_logprobs():
    msgs = [{"role": "user", "content": "Write a long line."}]
    full = oa.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, **GREEDY).choices[0].message.content
    cut = None
    for i in range(2, max(2, len(full) - 2)):
        s = full[i:i + 2]
        if s.strip() and full.find(s) == i:
            cut = (i, s)
            break
    if cut is None:
        check("stop strings (answer too short to cut)", True)
    else:
        r = oa.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, stop=[cut[1], "\x01never"], **GREEDY)
        check("stop: answer ends before the stop string", r.choices[0].message.content == full[:cut[0]] and
              r.choices[0].finish_reason == "stop", f"{r.choices[0].message.content!r} vs {full[:cut[0]]!r} (stop {cut[1]!r})")
        s = chat_stream(oa, messages=msgs, max_tokens=8, stop=[cut[1]], **GREEDY)
        check("stop: streamed == non-streamed", s[0] == full[:cut[0]], f"{s[0]!r}")
    r = oa.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3, logprobs=True, top_logprobs=3, **GREEDY)
    lp = r.choices[0].logprobs.content
    check("logprobs: one entry per token, 3 alternatives",
          len(lp) == r.usage.completion_tokens and all(len(x.top_logprobs) == 3 for x in lp), f"{len(lp)} {r.usage}")
    check("logprobs: greedy picks the most likely", all(abs(x.logprob - x.top_logprobs[0].logprob) < 1e-6 for x in lp))
    check("logprobs: values are log-probabilities", all(x.logprob <= 0 for x in lp))


def test_completions():
    r = oa.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=3, logprobs=2, **GREEDY)
    c = r.choices[0]
    check("completions: text and logprobs", isinstance(c.text, str) and len(c.logprobs.tokens) == r.usage.completion_tokens)
    text, finish = "", None
    for ch in oa.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=3, stream=True, **GREEDY):
        for x in ch.choices:
            text += x.text
            finish = x.finish_reason or finish
    check("completions: streamed == non-streamed", text == c.text and finish == c.finish_reason, f"{text!r} vs {c.text!r}")


def test_responses():
    r = oa.responses.create(model=MODEL, input="Say hi.", instructions="Be brief.", max_output_tokens=3, **GREEDY)
    check("responses: output_text", isinstance(r.output_text, str) and r.usage.output_tokens > 0, f"{r}")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]
    check("responses: input_tokens == chat-template", r.usage.input_tokens == template_tokens(msgs))
    text, done = "", None
    for ev in oa.responses.create(model=MODEL, input="Say hi.", instructions="Be brief.", max_output_tokens=3,
                                  stream=True, **GREEDY):
        if ev.type == "response.output_text.delta":
            text += ev.delta
        if ev.type in ("response.completed", "response.incomplete"):
            done = ev.response
    check("responses: streamed == non-streamed", text == r.output_text and done is not None and done.output_text == text,
          f"{text!r} vs {r.output_text!r}")
    hist = [{"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]
    tools = [{"type": "function", "name": "get_weather", "description": "Current weather of a city.",
              "parameters": TOOLS[0]["function"]["parameters"]}]
    r = oa.responses.create(model=MODEL, input=hist, tools=tools, max_output_tokens=4, **GREEDY)
    chat_hist = [hist[0], {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    check("responses: function_call history == chat-template", r.usage.input_tokens == template_tokens(chat_hist, TOOLS),
          f"{r.usage.input_tokens} vs {template_tokens(chat_hist, TOOLS)}")
    r = oa.responses.create(model=MODEL, input="Think.", reasoning={"effort": "high"}, max_output_tokens=4, **GREEDY)
    check("responses: reasoning item when thinking", any(o.type == "reasoning" for o in r.output) or r.output_text)


def test_anthropic():
    msgs = [{"role": "user", "content": "Say hi."}]
    m = an.messages.create(model=MODEL, max_tokens=3, system="Be brief.", messages=msgs, extra_body=T0)
    text = "".join(b.text for b in m.content if b.type == "text")
    check("messages: a text block", m.type == "message" and m.content and m.stop_reason in ("end_turn", "max_tokens"))
    n = an.messages.count_tokens(model=MODEL, system="Be brief.", messages=msgs).input_tokens
    check("count_tokens == chat-template", n == template_tokens([{"role": "system", "content": "Be brief."}] + msgs), n)
    check("messages: input + cache_read tokens == count_tokens",
          m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == n, f"{m.usage} vs {n}")
    with an.messages.stream(model=MODEL, max_tokens=3, system="Be brief.", messages=msgs, extra_body=T0) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    check("messages: streamed == non-streamed", streamed == text and final.stop_reason == m.stop_reason,
          f"{streamed!r} vs {text!r}")
    # thinking blocks, streamed and not
    m = an.messages.create(model=MODEL, max_tokens=3, messages=msgs, extra_body=T0,
                           thinking={"type": "enabled", "budget_tokens": 1024})
    check("messages: thinking block first", m.content and m.content[0].type == "thinking", f"{m.content}")
    with an.messages.stream(model=MODEL, max_tokens=3, messages=msgs, extra_body=T0,
                            thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    check("messages: streamed thinking == non-streamed",
          [b.model_dump() for b in final.content] == [b.model_dump() for b in m.content], f"{final.content} vs {m.content}")
    check("messages: event sequence", events[0] == "message_start" and events[-1] == "message_stop" and
          "content_block_start" in events and "message_delta" in events, events)
    # tool_use / tool_result history, tools, tool_choice
    tools = [{"name": "get_weather", "description": "Current weather of a city.",
              "input_schema": TOOLS[0]["function"]["parameters"]}]
    hist = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "Call the tool.", "signature": ""},
                                              {"type": "tool_use", "id": "call_1", "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny, 21 C"},
                                         {"type": "text", "text": "Thanks. And tomorrow?"}]}]
    n = an.messages.count_tokens(model=MODEL, system="You are terse.", messages=hist, tools=tools).input_tokens
    check("messages: tool history == the chat dialect's prompt", n == template_tokens(HISTORY, TOOLS),
          f"{n} vs {template_tokens(HISTORY, TOOLS)}")
    # tool_choice any = "required": forces the 7-token opening of a tool-call block
    m = an.messages.create(model=MODEL, max_tokens=10, system="You are terse.", messages=hist[:1], tools=tools,
                           tool_choice={"type": "any"}, extra_body=T0)
    texts = "".join(b.text for b in m.content if b.type == "text")
    # malformed DSML (random weights) comes back as text with stop_reason end_turn: Anthropic clients only
    # know the Messages API's stop reasons
    forced = "\n\n<\uff5cDSML\uff5ctool_calls>"
    check("messages: tool_choice any forces tool_use (or returns the malformed call as text)",
          any(b.type == "tool_use" for b in m.content) or m.stop_reason == "max_tokens" or
          (m.stop_reason == "end_turn" and texts.startswith(forced)), f"{m}")


def test_prefix_reuse():
    """A second turn extending the first is served from the resident prefix, with the cold run's answer."""
    t1 = [{"role": "user", "content": "First turn of an agent session."}]
    r1 = oa.chat.completions.create(model=MODEL, messages=t1, max_tokens=1, **GREEDY)
    t2 = t1 + [{"role": "assistant", "content": r1.choices[0].message.content},
               {"role": "user", "content": "Second turn."}]
    warm = oa.chat.completions.create(model=MODEL, messages=t2, max_tokens=3, **GREEDY)
    cold = oa_b.chat.completions.create(model=MODEL, messages=t2, max_tokens=3, **GREEDY)
    cached = warm.usage.prompt_tokens_details.cached_tokens if warm.usage.prompt_tokens_details else 0
    check("prefix: second turn served with cached tokens > 0", cached and cached > 0, f"{warm.usage}")
    check("prefix: same answer as a cold run", warm.choices[0].message.content == cold.choices[0].message.content and
          warm.usage.prompt_tokens == cold.usage.prompt_tokens,
          f"{warm.choices[0].message.content!r} vs {cold.choices[0].message.content!r}")
    check("prefix: cold run reports no cached tokens",
          not cold.usage.prompt_tokens_details or not cold.usage.prompt_tokens_details.cached_tokens)
    m = metrics(URL_A)
    check("prefix: dsv4_prefix_cache_hit_tokens_total counts it", m.get("dsv4_prefix_cache_hit_tokens_total", 0) >= cached)
    # Anthropic reports the same as cache_read_input_tokens (a fresh chain: the chain above moved on)
    a1 = [{"role": "user", "content": "Another agent session starts."}]
    r1 = oa.chat.completions.create(model=MODEL, messages=a1, max_tokens=1, **GREEDY)
    am = an.messages.create(model=MODEL, max_tokens=1, messages=a1 + [
        {"role": "assistant", "content": r1.choices[0].message.content}, {"role": "user", "content": "Second turn."}],
        extra_body=T0)
    check("prefix: Anthropic cache_read_input_tokens > 0", (am.usage.cache_read_input_tokens or 0) > 0, f"{am.usage}")


BURST_TOKENS = 2  # small: 64 requests on the ASan build of a 2-core machine


def test_concurrency():
    """64 streaming clients on server B, a third of them leaving early; completed answers equal solo runs."""
    prompts = [f"Client group {g}: say something." for g in range(4)]
    ref = {}
    for p in prompts:
        r = oa_b.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=BURST_TOKENS, **GREEDY)
        ref[p] = (r.choices[0].message.content, r.choices[0].finish_reason)
    results, errors = {}, []
    rng = random.Random(1234)
    plan = [(i, prompts[i % 4], rng.randint(1, 2 + BURST_TOKENS) if i % 3 == 0 else None) for i in range(64)]

    def client(i, p, leave_after):
        try:
            c = openai.OpenAI(base_url=URL_B + "/v1", api_key="unused", max_retries=0, timeout=300)
            s = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=BURST_TOKENS,
                                          stream=True, **GREEDY)
            text, finish, n = "", None, 0
            for ch in s:
                n += 1
                for x in ch.choices:
                    text += x.delta.content or ""
                    finish = x.finish_reason or finish
                if leave_after is not None and n >= leave_after:
                    s.close()  # vanish mid-answer
                    return
            results[i] = (text, finish)
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=x) for x in plan]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    check("burst: no client failed", not errors, errors[:3])
    bad = [i for i, v in results.items() if v != ref[plan[i][1]]]
    check(f"burst: {len(results)} completed answers == the same request alone", results and not bad,
          [(i, results[i], ref[plan[i][1]]) for i in bad[:3]])
    deadline, m = time.time() + 60, {}
    while time.time() < deadline:
        m = metrics(URL_B)
        gen0 = m.get("dsv4_generation_tokens_total", 0)
        if m.get("dsv4_requests_running", 1) == 0 and m.get("dsv4_requests_waiting", 1) == 0 and m.get("dsv4_kv_blocks_used", 1) == 0:
            break
        time.sleep(0.2)
    check("burst: dsv4_requests_running back to 0", m.get("dsv4_requests_running") == 0, m)
    check("burst: every KV block free again", m.get("dsv4_kv_blocks_used") == 0 and m.get("dsv4_kv_blocks_free", 0) > 0, m)
    check("burst: /health still 200", health(URL_B) == 200)
    # a non-streamed request whose client leaves is cancelled too (200 tokens would take far longer)
    host, port = URL_B.split("//")[1].split(":")
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Long answer please."}],
                       "max_tokens": 200, "temperature": 0}).encode()
    with socket.create_connection((host, int(port))) as sk:
        sk.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(1.0)
    t1, m = time.time(), {}
    while time.time() < t1 + 30:
        m = metrics(URL_B)
        if m.get("dsv4_requests_running", 1) == 0 and m.get("dsv4_kv_blocks_used", 1) == 0:
            break
        time.sleep(0.2)
    check("vanished non-streamed client: cancelled, blocks back", m.get("dsv4_requests_running") == 0 and
          m.get("dsv4_kv_blocks_used") == 0 and m.get("dsv4_generation_tokens_total", 0) < gen0 + 150,
          f"{m} (generated before: {gen0})")
    print(f"     (burst of 64 took {time.time() - t0:.1f} s)", flush=True)


def test_bad_input():
    h = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    ok_msgs = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}

    def expect(name, path, body, want, headers=h, anthropic_shape=False, needle=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, text = http("POST", URL_A + path, data, headers)
        try:
            j = json.loads(text)
            msg = j["error"]["message"]
            shape = j.get("type") == "error" and "type" in j["error"] if anthropic_shape else "type" in j["error"]
        except Exception:  # noqa: BLE001
            msg, shape = None, False
        ok = status == want and msg and shape and (needle is None or needle in msg)
        check(f"bad input: {name} -> {want} with a JSON error", ok, f"{status} {text[:300]}")

    expect("malformed JSON", "/v1/chat/completions", b'{"messages": [', 400, needle="malformed JSON")
    expect("invalid UTF-8", "/v1/chat/completions", b'{"messages":[{"role":"user","content":"caf\xe9"}]}', 400,
           needle="UTF-8")
    expect("wrong type", "/v1/chat/completions", dict(ok_msgs, temperature="hot"), 400, needle="temperature")
    expect("wrong type (max_tokens)", "/v1/messages", dict(ok_msgs, max_tokens="many"), 400, anthropic_shape=True,
           needle="max_tokens")
    expect("unknown role", "/v1/chat/completions", dict(ok_msgs, messages=[{"role": "wizard", "content": "x"}]), 400,
           needle="wizard")
    expect("unknown role (anthropic)", "/v1/messages", dict(ok_msgs, messages=[{"role": "wizard", "content": "x"}]),
           400, anthropic_shape=True, needle="wizard")
    long = dict(ok_msgs, messages=[{"role": "user", "content": "hello " * 1500}])
    expect("over-context prompt (names both numbers)", "/v1/chat/completions", long, 400, needle="context of 1024")
    expect("oversize body", "/v1/chat/completions", dict(ok_msgs, pad="x" * 100000), 413)
    expect("wrong API key", "/v1/chat/completions", ok_msgs, 401, headers={"Authorization": "Bearer wrong"})
    expect("no API key (anthropic)", "/v1/messages", ok_msgs, 401, headers={}, anthropic_shape=True)
    status, text = http("POST", URL_A + "/v1/messages", json.dumps(ok_msgs).encode(), {"x-api-key": KEY})
    check("x-api-key accepted", status == 200, text[:200])
    expect("unknown endpoint", "/v1/nothing", ok_msgs, 404)
    check("server healthy after bad input", health(URL_A) == 200)


for group in (test_basics, test_chat, test_thinking, test_tools, test_stop_and_logprobs, test_completions,
              test_responses, test_anthropic, test_prefix_reuse, test_concurrency, test_bad_input):
    t = time.time()
    guarded(group)
    print(f"     ({group.__name__}: {time.time() - t:.1f} s)", flush=True)
finish()
