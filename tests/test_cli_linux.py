"""`vmcore run --kernel/--initrd/--append/-m` (vmcore/cli.py) with the synthetic bzImage of
tests/bzimage_guest.py, and the serial line's raw-mode escape (Ctrl-A x quits)."""
import os

import pytest

from bzimage_guest import bzimage
from vmcore import cli
from vmcore.devices.serialio import HostSerial
from vmcore.machine import Machine


@pytest.fixture
def kernel(tmp_path):
    p = tmp_path / "bzImage"
    p.write_bytes(bzimage())
    return p


def test_parser_takes_qemu_style_flags():
    args = cli.build_parser().parse_args(["run", "--kernel", "bz", "--initrd", "rd", "--append", "console=ttyS0",
                                          "-m", "256"])
    assert (args.kernel, args.initrd, args.append, args.memory) == ("bz", "rd", "console=ttyS0", 256)


def test_run_kernel_streams_the_console_and_prints_the_summary(kernel, tmp_path, capfd):
    rd = tmp_path / "initrd.img"
    rd.write_bytes(b"RD" * 100)
    status = cli.main(["run", "--kernel", str(kernel), "--initrd", str(rd), "--append", "hello linux",
                       "-m", "32", "--mode", "bare"])
    out = capfd.readouterr().out
    assert status == 3                      # the guest wrote e820_entries (3) to the debug-exit port
    assert "hello linux" in out and "32 MiB bare machine" in out
    assert "guest instructions" in out and "guest MIPS" in out and "debug-exit port, status 7" in out


def test_run_kernel_errors(kernel, tmp_path, capfd):
    assert cli.main(["run", "--initrd", "x.img", "sieve"]) == 2
    assert "--initrd needs --kernel" in capfd.readouterr().err
    assert cli.main(["run", "--kernel", str(kernel), "sieve"]) == 2
    assert cli.main(["run", "--kernel", str(tmp_path / "none")]) == 2
    assert "no such file" in capfd.readouterr().err
    assert cli.main(["run", "--kernel", str(kernel), "-m", "8"]) == 2
    assert "16 MiB" in capfd.readouterr().err


def test_raw_serial_escape_quits_and_passes_keys():
    m = Machine(memory_mb=4)
    m.uart.write(2, 1, 0x01)              # FCR: FIFOs on, so the receiver takes all the keys
    r, w = os.pipe()
    quits = []
    out = open(os.devnull, "wb")
    serial = HostSerial(m.uart, m.timers, input_fd=r, output=out, raw=True, on_quit=lambda: quits.append(1))
    try:
        os.write(w, b"ab\x01\x01c\x01q")
        os.write(w, b"\x01x")
        import time
        deadline = time.time() + 5
        while not serial.quit_requested and time.time() < deadline:
            time.sleep(0.01)
        serial.pump()
        assert serial.quit_requested and quits == [1]
        data = bytes(m.uart.read(0, 1) for _ in range(6))     # RBR, as the guest reads it
        assert data == b"ab\x01c\x01q"
    finally:
        serial.close()
        os.close(w)
        os.close(r)
        out.close()


def test_ctrl_a_x_stops_a_guest_waiting_in_hlt():
    import threading
    import time

    from vmcore import Exit
    m = Machine(memory_mb=4, mode="bare")
    m.mem_write(0x10000, bytes.fromhex("fb f4 eb fd"))       # sti ; hlt ; jmp $-1
    m.reg_write("eip", 0x10000)
    r, w = os.pipe()
    out = open(os.devnull, "wb")
    serial = HostSerial(m.uart, m.timers, input_fd=r, output=out, raw=True, on_quit=m.stop)
    threading.Timer(0.2, lambda: os.write(w, b"\x01x")).start()
    try:
        t0 = time.perf_counter()
        result = m.run(timeout=10)
        assert result.exit is Exit.STOPPED and time.perf_counter() - t0 < 5
    finally:
        serial.close()
        os.close(w)
        os.close(r)
        out.close()
