"""Encoder throughput: images per second of EfficientNet-Lite0 by batch size and threads, for the
plain PyTorch eager baseline and each speed-up tried, with the exact-product Recall@10 each one
gives (744 test customer photos vs the 618 shop photos), so a faster model that is worse shows.

Throughput is the model forward on preprocessed 224x224 tensors (preprocessing is the same PIL code
for every variant and is timed on its own row). Variants are timed in interleaved rounds so that
load from other processes hits them alike; the table shows the median round.

    python benchmarks/bench_encoder.py              # default run
    python benchmarks/bench_encoder.py --compile    # also torch.compile (slow to compile)
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import torch

from _common import exact_recall_at_10, header, table
from image_search import load_catalog, load_encoder
from image_search.encoders import l2_normalize
from image_search.images import load_image


def variants(model: torch.nn.Module, with_compile: bool) -> dict:
    """name -> (threads -> forward(batch NCHW float32) -> np.ndarray)."""
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()

    def eager(x):
        with torch.no_grad():
            return plain(x).numpy()

    def channels_last(x):
        with torch.inference_mode():
            return cl(x.contiguous(memory_format=torch.channels_last)).numpy()

    def bf16(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return cl(x.contiguous(memory_format=torch.channels_last)).float().numpy()

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(copy.deepcopy(plain), torch.zeros(1, 3, 224, 224)).eval()))

    def jit(x):
        with torch.no_grad():
            return scripted(x).numpy()

    out = {"eager (NCHW, no_grad): baseline": lambda t: eager,
           "channels-last + inference_mode": lambda t: channels_last,
           "TorchScript freeze + optimize_for_inference": lambda t: jit,
           "bf16 autocast (channels-last)": lambda t: bf16}
    import onnxruntime as ort

    path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(plain, (torch.zeros(1, 3, 224, 224),), path, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    sessions = {}

    def ort_fn(threads: int, spin: bool):
        key = (threads, spin)
        if key not in sessions:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            sessions[key] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        s = sessions[key]
        return lambda x: s.run(None, {"x": x.numpy()})[0]

    out["ONNX Runtime fp32 (spinning threads)"] = lambda t: ort_fn(t, True)
    out["ONNX Runtime fp32 (no spinning)"] = lambda t: ort_fn(t, False)
    enc = load_encoder()
    if getattr(enc, "onnx", None) is not None:  # the package's own path (whatever it is now)
        out["package TorchEncoder (as shipped)"] = lambda t: (lambda x: enc.forward(x))
    if with_compile:
        t = time.perf_counter()
        compiled = torch.compile(cl)
        with torch.inference_mode():
            compiled(torch.zeros(32, 3, 224, 224).contiguous(memory_format=torch.channels_last))
        print(f"torch.compile: first call (compile) {time.perf_counter() - t:.0f} s", flush=True)

        def comp(x):
            with torch.inference_mode():
                return compiled(x.contiguous(memory_format=torch.channels_last)).numpy()

        out["torch.compile (inductor, channels-last)"] = lambda t: comp
    return out


def omp_policy_check() -> pd.DataFrame:
    """The same forward (batch 32, 2 threads) in fresh processes with OMP_WAIT_POLICY ACTIVE vs PASSIVE."""
    code = ("import time, torch\nfrom image_search import load_encoder\nm = load_encoder().model\n"
            "torch.set_num_threads(2)\nx = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)\n"
            "ts = []\nwith torch.inference_mode():\n    m(x)\n    for _ in range(3):\n"
            "        t = time.perf_counter(); m(x); ts.append(time.perf_counter() - t)\n"
            "print(32 / sorted(ts)[1])\n")
    rows = []
    for rnd in range(2):
        for policy in ("ACTIVE", "PASSIVE"):
            env = dict(os.environ, OMP_WAIT_POLICY=policy, IMAGE_SEARCH_ONNX="0")
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            rows.append({"OMP_WAIT_POLICY": policy, "round": rnd, "img/s": float(r.stdout.split()[-1])})
    df = pd.DataFrame(rows).groupby("OMP_WAIT_POLICY", as_index=False)["img/s"].median()
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    header("bench_encoder: efficientnet-lite0 (timm tf_efficientnet_lite0, 224x224, 1280-d)")

    catalog = load_catalog()
    enc = load_encoder()
    test_paths, test_ids = catalog.queries("test")
    paths = [catalog.icon_path(i) for i in catalog.ids] + list(test_paths)
    t = time.perf_counter()
    images = [load_image(p) for p in paths]
    t_decode = time.perf_counter() - t
    t = time.perf_counter()
    tensors = torch.stack([enc.preprocess(im) for im in images])
    t_pre = time.perf_counter() - t
    print(f"decode {len(paths) / t_decode:.0f} img/s, preprocess (resize 256 bicubic, crop 224, normalise) "
          f"{len(paths) / t_pre:.0f} img/s, 1 thread", flush=True)
    vs = variants(enc.model, args.compile)

    # Throughput grid: interleaved rounds.
    settings = [(1, 1), (1, 2), (8, 2), (32, 1), (32, 2)]
    rng = np.random.default_rng(0)
    rates: dict[tuple[str, int, int], list[float]] = {}
    for rnd in range(args.rounds):
        for batch, threads in settings:
            torch.set_num_threads(threads)
            reps = max(1, 16 // batch)
            for name, make in vs.items():
                f = make(threads)
                x = tensors[rng.integers(0, len(tensors), batch)]
                f(x)  # warm-up for this shape
                t = time.perf_counter()
                for _ in range(reps):
                    f(x)
                rates.setdefault((name, batch, threads), []).append(batch * reps / (time.perf_counter() - t))
        print(f"  round {rnd + 1}/{args.rounds} done", flush=True)

    # Recall: every variant embeds the 618 icons and 744 test photos (batch 32, 2 threads).
    torch.set_num_threads(2)
    n_icons = len(catalog)
    rows = []
    base = None
    for name, make in vs.items():
        f = make(2)
        t = time.perf_counter()
        emb = l2_normalize(np.concatenate([f(tensors[s:s + 32]) for s in range(0, len(tensors), 32)]))
        bulk = len(tensors) / (time.perf_counter() - t)
        base = emb if base is None else base
        r10 = exact_recall_at_10(emb[:n_icons], catalog.ids, emb[n_icons:], test_ids)
        row = {"variant": name}
        for batch, threads in settings:
            row[f"b{batch} t{threads} img/s"] = float(np.median(rates[(name, batch, threads)]))
        row["bulk img/s (1362 imgs, b32 t2)"] = bulk
        row["max |Δ| vs baseline"] = float(np.abs(emb - base).max())
        row["exact-product R@10"] = r10
        rows.append(row)
    df = pd.DataFrame(rows)
    ref = df.iloc[0]
    for col in [c for c in df.columns if "img/s" in c]:
        df[col.replace("img/s", "x")] = df[col] / ref[col]
    df["ΔR@10"] = df["exact-product R@10"] - ref["exact-product R@10"]
    speed_cols = ["variant"] + [c for c in df.columns if c.endswith(" x")]
    table(df[["variant"] + [c for c in df.columns if c.endswith("img/s") or "bulk img/s" in c]],
          "1. Throughput (images/s of the model forward; median of interleaved rounds)", floatfmt=".1f")
    table(df[speed_cols + ["max |Δ| vs baseline", "exact-product R@10", "ΔR@10"]],
          "2. Speed-up over the eager baseline (same run) and accuracy", floatfmt=".3g")
    print("dynamic quantization (torch.ao.quantization.quantize_dynamic) is not listed: it converts only "
          "nn.Linear/LSTM layers and EfficientNet-Lite0's feature extractor has none (it is all convolutions), "
          "so the quantized model is the eager model.")
    table(omp_policy_check(), "3. OpenMP wait policy on a shared machine (fresh processes, batch 32, 2 threads, PyTorch)",
          floatfmt=".1f")


if __name__ == "__main__":
    main()
