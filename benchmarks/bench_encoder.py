"""Encoder throughput: images per second of EfficientNet-Lite0 by batch size and threads, for the
plain PyTorch eager baseline and each speed-up tried (including int8 ONNX models), with the
exact-product Recall@10 each one gives (744 test customer photos vs the 618 shop photos), so a
faster model that is worse shows.

Throughput is the model forward on preprocessed 224x224 tensors (preprocessing is the same PIL code
for every variant and is timed on its own row). Variants are timed in interleaved rounds so that
load from other processes hits them alike; tables give the median round and the min-max over
rounds, and speed-ups are per-round ratios to the baseline timed in the same round.

The int8 models are quantised from the ONNX file the package itself exports and caches
(``image_search.encoders``) with ONNX Runtime's tools (``quantize_int8``): dynamic (weights int8,
activation ranges computed at run time) and static (QDQ, per-channel int8 weights, uint8
activations whose ranges are calibrated on train-split images only), after folding the exported
graph's shape arithmetic (``fold_shapes``; also timed on its own in fp32).

    python benchmarks/bench_encoder.py                  # default run (5 rounds)
    python benchmarks/bench_encoder.py --rounds 2       # quick
    python benchmarks/bench_encoder.py --compile        # also torch.compile (slow to compile)
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
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import torch

from image_search import load_catalog, load_encoder
from image_search.encoders import l2_normalize
from image_search.images import load_image

from _common import exact_recall_at_10, header, median_range, peak_rss_gb, table

SETTINGS = [(1, 1), (1, 2), (8, 2), (32, 1), (32, 2)]  # (batch, threads)


def fold_shapes(fp32: Path, out: Path) -> Path:
    """A copy of the exported model with its shape arithmetic folded away. timm's TF-"same" padding
    exports as Shape/Gather/Ceil/Sub/Pad ops computed on every call (the batch axis is dynamic);
    with the batch fixed to 1, ONNX Runtime's basic (hardware-independent) optimisations fold them
    into the convolutions' pads; the batch axis is then made dynamic again (the outputs are
    identical)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fp32))
    ends = list(model.graph.input) + list(model.graph.output)
    for t in ends:
        dim = t.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / "batch1.onnx"
        onnx.save(model, str(fixed))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(str(fixed), so, providers=["CPUExecutionProvider"])
    folded = onnx.load(str(out))
    for t in list(folded.graph.input) + list(folded.graph.output):
        dim = t.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    del folded.graph.value_info[:]  # intermediate shapes inferred with batch 1
    onnx.save(folded, str(out))
    return out


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray | None = None) -> Path:
    """An int8 copy of an fp32 ONNX model (shape ops folded, :func:`fold_shapes`), written to
    ``out``. Without ``calibration``: dynamic quantisation (int8 weights; activations quantised with
    ranges computed at run time). With ``calibration`` (preprocessed ``(n, 3, H, W)`` images of the
    train split only): static quantisation, QDQ format, per-channel int8 weights, uint8 activations
    with min-max ranges observed on the calibration images. Both keep the first convolution (the
    stem, on raw pixels) and the last (the 1x1 conv to the 1280-d features) in float: quantising
    them costs 0.05 of exact-product Recall@10, the rest about 0.003."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fold_shapes(fp32, Path(tmp) / "folded.onnx")), str(prepared))
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        keep_float = [convs[0], convs[-1]]
        if calibration is None:
            quantize_dynamic(
                prepared,
                out,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=keep_float,
            )
            return out

        class Batches(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(
                    [{"x": calibration[s : s + 16]} for s in range(0, len(calibration), 16)]
                )

            def get_next(self):
                return next(self.it, None)

        quantize_static(
            prepared,
            out,
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float,
        )
    return out


def ort_session(path: Path, threads: int):
    """An ONNX Runtime session as the package opens one (no spinning threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def package_onnx_file(enc) -> Path:
    """The fp32 ONNX file the package exported and cached for the default encoder."""
    path = getattr(enc.onnx, "_model_path", None)
    if enc.onnx is None or not path or not Path(path).exists():
        raise SystemExit(
            "the package did not export an ONNX model (IMAGE_SEARCH_ONNX=0 or onnxruntime missing)"
        )
    return Path(path)


def variants(enc, calibration: np.ndarray, with_compile: bool, folder: Path) -> dict:
    """name -> (threads -> forward(batch NCHW float32 tensor) -> np.ndarray)."""
    plain = copy.deepcopy(enc.model).to(memory_format=torch.contiguous_format).eval()
    cl = copy.deepcopy(enc.model).to(memory_format=torch.channels_last).eval()

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
        scripted = torch.jit.optimize_for_inference(
            torch.jit.freeze(
                torch.jit.trace(copy.deepcopy(plain), torch.zeros(1, 3, 224, 224)).eval()
            )
        )

    def jit(x):
        with torch.no_grad():
            return scripted(x).numpy()

    fp32 = package_onnx_file(enc)
    folded = fold_shapes(fp32, folder / "fp32-folded.onnx")
    t = time.perf_counter()
    dynamic = quantize_int8(fp32, folder / "int8-dynamic.onnx")
    t_dyn = time.perf_counter() - t
    t = time.perf_counter()
    static = quantize_int8(fp32, folder / "int8-static.onnx", calibration)
    t_static = time.perf_counter() - t
    print(
        f"quantised {fp32.name} ({fp32.stat().st_size / 2**20:.1f} MB): dynamic int8 in "
        f"{t_dyn:.0f} s ({dynamic.stat().st_size / 2**20:.1f} MB), static int8 in {t_static:.0f} s "
        f"with {len(calibration)} train-split calibration images "
        f"({static.stat().st_size / 2**20:.1f} MB)",
        flush=True,
    )
    sessions: dict = {}

    def ort_fn(path: Path):
        def make(threads: int):
            key = (path, threads)
            if key not in sessions:
                sessions[key] = ort_session(path, threads)
            s = sessions[key]
            return lambda x: s.run(None, {"x": x.numpy()})[0]

        return make

    out = {
        "eager (NCHW, no_grad): baseline": lambda t: eager,
        "channels-last + inference_mode": lambda t: channels_last,
        "TorchScript freeze + optimize_for_inference": lambda t: jit,
        "bf16 autocast (channels-last)": lambda t: bf16,
        "ONNX Runtime fp32 (package's file)": ort_fn(fp32),
        "ONNX Runtime fp32, shape ops folded": ort_fn(folded),
        "ONNX Runtime int8 dynamic": ort_fn(dynamic),
        "ONNX Runtime int8 static (QDQ, calibrated)": ort_fn(static),
        "package TorchEncoder (as shipped)": lambda t: lambda x: enc.forward(x.numpy()),
    }
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


def omp_policy_check(rounds: int) -> pd.DataFrame:
    """The same forward (batch 32, 2 threads) in fresh processes with OMP_WAIT_POLICY ACTIVE vs
    PASSIVE."""
    code = (
        "import time, torch\nfrom image_search import load_encoder\nm = load_encoder().model\n"
        "torch.set_num_threads(2)\n"
        "x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)\n"
        "ts = []\nwith torch.inference_mode():\n    m(x)\n    for _ in range(3):\n"
        "        t = time.perf_counter(); m(x); ts.append(time.perf_counter() - t)\n"
        "print(32 / sorted(ts)[1])\n"
    )
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for policy in ("ACTIVE", "PASSIVE"):
            env = dict(os.environ, OMP_WAIT_POLICY=policy, IMAGE_SEARCH_ONNX="0")
            r = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            rates.setdefault(policy, []).append(float(r.stdout.split()[-1]))
    return pd.DataFrame(
        [
            {"OMP_WAIT_POLICY": p, "img/s, median (min-max)": median_range(v)}
            for p, v in rates.items()
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--compile", action="store_true", help="also try torch.compile")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    ap.add_argument(
        "--calibration", type=int, default=256, help="train-split images calibrating static int8"
    )
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
    tensors = torch.from_numpy(np.stack([enc.preprocess(im) for im in images]))
    t_pre = time.perf_counter() - t
    print(
        f"decode {len(paths) / t_decode:.0f} img/s, preprocess (resize 256 bicubic, crop 224, "
        f"normalise) {len(paths) / t_pre:.0f} img/s, 1 thread",
        flush=True,
    )
    train_ids = [p.id for p in catalog.split("train")]
    train_paths = [catalog.icon_path(i) for i in train_ids] + [
        v for i in train_ids for v in catalog.view_paths(i)
    ]
    pick = np.random.default_rng(0).choice(
        len(train_paths), min(args.calibration, len(train_paths)), replace=False
    )
    calibration = np.stack([enc.preprocess(load_image(train_paths[i])) for i in pick])

    with tempfile.TemporaryDirectory() as folder:
        vs = variants(enc, calibration, args.compile, Path(folder))
        rates, ratios = timing_rounds(vs, tensors, args.rounds)
        df = accuracy(vs, tensors, catalog, test_ids)

    for batch, threads in SETTINGS:
        df[f"b{batch} t{threads} img/s"] = [
            median_range(rates[(n, batch, threads)]) for n in df.variant
        ]
        df[f"b{batch} t{threads} x"] = [
            median_range(ratios[(n, batch, threads)], ".2f") for n in df.variant
        ]
    table(
        df[["variant"] + [c for c in df.columns if c.endswith("img/s")]],
        f"1. Throughput, images/s of the model forward: median (min-max) of {args.rounds} "
        "interleaved rounds",
    )
    table(
        df[
            ["variant"]
            + [c for c in df.columns if c.endswith(" x")]
            + ["bulk img/s (1362 imgs, b32 t2)"]
        ],
        "2. Speed-up over the eager baseline timed in the same round: median (min-max) of the "
        "per-round ratios",
    )
    table(
        df[["variant", "max |Δ| vs baseline", "exact-product R@10", "ΔR@10"]],
        "3. Accuracy: embeddings vs the baseline's, exact-product Recall@10 (744 test photos vs "
        "618 icons)",
        floatfmt=".3g",
    )
    targets(df, rates, ratios)
    print(
        "dynamic quantization in PyTorch (torch.ao.quantization.quantize_dynamic) is not listed: "
        "it converts only nn.Linear/LSTM layers and EfficientNet-Lite0's feature extractor has "
        "none (it is all convolutions)."
    )
    table(
        omp_policy_check(max(2, args.rounds // 2)),
        "4. OpenMP wait policy (fresh processes, batch 32, 2 threads, PyTorch)",
    )
    print(f"\npeak RSS {peak_rss_gb():.1f} GB")


def timing_rounds(vs: dict, tensors: torch.Tensor, rounds: int):
    """Interleaved rounds: every variant at every (batch, threads) once per round. Returns
    images/s and per-round speed-ups over the baseline, keyed by (variant, batch, threads)."""
    rng = np.random.default_rng(0)
    rates: dict[tuple[str, int, int], list[float]] = {}
    ratios: dict[tuple[str, int, int], list[float]] = {}
    base = next(iter(vs))
    for rnd in range(rounds):
        for batch, threads in SETTINGS:
            torch.set_num_threads(threads)
            reps = max(2, 16 // batch)
            x = tensors[rng.integers(0, len(tensors), batch)]
            this = {}
            for name, make in vs.items():
                f = make(threads)
                f(x)  # warm-up for this shape
                t = time.perf_counter()
                for _ in range(reps):
                    f(x)
                this[name] = batch * reps / (time.perf_counter() - t)
                rates.setdefault((name, batch, threads), []).append(this[name])
            for name in vs:
                ratios.setdefault((name, batch, threads), []).append(this[name] / this[base])
        print(f"  round {rnd + 1}/{rounds} done", flush=True)
    return rates, ratios


def accuracy(vs: dict, tensors: torch.Tensor, catalog, test_ids) -> pd.DataFrame:
    """Every variant embeds the 618 icons and 744 test photos (batch 32, 2 threads)."""
    torch.set_num_threads(2)
    n_icons = len(catalog)
    rows, base = [], None
    for name, make in vs.items():
        f = make(2)
        t = time.perf_counter()
        emb = l2_normalize(
            np.concatenate([f(tensors[s : s + 32]) for s in range(0, len(tensors), 32)])
        )
        bulk = len(tensors) / (time.perf_counter() - t)
        base = emb if base is None else base
        rows.append(
            {
                "variant": name,
                "bulk img/s (1362 imgs, b32 t2)": f"{bulk:.1f}",
                "max |Δ| vs baseline": float(np.abs(emb - base).max()),
                "exact-product R@10": exact_recall_at_10(
                    emb[:n_icons], catalog.ids, emb[n_icons:], test_ids
                ),
            }
        )
    df = pd.DataFrame(rows)
    df["ΔR@10"] = df["exact-product R@10"] - df["exact-product R@10"].iloc[0]
    return df


def targets(df: pd.DataFrame, rates: dict, ratios: dict) -> None:
    """The issue's target for the int8 models: >= 2x eager at batch 1 and batch 8, recall within
    0.01."""
    lines = []
    for name in [n for n in df.variant if "int8" in n or "package" in n]:
        row = df[df.variant == name].iloc[0]
        speed = {s: float(np.median(ratios[(name, *s)])) for s in [(1, 1), (1, 2), (8, 2)]}
        ok_speed = all(v >= 2 for v in speed.values())
        ok_recall = abs(row["ΔR@10"]) <= 0.01
        lines.append(
            f"{name}: "
            + ", ".join(f"b{b} t{t} {v:.2f}x" for (b, t), v in speed.items())
            + f" (target >= 2x: {'met' if ok_speed else 'not met'}); ΔR@10 {row['ΔR@10']:+.4f} "
            f"(target within 0.01: {'met' if ok_recall else 'not met'})"
        )
    print("\n## Targets\n\n" + "\n".join(f"- {line}" for line in lines))


if __name__ == "__main__":
    main()
