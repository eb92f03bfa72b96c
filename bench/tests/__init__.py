"""Unit tests of the benchmarks' pure code (statistics, parsers of the tools' output,
Kamailio's configuration). From the repository's root:

    python3 -m unittest discover -s bench/tests -t bench

No process is started and no port is bound: these run anywhere, as any user.
"""
