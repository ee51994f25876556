"""
What the admin pages need of the process they serve: one small interface,
so that the admin stands beside the workers, below the process, and reads
the runtime only through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, MutableMapping, Protocol

from ..http.server import ServerHost

if TYPE_CHECKING:
    from .._settings import Settings
    from .state import AdminState
    from .._status import ProcessStatus
    from ..lifecycle.core import RestartHistory
    from ..http.server import Server


class AdminHost(ServerHost, Protocol):
    """
    The process, as its admin pages, health page and metrics see it: a
    server's host (pid, reactor, restart, shutdown) that also tells whether
    it drains, its servers, its settings and its status.
    """

    @property
    def draining(self) -> bool:
        "Whether the process has started leaving."

    @property
    def servers(self) -> Mapping[str, Server]:
        "The process's servers, by name."

    @property
    def settings(self) -> Settings:
        "The process-wide settings."

    @property
    def role(self) -> str:
        "single, master or worker: a worker only reads the token."

    @property
    def environ(self) -> MutableMapping[str, str]:
        "The environment its children inherit: the generated token's file."

    @property
    def pidfile(self) -> Any:
        "Its pidfile, beside which the generated token is kept."

    @property
    def taking_over(self) -> bool:
        "Whether it is a new generation whose older one has not released it."

    @property
    def admin(self) -> AdminState:
        "What the admin keeps for this process: its token, refusals, metrics."

    def now(self) -> float:
        "The wall clock (seconds since the epoch)."

    def status(self) -> ProcessStatus:
        "The process's status: its own facts, its servers and workers."

    @property
    def history(self) -> RestartHistory:
        "The restarts (a worker's: its master's, as last pushed)."

    def set_workers(self, count: int) -> int:
        "Keep C{count} workers; raises L{graceful._errors.WorkerCountRefused}."
