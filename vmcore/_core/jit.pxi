# The JIT's foundation (issue 10, ARCHITECTURE.md "The native engine"): the guest address-space
from libc cimport errno
# window over the RAM memfd, the SIGSEGV exit path and the x86-64 emitter. The translator and code
# cache build on these; until they land, JitProbe runs straight-line guest sequences through the
# window so the pieces are tested on their own.

cdef extern from "jit_window.h" nogil:
    ctypedef struct vmw_window:
        uint8_t* base
        uint64_t reserved
        uint64_t n_maps, n_unmaps, n_protects
    ctypedef struct vmw_fault:
        uint32_t gla
        uint32_t write
        uint64_t rip
        uint32_t kind
    ctypedef struct vmw_context:
        const vmw_window* window
        uint64_t code_lo, code_hi
        uint64_t fault_exit
        uint64_t trap_lo, trap_hi
        vmw_fault fault
        uint64_t n_faults
    uint64_t VMW_SPAN, VMW_GUARD
    void vmw_enter(vmw_context* ctx)
    void vmw_leave()
    int vmw_reserve(vmw_window* w, int ram_fd, uint32_t ram_pages, void* at)
    void vmw_release(vmw_window* w)
    int vmw_map(vmw_window* w, uint32_t gla_page, uint32_t gpa_page, int prot)
    int vmw_unmap(vmw_window* w, uint32_t gla_page)
    int vmw_protect(vmw_window* w, uint32_t gla_page, int prot)
    int vmw_install()
    const char* vmw_host_missing()
    void vmw_uninstall()
    int PROT_READ, PROT_WRITE

cdef extern from "jit_emit.h" nogil:
    ctypedef struct vmj_state:
        uint32_t gpr[8]
        uint32_t eflags
        uint32_t exit
        uint64_t window_base
        int64_t remaining
        uint32_t next_eip
        uint32_t stub
        uint64_t target
    ctypedef struct vmj_arena:
        uint8_t* base
        size_t size, used
        int writable, overflow
    uint32_t VMJ_EXIT_END, VMJ_EXIT_FAULT, VMJ_FLAGS_MASK
    int vmj_arena_open(vmj_arena* a, size_t size)
    void vmj_arena_close(vmj_arena* a)
    int vmj_arena_seal(vmj_arena* a)
    int vmj_arena_unseal(vmj_arena* a)
    void vmj_emit_prologue(vmj_arena* a)
    void vmj_emit_exit(vmj_arena* a, uint32_t exit_code)
    void vmj_emit_guest_mem32(vmj_arena* a, uint8_t op, int guest_reg, int guest_base, uint32_t disp)
    void vmj_emit_alu_rr(vmj_arena* a, uint8_t op, int guest_dst, int guest_src)

cdef extern from "jit_reencode.h" nogil:
    int vmj_reencode(vmj_arena* a, const uint8_t* g, int avail)

ctypedef uint32_t (*vmj_entry_t)(vmj_state* s) noexcept nogil

include "jit_engine.pxi"

JIT_ALU_OPS = {"add": 0x01, "or": 0x09, "and": 0x21, "sub": 0x29, "xor": 0x31, "cmp": 0x39}
JIT_EXIT_NAMES = {VMJ_EXIT_END: "end", VMJ_EXIT_FAULT: "fault"}


