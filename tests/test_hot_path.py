"""The engine's hot path holds no Python: no Python objects, exceptions or GIL inside the
run loop, the handlers, the decoder or the MMU (ARCHITECTURE.md, "Hot-path rules").

Checked on the C that Cython generates: every C function generated from the included
engine files, except the Python-facing Engine class (api.pxi), must be free of calls into
the Python C API.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "vmcore" / "_core"

# C functions Cython generates for cdef functions are named __pyx_f_<module>_<name>.
FUNC = re.compile(r"^static [^;{]*?\b(__pyx_f_6vmcore_5_core_5_core_\w+)\(([^)]*)\) \{$", re.M)
PYTHON_API = re.compile(r"\b(Py_?[A-Z]\w*|__Pyx_\w*(Raise|GetItem|PyObject|Import|INCREF|DECREF|XDECREF|GOTREF|"
                        r"AddTraceback|ErrOccurred|Call)\w*|PyGILState_\w+)\b")


@pytest.fixture(scope="module")
def generated_c(tmp_path_factory) -> str:
    c_file = CORE / "_core.c"
    if not c_file.exists():
        out = tmp_path_factory.mktemp("cython") / "_core.c"
        subprocess.run([sys.executable, "-m", "cython", "-3", "-I", str(CORE), str(CORE / "_core.pyx"),
                        "-o", str(out)], check=True)
        c_file = out
    return c_file.read_text()


def function_bodies(c_source: str):
    for match in FUNC.finditer(c_source):
        depth, pos = 1, match.end()
        while depth:
            nxt = min(p for p in (c_source.find("{", pos), c_source.find("}", pos)) if p >= 0)
            depth += 1 if c_source[nxt] == "{" else -1
            pos = nxt + 1
        yield match.group(1), c_source[match.end():pos]


def test_engine_functions_make_no_python_calls(generated_c):
    bodies = dict(function_bodies(generated_c))
    assert len(bodies) > 500, "expected the engine's cdef functions in the generated C"
    for hot in ("run_loop", "decode_block", "mem_slow", "page_walk", "h_ADD_EdGd_r", "deliver_exception",
                # the monitor's part of the engine: shadow paging, callouts, traps, reflection
                "shadow_translate", "shadow_trace_write", "h_CALLOUT", "mon_trap", "mon_deliver"):
        assert any(name.endswith("_" + hot) for name in bodies), hot
    offenders = {}
    for name, body in bodies.items():
        code = re.sub(r"/\*.*?\*/", "", body, flags=re.S)     # Cython copies the source into comments
        found = sorted({m.group(0) for m in PYTHON_API.finditer(code)})
        if found:
            offenders[name] = found
    assert not offenders, offenders
