"""Serve python-scim's scim2-server, the Python peer measured next to scimd by bench/load.py.

scim2-server (import name ``scim2_server``, the ``bench`` extra of scimd) validates every request
with scim2-models and keeps the resources in its default storage, ``InMemoryStorage``: nothing is
written to disk, so its figures are those of a non-durable server. It serves User (with the
enterprise extension) and Group, PATCH, filters and paging; without a bearer token configured it
accepts every request, so any ``--token`` works.

Two ways to serve it (``--server``):

``uvicorn`` (default)
    Its ASGI application (``scim2_server.applications.asgi.ASGIApplication`` over
    ``AsyncInMemoryStorage``) under uvicorn with uvloop and httptools, the HTTP stack scimd uses,
    so the comparison is about the SCIM layers and storage, not the HTTP server.
``cli``
    The ``scim2-server`` command as shipped: a threaded wsgiref server speaking HTTP/1.0, which
    closes the connection after each response (no keep-alive).

Either way its base URL is ``http://127.0.0.1:PORT/v2``.

Run::

    python bench/reference_scim2_server.py --port 8002
    python bench/load.py --base-url http://127.0.0.1:8002/v2 --token unused
"""

from __future__ import annotations

import argparse
import sys


def serve_uvicorn(host: str, port: int) -> None:
    import uvicorn
    from scim2_server.applications.asgi import ASGIApplication
    from scim2_server.memory import AsyncInMemoryStorage
    from scim2_server.utils import load_default_provider

    app = ASGIApplication(AsyncInMemoryStorage(), load_default_provider())
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def serve_cli(host: str, port: int) -> None:
    import logging
    from wsgiref.simple_server import WSGIRequestHandler

    from scim2_server.testserver.cli import main as scim2_server_main

    # Like uvicorn's access_log=False on the other targets: no line per request on stderr,
    # and no INFO line per client error from scim2_server.
    WSGIRequestHandler.log_message = lambda self, format, *args: None  # type: ignore[method-assign]
    logging.basicConfig(level=logging.WARNING, force=True)
    sys.argv = ["scim2-server", "--hostname", host, "--port", str(port)]
    scim2_server_main()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve scim2-server for bench/load.py.")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--server", choices=("uvicorn", "cli"), default="uvicorn")
    args = parser.parse_args(argv)
    if args.server == "uvicorn":
        serve_uvicorn(args.host, args.port)
    else:
        serve_cli(args.host, args.port)


if __name__ == "__main__":
    main()
