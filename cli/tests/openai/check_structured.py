"""Structured outputs through the official OpenAI client against `ferrum serve`.

Usage: check_structured.py FIXTURE_URL SMOLLM2_URL

- SmolLM2 (a real instruct model) answers 20 JSON schemas of different
  shapes, each validated by `jsonschema`; then a regex, a choice and a JSON
  object (vLLM's `guided_*` fields and OpenAI's `json_object`), streamed and not.
- On the qwen3 fixture, 16 concurrent greedy requests, half constrained,
  each equal to the same request sent alone.
Prints one line per check; exits 1 if any failed.
"""

import concurrent.futures as futures
import json
import re
import sys

import jsonschema
import openai

FIXTURE, SMOL = sys.argv[1], sys.argv[2]
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"))
    if not cond:
        failures.append(name)


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)


smol = client(SMOL)
smol_model = smol.models.list().data[0].id

NAME = {"type": "string", "maxLength": 24}
SCHEMAS = {
    "flat object": {"type": "object", "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
                    "required": ["name", "age"], "additionalProperties": False},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"],
             "additionalProperties": False},
    "boolean": {"type": "object", "properties": {"is_capital": {"type": "boolean"}}, "required": ["is_capital"],
                "additionalProperties": False},
    "number bounds": {"type": "object", "properties": {"celsius": {"type": "number", "minimum": -90, "maximum": 60}},
                      "required": ["celsius"], "additionalProperties": False},
    "array of strings, 2 to 4": {"type": "object", "properties": {"fruits": {"type": "array", "items": NAME,
                                 "minItems": 2, "maxItems": 4}}, "required": ["fruits"], "additionalProperties": False},
    "array of integers, exactly 3": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1000},
                                     "minItems": 3, "maxItems": 3},
    "nested object": {"type": "object", "properties": {"city": NAME, "location": {"type": "object", "properties": {
        "lat": {"type": "integer", "minimum": -90, "maximum": 90}, "lon": {"type": "integer", "minimum": -180, "maximum": 180}},
        "required": ["lat", "lon"], "additionalProperties": False}}, "required": ["city", "location"], "additionalProperties": False},
    "array of objects": {"type": "object", "properties": {"people": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "object", "properties": {"name": NAME, "role": {"enum": ["engineer", "doctor", "artist"]}},
        "required": ["name", "role"], "additionalProperties": False}}}, "required": ["people"], "additionalProperties": False},
    "optional field": {"type": "object", "properties": {"title": NAME, "subtitle": NAME}, "required": ["title"],
                       "additionalProperties": False},
    "nullable": {"type": "object", "properties": {"middle_name": {"anyOf": [NAME, {"type": "null"}]}},
                 "required": ["middle_name"], "additionalProperties": False},
    "const": {"type": "object", "properties": {"version": {"const": 2}, "ok": {"type": "boolean"}},
              "required": ["version", "ok"], "additionalProperties": False},
    "pattern": {"type": "object", "properties": {"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
                "required": ["date"], "additionalProperties": False},
    "string enum array": {"type": "array", "items": {"enum": ["low", "medium", "high"]}, "minItems": 1, "maxItems": 3},
    "integer enum": {"type": "object", "properties": {"stars": {"enum": [1, 2, 3, 4, 5]}}, "required": ["stars"],
                     "additionalProperties": False},
    "deep nesting": {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object",
        "properties": {"c": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["c"], "additionalProperties": False}},
        "required": ["b"], "additionalProperties": False}}, "required": ["a"], "additionalProperties": False},
    "many required fields": {"type": "object", "properties": {k: {"type": "integer", "minimum": 0, "maximum": 99}
                             for k in "abcdef"}, "required": list("abcdef"), "additionalProperties": False},
    "string length bounds": {"type": "object", "properties": {"code": {"type": "string", "minLength": 3, "maxLength": 5,
                             "pattern": "^[A-Z]+$"}}, "required": ["code"], "additionalProperties": False},
    "mixed types": {"type": "object", "properties": {"name": NAME, "count": {"type": "integer", "minimum": 0, "maximum": 50},
                    "ratio": {"type": "number", "minimum": 0, "maximum": 1}, "active": {"type": "boolean"},
                    "tags": {"type": "array", "items": NAME, "maxItems": 2}},
                    "required": ["name", "count", "ratio", "active", "tags"], "additionalProperties": False},
    "top-level enum": {"enum": ["agree", "disagree"]},
    "tuple-like array": {"type": "array", "prefixItems": [NAME, {"type": "integer", "minimum": 0, "maximum": 9}],
                         "items": False, "minItems": 2},
}
PROMPT = "Answer with JSON only. Describe a famous person, a city or an object you like."


