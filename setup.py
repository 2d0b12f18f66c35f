"""Build vmcore's one compiled extension (engine + MMU) from its included files.

The instruction handlers that differ only in operation, size and operand form
are generated from tables by vmcore/_core/gen_ops.py before Cython runs, and the
x87 host-instruction table by vmcore/_core/gen_x87.py.
Set VMCORE_DEBUG=1 for a build with C assertions and no optimisation, VMCORE_ASAN=1 for one with
AddressSanitizer (run it with LD_PRELOAD=$(gcc -print-file-name=libasan.so) and
ASAN_OPTIONS=detect_leaks=0, since the Python interpreter itself is not instrumented).
"""
import os
import pathlib
import runpy

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = pathlib.Path(__file__).resolve().parent
CORE = HERE / "vmcore" / "_core"

runpy.run_path(str(CORE / "gen_ops.py"), run_name="vmcore_gen")["main"](CORE / "ops_generated.pxi")
runpy.run_path(str(CORE / "gen_x87.py"), run_name="vmcore_gen")["main"](CORE / "x87_ops.h")

debug = os.environ.get("VMCORE_DEBUG") == "1"
asan = os.environ.get("VMCORE_ASAN") == "1"
ASAN_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
extension = Extension(
    "vmcore._core._core",
    [str(pathlib.Path("vmcore", "_core", "_core.pyx"))],
    extra_link_args=ASAN_FLAGS[:1] if asan else [],
    # the branch and function alignment keep the dispatch loop's speed from depending on where the
    # linker happens to place each handler (Intel's JCC erratum; measured with tools/compare_builds.py)
    extra_compile_args=ASAN_FLAGS if asan else ["-O0", "-g"] if debug else [
        "-O2", "-fno-strict-aliasing", "-Wa,-mbranches-within-32B-boundaries", "-falign-functions=32"],
    # `cdef inline` means inline: the unit is large (~600 handlers) and gcc's growth limits
    # would otherwise leave the TLB fast paths as calls in most of them
    define_macros=[] if debug or asan else [("NDEBUG", "1"),
                                             ("CYTHON_INLINE", "__inline__ __attribute__((always_inline))")],
)

setup(
    ext_modules=cythonize(
        [extension],
        compiler_directives={"language_level": "3"},
        include_path=[str(CORE)],
        annotate=os.environ.get("VMCORE_ANNOTATE") == "1",
    ),
)
