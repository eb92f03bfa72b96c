"""The processes on either side of the SIP traffic: the two balancers under test (siplb,
Kamailio) and the four SIPp destinations; the checks that their ports are free and that
they listen; and what must be there first (Debian packages, the siplb binary).

Every long-running process is started through the run's `Procs`, passed in: whoever
calls these owns what they start and ends it.
"""

import os
import shutil
import socket
import subprocess
import time

from siplb_bench.layout import (CAPACITY, KAMAILIO, KAMAILIO_SHM_MB, KAMAILIO_TUNING, PACKAGES, RELAY, ROOT,
                                SCENARIOS, SIPLB, SIPP_BUFFER, UAS_IPS, UAS_PORT)
from siplb_bench.log import log
from siplb_bench.procs import run
from siplb_bench.readers import read_sipp_stats
from siplb_bench.stats import stat_int
from siplb_bench.system import session_members, udp_bound

# The Kamailio side: dispatcher in call-load mode (algorithm 10: the destination with the
# fewest calls, tracked by Call-ID; `maxload` caps each one), stateful forwarding with
# tm, Record-Route, loose routing of in-dialog requests; load confirmed on the INVITE's
# 2xx, released on BYE/CANCEL and on failure, as the dispatcher README prescribes.
# A real Kamailio file (`kamailio -c -f` reads it once @CHILDREN@, @MODULES@, @IP@, @PORT@
# and @DIR@ are filled in by kamailio_cfg).
KAMAILIO_CFG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kamailio.cfg")


# ---------------------------------------------------------------- ports

def wait_bound(ip, port, p, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if udp_bound(ip, port):
            return
        if p.poll() is not None:
            raise RuntimeError(f"{what} exited with {p.returncode} before listening; see its .out file")
        time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on {ip}:{port} after {timeout}s")


def check_free(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((ip, port))
    except OSError as e:
        raise RuntimeError(f"udp {ip}:{port} is taken ({e}); is another benchmark or server running?")
    finally:
        s.close()


# ---------------------------------------------------------------- what must be there

def ensure_packages(need):
    missing = [PACKAGES[c] for c in need if shutil.which(c) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"missing {' '.join(missing)}; run as root to install them, or install them")
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    # Debian's package starts a Kamailio of its own where it can; ours uses other ports,
    # and we leave a system service alone.


def ensure_apt(pkgs):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], check=True, env=env, stdout=subprocess.DEVNULL)


def siplb_binary(args):
    if args.siplb:
        return os.path.abspath(args.siplb)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "siplb")
    if not args.no_build:
        log("cargo build --release -p siplb")
        subprocess.run(["cargo", "build", "--release", "-p", "siplb"], cwd=ROOT, check=True)
    if not os.path.exists(binary):
        raise RuntimeError(f"{binary} is missing: build it (cargo build --release -p siplb) or pass --siplb")
    return binary


# ---------------------------------------------------------------- the balancers

def siplb_rows(destinations, capacity=CAPACITY):
    """siplb's destination table: the first `destinations` SIPp destinations, in one group."""
    return "".join(
        f"INSERT INTO load_balancer (id,group_id,dst_uri,resources,probe_mode,description) "
        f"VALUES ({i + 1},1,'sip:{ip}:{UAS_PORT}','pstn={capacity}',0,'bench uas {i + 1}');"
        for i, ip in enumerate(UAS_IPS[:destinations]))


def dispatcher_list(destinations):
    """Kamailio's dispatcher.list: the same destinations as siplb_rows, in set 1."""
    lines = ["# setid destination flags priority attrs\n"]
    lines += [f"1 sip:{ip}:{UAS_PORT} 0 0 duid=uas{i + 1};maxload={CAPACITY}\n"
              for i, ip in enumerate(UAS_IPS[:destinations])]
    return "".join(lines)


def start_siplb(procs, binary, work, name="siplb", port=SIPLB[1], wrapper=(), workers=2, capacity=CAPACITY,
                *, persist, cluster=False, destinations=len(UAS_IPS)):
    """A siplb in WORK/NAME in front of the four destinations. `persist` is its [dialog]
    persist (what storing calls costs is measured by turning it off); `cluster` makes it
    a one-node [cluster] on the local Redis (what sharing the load costs)."""
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    db = os.path.join(d, "siplb.db")
    check_free(SIPLB[0], port)
    if not os.path.exists(db):
        run([binary, "db", "init", "--database", f"sqlite://{db}"])
        run(["sqlite3", db, siplb_rows(destinations, capacity)])
    cfg = os.path.join(d, "siplb.toml")
    with open(cfg, "w") as f:
        f.write(f"""[sip]
listen = ["udp:{SIPLB[0]}:{port}"]
drain = "1s"

[database]
url = "sqlite://{db}"

[probing]
interval = "0s"

[dialog]
persist = {"true" if persist else "false"}
{cluster_section(name) if cluster else ""}
[[route]]
match = {{ ruri_user = "^[0-9]+$" }}
balance = {{ group = 1, resources = "pstn" }}

[[route]]
reply = {{ code = 404, reason = "Not found" }}
""")
    # siplb's SIP core is one thread; its management interface and persistence run on a
    # tokio runtime beside it: give that as many worker threads as
    # Kamailio gets UDP worker processes (`children`).
    env = dict(os.environ, SIPLB_LOG="warn", TOKIO_WORKER_THREADS=str(workers))
    p = procs.start(name, [*wrapper, binary, "run", "--config", cfg], d, env=env)
    wait_bound(SIPLB[0], port, p, name, timeout=60 if wrapper else 15)
    return p, [p.pid]


