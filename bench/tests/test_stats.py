"""siplb_bench.stats on small hand-made inputs: the statistics the reports are made of and
the parsers of SIPp's, perf's, callgrind's and heaptrack's files, fed lines modelled on
what those tools write (the shapes the parsers rely on, not whole real files)."""

import math
import unittest

from siplb_bench import stats


def trace(*rows):
    """Lines of a SIPp short message trace (-trace_shortmsg): tab-separated date, time,
    epoch seconds with microseconds, S(ent) or R(eceived), Call-ID, CSeq, first line."""
    return [f"2026-12-04\t15:08:12.000000\t{t:.6f}\t{way}\t{callid}\t{cseq}\t{first}\n"
            for t, way, callid, cseq, first in rows]


class Percentiles(unittest.TestCase):
    def test_empty_is_nan(self):
        self.assertTrue(math.isnan(stats.pct([], 50)))

    def test_nearest_rank_on_unsorted_input(self):
        vals = [40, 10, 30, 20]
        self.assertEqual(stats.pct(vals, 0), 10)
        self.assertEqual(stats.pct(vals, 50), 20)
        self.assertEqual(stats.pct(vals, 99), 40)
        self.assertEqual(stats.pct(vals, 100), 40)
        self.assertEqual(vals, [40, 10, 30, 20])  # the caller's list is left as it was

    def test_hundred_values(self):
        vals = list(range(1, 101))
        self.assertEqual(stats.pct(vals, 50), 50)
        self.assertEqual(stats.pct(vals, 90), 90)
        # round() rounds half to even: rank round(99.5) = 100, the largest value.
        self.assertEqual(stats.pct(vals, 99), 100)

    def test_one_value(self):
        for q in (0, 50, 99, 100):
            self.assertEqual(stats.pct([7.5], q), 7.5)


class Slope(unittest.TestCase):
    def test_straight_line(self):
        points = [(x, 1_000_000 + 1500 * x) for x in range(0, 5000, 1000)]
        self.assertEqual(stats.slope(points), 1500)

    def test_noise_around_a_line(self):
        # Noise that does not tilt the line (uncorrelated with x): the slope stays 1955.
        noise = [50, -100, 0, 100, -50]
        points = [(x, 1_000_000 + 1955 * x + e) for x, e in zip(range(0, 5000, 1000), noise)]
        self.assertEqual(stats.slope(points), 1955)
        # Rounded to whole bytes per call.
        self.assertEqual(stats.slope([(0, 100), (1000, 2150), (2000, 3950), (3000, 6050), (4000, 7900)]), 2)

    def test_too_few_points_or_too_short_a_span(self):
        self.assertEqual(stats.slope([(x, x) for x in range(0, 4000, 1000)]), "")
        self.assertEqual(stats.slope([(x, x) for x in range(0, 500, 100)]), "")
        self.assertEqual(stats.slope([]), "")


def row(system, rate, clean=True, **kw):
    r = {"system": system, "rate": rate, "clean": clean, "achieved_rate": float(rate),
         "cpu_s_per_1000_calls": 0.5, "kernel_cpu_s_per_1000_calls": 0.2, "balancer_cpu_pct": 10.0, "sipp_cpu_s": 2.0, "wall_s": 10.0,
         "cpu_pressure_pct": 1.0, "setup_p50_ms": 1.0, "setup_p99_ms": 2.0, "spread": "25/25/25/25",
         "late_provisional": 0, "udp_drops_balancer": 0, "udp_drops_uas": 0, "udp_drops_uac": 0,
         "why_not_clean": "" if clean else "1 calls failed"}
    r.update(kw)
    return r