cdef class JitProbe:
    """A window over guest RAM (the memfd ``ram_fd`` of ``ram_pages`` pages) and a code arena;
    ``window_at``: a free host address for the window (tests place a canary beside it).

    ``run(ops, regs, eflags)`` emits the guest operations as host code between the JIT's entry and
    exit sequences and runs it: ``("load"|"store", reg, base, disp)`` is mov reg, [base + disp] or
    mov [base + disp], reg through the window; ``(alu, dst, src)`` with alu in JIT_ALU_OPS is
    that register-register instruction. A window fault ends the run at the faulting operation.
    """
    cdef vmw_window win
    cdef vmj_arena arena
    cdef vmw_context ctx
    cdef vmj_state state
    cdef readonly uint64_t n_runs

    def __cinit__(self, int ram_fd, uint32_t ram_pages, size_t arena_size=65536, uintptr_t window_at=0):
        cdef int rc = vmw_reserve(&self.win, ram_fd, ram_pages, <void*>window_at)
        if rc != 0:
            raise OSError(-rc, "reserving the 4 GiB guest window")
        if vmj_arena_open(&self.arena, arena_size) != 0:
            vmw_release(&self.win)
            raise OSError("mapping the code arena")

    def __dealloc__(self):
        vmw_release(&self.win)
        vmj_arena_close(&self.arena)

    @property
    def window_base(self):
        """Host address of guest-linear 0."""
        return <uintptr_t>self.win.base

    @property
    def window_size(self):
        """Bytes reserved: 4 GiB and the guard above it."""
        return self.win.reserved

    @property
    def stats(self):
        return {"maps": self.win.n_maps, "unmaps": self.win.n_unmaps, "protects": self.win.n_protects,
                "window_faults": self.ctx.n_faults, "runs": self.n_runs}

    def map(self, uint32_t gla_page, uint32_t gpa_page, bint writable):
        _check_window(vmw_map(&self.win, gla_page, gpa_page, PROT_READ | (PROT_WRITE if writable else 0)),
                      "map", gla_page)

    def unmap(self, uint32_t gla_page):
        _check_window(vmw_unmap(&self.win, gla_page), "unmap", gla_page)

    def protect(self, uint32_t gla_page, bint writable):
        _check_window(vmw_protect(&self.win, gla_page, PROT_READ | (PROT_WRITE if writable else 0)),
                      "protect", gla_page)

    def run(self, ops, regs, uint32_t eflags=0):
        self._begin()
        starts = []
        for op in ops:
            _check_op(op)
            starts.append(self.arena.used)
            if op[0] == "load" or op[0] == "store":
                vmj_emit_guest_mem32(&self.arena, 0x8B if op[0] == "load" else 0x89, op[1], op[2],
                                     <uint32_t>(op[3] & 0xFFFFFFFF))
            else:
                vmj_emit_alu_rr(&self.arena, JIT_ALU_OPS[op[0]], op[1], op[2])
        return self._execute(starts, regs, eflags)

    def run_guest(self, const uint8_t[:] code, regs, uint32_t eflags=0, size_t max_insns=1000):
        """Re-encode guest instructions from the start of ``code`` until one is not translated (or
        max_insns), and run them. The result's ``translated`` counts them, ``lengths`` gives
        their guest lengths; ``fault_index`` is the instruction that faulted."""
        cdef size_t at = 0, n = 0
        cdef int length
        self._begin()
        starts = []
        lengths = []
        while n < max_insns and at < <size_t>code.shape[0]:
            starts.append(self.arena.used)
            length = vmj_reencode(&self.arena, &code[at], <int>(code.shape[0] - at))
            if length == 0:
                starts.pop()
                break
            lengths.append(length)
            at += length
            n += 1
        result = self._execute(starts, regs, eflags)
        result["translated"] = n
        result["lengths"] = lengths
        return result

    def _begin(self):
        if not self.arena.writable and vmj_arena_unseal(&self.arena) != 0:
            raise OSError("unsealing the code arena")
        self.arena.used = 0
        self.arena.overflow = 0
        vmj_emit_prologue(&self.arena)

    def _execute(self, starts, regs, uint32_t eflags):
        cdef size_t k, fault_exit, off, n = len(starts)
        cdef uint32_t rc
        cdef vmj_entry_t entry
        if len(regs) != 8:
            raise ValueError("regs: the eight guest GPRs, EAX..EDI")
        starts = starts + [self.arena.used]
        vmj_emit_exit(&self.arena, VMJ_EXIT_END)
        fault_exit = self.arena.used
        vmj_emit_exit(&self.arena, VMJ_EXIT_FAULT)
        if self.arena.overflow:
            raise ValueError("the sequence does not fit in the code arena")
        if vmj_arena_seal(&self.arena) != 0:
            raise OSError("sealing the code arena")
        for k in range(8):
            self.state.gpr[k] = regs[k]
        self.state.eflags = eflags
        self.state.window_base = <uintptr_t>self.win.base
        self.ctx.window = &self.win
        self.ctx.code_lo = <uintptr_t>self.arena.base
        self.ctx.code_hi = <uintptr_t>self.arena.base + self.arena.used
        self.ctx.fault_exit = <uintptr_t>self.arena.base + fault_exit
        entry = <vmj_entry_t>self.arena.base
        if vmw_install() != 0:
            raise RuntimeError("a JIT fault handler is already installed")
        with nogil:
            vmw_enter(&self.ctx)
            rc = entry(&self.state)
            vmw_leave()
        vmw_uninstall()
        self.n_runs += 1
        result = {"exit": JIT_EXIT_NAMES[rc], "regs": [self.state.gpr[k] for k in range(8)],
                  "eflags": self.state.eflags & VMJ_FLAGS_MASK}
        if rc == VMJ_EXIT_FAULT:
            off = <size_t>(self.ctx.fault.rip - <uintptr_t>self.arena.base)
            index = None
            for k in range(n):
                if starts[k] <= off < starts[k + 1]:
                    index = k
            result.update(fault_gla=self.ctx.fault.gla, fault_write=bool(self.ctx.fault.write), fault_index=index)
        return result


def jit_host_missing():
    """What this host lacks for engine="jit" (a str), or None when it can run it."""
    cdef const char* what = vmw_host_missing()
    return None if what == NULL else what.decode()


def jit_reencode(const uint8_t[:] guest):
    """(guest length, host bytes) of the first instruction of ``guest``; (0, b"") if not translated."""
    cdef vmj_arena a
    cdef int n
    if guest.shape[0] == 0:
        return 0, b""
    if vmj_arena_open(&a, 4096) != 0:
        raise OSError("mapping a scratch arena")
    n = vmj_reencode(&a, &guest[0], <int>guest.shape[0])
    host = bytes(a.base[:a.used])
    vmj_arena_close(&a)
    return n, host


def _check_op(op):
    kind = op[0]
    if kind == "load" or kind == "store":
        reg, base, disp = op[1], op[2], op[3]
        _check_gpr(reg)
        _check_gpr(base)
    elif kind in JIT_ALU_OPS:
        _check_gpr(op[1])
        _check_gpr(op[2])
    else:
        raise ValueError(f"unknown operation {op!r}")


def _check_gpr(r):
    if not 0 <= r < 8:
        raise ValueError(f"guest register {r!r} is not 0..7")


def _check_window(int rc, what, uint32_t page):
    if rc == -errno.EINVAL:
        raise ValueError(f"window {what}: page {page:#x} out of range")
    if rc != 0:
        raise OSError(-rc, f"window {what} of page {page:#x}")
