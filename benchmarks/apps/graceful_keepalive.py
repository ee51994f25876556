"""
graceful serving C{/pid} (any method) on one port, for
benchmarks/keepalive_reuse.py.

    python -m benchmarks.apps.graceful_keepalive PORT

C{GRACEFUL_BENCH_IDLE_GRACE}, when set, is the grace in seconds idle
keep-alive connections get at a hand-over (C{0}: closed at once), in place
of graceful's default: the benchmark's private knob for comparing
strategies.  SIGUSR1 restarts.
"""

import os
import sys

import graceful as g
import graceful.http.site


def main() -> None:
    grace = os.environ.get("GRACEFUL_BENCH_IDLE_GRACE")
    if grace is not None:
        seconds = float(grace)
        graceful.http.site.handover_idle_grace = lambda drain_timeout: seconds
    s = g.server()
    s.route("/pid", lambda request: f"{os.getpid()}\n")
    s.set_host("127.0.0.1")
    s.set_port(int(sys.argv[1]))
    s.run()


if __name__ == "__main__":
    main()
