import unittest

from siplb_bench.wakeups import analyse, describe, parse

# `perf script -F comm,tid,cpu,time,event,trace` as perf 6.1 writes it: the core sends
# four times. The first send wakes a SIPp onto the core's CPU; the second wakes one whose
# wake-up is queued to the other CPU and traced there after the send returned; the third
# wakes nobody; the fourth (sendmmsg) wakes two, one of them on the other CPU. A SIPp on
# CPU 0 wakes the core, which the kernel moves to CPU 1; the idle task of CPU 0 wakes it
# back there.
TRACE = """\
      siplb-core   100 [000]  1000.000010:  syscalls:sys_enter_sendto: fd: 0x0000000f, len: 0x1db
      siplb-core   100 [000]  1000.000012:        sched:sched_waking: comm=sipp pid=201 prio=120 target_cpu=000
      siplb-core   100 [000]  1000.000014:        sched:sched_wakeup: comm=sipp pid=201 prio=120 target_cpu=000
      siplb-core   100 [000]  1000.000023:   syscalls:sys_exit_sendto: 0x1db
            sipp   201 [000]  1000.000100:        sched:sched_waking: comm=siplb-core pid=100 prio=120 target_cpu=000
            sipp   201 [000]  1000.000101: sched:sched_migrate_task: comm=siplb-core pid=100 prio=120 orig_cpu=0 dest_cpu=1
            sipp   201 [000]  1000.000102:        sched:sched_wakeup: comm=siplb-core pid=100 prio=120 target_cpu=001
      siplb-core   100 [001]  1000.000200:  syscalls:sys_enter_sendto: fd: 0x0000000f, len: 0x133
      siplb-core   100 [001]  1000.000203:        sched:sched_waking: comm=sipp pid=202 prio=120 target_cpu=000
      siplb-core   100 [001]  1000.000225:   syscalls:sys_exit_sendto: 0x133
         swapper     0 [000]  1000.000230:        sched:sched_wakeup: comm=sipp pid=202 prio=120 target_cpu=000
      siplb-core   100 [001]  1000.000300:  syscalls:sys_enter_sendto: fd: 0x0000000f, len: 0x28c
      siplb-core   100 [001]  1000.000306:   syscalls:sys_exit_sendto: 0x28c
         swapper     0 [000]  1000.000400:        sched:sched_waking: comm=siplb-core pid=100 prio=120 target_cpu=001
         swapper     0 [000]  1000.000401:        sched:sched_wakeup: comm=siplb-core pid=100 prio=120 target_cpu=000
      siplb-core   100 [000]  1000.000500: syscalls:sys_enter_sendmmsg: fd: 0x0000000f, vlen: 0x2
      siplb-core   100 [000]  1000.000502:        sched:sched_waking: comm=sipp pid=203 prio=120 target_cpu=000
      siplb-core   100 [000]  1000.000503:        sched:sched_wakeup: comm=sipp pid=203 prio=120 target_cpu=000
      siplb-core   100 [000]  1000.000504:        sched:sched_waking: comm=sipp pid=204 prio=120 target_cpu=001
      siplb-core   100 [000]  1000.000530: syscalls:sys_exit_sendmmsg: 0x2
         swapper     0 [001]  1000.000531:        sched:sched_wakeup: comm=sipp pid=204 prio=120 target_cpu=001
            sipp   203 [000]  1000.000600:  syscalls:sys_enter_sendto: fd: 0x00000003, len: 0x100
            sipp   203 [000]  1000.000610:   syscalls:sys_exit_sendto: 0x100
not a line of perf's
"""


class WakeupsTest(unittest.TestCase):
    def test_sends_are_told_apart_by_where_what_they_woke_ran(self):
        report = analyse(parse(TRACE), "siplb-core")
        took = {kind: sorted(round(t) for t in v) for kind, v in report.sends.items()}
        self.assertEqual(took, {"same CPU": [13], "other CPU": [25, 30], "nothing": [6]})

    def test_wakers_and_moves_of_the_watched_thread_are_counted(self):
        report = analyse(parse(TRACE), "siplb-core")
        self.assertEqual(dict(report.woken_by),
                         {("sipp", "other CPU"): 1, ("swapper", "same CPU"): 1})
        self.assertEqual(report.migrations, 1)
        self.assertAlmostEqual(report.seconds, 0.0006, places=6)

    def test_other_threads_sends_are_left_out(self):
        report = analyse(parse(TRACE), "sipp")
        self.assertEqual({k: len(v) for k, v in report.sends.items()}, {"nothing": 1})

    def test_the_text_gives_counts_per_call_at_the_rate_given(self):
        text = describe(analyse(parse(TRACE), "siplb-core"), "siplb-core", 100)
        self.assertIn("other CPU       2 (50.0%", text)
        self.assertIn("migrations between CPUs: 1", text)

    def test_an_empty_trace_reports_nothing_and_does_not_fail(self):
        text = describe(analyse(parse(""), "siplb-core"), "siplb-core", 100)
        self.assertIn("0.0 s traced", text)


if __name__ == "__main__":
    unittest.main()
