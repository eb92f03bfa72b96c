"""What --destinations, --pin and the relay change in the paths a run compares: each
balancer's destination list, the CPUs processes run on, and where the relay sends."""

import argparse
import re
import unittest

from siplb_bench import peers
from siplb_bench.context import Bench
from siplb_bench.layout import RELAY, UAS_IPS, UAS_PORT


class Destinations(unittest.TestCase):
    def test_both_balancers_get_the_first_n_destinations(self):
        for n in range(1, 5):
            rows = re.findall(r"'sip:([0-9.]+):(\d+)'", peers.siplb_rows(n))
            kamailio = re.findall(r"^1 sip:([0-9.]+):(\d+) ", peers.dispatcher_list(n), re.M)
            expected = [(ip, str(UAS_PORT)) for ip in UAS_IPS[:n]]
            self.assertEqual(rows, expected, n)
            self.assertEqual(kamailio, expected, n)

    def test_one_destination_is_the_one_the_direct_path_and_the_relay_use(self):
        self.assertIn(f"UDP4:{UAS_IPS[0]}:{UAS_PORT}", peers.relay_argv())
        self.assertIn(f"'sip:{UAS_IPS[0]}:{UAS_PORT}'", peers.siplb_rows(1))


class Relay(unittest.TestCase):
    def test_listens_where_the_caller_is_sent(self):
        argv = peers.relay_argv()
        self.assertEqual(argv[0], "socat")
        self.assertIn(f"UDP4-LISTEN:{RELAY[1]},bind={RELAY[0]},reuseaddr", argv)


class Pin(unittest.TestCase):
    def bench(self, pin, nice=0):
        return Bench(args=argparse.Namespace(pin=pin, nice=nice), procs=None, binary="", work="")

    def test_pinned_the_balancer_and_sipp_get_a_cpu_each(self):
        b = self.bench(True)
        self.assertEqual(b.balancer_wrap, ("taskset", "-c", "0"))
        self.assertEqual(b.sipp_wrap, ("taskset", "-c", "1"))

    def test_unpinned_nothing_wraps_them(self):
        b = self.bench(False)
        self.assertEqual(b.balancer_wrap, ())
        self.assertEqual(b.sipp_wrap, ())

    def test_nice_applies_to_the_balancer_alone_inside_the_pinning(self):
        b = self.bench(False, nice=-10)
        self.assertEqual(b.balancer_wrap, ("nice", "-n", "-10"))
        self.assertEqual(b.sipp_wrap, ())
        b = self.bench(True, nice=-10)
        self.assertEqual(b.balancer_wrap, ("taskset", "-c", "0", "nice", "-n", "-10"))
        self.assertEqual(b.sipp_wrap, ("taskset", "-c", "1"))


if __name__ == "__main__":
    unittest.main()
