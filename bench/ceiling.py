"""The ceiling: a minimal ASGI endpoint on the api's own server stack.

    python -m bench.ceiling --listen-fd FD

Starlette and uvicorn exactly as ``accel api`` serves them (accel.serving), one
route answering a fixed small JSON document: what this machine allows at best.
"""

from __future__ import annotations

import argparse
import socket

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.serving import serve


async def ok(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen-fd", type=int, required=True)
    args = parser.parse_args()
    app = Starlette(routes=[Route("/", ok), Route("/ok", ok)])
    serve(app, socket.socket(fileno=args.listen_fd))


if __name__ == "__main__":
    main()
