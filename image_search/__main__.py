"""Command line: ``python -m image_search index|search|demo`` (chapter 09 and chapter 14)."""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from .errors import ImageSearchError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m image_search", description="Visual product search over the book's catalog.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    enc = dict(default="efficientnet-lite0", help="encoder name (default: efficientnet-lite0)")

    ix = sub.add_parser("index", help="build and save the catalog index")
    ix.add_argument("--encoder", **enc)
    ix.add_argument("--factory", default="Flat", help="FAISS factory string (default: Flat)")
    ix.add_argument("--out", type=Path, default=None, help="index file (default: in the cache folder)")

    s = sub.add_parser("search", help="search the catalog with an image file")
    s.add_argument("image", type=Path)
    s.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    s.add_argument("--category", action="append", default=None, help="only this category (repeatable)")
    s.add_argument("--min-price", type=float, default=None)
    s.add_argument("--max-price", type=float, default=None)
    s.add_argument("--in-stock", action="store_true", help="only products in stock")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--encoder", **enc)
    s.add_argument("--index", type=Path, default=None, help="index file (default: the cached catalog index)")

    v = sub.add_parser("serve", help="serve search over HTTP with a web page (chapter 08)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    v.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 takes a free one)")
    v.add_argument("--index", type=Path, default=None, help="index file (default: the cached catalog index)")
    v.add_argument("--encoder", **enc)
    v.add_argument("--max-batch", type=int, default=16, help="most photos embedded in one call (default: 16)")
    v.add_argument("--batch-wait-ms", type=float, default=2.0, help="longest wait for a batch to fill (default: 2)")
    v.add_argument("--no-batching", action="store_true", help="embed each photo alone (same queue and thread)")
    v.add_argument("--max-upload-mb", type=float, default=10.0, help="largest photo accepted (default: 10; 413 above)")
    v.add_argument("--timeout-s", type=float, default=10.0, help="time budget of one search (default: 10; 504 after)")
    v.add_argument("--queue", type=int, default=64, help="photos that may wait for the encoder (default: 64; 503 above)")
    v.add_argument("--cors-origin", action="append", default=[], help="allow this origin (repeatable; default: CORS off)")

    d = sub.add_parser("demo", help="evaluate on held-out customer photos and write a result grid")
    d.add_argument("--encoder", **enc)
    d.add_argument("--out", type=Path, default=Path("demo_results.png"), help="result grid PNG (default: ./demo_results.png)")
    return p


def _searcher(encoder_name: str, index_path: Path | None, factory: str = "Flat", rebuild: bool = False):
    from .catalog import load_catalog
    from .encoders import load_encoder
    from .indexer import ProductIndex
    from .searcher import Searcher, build_index, default_index_path

    catalog, encoder = load_catalog(), load_encoder(encoder_name)
    path = index_path or default_index_path(encoder_name)
    if path.exists() and not rebuild:
        index = ProductIndex.load(path, encoder=encoder.name, dim=encoder.dim)
    else:
        if index_path is not None and not rebuild:
            command = f"python -m image_search index --out {index_path}"
            raise FileNotFoundError(errno.ENOENT, f"no index file (build one with `{command}`)",
                                    str(index_path))
        index = build_index(catalog, encoder, factory, progress=True)
        index.save(path)
    return Searcher(index, catalog, encoder), path


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit status 1, never a traceback.

    The package's own errors and OS errors on a path given on the command line are the user's;
    anything else is reported as unexpected (``IMAGE_SEARCH_DEBUG=1`` shows its traceback)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ImageSearchError as e:
        return _fail(_one_line(e))
    except OSError as e:
        if _on_user_path(e, args):
            return _fail(f"{e.strerror or _one_line(e)}: {e.filename}")
        return _unexpected(e)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as e:
        return _unexpected(e)


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 1


def _unexpected(e: Exception) -> int:
    if os.environ.get("IMAGE_SEARCH_DEBUG"):
        raise e
    return _fail(f"unexpected {type(e).__name__}: {_one_line(e)}"
                 " (IMAGE_SEARCH_DEBUG=1 shows the traceback)")


def _on_user_path(e: OSError, args: argparse.Namespace) -> bool:
    """Whether ``e`` concerns a path the user gave (an argument of type Path), a folder above it,
    or a file beside it (the temporary file of an atomic write)."""
    given = [Path(v).absolute() for v in vars(args).values() if isinstance(v, Path)]
    hit = [Path(f).absolute() for f in (e.filename, e.filename2) if isinstance(f, (str, Path))]
    return any(h == g or h in g.parents or h.parent == g.parent for h in hit for g in given)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _run(args: argparse.Namespace) -> int:
    from .searcher import Filters

    if args.command == "index":
        searcher, path = _searcher(args.encoder, args.out, args.factory, rebuild=True)
        print(f"indexed {len(searcher.index)} products with {args.encoder} ({searcher.index.dim}-d, {args.factory}) -> {path}")
        return 0
    if args.command == "search":
        import dataclasses
        import time

        from .images import load_image
        from .searcher import SearchRequest

        filters = Filters(categories=tuple(args.category) if args.category else None, min_price=args.min_price,
                          max_price=args.max_price, in_stock=True if args.in_stock else None)
        t0 = time.perf_counter()
        image = load_image(args.image)  # a bad upload or argument fails before any model is loaded
        decode_ms = (time.perf_counter() - t0) * 1000.0
        SearchRequest(image=image, k=args.k, filters=filters)
        searcher, _ = _searcher(args.encoder, args.index)
        res = searcher.search(image, k=args.k, filters=filters)
        t = dataclasses.replace(res.timings, decode_ms=decode_ms + res.timings.decode_ms)  # the file's decode counts
        if args.json:
            print(json.dumps({"results": res.table().to_dict(orient="records"),
                              "timings_ms": {"decode": t.decode_ms, "embed": t.embed_ms, "ann": t.ann_ms,
                                             "rerank": t.rerank_ms, "total": t.total_ms}}, indent=1))
        else:
            print(res.table().to_string(index=False) if len(res) else "no products match the filters")
            print(f"\n{t.total_ms:.1f} ms: decode {t.decode_ms:.1f}, embed {t.embed_ms:.1f}, ANN {t.ann_ms:.2f}, re-rank {t.rerank_ms:.2f}")
        return 0
    if args.command == "serve":
        from .serve import ServeConfig, listen_socket, run_server

        config = ServeConfig(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, batching=not args.no_batching,
                             max_upload_mb=args.max_upload_mb, timeout_s=args.timeout_s, queue=args.queue,
                             cors_origins=tuple(args.cors_origin))  # bad settings and a busy port fail
        sock = listen_socket(args.host, args.port)                  # before the model loads
        run_server(_searcher(args.encoder, args.index)[0], config, args.host, sock=sock)
        return 0
    from .demo import run_demo

    print(run_demo(args.encoder, out=args.out))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_MININTERVAL", "1")
    sys.exit(main())
