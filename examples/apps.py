"""
The apps examples/graceful.toml serves through twistd: the pages of basic.py
and multi.py, each a graceful.Router (a twisted.web resource).
"""

import os

from twisted.internet import reactor, task

import graceful as g


def basic() -> g.Router:
    "/, /pid, and /sleep (answers the pid, waits 10 s, answers the pid again)."
    pages = g.Router()
    pages.route("/", lambda request: "Hello!\n")
    pages.route("/pid", lambda request: f"{os.getpid()}\n")

    @pages.route("/sleep")
    async def sleep(request):
        before = os.getpid()
        await task.deferLater(reactor, 10, lambda: None)
        return f"{before}\n{os.getpid()}\n"

    return pages


def other() -> g.Router:
    "The second server's pages."
    pages = g.Router()
    pages.route("/", lambda request: f"s2 {os.getpid()}\n")
    pages.route("/pid", lambda request: f"{os.getpid()}\n")
    return pages
