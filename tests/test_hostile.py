"""The hostile-guest suite (issue 15): every case of tests/hostile_cases_*.py, in every mode it names,
each in its own child process with run(timeout=case.timeout).

The child allocates host canaries (numpy arrays and a bytearray with known patterns) before and after
it creates the machine, sets the case up, runs it, runs the case's own checks, and reports as JSON.
The parent asserts that run() returned within case.max_seconds with one of the case's exits, that the
checks passed, and that no canary changed; a child that hangs is killed, a child that crashes fails.
"""
from __future__ import annotations

import importlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from hostile import HostileCase

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent


def _cases() -> list[tuple[str, HostileCase]]:
    found = []
    for path in sorted(TESTS.glob("hostile_cases_*.py")):
        module = importlib.import_module(path.stem)
        for case in module.CASES:
            found.append((path.stem, case))
    return found


CASES = _cases()
PARAMS = [pytest.param(module, case.name, mode, id=f"{case.name}-{mode}")
          for module, case in CASES for mode in case.modes]

CHILD = textwrap.dedent("""
    import json, sys, time, traceback
    import numpy as np
    sys.path.insert(0, {tests!r})
    import vmcore
    import {module} as cases
    case = next(c for c in cases.CASES if c.name == {name!r})
    rng = np.random.default_rng(15)
    canaries = [rng.integers(0, 256, 1 << 16, dtype=np.uint8)]
    blob = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    m = vmcore.Machine(memory_mb=case.memory_mb, mode={mode!r})
    canaries.append(rng.integers(0, 256, 1 << 16, dtype=np.uint8))
    saved = [c.copy() for c in canaries] + [bytes(blob)]
    out = {{"exit": None, "seconds": None, "check": None}}
    try:
        case.setup(m)
        t = time.perf_counter()
        r = m.run(timeout=case.timeout)
        out["seconds"] = time.perf_counter() - t
        out["exit"] = r.exit.value
        out["reason"] = r.reason
        if case.check is not None:
            case.check(m, r)
        out["check"] = "ok"
    except BaseException:
        out["check"] = traceback.format_exc()
    out["canaries"] = all(np.array_equal(a, b) for a, b in zip(canaries, saved)) and bytes(blob) == saved[-1]
    print(json.dumps(out))
""")


@pytest.mark.parametrize("module, name, mode", PARAMS)
def test_hostile_guest(module, name, mode):
    case = next(c for m, c in CASES if m == module and c.name == name)
    script = CHILD.format(tests=str(TESTS), module=module, name=name, mode=mode)
    hard_limit = case.max_seconds + 10
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=hard_limit, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} ({mode}): the child had not finished after {hard_limit} s: run(timeout="
                    f"{case.timeout}) did not hold")
    assert proc.returncode == 0, f"{name} ({mode}): the child died ({proc.returncode})\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["check"] == "ok", f"{name} ({mode}):\n{out['check']}"
    assert out["canaries"], f"{name} ({mode}): a host canary changed"
    assert out["exit"] in case.exits, f"{name} ({mode}): exit {out['exit']} ({out.get('reason')})"
    assert out["seconds"] < case.max_seconds, f"{name} ({mode}): run() took {out['seconds']:.1f} s"


def test_every_case_module_is_collected():
    modules = {m for m, _ in CASES}
    assert {"hostile_cases_engine", "hostile_cases_monitor"} <= modules, modules
    names = [c.name for _, c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
