"""What structured outputs cost a running `ferrum serve`: sends N concurrent
chat requests with a JSON schema (and N without, for the step time without
grammars), then reads /metrics and prints the share of the engine's steps
spent computing token masks and waiting for them.

Usage: python3 scripts/grammar_cost.py URL [N]   (standard library only)
"""

import concurrent.futures as futures
import json
import re
import sys
import urllib.request

URL = sys.argv[1].rstrip("/")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 8

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24}, "population": {"type": "integer", "minimum": 0},
    "country": {"type": "string", "maxLength": 24}, "landmarks": {"type": "array", "maxItems": 3,
                                                                   "items": {"type": "string", "maxLength": 32}}},
    "required": ["name", "population", "country", "landmarks"], "additionalProperties": False}


def post(body):
    req = urllib.request.Request(URL + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def metrics():
    text = urllib.request.urlopen(URL + "/metrics", timeout=60).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M)}


def run(schema):
    def one(i):
        body = {"messages": [{"role": "user", "content": f"Describe city number {i} as JSON."}],
                "max_tokens": 120, "temperature": 0}
        if schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
        return post(body)["usage"]["completion_tokens"]
    before = metrics()
    with futures.ThreadPoolExecutor(N) as pool:
        tokens = sum(pool.map(one, range(N)))
    after = metrics()
    d = lambda k: after.get(k, 0.0) - before.get(k, 0.0)
    return tokens, d


free_tokens, free = run(False)
guided_tokens, guided = run(True)
steps_free = free("ferrum_step_seconds_sum") / max(free("ferrum_step_seconds_count"), 1)
steps_guided = guided("ferrum_step_seconds_sum") / max(guided("ferrum_step_seconds_count"), 1)
mask = guided("ferrum_grammar_mask_seconds_sum") / max(guided("ferrum_grammar_mask_seconds_count"), 1)
wait = guided("ferrum_grammar_wait_seconds_sum") / max(guided("ferrum_grammar_wait_seconds_count"), 1)
print(f"{N} concurrent requests; {free_tokens} tokens free, {guided_tokens} with a JSON schema")
print(f"mean step: {1e3 * steps_free:.2f} ms free, {1e3 * steps_guided:.2f} ms with schemas")
print(f"masks per step (beside the forward pass): {1e3 * mask:.3f} ms = {100 * mask / steps_guided:.1f}% of a step")
print(f"waiting for masks after the forward pass: {1e3 * wait:.3f} ms = {100 * wait / steps_guided:.1f}% of a step")
