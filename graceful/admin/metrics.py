# -*- test-case-name: tests.unit.admin.test_worker_metrics,tests.unit.admin.test_resource -*-
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
graceful_responses_total               counter  responses finished, by status class:
  {server,status}                               1xx, 2xx, 3xx, 4xx, 5xx
graceful_request_duration_seconds      histogram  seconds from a request being in to
  {server}                                      its response's end
graceful_refused_total{server,reason}  counter  requests answered 503 without the app:
                                                limit_concurrency
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
graceful_canary_error_ratio            gauge    the last canary window's share of 5xx
  {generation}                                  answers and resets, old and new
graceful_generation                    gauge    the generation of this process
graceful_draining                      gauge    1 once the process drains
graceful_restarting                    gauge    1 while a new process starts
graceful_workers{state}                gauge    with workers: how many are starting,
                                                serving and draining
graceful_worker_deaths_total           counter  with workers: workers that died (or
                                                the watchdog killed) and were replaced
graceful_worker_recycles_total         counter  with workers: replaced for
                                                max_requests or max_worker_memory
graceful_worker_timeouts_total         counter  with workers: killed for missing
                                                their heartbeats
graceful_worker_replacements_total     counter  with workers, where the master counts
  {reason}                                      them: replacements by reason: roll,
                                                recycle, memory, timeout, died
graceful_worker_pid{slot}              gauge    with workers: the pid of the slot's
                                                worker
graceful_worker_generation{slot}       gauge    the generation the slot's worker runs
graceful_worker_ready{slot}            gauge    1 while the slot's worker serves
graceful_worker_requests_total{slot}   counter  requests the slot's worker received
                                                (from 0 for a new worker: a reset)
graceful_worker_resident_memory_bytes  gauge    the slot's worker's RSS, as it last
  {slot}                                        reported
graceful_worker_heartbeat_age_seconds  gauge    seconds since the slot's worker last
  {slot}                                        reported (absent while it starts)
graceful_worker_last_replaced          gauge    1 for why the slot was last replaced
  {slot,reason}                                 (roll, recycle, memory, timeout, died)
graceful_admin_refused_total{reason}   counter  admin requests refused: no_token,
                                                wrong_token, cross_origin (this
                                                process only)
graceful_build_info                    gauge    1, labelled with graceful's, Python's
  {version,python,twisted}                      and Twisted's versions
