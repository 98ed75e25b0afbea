"""Dynamic micro-batching of the encoder across concurrent requests (chapter 08).

Request threads decode their own photo and hand the decoded image to :class:`MicroBatcher`; one
batcher thread owns the encoder. It takes the oldest waiting image, waits at most ``wait_ms``
(counted from when that image arrived) for up to ``max_batch - 1`` more, embeds them in one call
and hands each request its own row. Under load the queue fills while a batch runs, so later
batches fill without waiting at all; an idle server pays at most ``wait_ms`` per request.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..encoders import Encoder
from ..errors import ImageSearchError


class ServerBusyError(ImageSearchError):
    """The batcher's queue is full: the request is refused at once (HTTP 503). Chapter 08."""


@dataclass(frozen=True)
class Embedded:
    """One request's embedding and how it was made: ``queue_ms`` from arrival to the start of its
    batch, ``embed_ms`` for the whole batch's encoder call, ``batch_size`` images in that call."""

    vector: np.ndarray
    queue_ms: float
    embed_ms: float
    batch_size: int
    boxes: list = field(default_factory=list)  # a localising encoder's boxes, best first


@dataclass(frozen=True)
class BatchStats:
    """What the batcher has done so far (``/healthz`` shows it)."""

    batches: int
    images: int
    largest_batch: int
    waiting: int

    @property
    def mean_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0


class MicroBatcher:
    """Embeds images submitted from many threads in batches, on one thread that owns the encoder.

    ``max_batch=1`` turns batching off (one encoder call per request, same queue and thread), so
    the two modes differ in nothing else. ``max_queue`` bounds the images waiting; :meth:`submit`
    raises :class:`ServerBusyError` when it is full. Chapter 08.
    """

    def __init__(
        self, encoder: Encoder, max_batch: int = 16, wait_ms: float = 2.0, max_queue: int = 64
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer of at least 1, not {max_batch!r}")
        if not 0 <= wait_ms <= 1000:
            raise ValueError(f"wait_ms must be from 0 to 1000 ms, not {wait_ms!r}")
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an integer of at least 1, not {max_queue!r}")
        self.encoder, self.max_batch, self.wait_s = encoder, max_batch, wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._stats_lock = threading.Lock()
        self._batches = self._images = self._largest = 0
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, image: Image.Image, locate: bool = True) -> Future:
        """Queue a decoded image; the future's result is an :class:`Embedded`. Never blocks. A
        localising encoder (chapter 05) crops the image to its best box first, unless ``locate``
        is false (the caller cropped it already: the caller's box wins)."""
        future: Future = Future()
        try:
            self._queue.put_nowait((image, future, time.perf_counter(), locate))
        except queue.Full:
            raise ServerBusyError(
                f"server busy: {self._queue.maxsize} images already wait for the encoder; "
                "retry shortly"
            ) from None
        return future

    def embed(
        self, image: Image.Image, timeout: float | None = None, locate: bool = True
    ) -> Embedded:
        """Submit and wait: the blocking form of :meth:`submit`."""
        return self.submit(image, locate).result(timeout)

    def stats(self) -> BatchStats:
        with self._stats_lock:
            return BatchStats(self._batches, self._images, self._largest, self._queue.qsize())

    def close(self, timeout: float = 10.0) -> None:
        """Finish the images already queued, then stop the thread (a daemon: if the encoder hangs,
        the process can still exit)."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
            self._thread.join(timeout)

    # ----------------------------------------------------------------- the batcher thread
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            deadline = first[2] + self.wait_s  # the oldest image waits at most wait_ms in all
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list) -> None:
        live = [item for item in batch if item[1].set_running_or_notify_cancel()]
        if not live:  # every request in it timed out and went away
            return
        start = time.perf_counter()
        try:
            vectors, boxes = self._embed([im for im, *_ in live], [loc for *_, loc in live])
        except Exception as e:  # noqa: BLE001 - each waiting request gets the error, the thread lives on
            for _, future, _, _ in live:
                future.set_exception(e)
            return
        end = time.perf_counter()
        with self._stats_lock:
            self._batches += 1
            self._images += len(live)
            self._largest = max(self._largest, len(live))
        for row, (_, future, t, _) in enumerate(live):
            future.set_result(
                Embedded(
                    vectors[row],
                    (start - t) * 1000.0,
                    (end - start) * 1000.0,
                    len(live),
                    boxes[row],
                )
            )

    def _embed(self, images: list, locate: list[bool]) -> tuple[np.ndarray, list[list]]:
        """One encoder call for the batch, and each image's proposed boxes: a localising encoder
        (``encode_located``, chapter 05) embeds the best box of each image it may locate in."""
        if not hasattr(self.encoder, "encode_located"):
            return self.encoder.encode_images(images, batch_size=len(images)), [[]] * len(images)
        return self.encoder.encode_located(images, locate, batch_size=len(images))
