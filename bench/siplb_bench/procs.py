"""The processes a benchmark run starts: long-running ones (balancers, SIPp, profilers)
tracked by a `Procs` and ended by PID, never by name, on the way out; and `run` for a
short command whose output is wanted.

A run makes one `Procs` and hands it to whatever starts processes (there is no global
tracker), so that its signal handler and its error path can end them all.
"""

import os
import signal
import subprocess
import time

from siplb_bench.system import session_members


class Procs:
    """Every process a run starts, ended by PID (never by name) on the way out."""

    def __init__(self):
        self.live = {}  # pid -> (Popen, name)

    def start(self, name, argv, cwd, env=None, stdout=None):
        out = open(stdout or os.path.join(cwd, f"{name}.out"), "wb")
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.live[p.pid] = (p, name)
        return p

    def wait(self, p, timeout):
        """Waits for `p` at most `timeout` seconds; returns (exit code or None, CPU seconds
        of the process and its reaped children, from wait4's rusage)."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                self.live.pop(p.pid, None)
                return p.returncode, ru.ru_utime + ru.ru_stime
            if time.monotonic() >= deadline:
                return None, None
            time.sleep(0.02)

    def stop(self, p, sig=signal.SIGTERM, grace=5.0):
        """Signals `p` (and, if it is still there after `grace`, kills it and the
        processes it forked, which share its session and are found by their session id)."""
        if p.pid not in self.live:
            return None, None
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        rc, cpu = self.wait(p, grace)
        if rc is None:
            for pid in [p.pid] + session_members(p.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            rc, cpu = self.wait(p, 5)
        # Children of ours that outlived their parent (Kamailio's workers end with it).
        for pid in session_members(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return rc, cpu

    def stop_all(self):
        for pid, (p, _name) in list(self.live.items()):
            self.stop(p, grace=3.0)


def run(argv, **kw):
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw).stdout
