"""Tool calls through the official OpenAI client against `ferrum serve`.

Usage: check_tools.py URL

The server runs the qwen3 fixture with Qwen3's real chat template (which
teaches the Hermes `<tool_call>` syntax). The model's weights are random,
so what it says is noise; what is checked is what a client relies on:
`tool_choice: required` and named choices always give calls whose arguments
parse and validate, streamed deltas add up to the same calls, a tool result
goes back through the template, `none` gives no calls.
Prints one line per check; exits 1 if any failed.
"""

import json
import sys

import jsonschema
import openai

URL = sys.argv[1]
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"))
    if not cond:
        failures.append(name)


client = openai.OpenAI(base_url=URL + "/v1", api_key="none", max_retries=0, timeout=300)
model = client.models.list().data[0].id

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "required": ["zone"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME}},
]
SCHEMA = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def valid_calls(calls, names=("get_weather", "get_time")):
    for c in calls or []:
        if c.type != "function" or c.function.name not in names or not c.id:
            return False
        jsonschema.validate(json.loads(c.function.arguments), SCHEMA[c.function.name])
    return bool(calls)


ok = []
for seed in range(10):
    r = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=120)
    choice = r.choices[0]
    try:
        good = valid_calls(choice.message.tool_calls) and len(choice.message.tool_calls) == 1
    except Exception as e:  # arguments that do not parse or validate
        good = e
    ok.append((good is True and choice.finish_reason == "tool_calls", choice.message, choice.finish_reason))
check("tool_choice required: 10 sampled answers, each one call whose arguments validate",
      all(o[0] for o in ok), [o for o in ok if not o[0]])

named = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}})
check("a named tool_choice calls that function", valid_calls(named.choices[0].message.tool_calls, ["get_time"]),
      named.choices[0].message)

parallel = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                          max_tokens=400, temperature=0)
pc = parallel.choices[0]
check("parallel calls: every call parses and validates",
      pc.finish_reason == "length" or valid_calls(pc.message.tool_calls), pc)

# streamed: deltas accumulated as OpenAI documents add up to the same calls
whole = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=120, temperature=0)
stream = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required",
                                        parallel_tool_calls=False, max_tokens=120, temperature=0, stream=True)
calls, finish = {}, None
for chunk in stream:
    if not chunk.choices:
        continue
    delta = chunk.choices[0].delta
    for tc in delta.tool_calls or []:
        slot = calls.setdefault(tc.index, {"name": "", "arguments": ""})
        slot["name"] += tc.function.name or ""
        slot["arguments"] += tc.function.arguments or ""
    finish = chunk.choices[0].finish_reason or finish
want = [{"name": c.function.name, "arguments": c.function.arguments} for c in whole.choices[0].message.tool_calls]
check("streamed tool call deltas add up to the whole answer's calls",
      [calls[i] for i in sorted(calls)] == want and finish == "tool_calls", (calls, want, finish))

# the round trip: the call, the tool's answer, the final answer
call = whole.choices[0].message.tool_calls[0]
history = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})},
]
final = client.chat.completions.create(model=model, messages=history, tools=TOOLS, max_tokens=16, temperature=0)
check("round trip: a tool result goes back and an answer comes",
      final.choices[0].finish_reason in ("stop", "length", "tool_calls") and final.usage.prompt_tokens > 0, final)
for streamed in (False, True):
    r = client.chat.completions.create(model=model, messages=history, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, max_tokens=120, temperature=0, stream=streamed)
    if streamed:
        got = "".join(tc.function.arguments or "" for ch in r if ch.choices for tc in (ch.choices[0].delta.tool_calls or []))
        good = bool(got) and json.loads(got) is not None
    else:
        good = valid_calls(r.choices[0].message.tool_calls)
    check(f"round trip, a second call {'streamed' if streamed else 'whole'}", good, r)

none = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=8,
                                      temperature=0)
check("tool_choice none: no calls", not none.choices[0].message.tool_calls
      and none.choices[0].finish_reason in ("stop", "length"), none)

for name, kwargs in [("an unknown named tool", {"tool_choice": {"type": "function", "function": {"name": "nope"}}}),
                     ("a bad tool_choice", {"tool_choice": "sometimes"}),
                     ("required without tools", {"tool_choice": "required", "tools": []})]:
    err = None
    try:
        args = {"model": model, "messages": ASK, "tools": TOOLS, "max_tokens": 4}
        args.update(kwargs)
        client.chat.completions.create(**args)
    except openai.BadRequestError as e:
        err = e
    check(f"{name} is a 400", err is not None, err)

print(f"{len(failures)} failed" if failures else "all passed")
sys.exit(1 if failures else 0)
