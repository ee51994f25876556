"""
C{graceful} run as its command is, but every process of it (the first one
and each it starts with the same command line: a new master, a worker, a
worker template) writes the names of the modules it has imported when it
exits (by os._exit too), to C{$MODULES_DIR/modules-PID.json}: what a test asks of a master
that must not import the app.
"""

from __future__ import annotations

import atexit
import json
import os
import sys


def _write() -> None:
    path = os.path.join(os.environ["MODULES_DIR"], f"modules-{os.getpid()}.json")
    with open(path, "w") as out:
        json.dump(sorted(sys.modules), out)


atexit.register(_write)

# A worker template leaves by os._exit, which runs no atexit handler.
_exit = os._exit


def _write_and_exit(code: int) -> None:
    _write()
    _exit(code)


os._exit = _write_and_exit  # type: ignore[assignment]

from graceful._cli import main  # noqa: E402  (after the hook, so that it sees every exit)

sys.exit(main())