class Summarise(unittest.TestCase):
    def setUp(self):
        self.rows = [
            row("siplb", 100, cpu_s_per_1000_calls=0.4, setup_p99_ms=3.0, spread="10/20/30/40"),
            row("kamailio", 100, cpu_s_per_1000_calls=0.9),
            row("siplb", 100, cpu_s_per_1000_calls=0.6, setup_p99_ms=1.0, spread="10/20/30/40",
                late_provisional=2, udp_drops_uas=5),
            row("siplb", 100, cpu_s_per_1000_calls=0.5, setup_p99_ms=2.0, spread="20/20/20/40",
                sipp_cpu_s=4.0, udp_drops_uac=1),
            row("siplb", 200, clean=False, udp_drops_balancer=3),
            row("siplb", 200, clean=False, why_not_clean="12 retransmissions"),
        ]

    def test_medians_per_system_and_step(self):
        out = stats.summarise(self.rows, ["siplb", "kamailio"])
        self.assertEqual([(s["system"], s["rate"]) for s in out],
                         [("siplb", 100), ("siplb", 200), ("kamailio", 100)])
        s100 = out[0]
        self.assertEqual((s100["trials"], s100["clean_trials"]), (3, 3))
        self.assertEqual(s100["cpu_s_per_1000_calls"], 0.5)
        self.assertEqual(s100["setup_p99_ms"], 2.0)
        self.assertEqual(s100["sipp_cpu_pct"], 20.0)  # median of 20, 20, 40 %
        # Calls per destination summed over the trials (40/60/80/120), as shares.
        self.assertEqual(s100["spread_pct"], "13.3/20.0/26.7/40.0")
        self.assertEqual(s100["late_provisional"], 2)
        self.assertEqual(s100["udp_drops"], "0/5/1")  # balancer/destinations/caller
        self.assertEqual(s100["why_not_clean"], "")

    def test_reasons_of_a_step_not_clean(self):
        s200 = stats.summarise(self.rows, ["siplb"])[1]
        self.assertEqual((s200["trials"], s200["clean_trials"]), (2, 0))
        self.assertEqual(s200["why_not_clean"], "1 calls failed; 12 retransmissions")
        self.assertEqual(s200["udp_drops"], "3/0/0")

    def test_peak_is_the_highest_step_clean_in_every_trial(self):
        out = stats.summarise(self.rows, ["siplb", "kamailio"])
        self.assertEqual(stats.peak(out, "siplb")["rate"], 100)
        self.assertEqual(stats.peak(out, "kamailio")["rate"], 100)
        self.assertIsNone(stats.peak(out, "direct"))
        clean_200 = self.rows[:4] + [row("siplb", 200), row("siplb", 400, clean=False)]
        self.assertEqual(stats.peak(stats.summarise(clean_200, ["siplb"]), "siplb")["rate"], 200)


class Ratios(unittest.TestCase):
    def test_each_step_both_ran_with_the_kernel_floor(self):
        rows = [
            row("siplb", 100, cpu_s_per_1000_calls=0.3, kernel_cpu_s_per_1000_calls=0.15,
                cpu_s_per_1000_calls_ticks=0.3),
            row("kamailio", 100, cpu_s_per_1000_calls=0.4, kernel_cpu_s_per_1000_calls=0.16,
                cpu_s_per_1000_calls_ticks=0.375),
            row("siplb", 200, cpu_s_per_1000_calls=0.2, kernel_cpu_s_per_1000_calls=0.1),
            row("kamailio", 200, clean=False, cpu_s_per_1000_calls=0.5),
            row("siplb", 400),  # Kamailio did not run this step: no ratio
        ]
        out = stats.ratios(stats.summarise(rows, ["siplb", "kamailio"]))
        self.assertEqual([r["rate"] for r in out], [100, 200])
        self.assertAlmostEqual(out[0]["ratio"], 0.75)
        self.assertAlmostEqual(out[0]["kernel_ratio"], 0.375)
        self.assertAlmostEqual(out[0]["ticks_ratio"], 0.8)
        # Rows from before the ticks' figure was written beside the precise one.
        self.assertTrue(math.isnan(out[1]["ticks_ratio"]))
        self.assertTrue(out[0]["clean"])
        self.assertAlmostEqual(out[1]["ratio"], 0.4)
        self.assertAlmostEqual(out[1]["kernel_ratio"], 0.2)
        self.assertFalse(out[1]["clean"])

    def test_a_peer_that_used_no_cpu_gives_no_ratio(self):
        rows = [row("siplb", 100), row("kamailio", 100, cpu_s_per_1000_calls=0.0)]
        self.assertEqual(stats.ratios(stats.summarise(rows, ["siplb", "kamailio"])), [])


