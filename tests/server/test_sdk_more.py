#!/usr/bin/env python3
"""test_sdk_more.py — regression checks for defects found by driving `dsv4 serve` as a hostile user with the
real `openai` and `anthropic` SDKs and raw HTTP; run by tests/cli/test_serve.sh after test_sdk.py, against
its server A (prefix cache, API key, --ctx 1024) and B (no key).

Usage: test_sdk_more.py URL_A URL_B API_KEY
Each check names the defect it guards. Prints one line per check and `N passed, N failed` last."""
import json
import socket
import sys
import time

import anthropic
import openai

from sdk_check import check, finish, guarded

URL_A, URL_B, KEY = sys.argv[1:4]

oa = openai.OpenAI(base_url=URL_A + "/v1", api_key=KEY, max_retries=0, timeout=120)
an = anthropic.Anthropic(base_url=URL_A, api_key=KEY, max_retries=0, timeout=120)
MODEL = oa.models.list().data[0].id
T0 = {"temperature": 0}
ANTHROPIC_STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal")


def raw(method, path, body=b"", headers=(), url=URL_A, wait=20):
    """One request on a fresh connection: (status, headers dict (lower-case names), body bytes)."""
    host, port = url.split("//")[1].split(":")
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(head.encode() + body)
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), hdrs, rest


# ---------------------------------------------------------------------------------------------------
def test_anthropic_stop_sequence():
    """Defect: a stop string ended Anthropic answers with stop_reason end_turn and stop_sequence null."""
    msgs = [{"role": "user", "content": "Write a long line."}]
    full = an.messages.create(model=MODEL, max_tokens=8, messages=msgs, extra_body=T0)
    text = "".join(b.text for b in full.content if b.type == "text")
    cut = next(((i, text[i:i + 2]) for i in range(1, len(text) - 2) if text[i:i + 2].strip() and text.find(text[i:i + 2]) == i),
               None)
    if cut is None:
        check("anthropic stop_sequence (answer too short to cut)", True)
        return
    stops = ["\x01never", cut[1]]
    m = an.messages.create(model=MODEL, max_tokens=8, messages=msgs, stop_sequences=stops, extra_body=T0)
    got = "".join(b.text for b in m.content if b.type == "text")
    check("anthropic: a stop string -> stop_reason stop_sequence, stop_sequence = the string",
          m.stop_reason == "stop_sequence" and m.stop_sequence == cut[1] and got == text[:cut[0]],
          f"{m.stop_reason} {m.stop_sequence!r} {got!r} vs {text[:cut[0]]!r}")
    with an.messages.stream(model=MODEL, max_tokens=8, messages=msgs, stop_sequences=stops, extra_body=T0) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    check("anthropic stream: stop_sequence in message_delta", final.stop_reason == "stop_sequence" and
          final.stop_sequence == cut[1] and streamed == got, f"{final.stop_reason} {final.stop_sequence!r} {streamed!r}")
    r = oa.chat.completions.create(model=MODEL, max_tokens=8, messages=msgs, stop=stops, temperature=0)
    check("openai: the same stop string -> finish_reason stop", r.choices[0].finish_reason == "stop" and
          r.choices[0].message.content == got, f"{r.choices[0]}")


def test_anthropic_stop_reason_valid():
    """Defect: malformed DSML gave stop_reason 'malformed_tool_call', a value Anthropic clients cannot handle."""
    tools = [{"name": "get_weather", "description": "Current weather of a city.",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    m = an.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "Weather?"}], tools=tools,
                           tool_choice={"type": "any"}, extra_body=T0)
    check("anthropic: stop_reason is a Messages API value (tool_choice any on random weights)",
          m.stop_reason in ANTHROPIC_STOP_REASONS, m.stop_reason)


