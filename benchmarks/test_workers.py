"""
The workers section of the benchmark: which counts it measures, how it turns
rounds into the target's verdict and the scaling factors, and what its table
says.  Pure functions on made-up rounds: no server, no wrk.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase as TestCase

from benchmarks import workers
from benchmarks.__main__ import parse


Runs = dict[str, dict[int, list[dict | None]]]


def _run(rps: float) -> dict:
    return {"rps": rps, "requests": int(rps * 4), "failed": 0, "p99_ms": 1.0,
            "cpu_us_per_request": 40.0, "busy": 1}


class CountsTests(TestCase):
    def test_powers_of_two_up_to_the_cores(self) -> None:
        """
        1, 2, 4, ... up to the cores, the core count itself when it is not a
        power of two, and 2 (the target's count) even on one core.
        """
        self.assertEqual(workers.default_counts(2), [1, 2])
        self.assertEqual(workers.default_counts(16), [1, 2, 4, 8, 16])
        self.assertEqual(workers.default_counts(6), [1, 2, 4, 6])
        self.assertEqual(workers.default_counts(1), [1, 2])

    def test_wrk_shares(self) -> None:
        """
        wrk shares the cores when the serving processes and its threads
        outnumber them: always on 2 cores with 2 threads.
        """
        self.assertTrue(workers.wrk_shares(1, 2, 2))
        self.assertTrue(workers.wrk_shares(2, 2, 2))
        self.assertFalse(workers.wrk_shares(8, 4, 16))
        self.assertTrue(workers.wrk_shares(16, 4, 16))

    def test_rounds_pair_graceful_with_the_reference(self) -> None:
        """
        Every round runs each count's graceful and reference back to back,
        the count order rotating and which of the pair goes first
        alternating, so neither is always measured first.
        """
        rounds = [workers.round_order([1, 2, 4], r) for r in range(6)]
        for order in rounds:
            self.assertEqual(sorted(order), sorted((k, n) for k in workers.KINDS for n in (1, 2, 4)))
            for i in range(0, len(order), 2):
                self.assertEqual(order[i][1], order[i + 1][1])
        self.assertEqual([o[0][1] for o in rounds[:3]], [1, 2, 4])
        for counts in ([1, 2], [1, 2, 4]):
            for n in counts:
                firsts = [
                    next(o[i][0] for i in range(0, len(o), 2) if o[i][1] == n)
                    for o in (workers.round_order(counts, r) for r in range(4))
                ]
                self.assertEqual(firsts[0::2], [firsts[0]] * 2)
                self.assertNotEqual(firsts[0], firsts[1])

    def test_bad_counts_are_refused(self) -> None:
        """
        --workers takes positive numbers only.
        """
        self.assertEqual(parse(["--workers", "4,1,2"]).worker_counts, [1, 2, 4])
        for bad in ("0,2", "two", ""):
            with self.assertRaises(SystemExit):
                parse(["--workers", bad])


class SummaryTests(TestCase):
    def test_target_ratio_is_the_median_of_round_ratios(self) -> None:
        """
        graceful ÷ plain at workers = 2 is taken round by round, the median
        decides against 95%, and a round where one of the pair has no wrk
        result is left out of the pairing.
        """
        runs: Runs = {
            "graceful": {1: [_run(100), _run(100), _run(100)],
                         2: [_run(90), _run(150), None]},
            "plain": {1: [_run(100), _run(100), _run(100)],
                      2: [_run(100), _run(160), _run(1000)]},
        }
        summary = workers.summarise(runs, [1, 2], cores=2, threads=2)
        target = summary["target"]
        self.assertEqual(target["ratio_runs"], [0.9, 0.938])
        self.assertAlmostEqual(target["ratio"], (0.9 + 150 / 160) / 2)
        self.assertFalse(target["met"])
        [one, two] = summary["rows"]
        self.assertEqual(two["graceful"]["scale_runs"], [0.9, 1.5])
        self.assertEqual(two["graceful"]["median"], 120)
        self.assertEqual((two["graceful"]["min"], two["graceful"]["max"]), (90, 150))
        self.assertTrue(two["wrk_shares_cores"])

        runs["graceful"][2] = [_run(96), _run(160), None]
        self.assertTrue(workers.summarise(runs, [1, 2], 2, 2)["target"]["met"])

    def test_per_doubling(self) -> None:
        """
        The factor per doubling compounds to the measured one: 2.25x at 4
        workers is 1.5x per doubling.
        """
        self.assertAlmostEqual(workers.per_doubling(2.25, 4), 1.5)
        self.assertAlmostEqual(workers.per_doubling(1.4, 2), 1.4)
        self.assertIsNone(workers.per_doubling(1.0, 1))
        self.assertIsNone(workers.per_doubling(None, 4))

    def test_table_says_when_wrk_shares_and_never_rounds_up_a_failure(self) -> None:
        """
        The table's target line shows one decimal, so 94.9% is not printed
        as a failed "95%", and each row says whether wrk shared the cores.
        """
        runs: Runs = {
            "graceful": {1: [_run(100)], 2: [_run(94.9)], 4: [_run(200)]},
            "plain": {1: [_run(100)], 2: [_run(100)], 4: [_run(210)]},
        }
        report = {
            "cores": 4, "counts": [1, 2, 4], "rounds": 1, "duration": 4.0,
            "connections": 64, "threads": 2, "restarts": [], "restart_duration": 15.0,
            **workers.summarise(runs, [1, 2, 4], cores=4, threads=2),
        }
        text = "\n".join(workers.tables(report))
        self.assertIn("**94.9%, not met**", text)
        self.assertIn("| no |", text)  # 1 + 2 threads on 4 cores
        self.assertIn("yes: 4 + 2 wrk threads on 4 cores", text)
        self.assertIn("| 2.00 / 2.10 | 1.41 / 1.45 |", text)
        self.assertIn("| 0.95 / 1.00 |", text)
