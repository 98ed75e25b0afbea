"""The HTTP search service: a FastAPI app over a :class:`~image_search.searcher.Searcher`
(chapter 08).

``POST /search`` takes a photo (a multipart upload or base64 in JSON), decodes it in the request
with :func:`~image_search.images.load_image`, embeds it through the :class:`MicroBatcher` and runs
ANN + re-rank with ``searcher.run(SearchRequest(embedding=...))``. Product data and photos are
read by product id and photo number, never by a path from the client. Limits: upload size (413),
a time budget per search (504), a bounded queue (503). Errors are JSON ``{"detail": "..."}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import math
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..catalog import Catalog, Product
from ..errors import ImageSearchError, InvalidImageError, InvalidRequestError, ModelUnavailableError
from ..images import load_image
from ..searcher import Filters, Searcher, SearchRequest, reported_boxes
from .batcher import MicroBatcher, ServerBusyError

STATIC = Path(__file__).resolve().parent / "static"
MAX_RESULTS = 100  # k of one request (the searcher allows more; a page of results needs no more)
ERROR_STATUS: dict[type[ImageSearchError], int] = {  # the package's errors as HTTP statuses
    InvalidImageError: 415,  # the bytes are not an image we accept (corrupt, not an image, a bomb)
    InvalidRequestError: 422,  # valid JSON/form, invalid search (unknown category, crop outside...)
    ServerBusyError: 503,  # the queue is full: retry shortly
    ModelUnavailableError: 503,  # e.g. a text tower whose weights are missing
}
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors "
    "'none'"
)


@dataclass(frozen=True)
class ServeConfig:
    """Batching and limits of the service; ``python -m image_search serve`` flags map onto these.
    CORS is off unless ``cors_origins`` lists the origins allowed. A bad value raises
    :class:`InvalidRequestError`. Chapter 08."""

    max_batch: int = 16
    batch_wait_ms: float = 2.0
    batching: bool = True
    max_upload_mb: float = 10.0
    timeout_s: float = 10.0
    queue: int = 64
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            ("max_batch", self.max_batch, 1, 1024),
            ("batch_wait_ms", self.batch_wait_ms, 0, 1000),
            ("max_upload_mb", self.max_upload_mb, 0.001, 50),
            ("timeout_s", self.timeout_s, 0.01, 3600),
            ("queue", self.queue, 1, 100_000),
        ]
        for name, value, low, high in checks:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not low <= value <= high
            ):
                raise InvalidRequestError(
                    f"{name} must be a number from {low:g} to {high:g}, not {value!r}"
                )
        for name in ("max_batch", "queue"):
            if not isinstance(getattr(self, name), int):
                raise InvalidRequestError(f"{name} must be an integer, not {getattr(self, name)!r}")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        """An upload plus its envelope: base64 is 4/3 of the bytes, multipart adds headers."""
        return self.max_upload_bytes * 4 // 3 + 64 * 1024


class SearchParams(BaseModel):
    """The fields of ``POST /search`` besides the photo (multipart fields or JSON keys)."""

    model_config = ConfigDict(extra="forbid")

    image_base64: str | None = Field(
        None, description="JSON only: the photo's bytes in base64 (a data: URL works too)"
    )
    k: int = Field(10, ge=1, le=MAX_RESULTS, description="number of products to return")
    categories: list[str] | None = Field(None, description="only these categories")
    types: list[str] | None = Field(
        None, description="only these product types (when the searcher has them)"
    )
    min_price: float | None = Field(None, ge=0)
    max_price: float | None = Field(None, ge=0)
    in_stock: bool | None = None
    text: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="a text query or modifier (when the searcher has a text tower)",
    )
    crop: tuple[int, int, int, int] | None = Field(
        None, description="[left, top, right, bottom] pixels of the photo"
    )


class Hit(BaseModel):
    """One product of the results (every catalog field comes along)."""

    model_config = ConfigDict(extra="allow")
    rank: int
    id: str
    name: str
    score: float
    price: float
    image_url: str
    product_url: str


class StageTimings(BaseModel):
    """Milliseconds per stage of one search; ``embed`` is the whole batch's encoder call."""

    decode: float
    queue: float
    embed: float
    ann: float
    rerank: float
    total: float