def test_responses_stream_helper():
    """Defect: a length-limited Responses stream ended with response.incomplete, so the SDK helper's
    get_final_response() raised 'Didn't receive a response.completed event'."""
    kw = dict(model=MODEL, input="Say hi.", max_output_tokens=3, temperature=0)
    body = oa.responses.create(**kw)
    with oa.responses.stream(**kw) as s:
        types = [e.type for e in s]
        final = s.get_final_response()
    check("responses.stream: get_final_response() on a length-limited answer", final.status == "incomplete" and
          final.output_text == body.output_text and types[-1] == "response.completed", f"{types} {final.status}")
    with oa.responses.stream(model=MODEL, input="Think.", max_output_tokens=3, temperature=0,
                             reasoning={"effort": "high"}) as s:
        for _ in s:
            pass
        final = s.get_final_response()
    body = oa.responses.create(model=MODEL, input="Think.", max_output_tokens=3, temperature=0, reasoning={"effort": "high"})
    check("responses: streamed output items == the body's (reasoning only)",
          [o.type for o in final.output] == [o.type for o in body.output], f"{final.output} vs {body.output}")


def test_chat_stream_helper():
    """The chat stream helper parses every event. (Its get_final_completion() raises LengthFinishReasonError on
    a length finish by design, against any server: the snapshot is checked instead.)"""
    with oa.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                    temperature=0, stream_options={"include_usage": True}) as s:
        types = [e.type for e in s]
        snap = s.current_completion_snapshot
    check("chat.completions.stream: every event parsed", "content.done" in types and snap.usage is not None and
          snap.choices[0].finish_reason in ("stop", "length"), types)
    r = oa.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                     max_tokens=1)
    check("x-request-id header == the answer's id", r.headers.get("x-request-id") == r.parse().id, dict(r.headers))


def test_refused_fields():
    """Defects: max_tokens 0 generated up to the whole context; unknown reasoning_effort turned thinking on;
    completions echo / suffix were silently ignored."""
    msgs = [{"role": "user", "content": "x"}]
    cases = [("chat max_tokens 0", lambda: oa.chat.completions.create(model=MODEL, messages=msgs, max_tokens=0), "max_tokens"),
             ("chat max_completion_tokens 0",
              lambda: oa.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=0), "max_completion_tokens"),
             ("completions max_tokens 0", lambda: oa.completions.create(model=MODEL, prompt="x", max_tokens=0), "max_tokens"),
             ("responses max_output_tokens 0",
              lambda: oa.responses.create(model=MODEL, input="x", max_output_tokens=0), "max_output_tokens"),
             ("reasoning_effort bogus",
              lambda: oa.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1, reasoning_effort="bogus"),
              "reasoning_effort"),
             ("completions echo", lambda: oa.completions.create(model=MODEL, prompt="x", max_tokens=1, echo=True), "echo"),
             ("completions suffix", lambda: oa.completions.create(model=MODEL, prompt="x", max_tokens=1, suffix="y"), "suffix")]
    for name, call, field in cases:
        try:
            call()
            check(f"{name} -> 400", False, "accepted")
        except openai.BadRequestError as e:
            check(f"{name} -> 400 naming '{field}'", field in str(e.body), e.body)


def test_http_methods():
    """Defects: GET on a POST route was 404, 405s lacked Allow, HEAD /health was 404, /v1/models/UNKNOWN said
    'no such endpoint', GET-route errors were always OpenAI-shaped."""
    st, h, b = raw("GET", "/v1/chat/completions", headers=[("Authorization", f"Bearer {KEY}")])
    check("GET on a POST route -> 405 with Allow: POST", st == 405 and h.get("allow") == "POST" and
          json.loads(b)["error"]["message"], (st, h, b))
    st, h, b = raw("OPTIONS", "/v1/messages")
    check("OPTIONS on a POST route -> 405, Anthropic error shape", st == 405 and h.get("allow") == "POST" and
          json.loads(b)["type"] == "error", (st, h, b))
    st, h, b = raw("POST", "/health", b"{}")
    check("POST /health -> 405 with Allow: GET, HEAD", st == 405 and "GET" in h.get("allow", ""), (st, h, b))
    st, h, b = raw("HEAD", "/health")
    check("HEAD /health -> 200 without a body", st == 200 and b == b"", (st, h, b))
    try:
        oa.models.retrieve("no-such-model")
        check("models.retrieve(unknown) -> NotFoundError", False, "found")
    except openai.NotFoundError as e:
        check("models.retrieve(unknown) -> NotFoundError naming the model", "no-such-model" in str(e.body), e.body)
    try:
        an.models.retrieve("no-such-model")
        check("anthropic models.retrieve(unknown) -> NotFoundError", False, "found")
    except anthropic.NotFoundError as e:
        check("anthropic models.retrieve(unknown) -> NotFoundError, Anthropic body", isinstance(e.body, dict) and
              e.body.get("type") == "error" and "no-such-model" in e.body["error"]["message"], e.body)
    m = an.models.retrieve(MODEL)
    check("anthropic models.retrieve(model)", m.id == MODEL and m.type == "model", m)
    check("server A healthy after the method checks", raw("GET", "/health")[0] == 200)


