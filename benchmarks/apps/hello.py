"""
The same hello world for every server the benchmark compares: C{/} answers
C{Hello!\\n} and C{/pid} the serving process's pid, both as
C{text/plain; charset=utf-8}, with no access log.

- L{root}: the plain twisted.web resource tree (also served by graceful in
  the "same resource" variant, and by the twistd config of the scale test);
- L{router}: a graceful.Router written the way a graceful user would;
- L{wsgi}: the WSGI app gunicorn serves;
- L{asgi}: the ASGI app uvicorn serves.
"""

from __future__ import annotations

import os

HELLO = b"Hello!\n"
CONTENT_TYPE = b"text/plain; charset=utf-8"


def _twisted_resources():
    from twisted.web.resource import Resource

    class Hello(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"content-type", CONTENT_TYPE)
            return HELLO

    class Pid(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"content-type", CONTENT_TYPE)
            return f"{os.getpid()}\n".encode()

    return Hello, Pid


def root():
    "A plain twisted.web tree: / and /pid."
    from twisted.web.resource import Resource

    Hello, Pid = _twisted_resources()
    tree = Resource()
    tree.putChild(b"", Hello())
    tree.putChild(b"pid", Pid())
    return tree


def router():
    "The graceful user's way: a Router with two routes."
    import graceful as g

    pages = g.Router()
    pages.route("/", lambda request: "Hello!\n")
    pages.route("/pid", lambda request: f"{os.getpid()}\n")
    return pages


def wsgi(environ, start_response):
    body = f"{os.getpid()}\n".encode() if environ.get("PATH_INFO") == "/pid" else HELLO
    start_response(
        "200 OK",
        [("Content-Type", CONTENT_TYPE.decode()), ("Content-Length", str(len(body)))],
    )
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = f"{os.getpid()}\n".encode() if scope["path"] == "/pid" else HELLO
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
