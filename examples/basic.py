"""
GoFrame's basic smooth-restart example, in graceful.

    python examples/basic.py [PORT]

Then, in another terminal:

    curl http://127.0.0.1:8199/pid
    curl http://127.0.0.1:8199/sleep &     # answers the pid, waits 10 s, answers it again
    kill -USR1 $(curl -s http://127.0.0.1:8199/pid)   # restart: /sleep still completes
"""

import os
import sys

from twisted.internet import reactor, task

import graceful as g

s = g.server()


@s.route("/")
def hello(request):
    return "Hello!\n"


@s.route("/pid")
def pid(request):
    return f"{os.getpid()}\n"


@s.route("/sleep")
async def sleep(request):
    # Waits without blocking: other requests are served meanwhile.
    before = os.getpid()
    await task.deferLater(reactor, 10, lambda: None)
    return f"{before}\n{os.getpid()}\n"


s.set_graceful(True)
s.enable_admin()
s.set_port(int(sys.argv[1]) if len(sys.argv) > 1 else 8199)
s.run()