def test_prefill():
    """Defect: a conversation ending with an assistant message rendered it as a closed turn (EOS) with no new
    assistant turn, so the model wrote past the end of the chat; it is a prefill the answer continues."""
    u = [{"role": "user", "content": "Hello"}]
    r = oa.chat.completions.create(model=MODEL, messages=u, max_tokens=3, temperature=0, logprobs=True)
    toks = [bytes(x.bytes) for x in r.choices[0].logprobs.content]
    try:
        first, rest = toks[0].decode(), b"".join(toks[1:]).decode()
    except UnicodeDecodeError:
        check("prefill (the greedy answer's first token is not whole UTF-8)", True)
        return
    m = an.messages.create(model=MODEL, max_tokens=2, messages=u + [{"role": "assistant", "content": first}], extra_body=T0)
    got = "".join(b.text for b in m.content if b.type == "text")
    check("anthropic prefill: the answer continues the final assistant text", got == rest, f"{got!r} vs {rest!r}")
    c = oa.chat.completions.create(model=MODEL, messages=u + [{"role": "assistant", "content": first}], max_tokens=2,
                                   temperature=0)
    check("chat prefill: the same continuation", c.choices[0].message.content == rest, f"{c.choices[0].message}")
    try:
        an.messages.create(model=MODEL, max_tokens=2, messages=u + [{"role": "assistant", "content": first}],
                           thinking={"type": "enabled", "budget_tokens": 1024})
        check("prefill with thinking -> 400", False, "accepted")
    except anthropic.BadRequestError as e:
        check("prefill with thinking -> 400", "prefill" in str(e))


def test_vanished_client_promptly():
    """Defect: the socket was only looked at when no token came for 100 ms, so a non-streamed client that left
    while tokens flowed faster than that had its request run to the end (max_tokens 200: every token)."""
    def gen():
        return metrics_of(URL_B).get("dsv4_generation_tokens_total", 0)
    for stream in (False, True):
        g0 = gen()
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Long answer please."}],
                           "max_tokens": 200, "temperature": 0, "stream": stream}).encode()
        host, port = URL_B.split("//")[1].split(":")
        with socket.create_connection((host, int(port))) as sk:
            sk.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            if stream:
                sk.recv(1)  # the headers: the request is running
            time.sleep(0.5)
        deadline, m = time.time() + 60, {}
        while time.time() < deadline:
            m = metrics_of(URL_B)
            if m.get("dsv4_requests_running", 1) == 0:
                break
            time.sleep(0.1)
        n = m.get("dsv4_generation_tokens_total", 0) - g0
        check(f"vanished {'streaming' if stream else 'non-streamed'} client: cancelled promptly ({n:.0f} of 200 tokens)",
              m.get("dsv4_requests_running") == 0 and n < 120, m)


def metrics_of(url):
    st, _, b = raw("GET", "/metrics", url=url)
    out = {}
    for line in b.decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("dsv4_"):
            out[parts[0]] = float(parts[1])
    return out


for group in (test_anthropic_stop_sequence, test_anthropic_stop_reason_valid, test_responses_stream_helper,
              test_chat_stream_helper, test_refused_fields, test_http_methods, test_prefill,
              test_vanished_client_promptly):
    t = time.time()
    guarded(group)
    print(f"     ({group.__name__}: {time.time() - t:.1f} s)", flush=True)
finish()
