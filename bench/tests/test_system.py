"""siplb_bench.system's CPU reading on a made-up /proc tree: a process's CPU is its
threads' scheduler nanoseconds, and its 10 ms ticks only where a thread ended, as the
kernel lays those files out (/proc/PID/stat, /proc/PID/task/TID/schedstat)."""

import os
import tempfile
import unittest

from siplb_bench import system


def write_process(proc, pid, ticks, threads):
    """/proc/PID/stat with `ticks` split as utime and stime (the name has a space and a
    parenthesis, as a thread name may), and one schedstat per thread of `threads`
    ({TID: ns})."""
    fields = ["S"] + ["0"] * 40
    fields[11], fields[12] = str(ticks - ticks // 3), str(ticks // 3)
    os.makedirs(os.path.join(proc, str(pid), "task"), exist_ok=True)
    with open(os.path.join(proc, str(pid), "stat"), "w") as f:
        f.write(f"{pid} (siplb (core)) " + " ".join(fields) + "\n")
    task = os.path.join(proc, str(pid), "task")
    for tid in os.listdir(task):
        if int(tid) not in threads:
            os.remove(os.path.join(task, tid, "schedstat"))
            os.rmdir(os.path.join(task, tid))
    for tid, ns in threads.items():
        os.makedirs(os.path.join(task, str(tid)), exist_ok=True)
        with open(os.path.join(task, str(tid), "schedstat"), "w") as f:
            f.write(f"{ns} 5000 12\n")


class CpuUsed(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.proc = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def used(self, before, after):
        for pid, (ticks, threads) in before.items():
            write_process(self.proc, pid, ticks, threads)
        s0 = system.cpu_snapshot(list(before), self.proc)
        for pid, (ticks, threads) in after.items():
            write_process(self.proc, pid, ticks, threads)
        for pid in set(before) - set(after):
            os.rename(os.path.join(self.proc, str(pid)), os.path.join(self.proc, f"gone-{pid}"))
        s1 = system.cpu_snapshot(list(before), self.proc)
        return system.cpu_used(s0, s1)

    def test_threads_nanoseconds_not_ticks(self):
        # 27.9 ms of run time on two threads that /proc/PID/stat shows as 3 ticks.
        precise, ticks = self.used({10: (100, {10: 5_000_000, 11: 1_000_000_000})},
                                   {10: (103, {10: 5_900_000, 11: 1_027_000_000})})
        self.assertAlmostEqual(precise, 0.0279, places=9)
        self.assertAlmostEqual(ticks, 3 / system.CLK_TCK, places=9)

    def test_a_thread_started_between_counts_whole(self):
        precise, _ = self.used({10: (0, {10: 1_000_000})},
                               {10: (1, {10: 2_000_000, 12: 4_000_000})})
        self.assertAlmostEqual(precise, 0.005, places=9)

    def test_a_thread_that_ended_falls_back_to_ticks(self):
        # Thread 11's run time went with it; only the process's ticks still hold it.
        precise, ticks = self.used({10: (100, {10: 1_000_000, 11: 1_000_000})},
                                   {10: (104, {10: 2_000_000})})
        self.assertAlmostEqual(precise, 4 / system.CLK_TCK, places=9)
        self.assertAlmostEqual(precise, ticks, places=9)

    def test_processes_are_summed_and_a_vanished_one_counts_nothing(self):
        precise, ticks = self.used(
            {10: (0, {10: 0}), 20: (0, {20: 1_000_000}), 30: (5, {30: 7_000_000})},
            {10: (1, {10: 3_000_000}), 20: (2, {20: 15_000_000})})
        self.assertAlmostEqual(precise, 0.017, places=9)
        self.assertAlmostEqual(ticks, 3 / system.CLK_TCK, places=9)


class Steal(unittest.TestCase):
    def test_the_eighth_column_of_the_cpu_line_in_seconds(self):
        with tempfile.TemporaryDirectory() as proc:
            with open(os.path.join(proc, "stat"), "w") as f:
                # user nice system idle iowait irq softirq steal guest guest_nice
                f.write("cpu  136080 0 28548 240453 1055 0 3873 33819 0 0\n"
                        "cpu0 68000 0 14000 120000 500 0 1900 16900 0 0\n")
            self.assertAlmostEqual(system.steal_seconds(proc), 33819 / system.CLK_TCK, places=9)

    def test_an_unreadable_stat_reads_as_nothing_stolen(self):
        with tempfile.TemporaryDirectory() as proc:
            self.assertEqual(system.steal_seconds(proc), 0.0)
            with open(os.path.join(proc, "stat"), "w") as f:
                f.write("cpu  1 2 3\n")  # an older kernel's shorter line
            self.assertEqual(system.steal_seconds(proc), 0.0)


if __name__ == "__main__":
    unittest.main()
