"""What the benchmarks read off the running machine, all from /proc: a process's CPU time,
resident memory and session, the processes of a session, CPU pressure, UDP datagrams the
kernel dropped, which UDP sockets are bound, the load average.

Reading only: nothing here starts or signals a process (procs.py does).
"""

import os
import socket

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def read_stat(pid, proc="/proc"):
    try:
        with open(f"{proc}/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    # Fields from 3 (state) on: ppid=4, session=6, utime=14, stime=15, rss=24.
    return {"ppid": int(rest[1]), "session": int(rest[3]),
            "cpu": (int(rest[11]) + int(rest[12])) / CLK_TCK, "rss": int(rest[21]) * PAGE}


def session_members(sid):
    """PIDs whose session id is `sid` (the processes a child we started has forked: each
    child is started in a new session of its own, so this never reaches anything else)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == sid:
            continue
        st = read_stat(int(d))
        if st and st["session"] == sid:
            out.append(int(d))
    return out


def thread_runtimes(pid, proc="/proc"):
    """{TID: nanoseconds on a CPU} for the live threads of `pid`, from the first field of
    /proc/PID/task/TID/schedstat (the scheduler's own sum, not sampled)."""
    out = {}
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"{proc}/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return out


def cpu_snapshot(pids, proc="/proc"):
    """{PID: (utime+stime in seconds or None, {TID: ns})}: what `cpu_used` compares."""
    snap = {}
    for pid in pids:
        st = read_stat(pid, proc)
        snap[pid] = (st["cpu"] if st else None, thread_runtimes(pid, proc))
    return snap


def cpu_used(before, after):
    """CPU seconds the processes used between two snapshots, as (precise, ticks).

    `ticks` is /proc/PID/stat's utime+stime, which the kernel rounds down to whole steps
    of 1/CLK_TCK (10 ms), utime and stime apart. Over a trial that rounding is not even:
    a process that had used no CPU before the trial (a Kamailio worker just forked)
    begins it at exactly zero steps and ends it about one step short (half a step each
    for utime and stime), where one whose start-up left it mid-step (siplb's) loses as
    much at the start as at the end. For Kamailio's five busy workers that is some
    50 ms, a tenth of its CPU in a 10 s trial at 100 calls/s. `precise` sums each
    thread's nanoseconds instead; a process with a thread that ended between the
    snapshots (its time is no longer listed) is counted by its ticks. A process missing
    from either snapshot counts nothing."""
    precise = ticks = 0.0
    for pid, (t0, threads0) in before.items():
        if pid not in after:
            continue
        t1, threads1 = after[pid]
        tick_delta = (t1 - t0) if t0 is not None and t1 is not None else 0.0
        ticks += tick_delta
        if threads0 and all(tid in threads1 for tid in threads0):
            precise += sum(ns - threads0.get(tid, 0) for tid, ns in threads1.items()) / 1e9
        else:
            precise += tick_delta
    return precise, ticks


def cpu_pressure():
    """Microseconds during which some runnable task waited for a core (Linux PSI,
    /proc/pressure/cpu): how contended the two cores were, whoever ran on them.
    (/proc/stat's tick-sampled busy time misses SIPp's and the balancers' short
    timer-driven runs on this kernel, so it is not used.)"""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        return 0


def udp_drops():
    """Datagrams the kernel dropped because a UDP socket's receive buffer was full
    (RcvbufErrors in /proc/net/snmp), machine-wide: loopback only carries ours."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    head, vals = rows[0], rows[1]
    return int(vals[head.index("RcvbufErrors")]) if "RcvbufErrors" in head else 0


def socket_drops():
    """Per bound UDP socket ("ip:port"), the datagrams dropped on it (/proc/net/udp)."""
    out = {}
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            addr, port = parts[1].split(":")
            ip = socket.inet_ntoa(int(addr, 16).to_bytes(4, "little"))
            key = f"{ip}:{int(port, 16)}"
            out[key] = out.get(key, 0) + int(parts[-1])
    return out


def udp_bound(ip, port):
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(ip), "little"), port)
    with open("/proc/net/udp") as f:
        return any(line.split()[1] == want for line in f.readlines()[1:])


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def steal_seconds(proc="/proc"):
    """CPU time the hypervisor gave to others while this machine's vCPUs wanted it, summed
    over the vCPUs (the steal column of /proc/stat's first line), in seconds."""
    try:
        with open(f"{proc}/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
