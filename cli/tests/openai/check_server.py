"""Drives a running `ferrum serve` with the official OpenAI Python client and
plain HTTP, and checks every answer. Exit code 0 only if every check passes.

Usage: check_server.py FAST_URL API_KEY SLOW_URL
  FAST_URL: a server on a tiny fixture model, with --api-key API_KEY
  SLOW_URL: a server on SmolLM2 with --max-running 1 --max-queue 2 (overload, disconnects)
"""

import concurrent.futures
import http.client
import json
import re
import sys
import time
import urllib.error
import urllib.request

import openai

FAST, KEY, SLOW = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=FAST + "/v1", api_key=KEY, max_retries=0)
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failures.append(name)


def raw(url, path, body=None, key=None, method=None):
    req = urllib.request.Request(url + path, data=body, method=method or ("POST" if body is not None else "GET"))
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_large(url, path, body, key):
    """POSTs a body the server may refuse before reading it all: a broken pipe
    while sending is expected, the refusal is still there to read."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Authorization", f"Bearer {key}")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    try:
        conn.send(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def metric(url, name):
    _, _, text = raw(url, "/metrics")
    m = re.search(rf"^{re.escape(name)} (\S+)$", text.decode(), re.M)
    return float(m.group(1)) if m else None


model = client.models.list().data[0].id
check("models list", model == "qwen3", model)

# chat, whole and streamed: same greedy text
msgs = [{"role": "user", "content": "Hello there"}]
chat = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0)
text = chat.choices[0].message.content
check("chat", chat.choices[0].finish_reason in ("stop", "length") and chat.usage.completion_tokens > 0, chat)
streamed = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0, stream=True)
pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
check("streamed chat equals whole chat", "".join(pieces) == text, ("".join(pieces), text))

# completion, max_completion_tokens, seed reproducibility, n
comp = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=10, temperature=0)
check("completion", comp.usage.completion_tokens == 10 and comp.choices[0].finish_reason == "length", comp)
a = client.chat.completions.create(model=model, messages=msgs, max_completion_tokens=8, temperature=1.0, seed=7)
b = client.chat.completions.create(model=model, messages=msgs, max_completion_tokens=8, temperature=1.0, seed=7)
check("seed reproduces sampling", a.choices[0].message.content == b.choices[0].message.content)
check("max_completion_tokens", a.usage.completion_tokens <= 8, a.usage)
many = client.completions.create(model=model, prompt="The fox", max_tokens=5, temperature=1.0, n=3, seed=1)
check("n choices", [c.index for c in many.choices] == [0, 1, 2] and many.usage.completion_tokens == 15, many.usage)

# stop strings: cut where the unstopped text had them
full = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=30, temperature=0).choices[0].text
stop = full[8:11] if len(full) > 12 else full[-2:]
cut = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=30, temperature=0, stop=[stop])
check("stop string", cut.choices[0].text == full[: full.find(stop)] and cut.choices[0].finish_reason == "stop",
      (full, stop, cut.choices[0].text))
scut = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=30, temperature=0, stop=[stop], stream=True)
check("stop string, streamed", "".join(c.choices[0].text for c in scut if c.choices) == full[: full.find(stop)])

# logprobs
lp = client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)
content = lp.choices[0].logprobs.content
check("chat logprobs", len(content) == 4 and all(len(c.top_logprobs) == 3 and c.logprob <= 0 for c in content)
      and all(c.top_logprobs[0].logprob == c.logprob for c in content), content)
clp = client.completions.create(model=model, prompt="The fox", max_tokens=3, temperature=0, logprobs=2)
check("completion logprobs", len(clp.choices[0].logprobs.token_logprobs) == 3
      and all(len(t) <= 2 for t in clp.choices[0].logprobs.top_logprobs), clp.choices[0].logprobs)

# echo, best_of, logit_bias, user, /v1/models/{id}
echo = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=5, temperature=0, echo=True)
check("echo returns the prompt first", echo.choices[0].text == "The quick brown fox" + comp.choices[0].text[: len(echo.choices[0].text) - 19],
      (echo.choices[0].text, comp.choices[0].text))
secho = client.completions.create(model=model, prompt="The quick brown fox", max_tokens=5, temperature=0, echo=True, stream=True)
check("echo, streamed", "".join(c.choices[0].text for c in secho if c.choices) == echo.choices[0].text)
best = client.completions.create(model=model, prompt="The fox", max_tokens=6, temperature=1.0, n=2, best_of=5, seed=3,
                                 logprobs=0)
sampled = client.completions.create(model=model, prompt="The fox", max_tokens=6, temperature=1.0, n=5, seed=3, logprobs=0)
score = lambda c: sum(c.logprobs.token_logprobs)
ranked = sorted(sampled.choices, key=score, reverse=True)[:2]
check("best_of returns the n most likely of best_of samples",
      [c.text for c in best.choices] == [c.text for c in ranked] and best.usage.completion_tokens == 30,
      ([c.text for c in best.choices], [(c.text, score(c)) for c in sampled.choices]))
# +100 all but forces a token: greedy then picks it every step, so the text is
# that token three times (what echo shows of a prompt made of it)
forced = client.completions.create(model=model, prompt=[[5, 6, 7]], max_tokens=3, temperature=0, logit_bias={"42": 100})
three = client.completions.create(model=model, prompt=[[42, 42, 42]], max_tokens=1, echo=True).choices[0].text
check("logit_bias +100 forces a token", forced.choices[0].text != "" and three.startswith(forced.choices[0].text),
      (forced.choices[0].text, three))
try:
    client.completions.create(model=model, prompt="x", max_tokens=1, logit_bias={"99999999": 5})
    check("logit_bias outside the vocabulary is a 400", False, "no error")
except openai.BadRequestError:
    check("logit_bias outside the vocabulary is a 400", True)
check("user is accepted", client.completions.create(model=model, prompt="x", max_tokens=1, user="someone").usage.completion_tokens == 1)
card = client.models.retrieve(model)
check("/v1/models/{id}", card.id == model, card)
try:
    client.models.retrieve("no-such-model")
    check("/v1/models/{id} of another model", False, "no error")
except openai.NotFoundError:
    check("/v1/models/{id} of another model is a 404", True)

# auth failure and bad requests: OpenAI errors, never 500
try:
    openai.OpenAI(base_url=FAST + "/v1", api_key="wrong", max_retries=0).models.list()
    check("auth failure", False, "no error")
except openai.AuthenticationError as e:
    check("auth failure", e.status_code == 401)
try:
    client.chat.completions.create(model="no-such-model", messages=msgs, max_tokens=2)
    check("unknown model", False, "no error")
except openai.NotFoundError as e:
    check("unknown model", e.status_code == 404 and "no-such-model" in str(e))
try:
    client.completions.create(model=model, prompt="x", max_tokens=-5)
    check("negative max_tokens", False, "no error")
except openai.BadRequestError as e:
    check("negative max_tokens", e.status_code == 400)
try:
    client.chat.completions.create(model=model, messages=[{"role": "hacker", "content": "hi"}], max_tokens=2)
    check("unknown role", False, "no error")
except openai.BadRequestError as e:
    check("unknown role", e.status_code == 400 and "hacker" in str(e) and "messages[0].role" in str(e))
for name, stop in [("17 stop strings", [str(i) for i in range(17)]), ("a 257-byte stop string", ["x" * 257])]:
    try:
        client.completions.create(model=model, prompt="x", max_tokens=2, stop=stop)
        check(name, False, "no error")
    except openai.BadRequestError as e:
        check(name, e.status_code == 400 and "stop" in str(e))
try:
    client.completions.create(model=model, prompt="word " * 400, max_tokens=5)
    check("prompt longer than the context", False, "no error")
except openai.BadRequestError as e:
    check("prompt longer than the context", e.status_code == 400 and "context" in str(e))
for name, body in [("malformed JSON", b'{"model": "qwen3", "prompt": '), ("wrong types", b'{"model": 3, "prompt": {}}'),
                   ("10 MB body", b'{"model": "qwen3", "prompt": "' + b"a" * (10 << 20) + b'"}')]:
    status, _, payload = raw_large(FAST, "/v1/completions", body, KEY)
    try:
        err = json.loads(payload)["error"]
        shaped = isinstance(err["message"], str) and "type" in err
    except Exception:  # noqa: BLE001
        shaped = False
    check(name, 400 <= status < 500 and shaped, (status, payload[:200]))
check("health", raw(FAST, "/health")[0] == 200)

# 32 concurrent streamed greedy requests equal each sent alone
prompts = [f"Story {i}: the river" + " and the mill" * (i % 5) for i in range(32)]
alone = [client.completions.create(model=model, prompt=p, max_tokens=16, temperature=0).choices[0].text for p in prompts]


def streamed_text(p):
    s = client.completions.create(model=model, prompt=p, max_tokens=16, temperature=0, stream=True)
    return "".join(c.choices[0].text for c in s if c.choices)


with concurrent.futures.ThreadPoolExecutor(32) as pool:
    together = list(pool.map(streamed_text, prompts))
check("32 concurrent streams equal each alone", together == alone,
      [i for i, (x, y) in enumerate(zip(together, alone)) if x != y])

# a client that disconnects mid-stream: its blocks come back, the server goes on
aborted_before = metric(SLOW, 'ferrum_requests_total{status="aborted"}') or 0
host, port = SLOW.removeprefix("http://").split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=60)
# long enough (no EOS, 1000 tokens: seconds) that it is still running when the metric is read
body = json.dumps({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 1000, "ignore_eos": True, "temperature": 0,
                   "stream": True,
                   "messages": [{"role": "user", "content": "Write a long story about a sailor and the sea."}]})
conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
resp = conn.getresponse()
first = resp.read(400)  # the role chunk and the first token
check("disconnect: stream started", first.startswith(b"data:") and b'"finish_reason":null' in first, first)
# the role chunk comes before the engine's first step publishes its gauges
in_use_deadline = time.time() + 20
while time.time() < in_use_deadline and not (metric(SLOW, "ferrum_kv_blocks_used") or 0) > 0:
    time.sleep(0.05)
check("disconnect: blocks in use while streaming", (metric(SLOW, "ferrum_kv_blocks_used") or 0) > 0)
conn.sock.close()
conn.close()
deadline = time.time() + 60
while time.time() < deadline and (metric(SLOW, 'ferrum_requests_total{status="aborted"}') or 0) <= aborted_before:
    time.sleep(0.2)
check("disconnect: counted as aborted", (metric(SLOW, 'ferrum_requests_total{status="aborted"}') or 0) > aborted_before)
while time.time() < deadline and (metric(SLOW, "ferrum_kv_blocks_used") != 0 or metric(SLOW, "ferrum_running_sequences") != 0):
    time.sleep(0.2)
check("disconnect: KV blocks back in the free pool", metric(SLOW, "ferrum_kv_blocks_used") == 0)

# overload: more requests than running + queue hold -> 503 with Retry-After; accepted ones complete
def slow_request(i):
    body = json.dumps({"model": "SmolLM2-135M-Instruct.Q4_1", "prompt": f"Count to {i}:", "max_tokens": 6, "temperature": 0})
    return raw(SLOW, "/v1/completions", body.encode())


with concurrent.futures.ThreadPoolExecutor(12) as pool:
    results = list(pool.map(slow_request, range(12)))
statuses = [s for s, _, _ in results]
rejected = [h for s, h, _ in results if s == 503]
accepted = [json.loads(b) for s, _, b in results if s == 200]
check("overload: some requests get 503", len(rejected) > 0, statuses)
check("overload: 503s carry Retry-After", all(any(k.lower() == "retry-after" for k in h) for h in rejected))
check("overload: every accepted request completes", len(accepted) + len(rejected) == 12
      and all(r["choices"][0]["finish_reason"] in ("stop", "length") for r in accepted), statuses)
check("the server still serves after all that", client.completions.create(model=model, prompt="ok", max_tokens=2).usage.completion_tokens == 2)

print(f"{len(failures) == 0 and 'all' or 'some'} checks done; {len(failures)} failed", flush=True)
sys.exit(1 if failures else 0)