def cluster_section(name):
    """[cluster] for a one-node cluster on the machine's Redis, under keys of its own."""
    return f"""
[cluster]
redis = "redis://127.0.0.1:6379/0"
node = "{name}"
prefix = "siplb-bench-{os.getpid()}"
"""


def kamailio_cfg(children, modules, ip, port, dir):
    """Kamailio's configuration: kamailio.cfg beside this file, a real Kamailio file whose
    @NAME@ placeholders are filled in here."""
    with open(KAMAILIO_CFG, encoding="utf-8") as f:
        cfg = f.read()
    for name, value in dict(children=children, modules=modules, ip=ip, port=port, dir=dir).items():
        cfg = cfg.replace(f"@{name.upper()}@", str(value))
    return cfg


def kamailio_argv(cfg, d, tuned):
    """Kamailio's command line: in the foreground, logging to stderr, with its files in
    `d`; tuned (TLSF, 4 MB receive buffer, KAMAILIO_SHM_MB) or on the package's defaults."""
    return (["kamailio", "-DD", "-E", "-f", cfg, "-P", os.path.join(d, "kamailio.pid"),
             "-Y", d, "-m", str(KAMAILIO_SHM_MB if tuned else 1024), "-M", "16", "-w", d]
            + (list(KAMAILIO_TUNING) if tuned else []))


def start_kamailio(procs, work, children=4, tuned=True, wrapper=(), destinations=len(UAS_IPS), slow_start=False):
    """Kamailio in WORK/kamailio in front of the destinations; `slow_start` when it runs
    under valgrind, which takes tens of seconds to bind and fork its workers."""
    d = os.path.join(work, "kamailio")
    os.makedirs(d, exist_ok=True)
    check_free(*KAMAILIO)
    with open(os.path.join(d, "dispatcher.list"), "w") as f:
        f.write(dispatcher_list(destinations))
    modules = run(["sh", "-c", "dirname $(dpkg -L kamailio | grep '/modules/tm.so$' | head -n 1)"]).strip()
    cfg = os.path.join(d, "kamailio.cfg")
    with open(cfg, "w") as f:
        f.write(kamailio_cfg(children=children, modules=modules, ip=KAMAILIO[0], port=KAMAILIO[1], dir=d))
    run(["kamailio", "-c", "-f", cfg])  # syntax check first: a clear error if it fails
    p = procs.start("kamailio", [*wrapper, *kamailio_argv(cfg, d, tuned)], d)
    wait_bound(KAMAILIO[0], KAMAILIO[1], p, "kamailio", timeout=120 if slow_start else 15)
    time.sleep(15.0 if slow_start else 1.0)  # let it fork all of its processes
    pids = [p.pid] + [pid for pid in session_members(p.pid)]
    return p, pids


def relay_argv():
    """socat listening on RELAY and sending to the first destination, the one the direct
    path calls."""
    return ["socat", "-b", "65536", f"UDP4-LISTEN:{RELAY[1]},bind={RELAY[0]},reuseaddr",
            f"UDP4:{UAS_IPS[0]}:{UAS_PORT}"]


def start_relay(procs, work, wrapper=()):
    """socat relaying UDP between the caller and the first destination, reading nothing:
    the first datagram's sender becomes its peer (a trial has one caller), and the
    destination answers the relay's own socket."""
    d = os.path.join(work, "relay")
    os.makedirs(d, exist_ok=True)
    check_free(*RELAY)
    p = procs.start("relay", [*wrapper, *relay_argv()], d)
    wait_bound(RELAY[0], RELAY[1], p, "socat relay")
    return p, [p.pid]


# ---------------------------------------------------------------- the destinations

def start_uas(procs, d, duration_hint, trace=False, wrapper=()):
    """The four destinations: SIPp UAS copying Record-Route. Fresh for every trial, so
    that their counters (calls received, retransmissions) are the trial's. `wrapper`:
    the command they run under (a CPU pinning)."""
    ps = []
    for i, ip in enumerate(UAS_IPS):
        check_free(ip, UAS_PORT)
        p = procs.start(f"uas{i + 1}", [
            *wrapper, "sipp", "-sf", os.path.join(SCENARIOS, "uas.xml"), "-i", ip, "-p", str(UAS_PORT),
            "-nostdin", "-buff_size", str(SIPP_BUFFER), "-trace_stat", "-stf", f"uas{i + 1}.csv", "-fd", "3600",
            "-trace_err", "-error_file", f"uas{i + 1}_errors.log",
            "-timeout", f"{duration_hint}s"]
            + (["-trace_shortmsg", "-shortmessage_file", f"uas{i + 1}_short.log"] if trace else []), d)
        ps.append(p)
    for ip, p in zip(UAS_IPS, ps):
        wait_bound(ip, UAS_PORT, p, f"SIPp UAS on {ip}")
    return ps


def stop_uas(procs, d, ps):
    """SIGTERM makes SIPp write its final statistics line, then exit."""
    cpu = 0.0
    counts, retrans, unexpected = [], 0, 0
    for i, p in enumerate(ps):
        _rc, c = procs.stop(p)
        cpu += c or 0.0
        st = read_sipp_stats(os.path.join(d, f"uas{i + 1}.csv"))
        counts.append(stat_int(st, "IncomingCall(C)"))
        retrans += stat_int(st, "Retransmissions(C)")
        unexpected += stat_int(st, "FailedUnexpectedMessage(C)") + stat_int(st, "FailedMaxUDPRetrans(C)")
    return counts, retrans, unexpected, cpu
