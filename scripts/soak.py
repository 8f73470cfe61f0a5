"""Load and soak against a running `ferrum serve` (see scripts/soak.sh).

For each client count, that many concurrent clients loop for the phase's
seconds, each request drawn from a fixed mix: streams of mixed prompt and
output lengths, 10% dropped mid-stream, 5% read slowly, and 5% bad requests
(malformed JSON, wrong types, an over-long prompt, a body over the limit).
A client refused with 503 waits a jittered second, as Retry-After says.
Every request ends in one outcome; the anomalies (hang, reset, non-JSON
error body, an unexpected status, a stream cut short) must all be 0.
Prints one table and writes it as JSON; exits 1 on any anomaly.

Usage: soak.py URL SECONDS_PER_PHASE CLIENTS [CLIENTS...] --json OUT
"""

import argparse
import asyncio
import json
import random
import statistics
import time

import aiohttp

# every loop is bounded: a request that takes longer is a hang
REQUEST_TIMEOUT = 120
OUTCOMES = ["completed", "refused_503", "client_error_4xx", "dropped_by_client"]
ANOMALIES = ["hang", "reset", "non_json_error", "unexpected_status", "stream_cut_short", "missing_retry_after"]


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("seconds", type=float)
    p.add_argument("clients", type=int, nargs="+")
    p.add_argument("--json", required=True)
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args()


class Tally:
    def __init__(self):
        self.counts = {k: 0 for k in OUTCOMES + ANOMALIES}
        self.ttft = []
        self.examples = {}

    def add(self, outcome, detail=""):
        self.counts[outcome] += 1
        if outcome in ANOMALIES and outcome not in self.examples:
            self.examples[outcome] = detail[:300]


def bad_request(rng):
    """One of the small bad inputs and what the server must answer."""
    kind = rng.choice(["malformed", "wrong_type", "too_long"])
    if kind == "malformed":
        return b'{"prompt": [1, 2', {400}
    if kind == "wrong_type":
        return json.dumps({"prompt": [5, 6], "max_tokens": "many"}).encode(), {400}
    return json.dumps({"prompt": [5] * 100_000, "max_tokens": 4}).encode(), {400}


async def error_body(resp, tally, what):
    """An error answer must carry an OpenAI error body."""
    text = await resp.read()
    try:
        body = json.loads(text)
        ok = isinstance(body.get("error", {}).get("message"), str)
    except ValueError:
        ok = False
    if not ok:
        tally.add("non_json_error", f"{what} {resp.status}: {text[:200]!r}")
    return ok


async def huge_body(url, tally):
    """A body over the limit, on a raw connection: the server may answer 413
    and close before it is all sent, so a broken pipe while sending is fine
    and the answer is still there to read."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"prompt": "' + b"x" * (5 << 20) + b'"}'
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    try:
        writer.write(head.encode() + body)
        await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        reply = await reader.read()
    except (BrokenPipeError, ConnectionResetError):
        reply = b""
    finally:
        writer.close()
    status = reply[9:12]
    body = reply.split(b"\r\n\r\n", 1)[-1]
    if status == b"503":
        tally.add("refused_503")
    elif status != b"413":
        tally.add("unexpected_status", f"a 5 MiB body got {reply[:100]!r}")
    elif b'"error"' not in body:
        tally.add("non_json_error", f"413: {body[:200]!r}")
    else:
        tally.add("client_error_4xx")


async def one_request(session, url, rng, tally):
    roll = rng.random()
    if roll < 0.0125:
        await huge_body(url, tally)
        return
    if roll < 0.05:
        body, expected = bad_request(rng)
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status == 503:
                await refused(resp, tally)
            elif resp.status in expected:
                if await error_body(resp, tally, "bad request"):
                    tally.add("client_error_4xx")
            else:
                tally.add("unexpected_status", f"bad request got {resp.status}")
        return
    mode = "drop" if roll < 0.15 else "slow" if roll < 0.20 else "normal"
    prompt = [rng.randrange(4, 380) for _ in range(rng.choice([3, 16, 48, 120]))]
    max_tokens = rng.choice([4, 16, 64, 128])
    req = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True, "temperature": 0.8}
    started = time.monotonic()
    async with session.post(url, json=req) as resp:
        if resp.status == 503:
            await refused(resp, tally)
            return
        if resp.status != 200:
            await error_body(resp, tally, "stream")
            tally.add("unexpected_status", f"stream got {resp.status}")
            return
        first, chunks, done = None, 0, False
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            if line.startswith(b"data: [DONE]"):
                done = True
                break
            if b'"error"' in line:
                tally.add("unexpected_status", f"error event: {line[:200]!r}")
                return
            chunks += 1
            if first is None:
                first = time.monotonic() - started
                tally.ttft.append(first)
            if mode == "drop" and chunks >= 2:
                tally.add("dropped_by_client")
                return  # leaving the block closes the connection mid-stream
            if mode == "slow":
                await asyncio.sleep(0.05)
        if done:
            tally.add("completed")
        else:
            tally.add("stream_cut_short", f"{chunks} chunks, no [DONE]")


async def refused(resp, tally):
    if "Retry-After" not in resp.headers:
        tally.add("missing_retry_after", str(dict(resp.headers)))
    if await error_body(resp, tally, "503"):
        tally.add("refused_503")


async def client(session, url, deadline, rng, tally):
    while time.monotonic() < deadline:
        refused_before = tally.counts["refused_503"]
        try:
            await asyncio.wait_for(one_request(session, url, rng, tally), REQUEST_TIMEOUT)
            if tally.counts["refused_503"] > refused_before:
                # Retry-After: 1, jittered, as a well-behaved client waits
                await asyncio.sleep(rng.uniform(0.2, 1.0))
        except asyncio.TimeoutError:
            tally.add("hang", f"no answer in {REQUEST_TIMEOUT} s")
        except (aiohttp.ClientError, ConnectionError) as e:
            tally.add("reset", repr(e))


async def phase(url, clients, seconds, seed):
    tally = Tally()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        target = url + "/v1/completions"
        rngs = [random.Random(seed * 100_003 + i) for i in range(clients)]
        await asyncio.gather(*(client(session, target, deadline, rngs[i], tally) for i in range(clients)))
    return tally


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    args = parse_args()
    rows = []
    for clients in args.clients:
        started = time.monotonic()
        tally = asyncio.run(phase(args.url, clients, args.seconds, args.seed))
        rows.append(
            {
                "clients": clients,
                "seconds": round(time.monotonic() - started, 1),
                **tally.counts,
                "requests": sum(tally.counts.values()),
                "ttft_p50_s": pct(tally.ttft, 0.50),
                "ttft_p99_s": pct(tally.ttft, 0.99),
                "examples": tally.examples,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    bad = sum(r[a] for r in rows for a in ANOMALIES)
    if bad:
        print(f"{bad} anomalies")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
