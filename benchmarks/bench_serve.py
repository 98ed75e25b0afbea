"""The HTTP search service under load: latency percentiles and throughput, batching on vs off.

Starts `python -m image_search serve` twice on free loopback ports (one with micro-batching, one
with `--no-batching`: the same queue and encoder thread, batches of one), then drives both with
bounded concurrent clients that upload real customer photos (`catalog.queries("test")`) as
multipart forms over keep-alive connections. Each (concurrency, mode) gets a fixed number of
requests, split into rounds that alternate which mode goes first, so both modes see the same
machine. Prints a Markdown table (p50 / p95 / p99 client latency, requests/s, failures, mean
batch size, the server's own median time and queue wait) and the targets. Stops the servers.

    .venv/bin/python benchmarks/bench_serve.py                      # 200 requests per setting
    .venv/bin/python benchmarks/bench_serve.py --requests 40        # a quick check
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, table

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """One setting's measurements: client latencies (s) of the successful requests, and the rest."""

    mode: str
    concurrency: int
    latencies: tuple[float, ...]
    failed: int
    wall_s: float
    server_ms: tuple[float, ...]
    queue_ms: tuple[float, ...]
    embed_per_photo_ms: tuple[float, ...]
    images: int
    batches: int


class Server:
    """`python -m image_search serve` in a subprocess on a free port; stopped by :meth:`stop`."""

    def __init__(self, args: argparse.Namespace, batching: bool) -> None:
        cmd = [
            sys.executable,
            "-m",
            "image_search",
            "serve",
            "--port",
            "0",
            "--encoder",
            args.encoder,
            "--max-batch",
            str(args.max_batch),
            "--batch-wait-ms",
            str(args.batch_wait_ms),
            "--queue",
            "64",
        ]
        if args.index:
            cmd += ["--index", str(args.index)]
        if not batching:
            cmd.append("--no-batching")
        env = {
            **os.environ,
            "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True
        ).start()
        self.port = self._wait_ready(lines)

    def _wait_ready(self, lines: queue.Queue) -> int:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(
                    f"serve exited with {self.proc.returncode} (run it by hand to see why)"
                )
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line.startswith("serving") and " on http://" in line:
                port = int(line.split(" on http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
                while time.monotonic() < deadline:
                    try:
                        self.health(port)
                        return port
                    except OSError:
                        time.sleep(0.3)
        raise SystemExit("serve did not become ready within 600 s")

    def health(self, port: int | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=30)
        try:
            conn.request("GET", "/healthz")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def multipart(photo: bytes, name: str, k: int) -> tuple[bytes, str]:
    """A multipart/form-data body with the photo as `image` and `k`, as a browser sends it."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{k}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def drive(
    server: Server, bodies: list[tuple[bytes, str]], n: int, concurrency: int, start_at: int
) -> tuple:
    """Send ``n`` searches from ``concurrency`` threads (one keep-alive connection each)."""
    lock, next_i = threading.Lock(), [0]
    latencies, server_ms, queue_ms, per_photo, failed = [], [], [], [], [0]
    barrier = threading.Barrier(concurrency + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        barrier.wait()
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n:
                break
            body, ctype = bodies[(start_at + i) % len(bodies)]
            t = time.perf_counter()
            try:
                conn.request("POST", "/search", body, {"Content-Type": ctype})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok, data = False, b""
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            elapsed = time.perf_counter() - t
            with lock:
                if ok:
                    answer = json.loads(data)
                    timings = answer["timings_ms"]
                    latencies.append(elapsed)
                    server_ms.append(timings["total"])
                    queue_ms.append(timings["queue"])
                    per_photo.append(timings["embed"] / max(answer["batch_size"], 1))
                else:
                    failed[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    return latencies, failed[0], time.perf_counter() - t0, server_ms, queue_ms, per_photo


def measure(servers: dict[str, Server], bodies, args) -> list[Run]:
    runs: list[Run] = []
    for c in args.concurrency:
        acc = {
            m: {
                "lat": [],
                "failed": 0,
                "wall": 0.0,
                "server": [],
                "queue": [],
                "photo": [],
                "images": 0,
                "batches": 0,
            }
            for m in servers
        }
        per_round = [
            args.requests // args.rounds + (r < args.requests % args.rounds)
            for r in range(args.rounds)
        ]
        for r, n in enumerate(per_round):
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for mode in order:
                s = servers[mode]
                drive(s, bodies, max(args.warmup, c), c, start_at=r * 7919)  # warm-up, not counted
                before = s.health()["batcher"]
                lat, failed, wall, srv, que, photo = drive(
                    s, bodies, n, c, start_at=sum(per_round[:r])
                )
                after = s.health()["batcher"]
                a = acc[mode]
                a["lat"] += lat
                a["failed"] += failed
                a["wall"] += wall
                a["server"] += srv
                a["queue"] += que
                a["photo"] += photo
                a["images"] += after["images"] - before["images"]
                a["batches"] += after["batches"] - before["batches"]
        for mode, a in acc.items():
            runs.append(
                Run(
                    mode,
                    c,
                    tuple(a["lat"]),
                    a["failed"],
                    a["wall"],
                    tuple(a["server"]),
                    tuple(a["queue"]),
                    tuple(a["photo"]),
                    a["images"],
                    a["batches"],
                )
            )
            print(
                f"  concurrency {c:>2}, {mode}: {len(a['lat'])} ok, {a['failed']} failed, "
                f"{a['wall']:.1f} s",
                flush=True,
            )
    return runs


def report(runs: list[Run], args) -> None:
    rows = []
    for run in runs:
        ms = np.asarray(run.latencies) * 1000.0 if run.latencies else np.array([np.nan])
        rows.append(
            {
                "mode": run.mode,
                "concurrency": run.concurrency,
                "requests": len(run.latencies) + run.failed,
                "failed": run.failed,
                "p50 ms": np.percentile(ms, 50),
                "p95 ms": np.percentile(ms, 95),
                "p99 ms": np.percentile(ms, 99),
                "req/s": len(run.latencies) / run.wall_s if run.wall_s else 0.0,
                "mean batch": run.images / run.batches if run.batches else 0.0,
                "server p50 ms": float(np.median(run.server_ms)) if run.server_ms else np.nan,
                "queue p50 ms": float(np.median(run.queue_ms)) if run.queue_ms else np.nan,
                "embed ms/photo p50": float(np.median(run.embed_per_photo_ms))
                if run.embed_per_photo_ms
                else np.nan,
            }
        )
    df = pd.DataFrame(rows).sort_values(
        ["concurrency", "mode"], ascending=[True, True], kind="stable"
    )
    table(
        df,
        f"POST /search, {args.encoder}, max batch {args.max_batch}, wait {args.batch_wait_ms:g} ms "
        f"(client latency; server p50 = the server's own total; queue = wait for the encoder; "
        f"embed ms/photo = the batch's encoder call / its size)",
        floatfmt=".1f",
    )
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    print("## Targets\n")
    if ("batching", 1) in by:
        p95 = by[("batching", 1)]["p95 ms"]
        print(
            f"- p95 at concurrency 1 (batching on): {p95:.1f} ms (target <= 50 ms: "
            f"{'met' if p95 <= 50 else 'not met'})"
        )
    top = max(args.concurrency)
    if ("batching", top) in by and ("no batching", top) in by:
        on, off = by[("batching", top)]["req/s"], by[("no batching", top)]["req/s"]
        ratio = on / off if off else float("nan")
        print(
            f"- throughput at concurrency {top}: {on:.1f} req/s with batching vs {off:.1f} without "
            f"= {ratio:.2f}x (target >= 2x: {'met' if ratio >= 2 else 'not met'})"
        )
    failed = sum(r.failed for r in runs)
    print(
        f"- failed requests: {failed} of {sum(len(r.latencies) + r.failed for r in runs)} "
        f"(target 0: {'met' if failed == 0 else 'not met'})"
    )
    print(
        f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 "
        "min)\n",
        flush=True,
    )


def encoder_alone(args, photos: list[Path], rounds: int = 3) -> None:
    """The encoder without HTTP: ms per photo when called with batches of 1, 4 and ``max_batch``
    (decoded photos in, the call the batcher makes), interleaved rounds. This bounds what batching
    can gain on this machine."""
    from image_search import load_encoder, load_image

    encoder = load_encoder(args.encoder)
    images = [load_image(p) for p in photos]
    sizes = sorted({1, 4, args.max_batch})
    encoder.encode_images(images[: max(sizes)], batch_size=max(sizes))  # warm-up
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for r in range(rounds):
        for b in sizes if r % 2 == 0 else sizes[::-1]:
            t = time.perf_counter()
            for s in range(0, len(images), b):
                encoder.encode_images(images[s : s + b], batch_size=b)
            times[b].append((time.perf_counter() - t) * 1000.0 / len(images))
    base = float(np.median(times[1]))
    df = pd.DataFrame(
        [
            {
                "batch": b,
                "ms per photo (median of rounds)": float(np.median(v)),
                "photos/s": 1000.0 / float(np.median(v)),
                "x batch 1": base / float(np.median(v)),
                "rounds": " ".join(f"{x:.1f}" for x in v),
            }
            for b, v in times.items()
        ]
    )
    table(
        df,
        f"The encoder alone ({args.encoder}, {len(images)} photos, {rounds} interleaved rounds): "
        "the most batching can gain here",
        floatfmt=".2f",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--requests", type=int, default=200, help="measured requests per setting (default 200)"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 4, 16],
        help="clients at once (default 1 4 16)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds per setting, alternating which mode goes first",
    )
    p.add_argument(
        "--warmup", type=int, default=8, help="unmeasured requests before each round (default 8)"
    )
    p.add_argument("--encoder", default="efficientnet-lite0")
    p.add_argument(
        "--index", type=Path, default=None, help="index file (default: the cached catalog index)"
    )
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--no-encoder-table", action="store_true", help="skip the encoder-alone table")
    p.add_argument(
        "--encoder-only",
        action="store_true",
        help="only the encoder-alone table "
        "(e.g. --encoder open_clip:ViT-B-32/random: no index needed)",
    )
    args = p.parse_args()
    if args.requests < 1 or args.rounds < 1 or min(args.concurrency) < 1:
        p.error("--requests, --rounds and --concurrency must be positive")

    from image_search import load_catalog

    header("HTTP search service under load (bench_serve.py)")
    paths, _ = load_catalog().queries("test")
    bodies = [multipart(Path(x).read_bytes(), Path(x).name, args.k) for x in paths]
    if args.encoder_only:
        encoder_alone(args, paths[:48])
        return
    print(
        f"{len(bodies)} customer photos of the test products (sent in turn), k={args.k}; "
        f"{args.requests} requests per setting in {args.rounds} rounds\n",
        flush=True,
    )
    servers: dict[str, Server] = {}
    try:
        t = time.perf_counter()
        servers["batching"] = Server(
            args, batching=True
        )  # first alone: it may build and save the index
        servers["no batching"] = Server(args, batching=False)
        print(f"two servers ready in {time.perf_counter() - t:.0f} s", flush=True)
        runs = measure(servers, bodies, args)
    finally:
        for s in servers.values():
            s.stop()
    report(runs, args)
    if not args.no_encoder_table:
        encoder_alone(args, paths[:48])


if __name__ == "__main__":
    main()