class SearchResponse(BaseModel):
    results: list[Hit]
    timings_ms: StageTimings
    batch_size: int = Field(description="images embedded together with this one")
    box: list[int] | None = Field(
        None,
        description="the region of the photo that was searched (left, top, right, "
        "bottom pixels of the decoded photo); null: the whole photo",
    )
    no_match: str | None = Field(
        None, description="why there are no results when no product matches confidently"
    )
    candidates: list[list[int]] = Field(
        [],
        description="every box a localising encoder proposed, best first (the first is `box`): "
        "a photo of two products gives two; send one back as `crop` to search it",
    )
    image_size: list[int] | None = Field(
        None,
        description="width and height of the whole decoded photo (upright, at most 1024 px on "
        "its long side): the pixels `box` and `candidates` are in; null without a photo",
    )


_SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "k": {"type": "integer", "default": 10},
                        "categories": {"type": "array", "items": {"type": "string"}},
                        "types": {"type": "array", "items": {"type": "string"}},
                        "min_price": {"type": "number"},
                        "max_price": {"type": "number"},
                        "in_stock": {"type": "boolean"},
                        "text": {"type": "string"},
                        "crop": {"type": "string", "example": "0,0,100,100"},
                    },
                }
            },
            "application/json": {"schema": SearchParams.model_json_schema()},
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d}
    for s, d in {
        400: "malformed body (bad JSON, bad base64, broken multipart)",
        413: "upload larger than the limit",
        415: "not multipart or JSON, or the upload is not an image we accept",
        422: "invalid fields (k out of range, unknown category, crop outside the photo, ...)",
        501: "types or text asked of a searcher that has no such feature",
        503: "the queue is full: retry shortly",
        504: "the search took longer than the time budget",
    }.items()
}

router = APIRouter()


