# -*- test-case-name: tests.unit.test_status -*-
"""
What a graceful process reports about itself: one definition of the status,
read by the admin API, the admin page, the metrics and C{graceful ctl}.

L{ProcessStatus.to_json} writes the admin API's C{GET status} answer (a
public format: see docs/reference.rst, "The status"); L{ProcessStatus.from_json} reads
it back.  Reading is tolerant the way C{graceful ctl} must be with nodes of
other versions: a key an older node does not write takes its default, and a
key this version does not know is ignored.  A value of the wrong shape
raises L{StatusError}, which names where it is.

Three shapes share the class:

  - a process serving alone: no worker keys;
  - a master: C{workers} (one L{WorkerStatus} each) and the group's counts,
    with its servers' requests summed over the workers;
  - a worker: what its master last told it, with its own pid as C{worker}.

A leaf: attrs and the standard library only, so that C{graceful ctl} runs
without Twisted.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Self, TypeVar

from attrs import field, frozen

#: Why a worker's slot was last replaced.
REPLACEMENT_REASONS = ("roll", "recycle", "memory", "timeout", "died")

_T = TypeVar("_T")


class StatusError(ValueError):
    """
    A status that is not the shape a graceful process writes.  The message
    is one line naming the field, such as C{servers[0].ports: expected a
    list, got 3}.
    """


# -- reading JSON values, each with the path it came from ------------------------


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _wrong(where: str, expected: str, value: Any) -> StatusError:
    return StatusError(f"{where}: expected {expected}, got {_shown(value)}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong(where, "an object", value)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong(where, "a list", value)
    return value


def _required(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise StatusError(f"{where}: {key} is missing")
    return data[key]


def _int(value: Any, where: str) -> int:
    # int() of a float drops what a count never has; bools are no numbers.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _wrong(where, "a whole number", value)
    try:
        return int(value)
    except ValueError:
        raise _wrong(where, "a whole number", value) from None


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _wrong(where, "a number", value)
    if isinstance(value, (int, float)):
        # Kept as written (an int stays an int), so that JSON read and
        # written again is the same text.
        return value
    try:
        return float(value)
    except ValueError:
        raise _wrong(where, "a number", value) from None


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _wrong(where, "true or false", value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _wrong(where, "a string", value)
    return value


def _optional(read: Callable[[Any, str], _T], value: Any, where: str) -> _T | None:
    return None if value is None else read(value, where)


def _get(
    data: Mapping[str, Any], key: str, where: str, read: Callable[[Any, str], _T], default: _T
) -> _T:
    """
    C{data[key]} read with C{read}, or C{default} when an older node did
    not write it (or wrote null).
    """
    value = data.get(key)
    return default if value is None else read(value, f"{where}{key}")


def _prefix(where: str) -> str:
    return f"{where}." if where else ""


#: The upper bounds, in seconds, of the request duration histogram's
#: buckets (prometheus-client's defaults); a last one holds the rest.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)

#: Why a server answered a request itself, 503, without the app: beyond
#: its C{limit_concurrency}.
REFUSAL_REASONS = ("limit_concurrency",)

#: The classes responses are counted by.
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


# -- the parts ----------------------------------------------------------------------


@frozen
class PortStatus:
    """
    One listening socket of a server: a TCP port or a UNIX socket.

    @ivar port: the TCP port number; L{None} for a UNIX socket.
    @ivar unix: the UNIX socket's path; L{None} for a TCP port.
    @ivar tls: whether it speaks TLS (HTTPS).
    """

    port: int | None = None
    unix: str | None = None
    tls: bool = False

    @property
    def where(self) -> str:
        """
        C{8100}, or C{unix:/run/app.sock}.
        """
        return f"unix:{self.unix}" if self.unix is not None else str(self.port)

    def to_json(self) -> dict[str, Any]:
        if self.unix is not None:
            return {"unix": self.unix, "tls": self.tls}
        return {"port": self.port, "tls": self.tls}

    @classmethod
    def from_json(cls, data: Any, where: str = "port") -> Self:
        data = _object(data, where)
        tls = _get(data, "tls", _prefix(where), _bool, False)
        if data.get("unix") is not None:
            return cls(unix=_str(data["unix"], f"{where}.unix"), tls=tls)
        if data.get("port") is None:
            raise StatusError(f"{where}: neither port nor unix")
        return cls(port=_int(data["port"], f"{where}.port"), tls=tls)


@frozen
class ServerStatus:
    """
    One named server of the process (of the group, for a master).

    @ivar name: the server's name.
    @ivar ports: where it listens.
    @ivar in_flight: requests received and not yet answered (summed over
        the workers, for a master).
    @ivar requests: requests received since the process started (summed
        over the workers' current processes, for a master); L{None} from a
        node too old to count them.
    @ivar connections: open connections by kind (C{http/1.1}, C{h2},
        C{websocket}, C{stream}), summed over the workers for a master;
        L{None} where they are not counted (an older node).
    @ivar responses: responses finished, by status class (C{"2xx"}...);
        L{None} from an older node.
    @ivar duration_counts: requests by duration: one count per bucket of
        L{DURATION_BUCKETS}, then the rest; L{None} from an older node.
    @ivar duration_sum: the seconds those requests took, together.
    @ivar refused: requests answered 503 without the app, by reason
        (L{REFUSAL_REASONS}); L{None} from an older node.
    @ivar resets: connections lost with a request unanswered (a canary
        window counts them against a generation); L{None} from an older
        node.
    """

    name: str
    ports: tuple[PortStatus, ...] = ()
    in_flight: int = 0
    requests: int | None = None
    connections: dict[str, int] | None = None
    responses: dict[str, int] | None = None
    duration_counts: tuple[int, ...] | None = None
    duration_sum: float | None = None
    refused: dict[str, int] | None = None
    resets: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "ports": [port.to_json() for port in self.ports],
            "in_flight": self.in_flight,
        }
        if self.requests is not None:
            data["requests"] = self.requests
        if self.connections is not None:
            data["connections"] = dict(self.connections)
        if self.responses is not None:
            data["responses"] = dict(self.responses)
        if self.duration_counts is not None:
            data["duration_counts"] = list(self.duration_counts)
            data["duration_sum"] = self.duration_sum or 0.0
        if self.refused is not None:
            data["refused"] = dict(self.refused)
        if self.resets is not None:
            data["resets"] = self.resets
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "server") -> Self:
        data = _object(data, where)
        at = _prefix(where)
        connections = data.get("connections")
        responses = data.get("responses")
        durations = data.get("duration_counts")
        refused = data.get("refused")
        ports: list[Any] = _get(data, "ports", at, _list, [])
        return cls(
            name=_str(_required(data, "name", where), f"{at}name"),
            ports=tuple(
                PortStatus.from_json(port, f"{at}ports[{i}]")
                for i, port in enumerate(ports)
            ),
            in_flight=_get(data, "in_flight", at, _int, 0),
            requests=_optional(_int, data.get("requests"), f"{at}requests"),
            connections=None
            if connections is None
            else {
                _str(kind, f"{at}connections"): _int(count, f"{at}connections.{kind}")
                for kind, count in _object(connections, f"{at}connections").items()
            },
            responses=None
            if responses is None
            else {
                _str(kind, f"{at}responses"): _int(count, f"{at}responses.{kind}")
                for kind, count in _object(responses, f"{at}responses").items()
            },
            duration_counts=None
            if durations is None
            else tuple(
                _int(count, f"{at}duration_counts[{i}]")
                for i, count in enumerate(_list(durations, f"{at}duration_counts"))
            ),
            duration_sum=_optional(_float, data.get("duration_sum"), f"{at}duration_sum"),
            resets=_optional(_int, data.get("resets"), f"{at}resets"),
            refused=None
            if refused is None
            else {
                _str(reason, f"{at}refused"): _int(count, f"{at}refused.{reason}")
                for reason, count in _object(refused, f"{at}refused").items()
            },
        )


@frozen
class DrainStatus:
    """
    A drain under way: the process stopped accepting and lets its
    connections finish.

    @ivar reason: C{"restart"} (a new process took over) or C{"shutdown"}.
    @ivar elapsed: seconds since the drain began.
    @ivar spread: seconds over which long-lived connections are asked to
        close (C{drain_spread} in effect).
    @ivar timeout: seconds after which what is left is cut
        (C{drain_timeout}).
    @ivar connections_left: connections still open.
    """

    reason: str = "shutdown"
    elapsed: float = 0.0
    spread: float = 0.0
    timeout: float = 0.0
    connections_left: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "elapsed": self.elapsed,
            "spread": self.spread,
            "timeout": self.timeout,
            "connections_left": self.connections_left,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "drain") -> Self:
        data = _object(data, where)
        at = _prefix(where)
        return cls(
            reason=_get(data, "reason", at, _str, "shutdown"),
            elapsed=_get(data, "elapsed", at, _float, 0.0),
            spread=_get(data, "spread", at, _float, 0.0),
            timeout=_get(data, "timeout", at, _float, 0.0),
            connections_left=_get(data, "connections_left", at, _int, 0),
        )


@frozen
class LastRestart:
    """
    How the last restart went.

    @ivar ok: whether the new process came up and took over.
    @ivar error: why it failed; L{None} when it worked.
    @ivar at: when it ended (Unix time); L{None} from a node too old to say.
    @ivar handoff_seconds: seconds from starting the new process to its
        ready; L{None} when it failed or the node does not say.
    @ivar canary_old_error_ratio: with a canary window, the old generation's
        share of 5xx answers and resets in it; L{None} without one.
    @ivar canary_new_error_ratio: the new generation's.
    """

    ok: bool
    error: str | None = None
    at: float | None = None
    handoff_seconds: float | None = None
    canary_old_error_ratio: float | None = None
    canary_new_error_ratio: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ok": self.ok,
            "error": self.error,
            "at": self.at,
            "handoff_seconds": self.handoff_seconds,
        }
        if self.canary_new_error_ratio is not None:
            data["canary_old_error_ratio"] = self.canary_old_error_ratio
            data["canary_new_error_ratio"] = self.canary_new_error_ratio
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "last_restart") -> Self:
        data = _object(data, where)
        at = _prefix(where)
        return cls(
            ok=_bool(_required(data, "ok", where), f"{at}ok"),
            error=_optional(_str, data.get("error"), f"{at}error"),
            at=_optional(_float, data.get("at"), f"{at}at"),
            handoff_seconds=_optional(_float, data.get("handoff_seconds"), f"{at}handoff_seconds"),
            canary_old_error_ratio=_optional(
                _float, data.get("canary_old_error_ratio"), f"{at}canary_old_error_ratio"
            ),
            canary_new_error_ratio=_optional(
                _float, data.get("canary_new_error_ratio"), f"{at}canary_new_error_ratio"
            ),
        )


@frozen
class WorkerStatus:
    """
    One worker of a master's group, as the master last heard from it.

    @ivar pid: its process id.
    @ivar slot: its place in the group, C{0} to C{workers - 1}; a slot
        keeps its number when its worker is replaced.
    @ivar generation: the generation of the code it runs.
    @ivar ready: whether it has said it serves.
    @ivar draining: whether it was told to leave (replaced, or shutting
        down).
    @ivar in_flight: its requests received and not yet answered.
    @ivar requests: the requests it has received.
    @ivar rss_mib: its resident memory in MiB; L{None} before its first
        report.
    @ivar last_heartbeat: seconds since its last report; L{None} while it is
        starting.
    @ivar last_replaced_reason: why its slot was last replaced (one of
        L{REPLACEMENT_REASONS}); L{None} if it never was.
    @ivar started_at: when the master started it (Unix time).
    """

    pid: int
    slot: int
    generation: int
    ready: bool = False
    draining: bool = False
    in_flight: int = 0
    requests: int = 0
    rss_mib: float | None = None
    last_heartbeat: float | None = None
    last_replaced_reason: str | None = None
    started_at: float | None = None

    @property
    def state(self) -> str:
        """
        C{"starting"}, C{"serving"} or C{"draining"}.
        """
        if self.draining:
            return "draining"
        return "serving" if self.ready else "starting"

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "slot": self.slot,
            "generation": self.generation,
            "ready": self.ready,
            "draining": self.draining,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "rss_mib": self.rss_mib,
            "last_heartbeat": self.last_heartbeat,
            "last_replaced_reason": self.last_replaced_reason,
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "worker") -> Self:
        data = _object(data, where)
        at = _prefix(where)
        return cls(
            pid=_int(_required(data, "pid", where), f"{at}pid"),
            slot=_int(_required(data, "slot", where), f"{at}slot"),
            generation=_int(_required(data, "generation", where), f"{at}generation"),
            ready=_get(data, "ready", at, _bool, False),
            draining=_get(data, "draining", at, _bool, False),
            in_flight=_get(data, "in_flight", at, _int, 0),
            requests=_get(data, "requests", at, _int, 0),
            rss_mib=_optional(_float, data.get("rss_mib"), f"{at}rss_mib"),
            last_heartbeat=_optional(_float, data.get("last_heartbeat"), f"{at}last_heartbeat"),
            last_replaced_reason=_optional(
                _str, data.get("last_replaced_reason"), f"{at}last_replaced_reason"
            ),
            started_at=_optional(_float, data.get("started_at"), f"{at}started_at"),
        )


# -- the whole -------------------------------------------------------------------------


@frozen
class ProcessStatus:
    """
    A graceful process's status: what C{GET status} answers.

    @ivar pid: the process id (for a master and its workers: the master's).
    @ivar generation: its place in the line of processes, 1 for the first;
        for a master, the generation its workers are rolled to.
    @ivar servers: its named servers.
    @ivar role: C{"single"} (serves alone), C{"master"} (holds the sockets
        and runs workers; a worker answers with its master's status, so it
        says C{"master"} too), or C{"worker"} (in a worker's report to its
        master).
    @ivar started_at: when the process started (Unix time); L{None} from a
        node too old to say.
    @ivar uptime: seconds since then, when the status was taken.
    @ivar draining: whether it stopped accepting to leave (handed over or
        shutting down).
    @ivar restarting: whether a new process (for a master: a roll of the
        workers) is under way.
    @ivar drain: the drain's progress while draining; L{None} otherwise.
    @ivar last_restart: how the last restart went; L{None} before any.
    @ivar restarts: restarts that worked, counted across the generations.
    @ivar failed_restarts: restarts that failed, counted across the
        generations.
    @ivar workers: for a master, its workers in slot order (a slot being
        replaced shows both); L{None} for a process serving alone.
    @ivar worker_deaths: for a master: workers that died on their own and
        were replaced (the watchdog's kills count as timeouts only).
    @ivar worker_recycles: for a master: workers replaced for their
        requests or their memory.
    @ivar worker_timeouts: for a master: workers killed for missing their
        heartbeats.
    @ivar last_replaced_reason: for a master: why each slot was last
        replaced (one of L{REPLACEMENT_REASONS}), by slot; slots never
        replaced are absent.
    @ivar worker_replacements: for a master that counts them: replacements
        by reason (the keys of L{REPLACEMENT_REASONS}); L{None} where the
        master does not.
    @ivar master_generation: for a master that upgrades itself: the
        generation of the master's own code; L{None} where it does not say.
    @ivar worker: in a worker's own answer: its pid (the rest is what its
        master last told it); L{None} elsewhere.
    @ivar rss_mib: in a worker's report to its master: its resident memory
        in MiB; L{None} elsewhere.
    """

    pid: int
    generation: int
    servers: tuple[ServerStatus, ...]
    role: str = "single"
    started_at: float | None = None
    uptime: float | None = None
    draining: bool = False
    restarting: bool = False
    drain: DrainStatus | None = None
    last_restart: LastRestart | None = None
    restarts: int = 0
    failed_restarts: int = 0
    workers: tuple[WorkerStatus, ...] | None = None
    worker_deaths: int = 0
    worker_recycles: int = 0
    worker_timeouts: int = 0
    last_replaced_reason: dict[int, str] = field(factory=dict)
    worker_replacements: dict[str, int] | None = None
    master_generation: int | None = None
    worker: int | None = None
    rss_mib: float | None = None

    @property
    def in_flight(self) -> int:
        """
        Requests in flight over every server.
        """
        return sum(server.in_flight for server in self.servers)

    @property
    def state(self) -> str:
        """
        C{"draining"}, C{"restarting"} or C{"serving"}.
        """
        if self.draining:
            return "draining"
        if self.restarting:
            return "restarting"
        return "serving"

    def to_json(self) -> dict[str, Any]:
        """
        The admin API's JSON, key for key as graceful has always written it.
        """
        data: dict[str, Any] = {"pid": self.pid, "role": self.role, "generation": self.generation}
        if self.started_at is not None:
            data["started_at"] = self.started_at
        if self.uptime is not None:
            data["uptime"] = self.uptime
        data.update(
            {
                "draining": self.draining,
                "restarting": self.restarting,
                "servers": [server.to_json() for server in self.servers],
                "drain": None if self.drain is None else self.drain.to_json(),
                "last_restart": None if self.last_restart is None else self.last_restart.to_json(),
                "restarts": self.restarts,
                "failed_restarts": self.failed_restarts,
            }
        )
        if self.workers is not None:
            data.update(
                {
                    "workers": [worker.to_json() for worker in self.workers],
                    "worker_deaths": self.worker_deaths,
                    "worker_recycles": self.worker_recycles,
                    "worker_timeouts": self.worker_timeouts,
                    "last_replaced_reason": {
                        str(slot): reason for slot, reason in sorted(self.last_replaced_reason.items())
                    },
                }
            )
        if self.worker_replacements is not None:
            data["worker_replacements"] = dict(self.worker_replacements)
        if self.master_generation is not None:
            data["master_generation"] = self.master_generation
        if self.worker is not None:
            data["worker"] = self.worker
        if self.rss_mib is not None:
            data["rss_mib"] = self.rss_mib
        return data

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """
        Read a status as any graceful version writes it.

        @raise StatusError: C{data} is not a graceful status: no C{pid},
            C{generation} and C{servers}, or a value of the wrong shape.
        """
        if not isinstance(data, dict) or any(
            key not in data for key in ("pid", "generation", "servers")
        ):
            raise StatusError("a status has a pid, a generation and servers; this has not")
        workers = data.get("workers")
        reasons = data.get("last_replaced_reason")
        replacements = data.get("worker_replacements")
        drain = data.get("drain")
        last = data.get("last_restart")
        return cls(
            pid=_int(data["pid"], "pid"),
            generation=_int(data["generation"], "generation"),
            servers=tuple(
                ServerStatus.from_json(server, f"servers[{i}]")
                for i, server in enumerate(_list(data["servers"], "servers"))
            ),
            role=_get(data, "role", "", _str, "single"),
            started_at=_optional(_float, data.get("started_at"), "started_at"),
            uptime=_optional(_float, data.get("uptime"), "uptime"),
            draining=_get(data, "draining", "", _bool, False),
            restarting=_get(data, "restarting", "", _bool, False),
            drain=None if drain is None else DrainStatus.from_json(drain),
            last_restart=None if last is None else LastRestart.from_json(last),
            restarts=_get(data, "restarts", "", _int, 0),
            failed_restarts=_get(data, "failed_restarts", "", _int, 0),
            workers=None
            if workers is None
            else tuple(
                WorkerStatus.from_json(worker, f"workers[{i}]")
                for i, worker in enumerate(_list(workers, "workers"))
            ),
            worker_deaths=_get(data, "worker_deaths", "", _int, 0),
            worker_recycles=_get(data, "worker_recycles", "", _int, 0),
            worker_timeouts=_get(data, "worker_timeouts", "", _int, 0),
            last_replaced_reason={}
            if reasons is None
            else {
                _int(slot, "last_replaced_reason"): _str(reason, f"last_replaced_reason.{slot}")
                for slot, reason in _object(reasons, "last_replaced_reason").items()
            },
            worker_replacements=None
            if replacements is None
            else {
                _str(reason, "worker_replacements"): _int(count, f"worker_replacements.{reason}")
                for reason, count in _object(replacements, "worker_replacements").items()
            },
            master_generation=_optional(_int, data.get("master_generation"), "master_generation"),
            worker=_optional(_int, data.get("worker"), "worker"),
            rss_mib=_optional(_float, data.get("rss_mib"), "rss_mib"),
        )
