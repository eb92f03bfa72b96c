"""The bench's fixed layout: where its files are, the loopback addresses and ports of the
balancers, the SIPp destinations and the caller, and the tuning the systems run with.

Constants only (tuples, not lists, so that nothing here can be changed by a run); what
differs from one run to the next is in the run's context (context.py).
"""

import os
from types import MappingProxyType

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
SCENARIOS = os.path.join(BENCH, "scenarios")
UAS_IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14")
UAS_PORT = 5060
SIPLB = ("127.0.0.1", 5060)
KAMAILIO = ("127.0.0.1", 5070)
# A UDP relay that reads nothing (socat) in front of the first destination: the latency
# any process in the path adds on this machine, whatever it does with the messages.
RELAY = ("127.0.0.1", 5080)
UAC_IP = "127.0.0.1"
# SIPp's own socket buffers (its default, 64 KB, overflowed at the caller from 1750
# calls/s on: SIPp, not the balancer, was then the limit). The kernel caps it at
# net.core.rmem_max.
SIPP_BUFFER = 1 << 20
# Kamailio's shared memory pool (its transactions live there, and stay 5 s after they
# end): 256 MB ran out at 1750 calls/s ("out of mem" in tm, calls refused with 500).
# Tuned as an operator who cares about speed runs it: 4 GB.
KAMAILIO_SHM_MB = 4096
# Kamailio tuned: the TLSF allocator for shared and private memory (the package's
# default, q_malloc, costs about three times the CPU per call) and a 4 MB receive buffer.
KAMAILIO_TUNING = ("-x", "tlsf", "-X", "tlsf", "-b", "4194304")
CAPACITY = 1000  # per destination: siplb `pstn=1000`, Kamailio `maxload=1000`

# What each command needs, and the Debian package that brings it (read-only).
PACKAGES = MappingProxyType({"sipp": "sip-tester", "kamailio": "kamailio", "sqlite3": "sqlite3",
                             "gnuplot": "gnuplot-nox", "socat": "socat", "perf": "linux-perf"})
