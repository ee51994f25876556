"""
Pages the restart tests serve: /pid, and /slow?seconds=N, which answers the
pid that took the request after N seconds.
"""

import os

from twisted.internet import reactor, task

import graceful as g


def root() -> g.Router:
    pages = g.Router()
    pages.route("/pid", lambda request: f"{os.getpid()}\n")

    @pages.route("/slow")
    async def slow(request):
        seconds = float(request.args.get(b"seconds", [b"3"])[0])
        taken_by = os.getpid()
        await task.deferLater(reactor, seconds, lambda: None)
        return f"{taken_by}\n"

    return pages
