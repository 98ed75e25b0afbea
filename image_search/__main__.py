"""Command line: ``python -m image_search index|search|demo`` (chapter 09 and chapter 14)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from .errors import ImageSearchError, InvalidRequestError

TEXT_ENCODER = "minilm-lit"  # the encoder of text searches (chapter 06)
# The encoder of photo searches and the demo (localizer.PIPELINE, not imported: --help stays fast):
# finds the product in the photo, crops to it and embeds the crop with the query tower, over
# efficientnet-lite0's index of the shop photos (chapters 05, 06).
PHOTO_ENCODER = "product-search"


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
            out.extend(args[i : i + width])
            if value is not None:
                seen[flag].add(value)
                if len(seen[flag]) > MAX_REPEATED:
                    parser.error(f"more than {MAX_REPEATED} different {flag} values")
        i += width
    return out


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--store`` and ``--store-uri`` (``index``, ``search``, and any command that opens the
    index)."""
    parser.add_argument(
        "--store",
        choices=("faiss", "qdrant", "milvus"),
        default="faiss",
        help="vector store (default: faiss)",
    )
    parser.add_argument(
        "--store-uri",
        default=None,
        help="qdrant: a folder or http(s):// URL; milvus: a .db file or http(s):// URI; faiss: an "
        "index file (default: in the cache folder)",
    )


def add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    """``--catalog CSV --images DIR``: a shop's own catalog instead of the book's (README: "Your own
    catalog")."""
    parser.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="a shop's own products CSV (id, name; optional category, type, price, in_stock, "
        "brand, images); default: the book's catalog",
    )
    parser.add_argument(
        "--images", type=Path, default=None, help="the folder of that catalog's photos"
    )


def _parser() -> argparse.ArgumentParser:
    from .encoders import DEFAULT_ENCODER

    p = _Parser(
        prog="python -m image_search", description="Visual product search over a product catalog."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    enc = dict(default=DEFAULT_ENCODER, help=f"encoder name (default: {DEFAULT_ENCODER})")
    photo_enc = dict(default=PHOTO_ENCODER, help=f"encoder name (default: {PHOTO_ENCODER})")
    type_weight = dict(
        type=float,
        default=0.0,
        help="re-rank by type consensus: move up products of the kind the best matches show "
        "(e.g. 1; default 0: off; chapter 09)",
    )

    ix = sub.add_parser("index", help="build or update the catalog index (incremental)")
    ix.add_argument("--encoder", **enc)
    ix.add_argument("--factory", default="Flat", help="FAISS factory string (default: Flat)")
    ix.add_argument(
        "--out", type=Path, default=None, help="FAISS index file (default: in the cache folder)"
    )
    ix.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="embed in this process or with Ray Data (default: local)",
    )
    ix.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: a local Ray runtime)"
    )
    ix.add_argument(
        "--rebuild", action="store_true", help="start from an empty index instead of updating it"
    )
    add_store_arguments(ix)
    add_catalog_arguments(ix)

    s = sub.add_parser("search", help="search the catalog with a photo, a text, or both")
    s.add_argument(
        "image", type=Path, nargs="?", default=None, help="a photo (optional with --text)"
    )
    s.add_argument(
        "--text",
        default=None,
        help="a text query, e.g. 'a green armchair'; "
        "with a photo: how to change it, e.g. 'in black'",
    )
    s.add_argument(
        "--alpha", type=float, default=None, help="weight of --text in a photo + text query"
    )
    s.add_argument("-k", type=int, default=10, help="number of results (default: 10)")
    s.add_argument(
        "--crop",
        type=_box,
        default=None,
        metavar="L,T,R,B",
        help="search only this box of the photo (pixels), e.g. one of the candidate boxes a "
        "search printed",
    )
    s.add_argument(
        "--category", action="append", default=None, help="only this room category (repeatable)"
    )
    s.add_argument(
        "--type",
        action="append",
        default=None,
        help="only this product type, e.g. chair (repeatable)",
    )
    s.add_argument("--min-price", type=float, default=None)
    s.add_argument("--max-price", type=float, default=None)
    s.add_argument("--in-stock", action="store_true", help="only products in stock")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--type-weight", **type_weight)
    s.add_argument(
        "--encoder",
        default=None,
        help=f"encoder name (default: {PHOTO_ENCODER}; with --text: {TEXT_ENCODER})",
    )
    s.add_argument(
        "--index",
        type=Path,
        default=None,
        help="FAISS index file (default: the cached catalog index)",
    )
    add_store_arguments(s)
    add_catalog_arguments(s)

    v = sub.add_parser("serve", help="serve search over HTTP with a web page (chapter 08)")
    v.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    v.add_argument(
        "--port", type=int, default=8000, help="port (default: 8000; 0 takes a free one)"
    )
    v.add_argument(
        "--index", type=Path, default=None, help="index file (default: the cached catalog index)"
    )
    v.add_argument("--encoder", **photo_enc)
    v.add_argument("--type-weight", **type_weight)
    v.add_argument(
        "--max-batch", type=int, default=16, help="most photos embedded in one call (default: 16)"
    )
    v.add_argument(
        "--batch-wait-ms",
        type=float,
        default=2.0,
        help="longest wait for a batch to fill (default: 2)",
    )
    v.add_argument(
        "--no-batching", action="store_true", help="embed each photo alone (same queue and thread)"
    )
    v.add_argument(
        "--max-upload-mb",
        type=float,
        default=10.0,
        help="largest photo accepted (default: 10; 413 above)",
    )
    v.add_argument(
        "--timeout-s",
        type=float,
        default=10.0,
        help="time budget of one search (default: 10; 504 after)",
    )
    v.add_argument(
        "--queue",
        type=int,
        default=64,
        help="photos that may wait for the encoder (default: 64; 503 above)",
    )
    v.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow this origin (repeatable; default: CORS off)",
    )
    v.add_argument(
        "--text-encoder",
        default=TEXT_ENCODER,
        help=f"encoder of text and photo + text searches (default: {TEXT_ENCODER}; 'none': off)",
    )
    add_store_arguments(v)
    add_catalog_arguments(v)

    d = sub.add_parser("demo", help="evaluate on held-out customer photos and write a result grid")
    d.add_argument("--encoder", **photo_enc)
    d.add_argument(
        "--index",
        type=Path,
        default=None,
        help="FAISS index file (default: the cached catalog index)",
    )
    d.add_argument(
        "--out",
        type=Path,
        default=Path("demo_results.png"),
        help="result grid PNG (default: ./demo_results.png)",
    )
    d.add_argument("--type-weight", **type_weight)
    add_store_arguments(d)
    add_catalog_arguments(d)
    return p


