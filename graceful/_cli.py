"""
The C{graceful} command.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["ctl"]:
        from .ctl.cli import main as ctl_main

        return ctl_main(args[1:])
    sys.stderr.write("usage: graceful ctl --node URL ... {status,list,restart,shutdown}\n")
    return 2
