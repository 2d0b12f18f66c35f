"""A UART's line connected to the host: guest output to a byte stream (stdout), host input
(stdin) to the UART's receiver.

A background thread reads the input file descriptor into a queue; the machine's run thread
feeds the queue to the UART between engine exits (``pump``, called by the machine's
TimerSet), never more than the receiver buffer takes, so no byte is lost to an overrun: the
host side waits as a terminal with flow control would. A halted guest (HLT with interrupts
enabled) waits for input while the input is open (``wait``).

``raw=True`` puts a terminal in raw mode (every key, Ctrl-C included, goes to the guest) and
takes QEMU's escape: Ctrl-A x ends the run (``on_quit``), Ctrl-A Ctrl-A sends one Ctrl-A.
``input_fd=-1`` connects the output only.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from vmcore.devices.uart16550 import Uart16550


class HostSerial:
    """Connect ``uart`` to ``input_fd`` and ``output`` (a binary stream). ``timers``: the
    machine's TimerSet that calls ``pump`` between exits (``Machine.timers``)."""

    ESCAPE = 0x01          # Ctrl-A
    QUIT = ord("x")

    def __init__(self, uart: Uart16550, timers, input_fd: int | None = None, output=None, cbreak: bool = True,
                 raw: bool = False, on_quit=None):
        self.uart = uart
        self.raw = raw
        self.on_quit = on_quit
        self.quit_requested = False
        self._escape_pending = False
        self.timers = timers
        self.output = output if output is not None else sys.stdout.buffer
        self.input_fd = sys.stdin.fileno() if input_fd is None else input_fd
        self._queue = bytearray()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._eof = False
        self._unflushed = False
        self.received = 0
        self._tty_state = None
        if self.input_fd < 0:
            self._eof = True
        elif raw and os.isatty(self.input_fd):
            import termios
            import tty

            self._tty_state = termios.tcgetattr(self.input_fd)
            tty.setraw(self.input_fd)
        elif cbreak and os.isatty(self.input_fd):
            # keys reach the guest as they are typed (Ctrl-C still interrupts the host)
            import termios
            import tty

            self._tty_state = termios.tcgetattr(self.input_fd)
            tty.setcbreak(self.input_fd)
        self._mirrored: list = []
        self._previous_sink = uart.sink
        uart.sink = self._sink
        self._thread = None
        if self.input_fd >= 0:
            self._thread = threading.Thread(target=self._reader, name="vmcore-serial-input", daemon=True)
            self._thread.start()
            timers.add_input(self)

    def mirror(self, device) -> None:
        """Also copy the output of ``device`` (one with a ``sink``: the debug console) to the
        output stream, until close()."""
        previous = device.sink

        def sink(data: bytes) -> None:
            if previous is not None:
                previous(data)
            self.output.write(data)
            self._unflushed = True

        device.sink = sink
        self._mirrored.append((device, previous))

    def _sink(self, data: bytes) -> None:
        if self._previous_sink is not None:
            self._previous_sink(data)
        self.output.write(data)
        self._unflushed = True

    def _reader(self) -> None:
        while True:
            try:
                data = os.read(self.input_fd, 4096)
            except OSError:
                data = b""
            keys = self._unescape(data) if data and self.raw else data
            with self._lock:
                self._queue += keys
                if not data:
                    self._eof = True
            self._ready.set()
            if not data or self.quit_requested:
                return

    def _unescape(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self._escape_pending:
                self._escape_pending = False
                if b == self.QUIT:
                    self.quit_requested = True
                    continue
                if b != self.ESCAPE:
                    out.append(self.ESCAPE)
                out.append(b)
            elif b == self.ESCAPE:
                self._escape_pending = True
            else:
                out.append(b)
        return bytes(out)

    # ---- run thread ---------------------------------------------------------------------
    def pump(self) -> None:
        if self.quit_requested and self.on_quit is not None:
            self.on_quit()
        if self._unflushed:
            self._unflushed = False
            self.output.flush()
        if not self._queue:
            return
        with self._lock:
            take = min(self.uart.rx_free, len(self._queue))
            data = bytes(self._queue[:take])
            del self._queue[:take]
        if data:
            self.received += self.uart.feed(data)

    @property
    def open(self) -> bool:
        """More input can come (bytes already queued are fed as the receiver takes them)."""
        return not self._eof

    def wait(self, seconds: float | None) -> None:
        if self.quit_requested:
            return
        if self._unflushed:
            self._unflushed = False
            self.output.flush()
        if self._eof:
            if seconds:
                time.sleep(seconds)
            return
        self._ready.wait(seconds)
        self._ready.clear()

    def close(self) -> None:
        """Disconnect: the UART's sink is restored and the terminal mode put back."""
        self.pump()
        self.uart.sink = self._previous_sink
        for device, previous in self._mirrored:
            device.sink = previous
        self._mirrored.clear()
        if self in self.timers.inputs:
            self.timers.remove_input(self)
        if self._tty_state is not None:
            import termios

            termios.tcsetattr(self.input_fd, termios.TCSADRAIN, self._tty_state)
            self._tty_state = None
