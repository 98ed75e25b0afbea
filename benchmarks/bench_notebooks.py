"""Wall time of every notebook under nbval (as CI runs them) and of the book build from the
committed outputs.

    python benchmarks/bench_notebooks.py                 # every notebooks/*.ipynb, then the book
    python benchmarks/bench_notebooks.py 09_end_to_end   # some notebooks only
    python benchmarks/bench_notebooks.py --no-book
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from _common import header, table

ROOT = Path(__file__).resolve().parents[1]
SUITE_TARGET_S, BOOK_TARGET_S = 15 * 60, 2 * 60


def timed(cmd: list[str]) -> tuple[float, int, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = (r.stdout + r.stderr).strip().splitlines()
    return time.perf_counter() - t, r.returncode, tail[-1] if tail else ""


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("notebooks", nargs="*", help="notebook stems (default: all in notebooks/)")
    ap.add_argument("--no-book", action="store_true", help="skip the book build")
    args = ap.parse_args()
    header("bench_notebooks: nbval suite and book build")
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.stem in args.notebooks]
    rows = []
    for p in paths:
        s, rc, last = timed(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "--nbval-lax",
                "--nbval-current-env",
                "-p",
                "no:cacheprovider",
                str(p.relative_to(ROOT)),
            ]
        )
        rows.append(
            {
                "step": f"nbval {p.name}",
                "wall s": s,
                "result": "pass" if rc == 0 else f"FAIL (rc {rc}): {last[:80]}",
            }
        )
        print(f"  {p.name}: {s:.0f} s, rc {rc}", flush=True)
    suite = sum(r["wall s"] for r in rows)
    rows.append(
        {
            "step": f"nbval suite ({len(paths)} notebooks)",
            "wall s": suite,
            "result": (
                f"target <= {SUITE_TARGET_S} s: {'met' if suite <= SUITE_TARGET_S else 'not met'}"
            ),
        }
    )
    if not args.no_book:
        with tempfile.TemporaryDirectory() as out:
            jb = str(Path(sys.executable).with_name("jupyter-book"))
            s, rc, last = timed([jb, "build", ".", "--path-output", out])
        rows.append(
            {
                "step": "jupyter-book build (committed outputs)",
                "wall s": s,
                "result": (
                    f"rc {rc}; target <= {BOOK_TARGET_S} s: "
                    f"{'met' if s <= BOOK_TARGET_S else 'not met'}"
                ),
            }
        )
    table(pd.DataFrame(rows), "Notebook suite and book build (wall time, seconds)", floatfmt=".0f")


if __name__ == "__main__":
    main()