# ----------------------------------------------------------------------------- the app
def create_app(
    searcher: Searcher, config: ServeConfig = ServeConfig(), text_searcher: Searcher | None = None
) -> FastAPI:
    """The search service as an ASGI app; the batcher thread runs while the app does.
    ``text_searcher`` (an encoder with a text tower, e.g. ``minilm-lit``) answers requests with a
    ``text``: alone, or with the photo as a composed query; default: ``searcher`` when its
    encoder has a text tower. Chapter 08."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(
            searcher.encoder,
            config.max_batch if config.batching else 1,
            config.batch_wait_ms,
            config.queue,
        )
        await run_in_threadpool(
            batcher.embed, Image.new("RGB", (64, 64), "white")
        )  # warm the model up
        app.state.batcher = batcher
        try:
            yield
        finally:
            batcher.close()

    app = FastAPI(
        title="Visual product search",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Upload a photo, get shoppable products. Chapter 08 of the book.",
    )
    app.state.searcher, app.state.config = searcher, config
    app.state.text_searcher = text_searcher or (
        searcher if hasattr(searcher.encoder, "encode_texts") else None
    )
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_docs(app)
    for error, status in ERROR_STATUS.items():
        app.add_exception_handler(error, _status_handler(status))
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _internal_error_handler)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )
    return app


def run_server(
    searcher: Searcher,
    config: ServeConfig = ServeConfig(),
    host: str = "127.0.0.1",
    port: int = 8000,
    sock: socket.socket | None = None,
    text_searcher: Searcher | None = None,
) -> None:
    """Serve until Ctrl+C with uvicorn on ``sock`` (a :func:`listen_socket`), else on ``host:port``
    (``port=0`` takes a free port). Prints the URL. Chapter 08."""
    import uvicorn

    sock = sock or listen_socket(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}/"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {host}, not only on this machine: the service has no "
            "authentication and no TLS (put it behind a proxy that adds them)",
            flush=True,
        )
    mode = (
        f"batches of up to {config.max_batch}, {config.batch_wait_ms:g} ms wait"
        if config.batching
        else "no batching"
    )
    print(
        f"serving {len(searcher.index)} products with {searcher.encoder.name} ({mode}) on {url} "
        f"(API schema: {url}openapi.json; Ctrl+C stops)",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(searcher, config, text_searcher),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    server.run(sockets=[sock])


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port=0``: a free one) for uvicorn; a busy port or an
    address not on this machine raises :class:`InvalidRequestError`. Chapter 08."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without
    # it, Nagle's algorithm and delayed ACKs added ~44 ms to each keep-alive response (measured)
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InvalidRequestError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


# ----------------------------------------------------------------------------- endpoints
@router.post(
    "/search", response_model=SearchResponse, openapi_extra=_SEARCH_BODY, responses=_ERRORS
)
async def search(request: Request) -> JSONResponse:
    """Products that look like the photo, best first, with per-stage timings."""
    start = time.perf_counter()
    searcher, config, batcher = _state(request)
    params, data = await _parse(request, config)
    filter_extras, request_extras = optional_features(params)
    filters = Filters(
        categories=params.categories,
        min_price=params.min_price,
        max_price=params.max_price,
        in_stock=params.in_stock,
        **filter_extras,
    )
    if data is None and not request_extras:
        raise HTTPException(
            422, "give a photo: a multipart `image` file or JSON `image_base64`, or a `text`"
        )
    if request_extras:  # a text, alone or composed with the photo: the text searcher's joint space
        text_searcher = request.app.state.text_searcher
        if text_searcher is None:
            raise HTTPException(
                501, "text search is not available: this server has no text encoder"
            )
        SearchRequest(
            image=data, k=params.k, filters=filters, crop=params.crop, **request_extras
        )  # checks
        t = time.perf_counter()
        image, size = (
            (None, None) if data is None else await run_in_threadpool(_decode, data, params.crop)
        )
        decode_ms = (time.perf_counter() - t) * 1000.0
        res = await run_in_threadpool(
            text_searcher.run,
            SearchRequest(image=image, k=params.k, filters=filters, **request_extras),
        )
        return _response(
            res,
            start,
            decode_ms=decode_ms,
            queue_ms=0.0,
            batch_size=0,
            box=params.crop,
            image_size=size,
        )
    SearchRequest(
        image=data, k=params.k, filters=filters, crop=params.crop
    )  # the package's checks, before decoding
    t = time.perf_counter()
    image, size = await run_in_threadpool(_decode, data, params.crop)
    decode_ms = (time.perf_counter() - t) * 1000.0
    embedded = await _wait(
        batcher.submit(image, locate=params.crop is None),
        config.timeout_s - (time.perf_counter() - start),
    )
    res = await run_in_threadpool(
        searcher.run, SearchRequest(embedding=embedded.vector, k=params.k, filters=filters)
    )
    box, candidates = reported_boxes(embedded.boxes, image.width, image.height)
    return _response(
        res,
        start,
        decode_ms,
        embedded.queue_ms,
        embedded.batch_size,
        embedded.embed_ms,
        box=params.crop or box,
        candidates=candidates,
        image_size=size,
    )


@router.get("/products/{product_id}", responses={404: {"description": "unknown product id"}})
def product(product_id: str, request: Request) -> dict:
    """One product's catalog record and the URLs of its photos."""
    catalog = _state(request)[0].catalog
    p = _product(catalog, product_id)
    return {
        **_record(p),
        "image_urls": [_image_url(p.id, n) for n in range(len(photo_paths(catalog, p.id)))],
    }