class KernelShare(unittest.TestCase):
    def test_kernel_samples_over_all_samples(self):
        lines = ["# Samples: 1K of event 'cpu-clock'\n", "\n",
                 "    51.79%  [kernel.kallsyms]\n", "    40.00%  siplb\n", "     8.21%  libc.so.6\n"]
        self.assertAlmostEqual(stats.kernel_share(lines), 0.5179)

    def test_no_samples_is_none(self):
        self.assertIsNone(stats.kernel_share(["# no samples\n", "\n"]))


class Fmt(unittest.TestCase):
    def test_numbers(self):
        self.assertEqual(stats.fmt(0.12345), "0.123")
        self.assertEqual(stats.fmt(1234.5, 0), "1234")  # format's rounding: half to even
        self.assertEqual(stats.fmt(float("nan")), "-")
        self.assertEqual(stats.fmt(3), "3")
        self.assertEqual(stats.fmt("10/20"), "10/20")


class SippStatistics(unittest.TestCase):
    # -trace_stat: ';'-separated, a header line, then one line per -fd interval, and a
    # trailing ';' on every line.
    HEAD = "StartTime;CurrentTime;IncomingCall(C);SuccessfulCall(C);FailedCall(C);Retransmissions(C);\n"

    def test_last_line_by_header(self):
        lines = [self.HEAD,
                 "2026-12-04\t15:08:12;2026-12-04\t15:08:13;0;10;0;0;\n",
                 "\n",
                 "2026-12-04\t15:08:12;2026-12-04\t15:08:22;0;500;1;7;\n"]
        st = stats.last_stat_row(lines)
        self.assertEqual(st["SuccessfulCall(C)"], "500")
        self.assertEqual(stats.stat_int(st, "SuccessfulCall(C)"), 500)
        self.assertEqual(stats.stat_int(st, "Retransmissions(C)"), 7)
        self.assertEqual(stats.stat_int(st, "FailedCall(C)"), 1)

    def test_no_data_line_yet(self):
        self.assertEqual(stats.last_stat_row([self.HEAD]), {})
        self.assertEqual(stats.last_stat_row([]), {})

    def test_stat_int_of_missing_empty_or_odd_values(self):
        d = {"a": "", "b": "x", "c": "12"}
        self.assertEqual([stats.stat_int(d, k) for k in ("a", "b", "c", "missing")], [0, 0, 12, 0])


class SetupLatencies(unittest.TestCase):
    def setUp(self):
        self.lines = trace(
            (100.000, "S", "a@x", "1 INVITE", "INVITE sip:1000@127.0.0.1:5060 SIP/2.0"),
            (100.001, "R", "a@x", "1 INVITE", "SIP/2.0 100 Trying"),
            (100.005, "S", "a@x", "1 INVITE", "INVITE sip:1000@127.0.0.1:5060 SIP/2.0"),  # sent again
            (100.010, "R", "a@x", "1 INVITE", "SIP/2.0 200 OK"),
            (100.100, "S", "b@x", "1 INVITE", "INVITE sip:1001@127.0.0.1:5060 SIP/2.0"),
            (100.102, "R", "b@x", "1 INVITE", "SIP/2.0 200 OK"),
            (100.103, "R", "b@x", "1 INVITE", "SIP/2.0 180 Ringing"),  # overtaken by its 200
            (100.150, "S", "b@x", "2 BYE", "BYE sip:1001@127.0.0.11:5060 SIP/2.0"),
            (100.151, "R", "b@x", "2 BYE", "SIP/2.0 200 OK"),  # a BYE's 200 is no setup
            (100.200, "S", "c@x", "1 INVITE", "INVITE sip:1002@127.0.0.1:5060 SIP/2.0"),  # never answered
        ) + ["a line SIPp did not write\n", "\n"]

    def test_setup_time_from_the_first_transmission(self):
        lat, path_lat, rate, late = stats.setup_latencies(self.lines)
        self.assertEqual(len(lat), 2)
        self.assertAlmostEqual(lat[0], 10.0, places=6)
        self.assertAlmostEqual(lat[1], 2.0, places=6)
        self.assertEqual(path_lat, [])
        # Three calls started over 0.2 s: two intervals.
        self.assertAlmostEqual(rate, 10.0, places=6)
        self.assertEqual(late, 1)

    def test_path_share_with_the_destinations_hold(self):
        lat, path_lat, _rate, _late = stats.setup_latencies(self.lines, hold={"a@x": 4.0})
        self.assertEqual(len(path_lat), 1)
        self.assertAlmostEqual(path_lat[0], 6.0, places=6)

    def test_nothing_sent(self):
        self.assertEqual(stats.setup_latencies([]), ([], [], 0.0, 0))

    def test_destination_hold(self):
        uas1 = trace(
            (200.000, "R", "a@x", "1 INVITE", "INVITE sip:1000@127.0.0.11:5060 SIP/2.0"),
            (200.001, "R", "a@x", "1 INVITE", "INVITE sip:1000@127.0.0.11:5060 SIP/2.0"),  # again
            (200.004, "S", "a@x", "1 INVITE", "SIP/2.0 200 OK"),
            (200.500, "S", "a@x", "1 INVITE", "SIP/2.0 200 OK"),  # sent again: not a new hold
        )
        uas2 = trace(
            (200.010, "R", "b@x", "1 INVITE", "INVITE sip:1001@127.0.0.12:5060 SIP/2.0"),
            (200.011, "S", "b@x", "1 INVITE", "SIP/2.0 180 Ringing"),
            (200.013, "S", "b@x", "1 INVITE", "SIP/2.0 200 OK"),
            (200.020, "S", "z@x", "1 INVITE", "SIP/2.0 200 OK"),  # INVITE never seen
        )
        hold = stats.uas_hold_ms(uas1 + uas2)
        self.assertEqual(sorted(hold), ["a@x", "b@x"])
        self.assertAlmostEqual(hold["a@x"], 4.0, places=6)
        self.assertAlmostEqual(hold["b@x"], 3.0, places=6)


