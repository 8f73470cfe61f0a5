#!/usr/bin/env python3
"""Helpers for scripts/gpu-check.sh; plain Python 3.8+, torch only for `peer`.

  nvrtc LIBDIR            make libnvrtc loadable under a name cudarc tries; prints dirs for LD_LIBRARY_PATH
  model OUT               a Llama-shaped bf16 checkpoint of random weights (shape: $GPU_CHECK_SHAPE)
  bytes BF16 [NVFP4]      weight bytes read per decoded token, from the checkpoints' headers (JSON)
  bench FILE [N]          one line from `ferrum bench --json`; exit 1 unless all N requests succeeded
  peer MODEL OUT B IN OUT_LEN [DEVICE]   copy bandwidth + transformers eager at batch 1 and B (JSON)
  table WORK              the final table from WORK/{bytes,peer,bench-*}.json; exit 1 if a target fails
  ids REF / cmp REF GOT   fixture logits: the reference's input ids / max_err / std(ref) <= 2e-3
  chat-ref REF            transformers' greedy chat answer from tests/fixtures/smollm2/reference.json

Shapes: GPU_CHECK_SHAPE="H,I,L,NH,KV,D,V" (hidden, intermediate, layers, heads,
kv heads, head dim, vocab); default 2048,8192,16,32,8,64,32000: Llama 3.2 1B's
layer shapes with a 32k untied vocabulary, 1.1 B parameters.
"""
import glob
import json
import math
import os
import random
import struct
import sys

DEFAULT_SHAPE = "2048,8192,16,32,8,64,32000"
ST_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1, "I8": 1, "F8_E4M3": 1, "BOOL": 1}


def shape_from_env():
    vals = [int(x) for x in os.environ.get("GPU_CHECK_SHAPE", DEFAULT_SHAPE).split(",")]
    if len(vals) != 7:
        sys.exit("GPU_CHECK_SHAPE needs 7 numbers: H,I,L,NH,KV,D,V")
    return vals


# ---------------------------------------------------------------- nvrtc


def nvrtc(libdir):
    """cudarc (cuda-12090 bindings, dynamic loading) dlopens libnvrtc.so or
    libnvrtc.so.{12,11,10,9,1}. A CUDA 13 machine may have only libnvrtc.so.13
    (pip wheel) or a toolkit lib64 that is not on the loader path: find one and
    link it as LIBDIR/libnvrtc.so. Prints the directories to prepend to
    LD_LIBRARY_PATH (none when the default path already works)."""
    import ctypes

    names = ["libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.11"]
    for n in names:
        try:
            ctypes.CDLL(n)
            print(f"libnvrtc: {n} loads from the default path", file=sys.stderr)
            return
        except OSError:
            pass
    dirs = []
    for pat in ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/*/lib", "/usr/local/cuda-*/lib64",
                "/usr/local/cuda-*/targets/*/lib", "/usr/lib/x86_64-linux-gnu", "/opt/cuda/lib64"]:
        dirs += sorted(glob.glob(pat))
    try:
        import importlib.util
        spec = importlib.util.find_spec("nvidia")
        for base in (spec.submodule_search_locations or []) if spec else []:
            dirs += sorted(glob.glob(os.path.join(base, "*", "lib"))) + sorted(glob.glob(os.path.join(base, "cu*", "lib*")))
    except Exception:
        pass
    found = []
    for d in dirs:
        for f in sorted(glob.glob(os.path.join(d, "libnvrtc.so*"))):
            if "builtins" not in f and "alt" not in os.path.basename(f):
                found.append(f)
    if not found:
        print("libnvrtc: none found (CUDA toolkit lib64, nvidia-cuda-nvrtc wheels); only a filled PTX cache will do",
              file=sys.stderr)
        return
    # prefer 12.x (the bindings' own), then the newest
    found.sort(key=lambda f: (".so.12" not in f, -len(f), f))
    pick = found[0]
    os.makedirs(libdir, exist_ok=True)
    link = os.path.join(libdir, "libnvrtc.so")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.realpath(pick), link)
    print(f"libnvrtc: using {pick} as {link}", file=sys.stderr)
    print(f"{libdir}:{os.path.dirname(os.path.realpath(pick))}")


