"""
The process harness's own checks, on real processes: what the other
integration tests conclude from them must be something they can see.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from twisted.trial.unittest import SynchronousTestCase

from harness.processes import (
    Process,
    alive,
    fd_count,
    group_members,
    loose_ends,
    settled_descriptors,
    wait_until,
    zombies,
)

#: A parent that starts a child which exits at once, and never reaps it.
NEGLECTFUL_PARENT = """
import os, sys, time
child = os.fork()
if child == 0:
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


#: A server that closes each connection, and the pipe it was given (its
#: descriptor is the argument), once the other end closes; for a minute at
#: most.
CLOSER = """
import os, select, socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
watched = [listener.fileno(), int(sys.argv[1])]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for fd in select.select(watched, [], [], 1)[0]:
        if fd == listener.fileno():
            watched.append(listener.accept()[0].detach())
        elif not os.read(fd, 1024):
            watched.remove(fd)
            os.close(fd)
"""


class SettledTests(SynchronousTestCase):
    def test_waits_for_what_the_peers_closed(self) -> None:
        """
        A paused process (as a busy machine leaves one) still holds the
        connection and the pipe whose other ends closed: L{loose_ends}
        names them and L{settled_descriptors} waits until it has run and
        closed them.
        """
        read, write = os.pipe()
        proc = Process([sys.executable, "-c", CLOSER, str(read)], name="closer")
        proc.start(pass_fds=(read,))
        self.addCleanup(proc.kill)
        os.close(read)
        port = wait_until(lambda: int(proc.log().split()[0]), 10, "its port")
        before = settled_descriptors(proc.pid)
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        held = sum(before.values())
        wait_until(lambda: fd_count(proc.pid) == held + 1, 10, "the connection to be accepted")
        os.kill(proc.pid, signal.SIGSTOP)
        self.addCleanup(os.kill, proc.pid, signal.SIGCONT)
        client.close()
        os.close(write)
        self.assertEqual([end.split(":")[0] for end in loose_ends(proc.pid)], ["pipe", "socket"])
        os.kill(proc.pid, signal.SIGCONT)
        after = settled_descriptors(proc.pid)
        self.assertEqual(after["socket"], before["socket"])
        self.assertEqual(after["pipe"], before["pipe"] - 1)


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
