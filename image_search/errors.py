"""The exceptions the package raises on bad input (chapter 02 lists them)."""

from __future__ import annotations


class ImageSearchError(Exception):
    """Base class of every error the package raises on purpose."""


class InvalidImageError(ImageSearchError, ValueError):
    """The bytes are not an image we accept (empty, truncated, not an image, a bomb, …)."""


class InvalidRequestError(ImageSearchError, ValueError):
    """A search request is malformed (bad k, unknown category, inverted price range, …)."""


class CatalogError(ImageSearchError, ValueError):
    """A catalog (``products.csv``, a user's CSV or its images) is malformed; the message names the
    line and column. Chapter 04."""


class IndexMismatchError(ImageSearchError):
    """An index file does not match what it is used with (encoder, dimension, metric, checksum)."""


class ModelUnavailableError(ImageSearchError, RuntimeError):
    """A model's weights are not on this machine and cannot be downloaded."""


class UnsafePathError(ImageSearchError, OSError):
    """A path the package was asked to read or write is not a regular file (a FIFO, a device, a
    directory, a symlink loop) or is too large: refused rather than hang, exhaust memory, or replace
    it."""


class BackendUnavailableError(ImageSearchError, RuntimeError):
    """A vector store or a compute engine (Ray) cannot be used: its library is not installed, or
    its server or cluster does not answer."""
