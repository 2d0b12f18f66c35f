"""The keys every benchmark in ``bench/`` records in pytest-benchmark's ``extra_info``.

This module is the one place they are documented. ``bench/`` writes them, ``vmcore bench``
and ``vmcore dashboard`` read them from the stored runs, and ``tests/test_bench_keys.py``
runs the suite at the tiny size and checks that every benchmark carries all of them with the
right types (``check`` below).

============================  =========  ==========================================================
key                           type       meaning
============================  =========  ==========================================================
``workload``                  str        the workload's name (``workloads/<name>.c``)
``mode``                      str        how vmcore ran the guest: ``bare``, ``bt`` or ``trap``
``engine``                    str        what executed it: ``interp`` (the interpreter) or ``jit``
                                         (hot code translated to host code); runs stored before
                                         the key existed are ``interp``
``size``                      int        the workload's size argument (its ``size=N`` cmdline)
``guest_instructions``        int        guest instructions retired by one run
``guest_mips``                float      ``guest_instructions / median / 1e6`` (median over rounds)
``native_seconds``            float      best wall time of the same source compiled for the host,
                                         same size, measured in the same test (includes the
                                         process start, so it means little at tiny sizes)
``slowdown_vs_native``        float      ``median / native_seconds``: the number VMware's bar is
                                         about (``<= 1.19``, see ``vmcore bench --bar``)
``exits``                     int        exits from the engine to the monitor in one run (the sum
                                         of the ``exits_*`` counters)
``stats``                     dict       the engine and monitor counters of one run
                                         (``Machine.stats``: instructions, blocks, TLB hits and
                                         misses, ``exits_<reason>``, ``callouts_<kind>`` once
                                         ``bt`` exists, ``bus_*``), name -> int
============================  =========  ==========================================================

Benchmarks of the guest kernel (``bench/test_kernel.py``: its kernel-intensive workloads and
the nanobenchmarks) record these as well; ``check`` checks their types where they are present:

============================  =========  ==========================================================
key                           type       meaning
============================  =========  ==========================================================
``ops``                       int        operations in one run: a kernel workload's size (rounds
                                         of fork and wait, message round trips, pages touched),
                                         a nanobenchmark's iterations
``guest_instructions_per_op`` float      guest instructions per operation: for a nanobenchmark,
                                         its loop's RDTSC count in the guest (RDTSC counts
                                         instructions on vmcore) less that of the same loop run
                                         0 times, over ``ops`` (loop overhead included: a
                                         decrement and a branch); for a workload,
                                         ``guest_instructions / ops`` (boot included)
``host_ns_per_op``            float      host nanoseconds per operation: for a nanobenchmark, its
                                         loop timed on the host between the guest's two writes to
                                         port 0x80 that bracket it (median over the rounds), over
                                         ``ops``; for a workload, ``median / ops`` in ns
``op``                        str        a nanobenchmark's operation (``syscall``, ``in``,
                                         ``cli_sti``, ``callret``, ``pgfault``, ``divzero``,
                                         ``ptemod``, ``cr3``; Adams & Agesen, ASPLOS 2006); its
                                         ``workload`` is ``nano-<op>``. A nanobenchmark has no
                                         native counterpart: it has no ``native_seconds`` and no
                                         ``slowdown_vs_native``
``guest_kernel``              dict       the guest kernel's own counters, printed at its shutdown:
                                         timer ticks, preemptions, context switches, system
                                         calls, page faults, demand-zero fills, copy-on-write
                                         copies, forks, ... name -> int
``boot``                      str        an operating system's boot (bench/test_linux.py: the
                                         kernel, initramfs and command line): like a
                                         nanobenchmark it has no native counterpart, so no
                                         ``native_seconds`` and no ``slowdown_vs_native``; its
                                         ``size`` is the guest RAM in MiB
``qemu_tcg_seconds``          float      a boot's wall time on QEMU TCG (qemu-system-i386, same
                                         files and command line, its firmware included), measured
                                         once per session where QEMU is installed
============================  =========  ==========================================================

The slowdown of ``bt`` against ``bare`` is not a key: it needs two benchmarks, and
``vmcore bench`` / ``vmcore dashboard`` compute it from a ``mode="bt"`` and a ``mode="bare"``
benchmark of the same workload and size in the same run (bench/test_monitor.py runs the ``bt``
ones): the ratio of their medians, or for a nanobenchmark of their ``host_ns_per_op``. Likewise
``jit``/``interp``, from an ``engine="jit"`` and an ``engine="interp"`` benchmark of the same
workload, mode and size (bench/test_jit.py runs the ``jit`` ones).
"""

from __future__ import annotations

from collections.abc import Mapping

EXTRA_INFO_KEYS: dict[str, tuple[type, ...]] = {
    "workload": (str,),
    "mode": (str,),
    "engine": (str,),
    "size": (int,),
    "guest_instructions": (int,),
    "guest_mips": (int, float),
    "native_seconds": (int, float),
    "slowdown_vs_native": (int, float),
    "exits": (int,),
    "stats": (dict,),
}
"""Every key of a benchmark's ``extra_info`` and the types its value may have."""

OPTIONAL_KEYS: dict[str, tuple[type, ...]] = {
    "ops": (int,),
    "guest_instructions_per_op": (int, float),
    "host_ns_per_op": (int, float),
    "op": (str,),
    "guest_kernel": (dict,),
    "boot": (str,),
    "qemu_tcg_seconds": (int, float),
}
"""Keys the guest kernel's benchmarks add, and the types their values may have."""

NATIVE_KEYS = ("native_seconds", "slowdown_vs_native")
"""The keys a nanobenchmark (a benchmark with ``op``) or a boot (with ``boot``) has no value for."""

MODES = ("bare", "bt", "trap")
ENGINES = ("interp", "jit")


def check(extra_info: Mapping) -> list[str]:
    """What is wrong with one benchmark's ``extra_info``: missing keys, wrong types, bad values.

    An empty list means it is complete.
    """
    problems = []
    nano = "op" in extra_info or "boot" in extra_info       # no native counterpart
    for key, types in (*EXTRA_INFO_KEYS.items(), *OPTIONAL_KEYS.items()):
        if key not in extra_info:
            if key in EXTRA_INFO_KEYS and not (nano and key in NATIVE_KEYS):
                problems.append(f"missing key {key!r}")
            continue
        value = extra_info[key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            problems.append(f"{key!r} is {type(value).__name__} {value!r}, not {names}")
    unknown = sorted(k for k in extra_info if k not in EXTRA_INFO_KEYS and k not in OPTIONAL_KEYS)
    if unknown:
        problems.append(f"undocumented keys {unknown!r}")
    if problems:
        return problems
    if extra_info["mode"] not in MODES:
        problems.append(f"mode {extra_info['mode']!r} is none of {MODES}")
    if extra_info["engine"] not in ENGINES:
        problems.append(f"engine {extra_info['engine']!r} is none of {ENGINES}")
    for key in ("guest_instructions", "guest_mips", "native_seconds", "slowdown_vs_native", "qemu_tcg_seconds"):
        if key in extra_info and not extra_info[key] > 0:
            problems.append(f"{key!r} is {extra_info[key]!r}, not positive")
    bad = {k: v for k, v in extra_info["stats"].items()
           if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int)}
    if bad:
        problems.append(f"'stats' has entries that are not name -> int: {bad!r}")
    bad = {k: v for k, v in extra_info.get("guest_kernel", {}).items()
           if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int)}
    if bad:
        problems.append(f"'guest_kernel' has entries that are not name -> int: {bad!r}")
    return problems
