"""
The metrics page of a group: one series per worker slot (a bounded label),
the pid as a value, the slot's worker followed across its replacement; and
none of it for a process serving alone.
"""

from __future__ import annotations

from attrs import define, field
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from graceful.admin.state import AdminState
from graceful.admin.metrics import RuntimeCollector
from graceful._status import DURATION_BUCKETS, PortStatus, ProcessStatus, ServerStatus, WorkerStatus

SERVERS = (ServerStatus("web", (PortStatus(port=8100),), in_flight=1, requests=40),)


@define(eq=False)
class StatusSource:
    """
    What the collector reads of a runtime: its status (given here), and
    what the admin keeps (its refusal counts).
    """

    current: ProcessStatus
    reactor: MemoryReactorClock = field(factory=MemoryReactorClock)
    pid: int = 100
    admin: AdminState = field(factory=AdminState)

    def status(self) -> ProcessStatus:
        return self.current


def exposition(status: ProcessStatus) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(StatusSource(status)))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """
    The samples called C{name}, by their sorted labels.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def group(*workers: WorkerStatus, **changes: object) -> ProcessStatus:
    return ProcessStatus(
        pid=100, generation=2, servers=SERVERS, role="master", workers=workers, **changes  # type: ignore[arg-type]
    )


class WorkerSeriesTests(SynchronousTestCase):
    def test_one_series_per_slot(self) -> None:
        """
        Each slot has its worker's pid, generation, requests, memory and
        heartbeat age; the pid is a value, never a label.
        """
        text = exposition(
            group(
                WorkerStatus(pid=1201, slot=0, generation=2, ready=True, requests=25,
                             rss_mib=50.5, last_heartbeat=0.25, started_at=10.0),
                WorkerStatus(pid=1202, slot=1, generation=1, ready=True, requests=15,
                             rss_mib=64.0, last_heartbeat=0.5, started_at=11.0),
            )
        )
        self.assertIn('graceful_worker_pid{slot="0"} 1201.0', text)
        self.assertIn('graceful_worker_pid{slot="1"} 1202.0', text)
        self.assertIn('graceful_worker_generation{slot="1"} 1.0', text)
        self.assertIn('graceful_worker_requests_total{slot="0"} 25.0', text)
        self.assertIn('graceful_worker_resident_memory_bytes{slot="1"} 6.7108864e+07', text)
        self.assertIn('graceful_worker_heartbeat_age_seconds{slot="0"} 0.25', text)
        self.assertIn('graceful_worker_ready{slot="0"} 1.0', text)
        self.assertIn('graceful_workers{state="serving"} 2.0', text)
        for line in text.splitlines():
            if line.startswith("graceful_"):
                self.assertNotIn("pid=", line)
                self.assertNotIn("1201", line.split(" ")[0])

    def test_a_slot_being_replaced(self) -> None:
        """
        While a slot has two workers, its series follow the one that
        serves: the old one until its successor is ready, then the
        successor, and never two series for one slot.
        """
        old = WorkerStatus(pid=1201, slot=0, generation=1, ready=True, requests=90,
                           rss_mib=80.0, last_heartbeat=0.1, started_at=10.0)
        new = WorkerStatus(pid=1301, slot=0, generation=2, ready=False, started_at=20.0)
        starting = exposition(group(old, new))
        self.assertEqual(samples(starting, "graceful_worker_pid"), {(("slot", "0"),): 1201.0})
        self.assertEqual(
            samples(starting, "graceful_workers"),
            {(("state", "draining"),): 0.0, (("state", "serving"),): 1.0, (("state", "starting"),): 1.0},
        )
        # The successor serves; the old one drains.
        handed = exposition(
            group(
                WorkerStatus(pid=1201, slot=0, generation=1, ready=True, draining=True,
                             requests=91, started_at=10.0),
                WorkerStatus(pid=1301, slot=0, generation=2, ready=True, requests=0,
                             last_heartbeat=0.0, started_at=20.0),
            )
        )
        self.assertEqual(samples(handed, "graceful_worker_pid"), {(("slot", "0"),): 1301.0})
        self.assertEqual(samples(handed, "graceful_worker_generation"), {(("slot", "0"),): 2.0})
        self.assertEqual(samples(handed, "graceful_worker_requests_total"), {(("slot", "0"),): 0.0})
        # Not reported yet: no memory series rather than a made-up 0.
        self.assertEqual(samples(handed, "graceful_worker_resident_memory_bytes"), {})

    def test_a_starting_worker_has_no_heartbeat_age(self) -> None:
        text = exposition(group(WorkerStatus(pid=1, slot=0, generation=1, started_at=1.0)))
        self.assertEqual(samples(text, "graceful_worker_heartbeat_age_seconds"), {})
        self.assertEqual(samples(text, "graceful_worker_ready"), {(("slot", "0"),): 0.0})

    def test_replacements(self) -> None:
        """
        Why each slot was last replaced, and the group's counts.
        """
        text = exposition(
            group(
                WorkerStatus(pid=1, slot=0, generation=1, ready=True),
                WorkerStatus(pid=2, slot=1, generation=1, ready=True),
                worker_deaths=3,
                worker_recycles=2,
                worker_timeouts=1,
                last_replaced_reason={0: "memory", 1: "timeout"},
            )
        )
        self.assertEqual(
            samples(text, "graceful_worker_last_replaced"),
            {(("reason", "memory"), ("slot", "0")): 1.0, (("reason", "timeout"), ("slot", "1")): 1.0},
        )
        self.assertIn("graceful_worker_deaths_total 3.0", text)
        self.assertIn("graceful_worker_recycles_total 2.0", text)
        self.assertIn("graceful_worker_timeouts_total 1.0", text)
        # This master does not count by reason: no series that would say 0.
        self.assertEqual(samples(text, "graceful_worker_replacements_total"), {})

    def test_replacements_by_reason(self) -> None:
        """
        A master that counts replacements by reason shows every reason.
        """
        text = exposition(
            group(
                WorkerStatus(pid=1, slot=0, generation=1, ready=True),
                worker_replacements={"roll": 4, "died": 1},
            )
        )
        self.assertEqual(
            samples(text, "graceful_worker_replacements_total"),
            {
                (("reason", "roll"),): 4.0,
                (("reason", "recycle"),): 0.0,
                (("reason", "memory"),): 0.0,
                (("reason", "timeout"),): 0.0,
                (("reason", "died"),): 1.0,
            },
        )

    def test_serving_alone(self) -> None:
        """
        A process serving alone has no worker series at all.
        """
        text = exposition(ProcessStatus(pid=100, generation=1, servers=SERVERS))
        self.assertNotIn("graceful_worker", text)
        self.assertNotIn("graceful_workers", text)
        self.assertIn('graceful_requests_total{server="web"} 40.0', text)


class ServerSeriesTests(SynchronousTestCase):
    """
    Per server: responses by status class, the request duration histogram
    (also summed over a group's workers), and the build's versions.
    """

    def test_responses_and_durations(self) -> None:
        counts = [0] * (len(DURATION_BUCKETS) + 1)
        counts[0], counts[DURATION_BUCKETS.index(0.5)], counts[-1] = 3, 1, 1
        server = ServerStatus(
            "web", in_flight=0, requests=5,
            responses={"2xx": 4, "5xx": 1}, duration_counts=tuple(counts), duration_sum=12.5,
        )
        text = exposition(ProcessStatus(pid=100, generation=1, servers=(server,)))
        self.assertEqual(samples(text, "graceful_responses_total"), {
            (("server", "web"), ("status", kind)): value
            for kind, value in (("1xx", 0), ("2xx", 4), ("3xx", 0), ("4xx", 0), ("5xx", 1))
        })
        buckets = samples(text, "graceful_request_duration_seconds_bucket")
        self.assertEqual(buckets[(("le", "0.005"), ("server", "web"))], 3)
        self.assertEqual(buckets[(("le", "0.25"), ("server", "web"))], 3)
        self.assertEqual(buckets[(("le", "0.5"), ("server", "web"))], 4)
        self.assertEqual(buckets[(("le", "+Inf"), ("server", "web"))], 5)
        self.assertEqual(samples(text, "graceful_request_duration_seconds_count"),
                         {(("server", "web"),): 5})
        self.assertEqual(samples(text, "graceful_request_duration_seconds_sum"),
                         {(("server", "web"),): 12.5})

    def test_refused_per_server(self) -> None:
        """
        Requests refused beyond limit_concurrency, per server, 0 until one
        is; none from a node that does not count them.
        """
        servers = (
            ServerStatus("web", requests=5, refused={"limit_concurrency": 2}),
            ServerStatus("api", requests=1, refused={}),
            ServerStatus("old", requests=1),
        )
        text = exposition(ProcessStatus(pid=100, generation=1, servers=servers))
        self.assertEqual(samples(text, "graceful_refused_total"), {
            (("reason", "limit_concurrency"), ("server", "web")): 2,
            (("reason", "limit_concurrency"), ("server", "api")): 0,
        })

    def test_connections_of_a_group(self) -> None:
        server = ServerStatus("web", requests=5, connections={"http/1.1": 3})
        text = exposition(ProcessStatus(
            pid=100, generation=2, servers=(server,), role="master", workers=(),
        ))
        self.assertEqual(samples(text, "graceful_connections"),
                         {(("kind", "http/1.1"), ("server", "web")): 3})

    def test_build_info(self) -> None:
        import platform

        import twisted

        text = exposition(group())
        [(labels, value)] = samples(text, "graceful_build_info").items()
        labels_ = dict(labels)
        self.assertEqual(value, 1.0)
        self.assertEqual((labels_["python"], labels_["twisted"]),
                         (platform.python_version(), twisted.__version__))
        self.assertTrue(labels_["version"])
