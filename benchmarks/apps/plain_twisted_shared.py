"""
The reference for workers: N plain twisted.web processes sharing one
listening socket (bound once, inherited, adopted by each).

    python -m benchmarks.apps.plain_twisted_shared PORT N
"""

import os
import socket
import sys


def serve(fd: int) -> None:
    from twisted.internet import reactor

    from benchmarks.apps.hello import root
    from benchmarks.apps.plain_twisted import QuietSite

    reactor.adoptStreamPort(fd, socket.AF_INET, QuietSite(root()))
    os.close(fd)
    reactor.run()


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            serve(sock.fileno())
            os._exit(0)
        children.append(pid)
    sock.close()
    try:
        for pid in children:
            os.waitpid(pid, 0)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
