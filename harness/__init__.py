"""
The process harness of the integration tests (tests/integration/) and of the
benchmarks (benchmarks/): starting a program with its environment in a
process group of its own, waiting for it to answer, stopping and reaping it
and everything it spawned by pid, free loopback ports, /proc facts, and the
programs both run (harness/programs/).

Not installed (pyproject.toml packages graceful only): it is imported from the
repository, which pytest and benchmarks/run put on the path.
"""
