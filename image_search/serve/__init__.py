"""The search system served over HTTP: a FastAPI app, its micro-batcher and a web page (chapter 08).

``python -m image_search serve`` runs it; :func:`create_app` gives the ASGI app for tests or another
server. Nothing here is imported by the offline code.
"""

from .app import ServeConfig, create_app, listen_socket, optional_features, photo_paths, run_server
from .batcher import BatchStats, Embedded, MicroBatcher, ServerBusyError

__all__ = [
    "BatchStats",
    "Embedded",
    "MicroBatcher",
    "ServeConfig",
    "ServerBusyError",
    "create_app",
    "listen_socket",
    "optional_features",
    "photo_paths",
    "run_server",
]
