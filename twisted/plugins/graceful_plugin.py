"""
Registers C{graceful} with twistd and twist.
"""

from twisted.application.service import ServiceMaker

graceful = ServiceMaker(
    "graceful",
    "graceful._plugin",
    "Named HTTP/HTTPS servers with zero-downtime restarts (SIGUSR1)",
    "graceful",
)
