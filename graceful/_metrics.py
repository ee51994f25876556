"""
The admin C{/metrics} page: Prometheus' text exposition, written by
prometheus-client.

Each L{Runtime} has a registry of its own (never the library's global default
registry, so two runtimes in one interpreter, as in tests, never mix).  Its
collector reads the live values from the runtime at every scrape:

=====================================  =======  ====================================
metric                                 type     what
=====================================  =======  ====================================
graceful_requests_total{server}        counter  HTTP requests this process received
graceful_requests_in_flight{server}    gauge    requests received, not yet answered
graceful_connections{server,kind}      gauge    open connections by kind: http/1.1,
                                                h2, websocket, stream
graceful_drain_connections_left        gauge    while draining: connections still
                                                open (absent otherwise)
graceful_restarts_total                counter  restarts that worked
graceful_failed_restarts_total         counter  restarts that failed (the old process
                                                went on serving)
graceful_last_handoff_seconds          gauge    how long the last restart took, from
                                                starting the new process to its
                                                "ready" (absent before any restart)
graceful_last_restart_success          gauge    1 if the last restart worked, 0 if
                                                it failed (absent before any)
graceful_last_restart_timestamp_seconds gauge   when the last restart ended
graceful_generation                    gauge    the generation of this process
graceful_draining                      gauge    1 once the process drains
graceful_restarting                    gauge    1 while a new process starts
graceful_workers{state}                gauge    with workers: how many are starting,
                                                serving and draining
graceful_worker_deaths_total           counter  with workers: workers that died and
                                                were replaced
graceful_admin_refused_total{reason}   counter  admin requests refused: no_token,
                                                wrong_token, cross_origin (this
                                                process only)
process_*                              various  CPU, memory, open fds, start time
                                                (prometheus-client's ProcessCollector)
=====================================  =======  ====================================

Requests are per server (label C{server}); restarts, handoffs and the
generation belong to the process, which every server of it shares, so they
carry no label.  The restart counts go on across generations (each new
process takes them over from the old one), so they only grow while the
server keeps running.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ._admin import refusals_of

if TYPE_CHECKING:
    from ._runtime import Runtime


class RuntimeCollector(Collector):
    """
    The graceful metrics of one runtime, read from it at every scrape.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        status = self._runtime.status()
        requests = CounterMetricFamily(
            "graceful_requests",
            "HTTP requests this process received, per server.",
            labels=["server"],
        )
        in_flight = GaugeMetricFamily(
            "graceful_requests_in_flight",
            "HTTP requests received and not yet answered, per server.",
            labels=["server"],
        )
        connections = GaugeMetricFamily(
            "graceful_connections",
            "Open connections, per server and kind (http/1.1, h2, websocket, stream).",
            labels=["server", "kind"],
        )
        for server in status["servers"]:
            requests.add_metric([server["name"]], server.get("requests", 0))
            in_flight.add_metric([server["name"]], server["in_flight"])
            for kind, count in sorted(server.get("connections", {}).items()):
                connections.add_metric([server["name"], kind], count)
        yield requests
        yield in_flight
        yield connections
        left = GaugeMetricFamily(
            "graceful_drain_connections_left",
            "While this process drains: its connections still open.",
        )
        drain = status.get("drain")
        if drain is not None:
            left.add_metric([], drain["connections_left"])
        yield left

        generation = int(status["generation"])
        yield CounterMetricFamily(
            "graceful_restarts",
            "Restarts that worked, counted across the generations.",
            value=status.get("restarts", 0),
        )
        yield CounterMetricFamily(
            "graceful_failed_restarts",
            "Restarts that failed (the old process went on serving), counted "
            "across the generations.",
            value=status.get("failed_restarts", 0),
        )
        handoff = GaugeMetricFamily(
            "graceful_last_handoff_seconds",
            "Seconds the last restart took, from starting the new process to its ready.",
        )
        success = GaugeMetricFamily(
            "graceful_last_restart_success",
            "1 if the last restart worked, 0 if it failed.",
        )
        ended = GaugeMetricFamily(
            "graceful_last_restart_timestamp_seconds",
            "When the last restart ended (Unix time).",
        )
        last = status.get("last_restart")
        if last is not None:
            if last.get("handoff_seconds") is not None:
                handoff.add_metric([], float(last["handoff_seconds"]))
            success.add_metric([], 1.0 if last["ok"] else 0.0)
            ended.add_metric([], float(last["at"]))
        yield handoff
        yield success
        yield ended
        yield GaugeMetricFamily(
            "graceful_generation", "The generation of this process.", value=generation
        )
        yield GaugeMetricFamily(
            "graceful_draining",
            "1 once this process drains (handed over or shutting down).",
            value=1.0 if status["draining"] else 0.0,
        )
        yield GaugeMetricFamily(
            "graceful_restarting",
            "1 while a new process is starting to take over from this one.",
            value=1.0 if status.get("restarting") else 0.0,
        )
        refused = CounterMetricFamily(
            "graceful_admin_refused",
            "Admin requests refused, by reason, in this process.",
            labels=["reason"],
        )
        counts = refusals_of(self._runtime).counts
        for reason in ("no_token", "wrong_token", "cross_origin"):
            refused.add_metric([reason], counts.get(reason, 0))
        yield refused
        workers = status.get("workers")
        if workers is not None:
            states = GaugeMetricFamily(
                "graceful_workers", "Workers of the group, by state.", labels=["state"]
            )
            for state in ("starting", "serving", "draining"):
                states.add_metric([state], sum(1 for w in workers if _worker_state(w) == state))
            yield states
            yield CounterMetricFamily(
                "graceful_worker_deaths",
                "Workers that died on their own and were replaced.",
                value=status.get("worker_deaths", 0),
            )


def _worker_state(worker: dict[str, object]) -> str:
    if worker.get("draining"):
        return "draining"
    return "serving" if worker.get("ready") else "starting"


_registries: weakref.WeakKeyDictionary[Runtime, CollectorRegistry] = (
    weakref.WeakKeyDictionary()
)


def registry_for(runtime: Runtime) -> CollectorRegistry:
    """
    The metrics registry of C{runtime}, made on first use.
    """
    registry = _registries.get(runtime)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RuntimeCollector(runtime))
        ProcessCollector(registry=registry)
        _registries[runtime] = registry
    return registry


def exposition(runtime: Runtime, accept: str | None) -> tuple[bytes, str]:
    """
    The metrics of C{runtime} in the format C{accept} asks for: Prometheus
    text by default, OpenMetrics when the scraper prefers it.

    @return: the body and its content type.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry_for(runtime)), content_type