def _box(text: str) -> tuple[int, int, int, int]:
    """``--crop``: four integers ``left,top,right,bottom``."""
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected four integers L,T,R,B, not {text!r}")
    return box


def _location(
    store: str, encoder_name: str, uri: str | Path | None, catalog=None
) -> tuple[str | Path, bool]:
    """Where a store lives, and whether the user chose it (else it is the cached default, one per
    encoder and catalog: the book's, or a shop's own CSV)."""
    import hashlib

    from .catalog import DEFAULT_ROOT
    from .paths import cache_dir, safe_name
    from .searcher import default_index_path

    if uri is not None:
        return (Path(uri) if store == "faiss" else str(uri)), True
    name = encoder_name
    if catalog is not None and Path(catalog.root).resolve() != DEFAULT_ROOT.resolve():
        name += (
            "-shop-" + hashlib.sha256(str(Path(catalog.root).resolve()).encode()).hexdigest()[:10]
        )
    if store == "faiss":
        return default_index_path(name), False
    folder = cache_dir() / "stores"
    return (
        folder / f"qdrant-{safe_name(name)}"
        if store == "qdrant"
        else folder / f"milvus-{safe_name(name)}.db"
    ), False


def _open(store: str, location, encoder, factory: str = "Flat", fresh: bool = False):
    """The store at ``location``; ``None`` when there is none yet (or a damaged cached one)."""
    from .stores import open_store

    if fresh:
        return None
    try:
        found = open_store(store, location, encoder.name, encoder.dim)
    except FileNotFoundError:
        return None
    if store == "faiss" and found.factory != factory:
        return None
    return found