class ResponseTimes(unittest.TestCase):
    def test_rtt_file(self):
        lines = ["Date_ms;response_time_ms;rtd_no\n",
                 "1733324892123;12.000000;1\n",
                 "1733324892223;3.000000;1\n",
                 "\n"]
        self.assertEqual(stats.rtd_values(lines), [12.0, 3.0])


class Profilers(unittest.TestCase):
    def test_perf_stat_csv(self):
        lines = ["# started on Fri Dec  4 15:08:12 2026\n",
                 "\n",
                 "1523.45,msec,task-clock,1523450000,100.00,0.152,CPUs utilized\n",
                 "20345,,context-switches,1523450000,100.00,13.355,K/sec\n",
                 "<not counted>,,cpu-migrations,0,100.00,,\n",
                 "61234,,raw_syscalls:sys_enter,1523450000,100.00,,\n"]
        self.assertEqual(stats.perf_counters(lines),
                         {"task-clock": 1523.45, "context-switches": 20345.0, "raw_syscalls:sys_enter": 61234.0})

    def test_callgrind_self_inclusive_and_calls(self):
        lines = ["version: 1\n", "events: Ir\n",
                 "fl=(1) src/main.rs\n",
                 "fn=(1) siplb::main\n",
                 "10 100\n",
                 "cfn=(2) siplb::parse\n",
                 "calls=3 20\n",
                 "11 500\n",  # inclusive cost of those 3 calls
                 "+1 7\n",
                 "fn=(2)\n",   # named before: compressed to its number
                 "20 450\n",
                 "cfn=(3) memcpy\n",
                 "calls=1 0\n",
                 "21 50\n",
                 "fn=(3)\n",
                 "* 50\n",
                 "\n", "totals: 657\n"]
        self.assertEqual(stats.callgrind_functions(lines), {
            "siplb::main": [107, 607, 0],
            "siplb::parse": [450, 500, 3],
            "memcpy": [50, 50, 1],
        })

    def test_heaptrack_stacks_by_allocating_path(self):
        lines = ["main;tokio::run;poll<> (raw.rs);siplb::on_invite;siplb::Dialog::new;alloc::alloc 300\n",
                 "main;tokio::run;poll<> (raw.rs);siplb::on_invite;siplb::Dialog::new;with_capacity<> 100\n",
                 "main;siplb::load_config;__rust_alloc 40\n"]
        self.assertEqual(stats.heap_by_path(lines), {
            "siplb::on_invite > siplb::Dialog::new": 400,
            "main > siplb::load_config": 40,
        })


if __name__ == "__main__":
    unittest.main()