def schema_answer(item):
    name, schema = item
    r = smol.chat.completions.create(
        model=smol_model, messages=[{"role": "user", "content": PROMPT}], max_tokens=300, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}})
    return name, schema, r.choices[0].message.content, r.choices[0].finish_reason


with futures.ThreadPoolExecutor(8) as pool:
    for name, schema, text, reason in pool.map(schema_answer, SCHEMAS.items()):
        try:
            jsonschema.validate(json.loads(text), schema)
            valid = True
        except Exception as e:  # not JSON, or not valid
            valid, text = False, f"{text!r}: {e}"
        check(f"json schema: {name}", valid and reason == "stop", (reason, text))

regex = smol.completions.create(model=smol_model, prompt="The year the Eiffel Tower opened:", max_tokens=20,
                                temperature=0, extra_body={"guided_regex": "[12][0-9]{3}"})
check("guided_regex", re.fullmatch("[12][0-9]{3}", regex.choices[0].text) is not None, regex.choices[0].text)

choices = ["positive", "negative", "neutral"]
choice = smol.chat.completions.create(
    model=smol_model, messages=[{"role": "user", "content": "Sentiment of 'I love this film!'?"}], max_tokens=10,
    temperature=0, extra_body={"guided_choice": choices})
check("guided_choice", choice.choices[0].message.content in choices, choice.choices[0].message.content)

stream = smol.chat.completions.create(
    model=smol_model, messages=[{"role": "user", "content": "Return a JSON object with two keys, name and country, for Paris."}], max_tokens=200,
    temperature=0, stream=True, response_format={"type": "json_object"})
streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
try:
    check("json_object, streamed", isinstance(json.loads(streamed), dict), streamed)
except ValueError as e:
    check("json_object, streamed", False, f"{streamed!r}: {e}")

bad = None
try:
    smol.chat.completions.create(model=smol_model, messages=[{"role": "user", "content": "x"}], max_tokens=5,
                                 extra_body={"guided_regex": "(unclosed"})
except openai.BadRequestError as e:
    bad = e
check("a grammar that does not compile is a 400", bad is not None and "grammar" in str(bad), bad)

# mixed batches on the fixture: each request equals itself sent alone
fixture = client(FIXTURE)
fixture_model = fixture.models.list().data[0].id
GUIDED = [
    {"guided_choice": ["alpha", "beta", "gamma delta"]},
    {"guided_regex": "[a-f0-9]{2,6}"},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMAS["integer enum"]}}},
    {"guided_json": SCHEMAS["boolean"]},
]


def fixture_request(i):
    extra = GUIDED[(i // 2) % len(GUIDED)] if i % 2 == 0 else {}
    fmt = extra.get("response_format")
    body = {k: v for k, v in extra.items() if k != "response_format"}
    kwargs = {"response_format": fmt} if fmt else {}
    r = fixture.chat.completions.create(model=fixture_model, messages=[{"role": "user", "content": f"item {i}"}],
                                        max_tokens=40, temperature=0, extra_body=body, **kwargs)
    return r.choices[0].message.content, r.choices[0].finish_reason


with futures.ThreadPoolExecutor(16) as pool:
    together = list(pool.map(fixture_request, range(16)))
alone = [fixture_request(i) for i in range(16)]
check("16 concurrent mixed constrained/free requests equal each alone", together == alone,
      [(i, t, a) for i, (t, a) in enumerate(zip(together, alone)) if t != a])
check("constrained fixture answers end with their grammar", all(together[i][1] == "stop" for i in range(0, 16, 2)),
      [together[i] for i in range(0, 16, 2)])

print(f"{len(failures)} failed" if failures else "all passed")
sys.exit(1 if failures else 0)