def _searcher(
    encoder_name: str,
    index_path: Path | None,
    factory: str = "Flat",
    rebuild: bool = False,
    store: str = "faiss",
    store_uri: str | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    catalog=None,
    type_weight: float = 0.0,
):
    """A searcher over the catalog in a vector store: the store the user named (``index_path`` for
    FAISS, or ``store_uri``; refused when missing, damaged, built with another encoder or for
    another catalog), or the cached default store, updated automatically (incrementally) when it
    is missing, damaged or stale. ``rebuild``: start the store from empty. ``type_weight``: the
    re-ranker's type consensus (``RerankConfig.type_weight``). Returns the searcher and the store's
    location."""
    from .catalog import load_catalog
    from .encoders import load_encoder
    from .errors import IndexMismatchError
    from .pipeline import index_catalog
    from .reranker import RerankConfig, Reranker
    from .searcher import Searcher, index_encoder
    from .stores import catalog_fingerprint, open_store

    rerank = RerankConfig(type_weight=type_weight)  # a bad weight fails before any model loads
    catalog, query_encoder = catalog or load_catalog(), load_encoder(encoder_name)
    encoder = index_encoder(query_encoder)  # a localising encoder searches its base's index
    location, explicit = _location(
        store, encoder.name, index_path if index_path is not None else store_uri, catalog
    )
    if explicit and store == "faiss" and not Path(location).exists():
        command = f"python -m image_search index --out {location}"
        raise FileNotFoundError(
            errno.ENOENT, f"no index file (build one with `{command}`)", str(location)
        )
    try:
        opened = _open(store, location, encoder, factory, fresh=rebuild)
    except IndexMismatchError as e:
        if explicit:
            raise
        sys.stderr.write(f"rebuilding the cached index: {_one_line(e)}\n")
        opened = None
    if opened is None and explicit and not rebuild:
        raise InvalidRequestError(
            f"no {store} index of {encoder.name} at {location}: build it with "
            f"`python -m image_search index --store {store} --store-uri {location}`"
        )
    if opened is not None and opened.catalog_fingerprint != catalog_fingerprint(catalog):
        if explicit:
            opened.close()
            raise IndexMismatchError(
                f"{location} was built for another catalog (its products, images or attributes "
                f"differ from {catalog.root}; a shop's own catalog needs --catalog and --images): "
                f"update it with `python -m image_search index --store {store} --store-uri "
                f"{location}`"
            )
        sys.stderr.write("updating the cached index: the catalog changed since it was built\n")
        index_catalog(opened, catalog, encoder, engine=engine, ray_address=ray_address)
    if opened is None:
        opened = open_store(
            store, location, encoder.name, encoder.dim, factory=factory, create=True
        )
        index_catalog(opened, catalog, encoder, engine=engine, ray_address=ray_address)
    return Searcher(opened, catalog, query_encoder, Reranker(catalog, rerank)), location


def _index(args: argparse.Namespace) -> int:
    """``index``: bring the store up to date with the catalog, embedding only what changed."""
    from .encoders import load_encoder
    from .errors import IndexMismatchError
    from .pipeline import index_catalog
    from .stores import open_store

    catalog, encoder = _catalog(args), load_encoder(args.encoder)
    location, _ = _location(
        args.store, args.encoder, args.out if args.out is not None else args.store_uri, catalog
    )
    try:
        store = _open(args.store, location, encoder, args.factory, fresh=args.rebuild)
    except IndexMismatchError as e:  # a damaged or incompatible index at the target: replaced
        sys.stderr.write(f"rebuilding: {_one_line(e)}\n")
        store = None
    if store is None:
        store = open_store(
            args.store, location, encoder.name, encoder.dim, factory=args.factory, create=True
        )
    try:
        report = index_catalog(
            store, catalog, encoder, engine=args.engine, ray_address=args.ray_address
        )
    finally:
        store.close()
    kind = (
        f"{encoder.dim}-d, {args.factory}"
        if args.store == "faiss"
        else f"{encoder.dim}-d, {args.store}"
    )
    print(
        f"indexed {report.products} products with {args.encoder} ({kind}) -> {location}: "
        f"{report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{report.embedded} images embedded ({args.engine})"
    )
    return 0


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
    return _fail(
        f"unexpected {type(e).__name__}: {_one_line(e)} (IMAGE_SEARCH_DEBUG=1 shows the traceback)"
    )


def _on_user_path(e: OSError, args: argparse.Namespace) -> bool:
    """Whether ``e`` concerns a path the user gave (an argument of type Path), a folder above it,
    or a file beside it (the temporary file of an atomic write)."""
    given = [Path(v).absolute() for v in vars(args).values() if isinstance(v, Path)]
    hit = [Path(f).absolute() for f in (e.filename, e.filename2) if isinstance(f, (str, Path))]
    return any(h == g or h in g.parents or h.parent == g.parent for h in hit for g in given)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _run(args: argparse.Namespace) -> int:
    if args.command == "index":
        return _index(args)
    if args.command == "search":
        return _search(args)
    catalog = _catalog(args)
    if args.command == "serve":
        from .serve import ServeConfig, listen_socket, run_server

        config = ServeConfig(
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            batching=not args.no_batching,
            max_upload_mb=args.max_upload_mb,
            timeout_s=args.timeout_s,
            queue=args.queue,
            cors_origins=tuple(args.cors_origin),
        )  # bad settings and a busy port fail
        sock = listen_socket(args.host, args.port)  # before the model loads
        searcher = _searcher_of(args, catalog)
        text = None
        if args.text_encoder.lower() != "none":
            text = (
                searcher
                if args.text_encoder == args.encoder
                else _searcher(args.text_encoder, None, catalog=catalog)[0]
            )
        run_server(searcher, config, args.host, sock=sock, text_searcher=text)
        return 0
    from .demo import run_demo

    print(run_demo(args.encoder, out=args.out, searcher=_searcher_of(args, catalog)))
    return 0