process_*                              various  CPU, memory, open fds, start time
                                                (prometheus-client's ProcessCollector)
=====================================  =======  ====================================

With workers, a worker answers for its group (what its master last told it),
and the per-worker series carry the label C{slot}, 0 to C{workers - 1}: a
slot keeps its number when its worker is replaced, so the series stay as
many as the workers, and the pid is a value, never a label.  While a slot is
being replaced its series follow the worker that serves.

Requests are per server (label C{server}); restarts, handoffs and the
generation belong to the process, which every server of it shares, so they
carry no label.  The restart counts go on across generations (each new
process takes them over from the old one), so they only grow while the
server keeps running.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .refusals import refusals_of
from .._status import (
    DURATION_BUCKETS,
    REFUSAL_REASONS,
    REPLACEMENT_REASONS,
    STATUS_CLASSES,
    ProcessStatus,
    ServerStatus,
    WorkerStatus,
)

#: Bytes in a MiB, which workers report their memory in.
MIB = 1024 * 1024

if TYPE_CHECKING:
    from .host import AdminHost


class RuntimeCollector(Collector):
    """
    The graceful metrics of one runtime, read from it at every scrape.
    """

    def __init__(self, runtime: AdminHost) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        status = self._runtime.status()
        yield from status_metrics(status)
        refused = CounterMetricFamily(
            "graceful_admin_refused",
            "Admin requests refused, by reason, in this process.",
            labels=["reason"],
        )
        counts = refusals_of(self._runtime).counts
        for reason in ("no_token", "wrong_token", "cross_origin"):
            refused.add_metric([reason], counts.get(reason, 0))
        yield refused
        if status.workers is not None:
            yield from worker_metrics(status)
        yield build_info()


def build_info() -> Metric:
    """
    C{graceful_build_info}: 1, with the versions as labels, so that a
    dashboard shows what runs (and a restart's new version) by joining on it.
    """
    try:
        graceful_version = version("graceful")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        graceful_version = "0+unknown"
    import twisted

    info = GaugeMetricFamily(
        "graceful_build_info",
        "1, labelled with the versions of graceful, Python and Twisted this process runs.",
        labels=["version", "python", "twisted"],
    )
    info.add_metric([graceful_version, platform.python_version(), twisted.__version__], 1.0)
    return info


def response_metrics(servers: Iterable[ServerStatus]) -> Iterator[Metric]:
    """
    Responses by status class, the request duration histogram and the
    requests refused, per server (summed over the workers, for a group).
    """
    responses = CounterMetricFamily(
        "graceful_responses",
        "Responses finished, per server and status class (1xx to 5xx).",
        labels=["server", "status"],
    )
    durations = HistogramMetricFamily(
        "graceful_request_duration_seconds",
        "Seconds from a request being in to its response's end, per server.",
        labels=["server"],
    )
    refused = CounterMetricFamily(
        "graceful_refused",
        "Requests a server answered 503 itself, without the app, by reason "
        "(limit_concurrency).",
        labels=["server", "reason"],
    )
    bounds = [repr(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
    for server in servers:
        if server.refused is not None:
            for reason in REFUSAL_REASONS:
                refused.add_metric([server.name, reason], server.refused.get(reason, 0))
        if server.responses is not None:
            for kind in STATUS_CLASSES:
                responses.add_metric([server.name, kind], server.responses.get(kind, 0))
        counts = server.duration_counts
        if counts is not None and len(counts) == len(bounds):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            durations.add_metric([server.name], buckets, server.duration_sum or 0.0)
    yield responses
    yield durations
    yield refused


def status_metrics(status: ProcessStatus) -> Iterator[Metric]:
    """
    The metrics of a status: its servers, drain, restarts and state.
    """
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
    for server in status.servers:
        requests.add_metric([server.name], server.requests or 0)
        in_flight.add_metric([server.name], server.in_flight)
        for kind, count in sorted((server.connections or {}).items()):
            connections.add_metric([server.name, kind], count)
    yield requests
    yield in_flight
    yield connections
    yield from response_metrics(status.servers)
    left = GaugeMetricFamily(
        "graceful_drain_connections_left",
        "While this process drains: its connections still open.",
    )
    if status.drain is not None:
        left.add_metric([], status.drain.connections_left)
    yield left

    yield CounterMetricFamily(
        "graceful_restarts",
        "Restarts that worked, counted across the generations.",
        value=status.restarts,
    )
    yield CounterMetricFamily(
        "graceful_failed_restarts",
        "Restarts that failed (the old process went on serving), counted "
        "across the generations.",
        value=status.failed_restarts,
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
    last = status.last_restart
    if last is not None:
        if last.handoff_seconds is not None:
            handoff.add_metric([], float(last.handoff_seconds))
        success.add_metric([], 1.0 if last.ok else 0.0)
        if last.at is not None:
            ended.add_metric([], float(last.at))
    yield handoff
    yield success
    yield ended
    canary = GaugeMetricFamily(
        "graceful_canary_error_ratio",
        "The last canary window's share of 5xx answers and resets, per generation.",
        labels=["generation"],
    )
    if last is not None and last.canary_new_error_ratio is not None:
        canary.add_metric(["old"], float(last.canary_old_error_ratio or 0.0))
        canary.add_metric(["new"], float(last.canary_new_error_ratio))
    yield canary
    yield GaugeMetricFamily(
        "graceful_generation", "The generation of this process.", value=status.generation
    )
    yield GaugeMetricFamily(
        "graceful_draining",
        "1 once this process drains (handed over or shutting down).",
        value=1.0 if status.draining else 0.0,
    )
    yield GaugeMetricFamily(
        "graceful_restarting",
        "1 while a new process is starting to take over from this one.",
        value=1.0 if status.restarting else 0.0,
    )


def slot_workers(workers: Iterable[WorkerStatus]) -> dict[int, WorkerStatus]:
    """
    The worker each slot stands for, by slot.  While a slot is replaced it
    has two: the one that serves (not draining, and ready if either is)
    stands for it, the newer one on a tie, so that every slot has one
    series and it moves to the successor once the successor serves.
    """
    chosen: dict[int, WorkerStatus] = {}

    def rank(worker: WorkerStatus) -> tuple[bool, bool, float]:
        return (not worker.draining, worker.ready, worker.started_at or 0.0)

    for worker in workers:
        current = chosen.get(worker.slot)
        if current is None or rank(worker) >= rank(current):
            chosen[worker.slot] = worker
    return dict(sorted(chosen.items()))


def worker_metrics(status: ProcessStatus) -> Iterator[Metric]:
    """
    A master's metrics of its group: workers by state, replacements, and
    per slot (a bounded label, unlike the pid, which changes at every
    replacement and is a value here) the slot's worker.
    """
    workers = status.workers or ()
    states = GaugeMetricFamily(
        "graceful_workers", "Workers of the group, by state.", labels=["state"]
    )
    for state in ("starting", "serving", "draining"):
        states.add_metric([state], sum(1 for w in workers if w.state == state))
    yield states
    yield CounterMetricFamily(
        "graceful_worker_deaths",
        "Workers that died on their own and were replaced.",
        value=status.worker_deaths,
    )
    yield CounterMetricFamily(
        "graceful_worker_recycles",
        "Workers replaced for their requests (max_requests) or their memory "
        "(max_worker_memory).",
        value=status.worker_recycles,
    )
    yield CounterMetricFamily(
        "graceful_worker_timeouts",
        "Workers killed for missing their heartbeats (worker_timeout).",
        value=status.worker_timeouts,
    )
    if status.worker_replacements is not None:
        replacements = CounterMetricFamily(
            "graceful_worker_replacements",
            "Workers replaced, by reason: roll, recycle, memory, timeout, died.",
            labels=["reason"],
        )
        for reason in REPLACEMENT_REASONS:
            replacements.add_metric([reason], status.worker_replacements.get(reason, 0))
        yield replacements

    slot = ["slot"]
    pid = GaugeMetricFamily(
        "graceful_worker_pid", "The process id of the slot's worker.", labels=slot
    )
    generation = GaugeMetricFamily(
        "graceful_worker_generation", "The generation the slot's worker runs.", labels=slot
    )
    ready = GaugeMetricFamily(
        "graceful_worker_ready", "1 while the slot's worker serves.", labels=slot
    )
    requests = CounterMetricFamily(
        "graceful_worker_requests",
        "HTTP requests the slot's worker received (from 0 again for its successor).",
        labels=slot,
    )
    memory = GaugeMetricFamily(
        "graceful_worker_resident_memory_bytes",
        "Resident memory of the slot's worker, as it last reported.",
        labels=slot,
    )
    heartbeat = GaugeMetricFamily(
        "graceful_worker_heartbeat_age_seconds",
        "Seconds since the slot's worker last reported (its heartbeat).",
        labels=slot,
    )
    for number, worker in slot_workers(workers).items():
        label = [str(number)]
        pid.add_metric(label, worker.pid)
        generation.add_metric(label, worker.generation)
        ready.add_metric(label, 1.0 if worker.ready and not worker.draining else 0.0)
        requests.add_metric(label, worker.requests)
        if worker.rss_mib is not None:
            memory.add_metric(label, worker.rss_mib * MIB)
        if worker.last_heartbeat is not None:
            heartbeat.add_metric(label, worker.last_heartbeat)
    yield from (pid, generation, ready, requests, memory, heartbeat)
    replaced = GaugeMetricFamily(
        "graceful_worker_last_replaced",
        "1 for the reason the slot's worker was last replaced: roll, recycle, "
        "memory, timeout or died.",
        labels=["slot", "reason"],
    )
    for number, reason in sorted(status.last_replaced_reason.items()):
        replaced.add_metric([str(number), reason], 1.0)
    yield replaced


def registry_for(runtime: AdminHost) -> CollectorRegistry:
    """
    The metrics registry of C{runtime}, made on first use.
    """

    def make() -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RuntimeCollector(runtime))
        ProcessCollector(registry=registry)
        return registry

    return runtime.admin.kept(CollectorRegistry, make)


def exposition(runtime: AdminHost, accept: str | None) -> tuple[bytes, str]:
    """
    The metrics of C{runtime} in the format C{accept} asks for: Prometheus
    text by default, OpenMetrics when the scraper prefers it.

    @return: the body and its content type.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry_for(runtime)), content_type
