"""Serving the real optuna-dashboard on a study's storage, on loopback unless told otherwise."""

from __future__ import annotations

import socket
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as make_wsgi_server

import optuna_dashboard
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage

from storage.urls import is_loopback_host

NO_AUTH_WARNING = (
    "warning: optuna-dashboard has no authentication: anyone who can reach {url} can read and change the study"
)


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote`` is set."""
    if not is_loopback_host(host) and not allow_remote:
        raise ValueError(
            f"refusing to serve the dashboard on non-loopback host {host!r} without --allow-remote "
            "(it has no authentication)"
        )


def make_server(
    storage: BaseStorage, host: str, port: int, artifact_store: FileSystemArtifactStore | None = None
) -> WSGIServer:
    """A threaded WSGI server of optuna-dashboard, bound (port 0: a free port) but not serving yet."""
    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store)
    server_class = _Server6 if ":" in host else _Server
    return make_wsgi_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)


def server_url(server: WSGIServer) -> str:
    """The base URL the server listens on."""
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Drop per-request logs: the dashboard polls every few seconds."""