@router.get(
    "/products/{product_id}/images/{n}",
    response_class=FileResponse,
    responses={404: {"description": "unknown product or photo number"}},
)
def product_image(product_id: str, n: int, request: Request) -> FileResponse:
    """Photo number ``n`` (0 is the shop photo) of a product, read-only from the catalog folder."""
    catalog = _state(request)[0].catalog
    paths = photo_paths(catalog, _product(catalog, product_id).id)
    if not 0 <= n < len(paths):
        raise HTTPException(
            404, f"product {product_id!r} has {len(paths)} photo(s), numbered from 0"
        )
    path, root = paths[n].resolve(), catalog.root.resolve()
    if (
        not path.is_relative_to(root) or not path.is_file()
    ):  # the catalog's own paths, checked all the same
        raise HTTPException(
            404, f"photo {n} of product {product_id!r} is not in the catalog folder"
        )
    media = {
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".webp": "image/webp",
    }
    return FileResponse(
        path,
        media_type=media.get(path.suffix.lower(), "application/octet-stream"),
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/facets")
def facets(request: Request) -> dict:
    """What the page's filters can offer: categories, types, price range, and which optional fields
    work."""
    searcher, config, _ = _state(request)
    prices = [p.price for p in searcher.catalog.products]
    return {
        "categories": list(searcher.catalog.categories),
        "types": list(getattr(searcher.catalog, "types", ())),
        "price": {"min": min(prices, default=0.0), "max": max(prices, default=0.0)},
        "type_filter": _has_field(Filters, "types"),
        "text_search": request.app.state.text_searcher is not None,
        "max_k": MAX_RESULTS,
        "max_upload_mb": config.max_upload_mb,
    }


@router.get("/healthz")
def healthz(request: Request) -> dict:
    """Liveness and what is being served: products, encoder, batching and queue state."""
    searcher, config, batcher = _state(request)
    stats = batcher.stats()
    return {
        "status": "ok",
        "products": len(searcher.index),
        "encoder": searcher.encoder.name,
        "dim": searcher.index.dim,
        "index": searcher.index.factory,
        "config": dataclasses.asdict(config),
        "batcher": {
            **dataclasses.asdict(stats),
            "mean_batch": round(stats.mean_batch, 3),
            "max_batch": batcher.max_batch,
        },
    }


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html",
        headers={
            "Content-Security-Policy": PAGE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


# ----------------------------------------------------------------------------- optional features
def _has_field(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


def optional_features(params: SearchParams) -> tuple[dict, dict]:
    """``types`` and ``text`` as keyword arguments of ``Filters`` and ``SearchRequest``, when those
    have such fields; asked of a searcher without them, a 501 that says so. The one place to change
    when the searcher's names for them differ. Chapter 08."""
    filter_extras, request_extras = {}, {}
    if params.types is not None:
        if not _has_field(Filters, "types"):
            raise HTTPException(
                501,
                "filtering by product type is not available: this searcher's Filters has no "
                "`types`",
            )
        filter_extras["types"] = tuple(params.types)
    if params.text is not None:
        if not _has_field(SearchRequest, "text"):
            raise HTTPException(
                501, "text search is not available: this searcher has no text tower (`text`)"
            )
        request_extras["text"] = params.text
    return filter_extras, request_extras


# ----------------------------------------------------------------------------- helpers
def _state(request: Request) -> tuple[Searcher, ServeConfig, MicroBatcher]:
    state = request.app.state
    return state.searcher, state.config, state.batcher


async def _parse(request: Request, config: ServeConfig) -> tuple[SearchParams, bytes | None]:
    """The search fields and the photo's bytes of a multipart or JSON body, within the size
    limits."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json"):
        raise HTTPException(
            415,
            f"send multipart/form-data with an `image` file, or application/json with "
            f"`image_base64`, not {kind or 'no content type'!r}",
        )
    body = await _read_body(request, config.max_body_bytes)
    if kind == "application/json":
        params = _validate(lambda: SearchParams.model_validate_json(body, strict=True))
        data = _b64decode(params.image_base64) if params.image_base64 is not None else None
    else:
        params, data = await _form(request.headers, body)
        if params.image_base64 is not None:
            if data is not None:
                raise HTTPException(
                    422, "give one photo: an `image` file or `image_base64`, not both"
                )
            data = _b64decode(params.image_base64)
    if data is not None and len(data) > config.max_upload_bytes:
        raise HTTPException(
            413,
            f"the photo is {len(data) / 2**20:.1f} MB; the limit is {config.max_upload_mb:g} MB",
        )
    return params, data


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            413,
            f"the request body is {int(declared) / 2**20:.1f} MB; the limit is {limit / 2**20:.1f} "
            "MB",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the request body is over the {limit / 2**20:.1f} MB limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(headers: Headers, body: bytes) -> tuple[SearchParams, bytes | None]:
    async def once():
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=1, max_fields=32).parse()
    except MultiPartException as e:
        raise HTTPException(400, f"malformed multipart body: {e.message}") from None
    try:
        fields: dict[str, Any] = {}
        data = None
        for key, value in form.multi_items():
            if key == "image":
                if not isinstance(value, UploadFile):
                    raise HTTPException(
                        422, "image must be a file upload (a form field of type file)"
                    )
                data = await value.read()
            elif isinstance(value, UploadFile):
                raise HTTPException(422, f"{key}: only the `image` field may be a file")
            elif key in ("categories", "types"):
                if value:
                    fields.setdefault(key, []).append(value)
            elif key == "crop" and value:
                fields[key] = [v.strip() for v in value.split(",")]
            elif value != "":  # an empty form field means "not given"
                fields[key] = value
    finally:
        await form.close()
    return _validate(lambda: SearchParams.model_validate(fields)), data


def _validate(make) -> SearchParams:
    try:
        return make()
    except ValidationError as e:
        if any(err["type"] == "json_invalid" for err in e.errors()):
            raise HTTPException(400, "the body is not valid JSON") from None
        raise HTTPException(422, _one_line(e.errors())) from None


def _one_line(errors) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in err['loc'] if x != 'body') or 'body'}: {err['msg']}"
        for err in errors
    )


def _b64decode(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "image_base64 is not valid base64") from None


def _decode(
    data: bytes, crop: tuple[int, int, int, int] | None
) -> tuple[Image.Image, tuple[int, int]]:
    """The upload through the package's front door, cropped like ``Searcher.run`` crops, and the
    size of the whole decoded photo (the pixels of ``box`` and ``candidates``)."""
    image = load_image(data)
    size = image.size
    if crop is not None:
        if crop[2] > image.width or crop[3] > image.height:
            raise InvalidRequestError(
                f"crop {tuple(crop)} reaches outside the decoded {image.width}x{image.height} image"
            )
        image = image.crop(crop)
    return image, size


async def _wait(future, budget_s: float):
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), max(budget_s, 0.001))
    except TimeoutError:
        raise HTTPException(
            504, "the search took longer than the server's time budget; retry later"
        ) from None


def _response(
    res,
    start: float,
    decode_ms: float,
    queue_ms: float,
    batch_size: int,
    embed_ms: float | None = None,
    box: tuple[int, int, int, int] | None = None,
    candidates: tuple[tuple[int, int, int, int], ...] = (),
    image_size: tuple[int, int] | None = None,
) -> JSONResponse:
    """The results as JSON, sent as is (``SearchResponse`` documents the shape; re-validating it
    would cost the event loop time on every request)."""
    t = res.timings
    results = [
        {
            **_record(p),
            "rank": r + 1,
            "score": round(float(s), 6),
            "image_url": _image_url(p.id, 0),
            "product_url": f"/products/{quote(p.id, safe='')}",
        }
        for r, (p, s) in enumerate(zip(res.products, res.scores))
    ]
    timings = {
        "decode": decode_ms,
        "queue": queue_ms,
        "embed": t.embed_ms if embed_ms is None else embed_ms,
        "ann": t.ann_ms,
        "rerank": t.rerank_ms,
        "total": (time.perf_counter() - start) * 1000.0,
    }
    return JSONResponse(
        {
            "results": results,
            "timings_ms": {k: round(v, 3) for k, v in timings.items()},
            "batch_size": batch_size,
            "box": list(box) if box else None,
            "no_match": res.no_match,
            "candidates": [list(b) for b in candidates],
            "image_size": list(image_size) if image_size else None,
        }
    )


def _product(catalog: Catalog, product_id: str) -> Product:
    try:
        return catalog[product_id]
    except KeyError:
        raise HTTPException(404, f"unknown product id {product_id!r}") from None


def _record(p: Product) -> dict:
    """A product as strict JSON: an unknown price or size (NaN in a shop's own catalog) is null."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in dataclasses.asdict(p).items()
    }


def _image_url(product_id: str, n: int) -> str:
    return f"/products/{quote(product_id, safe='')}/images/{n}"


def photo_paths(catalog: Catalog, product_id: str) -> list[Path]:
    """The shop's photos of a product, in order (the catalogue photo first). Chapter 08."""
    shop_photos = getattr(catalog, "shop_photo_paths", None)  # newer catalogs list every shop photo
    return (
        list(shop_photos(product_id)) if callable(shop_photos) else [catalog.icon_path(product_id)]
    )


def _status_handler(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(
            {"detail": " ".join(str(exc).split()) or type(exc).__name__}, status, headers=headers
        )

    return handler


async def _internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug or a failing model: JSON like every other error, without internals (uvicorn logs
    them)."""
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); the server log has the details"}, 500
    )


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _one_line(exc.errors())}, 422)


def _add_docs(app: FastAPI) -> None:
    """``/docs`` from local files when the ``swagger-ui-bundle-v2`` wheel is installed (FastAPI's
    default loads Swagger UI from a CDN, which an offline machine cannot reach); otherwise a 404
    that points at ``/openapi.json``."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:

        @app.get("/docs", include_in_schema=False)
        def no_docs() -> JSONResponse:
            return JSONResponse(
                {
                    "detail": "interactive docs need the swagger-ui-bundle-v2 package (they are "
                    "served from local files, never a CDN); the API schema is at /openapi.json"
                },
                404,
            )

        return
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Visual product search API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )
