"""The worker's HTTP endpoint on ``STREAMREC_METRICS_HOST:STREAMREC_METRICS_PORT``.

* ``GET /readyz`` -> 200 once the worker has caught up with the catalog topic and
  processes events, else 503 with how far it has read
  (:class:`~streamrec.stream.worker.catalog_restore.CatalogReadiness`);
* any other path -> the Prometheus metrics, as ``prometheus_client`` serves them.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

#: (ready, text) for ``/readyz``.
ReadinessCheck = Callable[[], tuple[bool, str]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Probes and scrapes every few seconds: not logged."""


def serve(
    host: str, port: int, registry: CollectorRegistry, readiness: ReadinessCheck
) -> WSGIServer:
    """Serve ``/metrics`` and ``/readyz`` from a daemon thread; returns the server.

    Raises:
        OSError: the port is taken, or ``host`` is no address of this machine.
    """
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/readyz":
            ready, text = readiness()
            status = "200 OK" if ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [text.encode()]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    class Server(_Server):
        address_family = _family(host, port)

    server: WSGIServer = make_server(host, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv4 or IPv6, whichever ``host`` names (``::`` or ``::1`` need IPv6)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]
