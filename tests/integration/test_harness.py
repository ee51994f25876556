"""
The process harness's own checks, on real processes: what the other
integration tests conclude from them must be something they can see.
"""

from __future__ import annotations

import sys

from twisted.trial.unittest import SynchronousTestCase

from harness.processes import Process, alive, group_members, wait_until, zombies

#: A parent that starts a child which exits at once, and never reaps it.
NEGLECTFUL_PARENT = """
import os, sys, time
child = os.fork()
if child == 0:
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


class ZombieTests(SynchronousTestCase):
    def test_unreaped_child_seen(self) -> None:
        """
        L{zombies} finds the exited child its parent did not reap, which
        L{alive} and L{group_members} leave out; and nothing once the
        parent is gone (the child is reaped by whoever inherits it).
        """
        proc = Process([sys.executable, "-c", NEGLECTFUL_PARENT], name="neglectful").start()
        self.addCleanup(proc.kill)
        child = wait_until(lambda: int(proc.log().split()[0]), 10, "the child's pid")
        wait_until(lambda: zombies(proc.pid) == [child], 10, "the child to exit")
        self.assertFalse(alive(child))
        self.assertEqual(group_members(proc.pgid), [proc.pid])
        proc.kill()
        self.assertEqual(zombies(proc.pid), [])