# ---------------------------------------------------------------- model


def bf16(x):
    return struct.unpack("<I", struct.pack("<f", x))[0] >> 16


def model(out):
    """Random bf16 weights, plain Python (no torch): one block of N(0, 0.02)
    values tiled over every tensor; decode speed does not depend on values."""
    H, I, L, NH, KV, D, V = shape_from_env()
    os.makedirs(out, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
           "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV, "head_dim": D,
           "vocab_size": V, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu",
           "rope_theta": 500000.0, "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
           "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
           "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0, "dtype": "bfloat16", "torch_dtype": "bfloat16"}
    with open(f"{out}/config.json", "w") as f:
        json.dump(cfg, f, indent=1)
    with open(f"{out}/generation_config.json", "w") as f:
        json.dump({"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}, f)
    rng = random.Random(0)
    block = struct.pack("<%dH" % 65536, *(bf16(rng.gauss(0, 0.02)) for _ in range(65536)))
    ones = struct.pack("<H", bf16(1.0)) * 65536
    shapes = {"model.embed_tokens.weight": (V, H)}
    for l in range(L):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (H,),
                       p + "self_attn.q_proj.weight": (NH * D, H), p + "self_attn.k_proj.weight": (KV * D, H),
                       p + "self_attn.v_proj.weight": (KV * D, H), p + "self_attn.o_proj.weight": (H, NH * D),
                       p + "post_attention_layernorm.weight": (H,),
                       p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                       p + "mlp.down_proj.weight": (H, I)})
    shapes["model.norm.weight"] = (H,)
    shapes["lm_head.weight"] = (V, H)
    head, off = {}, 0
    for name, shape in shapes.items():
        n = 2 * math.prod(shape)
        head[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    head["__metadata__"] = {"format": "pt"}
    hj = json.dumps(head).encode()
    hj += b" " * (-len(hj) % 8)
    with open(f"{out}/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for name in shapes:
            a, b = head[name]["data_offsets"]
            n = b - a
            src = ones if name.endswith("norm.weight") else block
            while n > 0:
                chunk = src[:min(n, len(src))]
                f.write(chunk)
                n -= len(chunk)
    params = off // 2
    print(f"wrote {out}: {off / 2**30:.2f} GiB bf16, {params / 1e9:.3f} B parameters "
          f"(H={H} I={I} L={L} heads={NH}/{KV}x{D} vocab={V}, untied)")


# ---------------------------------------------------------------- bytes per token


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def checkpoint(folder):
    head = {}
    for p in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        head.update(st_header(p))
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    return cfg, head


def nbytes(info):
    return ST_SIZE[info["dtype"]] * math.prod(info["shape"])


def read_per_token(folder, quantize_nvfp4=False):
    """Bytes of weights one decode step reads for one token, as Ferrum holds
    them (engine/src/model/weights.rs): linear weights and their scales as
    stored (or as `--quant nvfp4` would pack them: 4-bit codes, one E4M3
    scale per 16, one f32 per tensor; lm_head always stays unquantized);
    norms widened to f32; one row of the embedding table (the whole table
    when it is tied to lm_head). KV-cache reads are not weights: not counted."""
    cfg, head = checkpoint(folder)
    V = cfg["vocab_size"]
    tied = cfg.get("tie_word_embeddings", False) or "lm_head.weight" not in head
    parts = {"linear": 0, "lm_head": 0, "norms": 0, "embed_row": 0}
    linear_params = 0
    for name, info in head.items():
        shape = info["shape"]
        if name == "model.embed_tokens.weight":
            parts["embed_row"] += nbytes(info) // V
            if tied:
                parts["lm_head"] += nbytes(info)
        elif name == "lm_head.weight":
            parts["lm_head"] += nbytes(info)
        elif name.endswith("norm.weight") or name.endswith(".bias"):
            parts["norms"] += 4 * math.prod(shape)
        elif name.endswith("_proj.weight") and info["dtype"] in ("BF16", "F16", "F32") and len(shape) == 2:
            n, k = shape
            linear_params += n * k
            if quantize_nvfp4:
                assert k % 16 == 0, f"{name}: {k} columns is not a multiple of 16"
                parts["linear"] += n * k // 2 + n * k // 16 + 4
            else:
                parts["linear"] += nbytes(info)
        else:  # packed codes, block scales, tensor scales of a prequantized checkpoint
            parts["linear"] += nbytes(info)
            if name.endswith("_proj.weight") and info["dtype"] == "U8":
                linear_params += 2 * math.prod(shape)
    return {"total": sum(parts.values()), "parts": parts, "linear_params": linear_params}


def bytes_cmd(bf16_dir, nvfp4_dir=None):
    out = {"bf16": read_per_token(bf16_dir), "nvfp4": read_per_token(bf16_dir, quantize_nvfp4=True)}
    if nvfp4_dir and os.path.exists(os.path.join(nvfp4_dir, "config.json")):
        ck = read_per_token(nvfp4_dir)
        out["nvfp4_checkpoint"] = ck
        if ck["total"] != out["nvfp4"]["total"]:
            print(f"note: nvfp4 checkpoint reads {ck['total']} B/token, the formula {out['nvfp4']['total']}",
                  file=sys.stderr)
    for k in ("bf16", "nvfp4"):
        p = out[k]["parts"]
        print(f"{k:6} weights read per token: {out[k]['total'] / 1e9:.4f} GB (linear {p['linear'] / 1e9:.4f}, "
              f"lm_head {p['lm_head'] / 1e9:.4f}, norms {p['norms'] / 1e6:.3f} MB, embedding row {p['embed_row']} B)",
              file=sys.stderr)
    print(json.dumps(out))


# ---------------------------------------------------------------- ferrum bench JSON


def bench_cmd(path, want=None):
    with open(path) as f:
        j = json.load(f)
    ok, failed = j.get("successful_requests", 0), j.get("failed_requests", 0)
    tpot = (j.get("tpot") or {}).get("median_ms") or 0
    print(f"{ok} ok, {failed} failed; output {j.get('output_tokens_per_sec', 0):.1f} tok/s; "
          f"TPOT median {tpot:.3f} ms = {1e3 / tpot if tpot else 0:.1f} tok/s per sequence; "
          f"TTFT median {(j.get('ttft') or {}).get('median_ms', 0):.1f} ms")
    if failed or (want is not None and ok != int(want)):
        sys.exit(1)


# ---------------------------------------------------------------- transformers peer


def peer(model_dir, out, batch, in_len, out_len, device="cuda"):
    """Copy bandwidth and transformers (eager attention, bf16) on the same
    weights: batch-1 decode tok/s (time of 1+N tokens minus 1 token, over N),
    and batch-B throughput (B*N new tokens / wall time of generate, prefill
    included: the same count `ferrum bench` reports)."""
    res = {}

    def save():
        with open(out, "w") as f:
            json.dump(res, f, indent=1)

    try:
        import time
        import torch
    except Exception as e:
        res["error"] = f"no torch: {e}"
        save()
        return
    res["torch"] = torch.__version__
    if device == "cuda" and not torch.cuda.is_available():
        res["error"] = "torch sees no CUDA device"
        save()
        return

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    # device copy bandwidth: read + write of a 4 GiB buffer (32 MiB on a CPU dry run)
    n = (1 << 31) if device == "cuda" else (1 << 24)
    a = torch.empty(n, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    sync()
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        b.copy_(a)
    sync()
    res["copy_bandwidth"] = 2 * a.numel() * a.element_size() * reps / (time.perf_counter() - t)
    del a, b
    if device == "cuda":
        res["gpu"] = torch.cuda.get_device_name()
        torch.cuda.empty_cache()
    print(f"copy bandwidth (read + write): {res['copy_bandwidth'] / 1e12:.3f} TB/s", file=sys.stderr)
    save()

    try:
        import transformers
        from transformers import AutoModelForCausalLM
    except Exception as e:
        res["error"] = f"no transformers: {e}"
        save()
        return
    res["transformers"] = transformers.__version__
    try:
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    try:
        t = time.perf_counter()
        try:
            m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
        except TypeError:
            m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16)
        m = m.to(device).eval()
        print(f"transformers {transformers.__version__} loaded the model in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        vocab = m.config.vocab_size
        g = torch.Generator().manual_seed(0)

        def gen(bsz, new):
            ids = torch.randint(vocab // 4, vocab, (bsz, in_len), generator=g).to(device)
            mask = torch.ones_like(ids)
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                o = m.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               pad_token_id=0)
            sync()
            assert o.shape == (bsz, in_len + new), o.shape
            return time.perf_counter() - t0

        gen(1, 4)  # warm-up
        t1, tn = gen(1, 1), gen(1, 1 + out_len)
        res["b1_tok_s"] = out_len / max(tn - t1, 1e-9)
        print(f"transformers batch 1: {res['b1_tok_s']:.1f} tok/s decode", file=sys.stderr)
        save()
        gen(batch, 2)  # warm-up at this batch
        tb = gen(batch, out_len)
        res["batch"] = batch
        res["batch_tok_s"] = batch * out_len / tb
        print(f"transformers batch {batch}: {res['batch_tok_s']:.1f} tok/s ({batch} x {out_len} new tokens "
              f"in {tb:.2f} s)", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - report, never abort the run
        res["error"] = f"transformers: {type(e).__name__}: {e}"
    save()


# ---------------------------------------------------------------- table


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None


def table(work):
    """Rows (engine, weights, batch); tok/s, GB of weights read per token,
    % of the HBM roofline (batch 1 only: tok/s x bytes per token / copy
    bandwidth) and the issue's targets. Exit 1 if a measured target fails."""
    by = load_json(os.path.join(work, "bytes.json")) or {}
    peer_res = load_json(os.path.join(work, "peer.json")) or {}
    bw = peer_res.get("copy_bandwidth")
    bw_note = "measured"
    if not bw:
        bw, bw_note = 4.8e12, "NOT measured: the H200's nominal 4.8 TB/s"
    batch = int(os.environ.get("GPU_CHECK_BATCH", peer_res.get("batch", 64)))
    fe = "ferrum " + os.environ.get("GPU_CHECK_BACKEND", "cuda")
    tf = "transformers"

    def ferrum(quant, bsz):
        j = load_json(os.path.join(work, f"bench-{quant}-b{bsz if bsz == 1 else 'N'}.json"))
        if not j or j.get("failed_requests") or not j.get("successful_requests"):
            return None
        if bsz == 1:
            tpot = (j.get("tpot") or {}).get("median_ms")
            return 1e3 / tpot if tpot else None
        return j.get("output_tokens_per_sec")

    f_bf16_1, f_fp4_1 = ferrum("bf16", 1), ferrum("nvfp4", 1)
    f_bf16_b, f_fp4_b = ferrum("bf16", batch), ferrum("nvfp4", batch)
    t_1, t_b = peer_res.get("b1_tok_s"), peer_res.get("batch_tok_s")
    bpt = {k: (by.get(k) or {}).get("total") for k in ("bf16", "nvfp4")}

    def roof(tps, key):
        return 100 * tps * bpt[key] / bw if tps and bpt.get(key) else None

    verdicts = []

    def target(ok, text):
        if ok is None:
            verdicts.append("SKIP")
            return f"SKIP {text}"
        verdicts.append("PASS" if ok else "FAIL")
        return f"{'PASS' if ok else 'FAIL'} {text}"

    rows = []
    r = roof(f_bf16_1, "bf16")
    rows.append((fe, "bf16", 1, f_bf16_1, bpt["bf16"], r,
                 target(None if r is None else r >= 80, f"{'%.0f' % r if r is not None else '?'}% >= 80% roofline")))
    ratio = f_fp4_1 / f_bf16_1 if f_fp4_1 and f_bf16_1 else None
    rows.append((fe, "nvfp4", 1, f_fp4_1, bpt["nvfp4"], roof(f_fp4_1, "nvfp4"),
                 target(None if ratio is None else ratio >= 2.5,
                        f"{'%.2f' % ratio if ratio else '?'}x >= 2.5x ferrum bf16 b1")))
    f_nograph = ferrum("bf16nograph", 1)
    ratio = f_bf16_1 / f_nograph if f_bf16_1 and f_nograph else None
    rows.append((fe + " no graph", "bf16", 1, f_nograph, bpt["bf16"], roof(f_nograph, "bf16"),
                 f"(graphs: {'%.2f' % ratio if ratio else '?'}x; FERRUM_RECORD=0)"))
    rows.append((tf, "bf16", 1, t_1, bpt["bf16"], roof(t_1, "bf16"), ""))
    ratio = f_bf16_b / t_b if f_bf16_b and t_b else None
    rows.append((fe, "bf16", batch, f_bf16_b, None, None,
                 target(None if ratio is None else ratio >= 10,
                        f"{'%.1f' % ratio if ratio else '?'}x >= 10x transformers b{batch}")))
    ratio = f_fp4_b / t_b if f_fp4_b and t_b else None
    rows.append((fe, "nvfp4", batch, f_fp4_b, None, None,
                 f"({'%.1f' % ratio if ratio else '?'}x transformers bf16 b{batch}; no target)"))
    rows.append((tf, "bf16", batch, t_b, None, None, ""))

    def fmt(x, spec):
        return spec % x if x is not None else "-"

    print(f"copy bandwidth {bw / 1e12:.2f} TB/s ({bw_note}); GPU {peer_res.get('gpu', '?')}; "
          f"torch {peer_res.get('torch', '-')}, transformers {peer_res.get('transformers', '-')}")
    if peer_res.get("error"):
        print(f"transformers peer: {peer_res['error']}")
    head = f"{'engine':<23}{'weights':<8}{'batch':>6}{'tok/s':>11}{'GB/token':>10}{'%roofline':>11}  target"
    print(head)
    print("-" * (len(head) + 30))
    for eng, w, b, tps, bt, rf, tgt in rows:
        print(f"{eng:<23}{w:<8}{b:>6}{fmt(tps, '%.1f'):>11}{fmt(bt / 1e9 if bt else None, '%.3f'):>10}"
              f"{fmt(rf, '%.1f'):>11}  {tgt}")
    print("tok/s: batch 1 = decode (1 / median time per output token); batch > 1 = generated tokens / wall time "
          "of the whole batch, prefill included, for both engines. GB/token: weights read per token. "
          "%roofline = tok/s x GB/token / copy bandwidth (batch 1 only). transformers: PyTorch eager mode, "
          "default attention, no compile.")
    n_fail = verdicts.count("FAIL")
    print(f"targets: {verdicts.count('PASS')} pass, {n_fail} fail, {verdicts.count('SKIP')} not measured")
    sys.exit(1 if n_fail else 0)


# ---------------------------------------------------------------- fixtures


def load_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        raw = data[a:b]
        fmt = {"F32": "f", "I64": "q", "I32": "i", "U32": "I"}[v["dtype"]]
        out[k] = list(struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw))
    return out


def ids_cmd(ref):
    print(",".join(str(i) for i in load_st(ref)["input_ids"]))


def cmp_cmd(ref, got_path):
    want = load_st(ref)["logits"]
    got = load_st(got_path)["logits"]
    mean = sum(want) / len(want)
    std = math.sqrt(sum((w - mean) ** 2 for w in want) / len(want))
    if len(got) != len(want):
        print(f"{len(got)} logits, want {len(want)}")
        sys.exit(1)
    err = max(abs(g - w) for g, w in zip(got, want)) / std
    print("%.2e" % err)
    sys.exit(0 if err <= 2e-3 else 1)


def chat_ref(ref):
    with open(ref) as f:
        print(json.load(f)["chat_greedy_text"].strip())


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "nvrtc":
        nvrtc(*args)
    elif cmd == "model":
        model(*args)
    elif cmd == "bytes":
        bytes_cmd(*args)
    elif cmd == "bench":
        bench_cmd(*args)
    elif cmd == "peer":
        model_dir, out, batch, in_len, out_len = args[:5]
        peer(model_dir, out, int(batch), int(in_len), int(out_len), *(args[5:]))
    elif cmd == "table":
        table(*args)
    elif cmd == "ids":
        ids_cmd(*args)
    elif cmd == "cmp":
        cmp_cmd(*args)
    elif cmd == "chat-ref":
        chat_ref(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
