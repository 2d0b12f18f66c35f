# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -O2
"""vmcore's engine and MMU: one extension built from included files so the C
compiler can inline across decode, execute and memory access."""

from libc.string cimport memcpy, memcmp
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cdef extern from *:
    int __builtin_clz(unsigned int x) nogil
    int __builtin_ctz(unsigned int x) nogil

include "defs.pxi"
include "flags.pxi"
include "memory.pxi"
include "shadow.pxi"
include "operands.pxi"
include "ops_arith.pxi"
include "ops_data.pxi"
include "ops_control.pxi"
include "ops_string.pxi"
include "ops_system.pxi"
include "ops_segment.pxi"
include "ops_sysarch.pxi"
include "ops_rings.pxi"
include "ops_task.pxi"
include "ops_x87.pxi"
include "ops_generated.pxi"
include "exceptions.pxi"
include "monitor.pxi"
include "jit.pxi"
include "decode.pxi"
include "engine.pxi"
include "api.pxi"
