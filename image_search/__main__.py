"""Command line: ``python -m image_search index|search|demo`` (chapter 09 and chapter 14)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import ImageSearchError


REPEATABLE = ("--category", "--type")  # set-valued filter flags
MAX_REPEATED = 1000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)

    def parse_known_args(self, args=None, namespace=None):
        args = _collapse_repeats(self, sys.argv[1:] if args is None else list(args))
        return super().parse_known_args(args, namespace)


def _collapse_repeats(parser: _Parser, args: list[str]) -> list[str]:
    """Drop repeated ``--category V`` / ``--type V`` pairs (they name a set) and refuse more than
    :data:`MAX_REPEATED` distinct values, before argparse sees them: its parsing time grows with the
    square of the number of flags (20,000 ``--category`` flags took 15 s)."""
    out: list[str] = []
    seen: dict[str, set[str]] = {flag: set() for flag in REPEATABLE}
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out.extend(args[i:])
            break
        flag, value, width = tok, None, 1
        if tok in REPEATABLE and i + 1 < len(args):
            value, width = args[i + 1], 2
        elif tok.split("=", 1)[0] in REPEATABLE and "=" in tok:
            flag, value = tok.split("=", 1)
        if value is None or value not in seen[flag]:
            out.extend(args[i:i + width])
            if value is not None:
                seen[flag].add(value)
                if len(seen[flag]) > MAX_REPEATED:
                    parser.error(f"more than {MAX_REPEATED} different {flag} values")
        i += width
    return out


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
    s.add_argument("--category", action="append", default=None, help="only this room category (repeatable)")
    s.add_argument("--type", action="append", default=None, help="only this product type, e.g. chair (repeatable)")
    s.add_argument("--min-price", type=float, default=None)
    s.add_argument("--max-price", type=float, default=None)
    s.add_argument("--in-stock", action="store_true", help="only products in stock")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--encoder", **enc)
    s.add_argument("--index", type=Path, default=None, help="index file (default: the cached catalog index)")

    d = sub.add_parser("demo", help="evaluate on held-out customer photos and write a result grid")
    d.add_argument("--encoder", **enc)
    d.add_argument("--out", type=Path, default=Path("demo_results.png"), help="result grid PNG (default: ./demo_results.png)")
    return p


def _searcher(encoder_name: str, index_path: Path | None, factory: str = "Flat", rebuild: bool = False):
    """A searcher over the catalog index: the explicit ``index_path`` (refused when damaged, built
    with another encoder or for another catalog), or the cached default index, rebuilt
    automatically when it is missing, damaged or stale. ``rebuild`` always builds and saves."""
    from .catalog import load_catalog
    from .encoders import load_encoder
    from .errors import IndexMismatchError
    from .indexer import ProductIndex
    from .searcher import Searcher, build_index, catalog_fingerprint, default_index_path

    catalog, encoder = load_catalog(), load_encoder(encoder_name)
    path = index_path or default_index_path(encoder_name)
    index = None
    if not rebuild:
        if index_path is not None and not index_path.exists():
            raise FileNotFoundError(f"no index file at {index_path}: build one with "
                                    f"`python -m image_search index --out {index_path}`")
        try:
            index = ProductIndex.load(path, encoder=encoder.name, dim=encoder.dim) if path.exists() else None
        except IndexMismatchError as e:
            if index_path is not None:
                raise
            sys.stderr.write(f"rebuilding the cached index: {_one_line(e)}\n")
        if index is not None and index.catalog_fingerprint != catalog_fingerprint(catalog):
            if index_path is not None:
                raise IndexMismatchError(
                    f"{index_path} was built for another catalog (its products, images or attributes differ "
                    f"from {catalog.root}): rebuild it with `python -m image_search index --out {index_path}`")
            sys.stderr.write("rebuilding the cached index: the catalog changed since it was built\n")
            index = None
    if index is None:
        index = build_index(catalog, encoder, factory, progress=True)
        index.save(path)
    return Searcher(index, catalog, encoder), path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ImageSearchError, OSError, ValueError, KeyError) as e:
        sys.stderr.write(f"error: {_one_line(e)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as e:  # never a traceback; IMAGE_SEARCH_DEBUG=1 shows it
        if os.environ.get("IMAGE_SEARCH_DEBUG"):
            raise
        sys.stderr.write(f"error: unexpected {type(e).__name__}: {_one_line(e)} (IMAGE_SEARCH_DEBUG=1 for details)\n")
        return 1


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split()) or type(e).__name__


def _run(args: argparse.Namespace) -> int:
    from .searcher import Filters

    if args.command == "index":
        searcher, path = _searcher(args.encoder, args.out, args.factory, rebuild=True)
        print(f"indexed {len(searcher.index)} products with {args.encoder} ({searcher.index.dim}-d, {args.factory}) -> {path}")
        return 0
    if args.command == "search":
        from .images import load_image
        from .searcher import SearchRequest

        if not args.image.is_file():
            raise FileNotFoundError(f"no such image file: {args.image}")
        filters = Filters(categories=tuple(args.category) if args.category else None, min_price=args.min_price,
                          max_price=args.max_price, in_stock=True if args.in_stock else None,
                          types=tuple(args.type) if args.type else None)
        image = load_image(args.image)  # a bad upload or argument fails before any model is loaded
        SearchRequest(image=image, k=args.k, filters=filters)
        searcher, _ = _searcher(args.encoder, args.index)
        res = searcher.search(image, k=args.k, filters=filters)
        t = res.timings
        if args.json:
            print(json.dumps({"results": res.table().to_dict(orient="records"),
                              "timings_ms": {"decode": t.decode_ms, "embed": t.embed_ms, "ann": t.ann_ms,
                                             "rerank": t.rerank_ms, "total": t.total_ms}}, indent=1))
        else:
            print(res.table().to_string(index=False) if len(res) else "no products match the filters")
            print(f"\n{t.total_ms:.1f} ms: decode {t.decode_ms:.1f}, embed {t.embed_ms:.1f}, ANN {t.ann_ms:.2f}, re-rank {t.rerank_ms:.2f}")
        return 0
    from .demo import run_demo

    print(run_demo(args.encoder, out=args.out))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_MININTERVAL", "1")
    sys.exit(main())