def _searcher_of(args: argparse.Namespace, catalog, encoder: str | None = None):
    """The searcher a command's arguments ask for: ``encoder`` (default ``--encoder``) over
    ``--index`` or ``--store``/``--store-uri``, re-ranked with ``--type-weight``."""
    return _searcher(
        encoder or args.encoder,
        args.index,
        store=args.store,
        store_uri=args.store_uri,
        catalog=catalog,
        type_weight=args.type_weight,
    )[0]


def _catalog(args: argparse.Namespace):
    """The book's catalog, or the shop's own given by ``--catalog CSV --images DIR``."""
    from .catalog import load_catalog, load_catalog_csv

    if (args.catalog is None) != (args.images is None):
        raise InvalidRequestError(
            "give --catalog and --images together (a products CSV and its photo folder)"
        )
    return (
        load_catalog()
        if args.catalog is None
        else load_catalog_csv(args.catalog, args.images, progress=True)
    )


def _search(args: argparse.Namespace) -> int:
    """``search``: a photo, a text, or both; a table or strict JSON."""
    import dataclasses
    import time

    from .images import load_image
    from .searcher import Filters, SearchRequest

    if args.image is None and args.text is None:
        raise InvalidRequestError("give a photo, --text, or both")
    filters = Filters(
        categories=tuple(args.category) if args.category else None,
        min_price=args.min_price,
        max_price=args.max_price,
        in_stock=True if args.in_stock else None,
        types=tuple(args.type) if args.type else None,
    )
    image, decode_ms = None, 0.0
    if args.image is not None:
        t0 = time.perf_counter()
        image = load_image(args.image)  # a bad upload or argument fails before any model is loaded
        decode_ms = (time.perf_counter() - t0) * 1000.0
    SearchRequest(
        image=image, text=args.text, alpha=args.alpha, k=args.k, filters=filters, crop=args.crop
    )
    encoder = args.encoder or (TEXT_ENCODER if args.text is not None else None)
    searcher = _searcher_of(args, _catalog(args), encoder or PHOTO_ENCODER)
    res = searcher.search(
        image, k=args.k, filters=filters, text=args.text, alpha=args.alpha, crop=args.crop
    )
    t = dataclasses.replace(
        res.timings, decode_ms=decode_ms + res.timings.decode_ms
    )  # the file's decode counts
    if args.json:
        print(
            json.dumps(
                _strict(
                    {
                        "results": res.table().to_dict(orient="records"),
                        "box": res.box,
                        "candidates": res.candidates,
                        "no_match": res.no_match,
                        "timings_ms": {
                            "decode": t.decode_ms,
                            "embed": t.embed_ms,
                            "ann": t.ann_ms,
                            "rerank": t.rerank_ms,
                            "total": t.total_ms,
                        },
                    }
                ),
                indent=1,
                allow_nan=False,
            )
        )
    else:
        if res.no_match:
            print(f"no confident match: {res.no_match}")
        else:
            print(
                res.table().to_string(index=False) if len(res) else "no products match the filters"
            )
        where = f" (searched the box {res.box})" if res.box else ""
        print(
            f"\n{t.total_ms:.1f} ms: decode {t.decode_ms:.1f}, embed {t.embed_ms:.1f}, ANN "
            f"{t.ann_ms:.2f}, re-rank {t.rerank_ms:.2f}{where}"
        )
        if len(res.candidates) > 1:
            others = ", ".join(",".join(map(str, b)) for b in res.candidates[1:])
            print(f"other products found in the photo, search one with --crop: {others}")
    return 0


def _strict(value):
    """``value`` with every NaN or infinite float as ``None``: JSON has no NaN (an unknown
    price)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


if __name__ == "__main__":
    os.environ.setdefault("TQDM_MININTERVAL", "1")
    sys.exit(main())
