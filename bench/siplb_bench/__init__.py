"""The benchmarks' shared code: bench/compare (siplb beside Kamailio under SIPp load) and
bench/overload (goodput of a CPU-capped siplb) are thin scripts over these modules.

    layout     where files are, the loopback addresses and ports, fixed tuning (constants)
    log        the timestamped progress line every phase prints
    system     counters read from /proc (CPU, memory, UDP drops, bound sockets)
    procs      the processes a run starts, tracked and ended by PID; short commands
    machine    the machine and build a report names
    stats      pure statistics and parsers of SIPp, perf, callgrind and heaptrack output
    readers    opening those tools' files and handing their lines to the parsers
    peers      starting siplb, Kamailio and the SIPp destinations; installing tools
    context    the state one run carries, passed explicitly instead of globals
    trials     one trial (a SIPp caller through one balancer) and the systems under test
    profiling  where siplb's CPU and memory go (callgrind, perf, strace, heaptrack)
    report     CSV, gnuplot chart and markdown report
    compare    the side-by-side benchmark's phases and its main()

Standard library only: the bench runs on a bare Debian with python3.
"""
