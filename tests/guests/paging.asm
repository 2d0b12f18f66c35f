; paging: 32-bit paging from the inside (SDM Vol. 3 §4.3-§4.10).
;   1-3   identity map of 0..4 MiB; the walks for code fetch set A in the PDE and the code
;         page's PTE, an untouched page keeps A = 0
;   4-8   a remapped page (linear 0x300000 -> physical 0x5000): reads and writes land in the
;         frame; A set by the read, D only by the write
;   9-11  INVLPG and CR3 loads: a PTE rewritten in memory is seen only after INVLPG
;         (or a CR3 load); before it, the cached translation is used
;   12-17,25 CR0.WP: with WP = 0 a supervisor write to a read-only page succeeds (and sets D);
;         after setting WP (no INVLPG: the TLB caches R/W, WP applies at use) it faults with
;         #PF error code 3 and CR2; the handler makes the page writable, the write restarts
;   18-24 4 MiB pages (CR4.PSE, PDE.PS): offsets within the 4 MiB frame, A and D set in the
;         PDE itself, a read-only alias of the same frame
; Status: the number of the failed check; 0x100 + v: unexpected exception v.
%include "lib.inc"

IDT equ 0x1000
PD  equ 0x20000
PT  equ 0x21000
STACK_TOP equ 0x4000            ; below the data frames at 0x5000 and 0x6000
P_ equ 1
RW_ equ 2
A_ equ 0x20
D_ equ 0x40
PS_ equ 0x80

org 0x7C00
bits 16
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7C00
    lgdt [gdt_desc]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    jmp dword 0x08:pm

align 8
gdt:
    dq 0
    DESC 0, 0xFFFFF, ACC_CODE32, FLAGS_4G32         ; 0x08
    DESC 0, 0xFFFFF, ACC_DATA, FLAGS_4G32           ; 0x10
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd IDT

pf_count: dd 0
pf_err:   dd 0
pf_cr2:   dd 0

bits 32
; #PF: count, record, make the page present and writable, INVLPG, restart the instruction
pf_handler:
    pop dword [pf_err]
    push eax
    inc dword [pf_count]
    mov eax, cr2
    mov [pf_cr2], eax
    shr eax, 12
    or dword [PT + eax * 4], P_ | RW_
    mov eax, cr2
    invlpg [eax]
    pop eax
    iretd

UNEXPECTED_STUBS

pm:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, STACK_TOP
    PRINT `paging: protected mode\n`
    IDT_UNEXPECTED IDT
    SET_GATE IDT, 14, pf_handler, INT_GATE
    lidt [idt_desc]

    ; data in physical memory, written before paging
    mov dword [0x5000], 0x11111111
    mov dword [0x6000], 0x22222222
    mov dword [0x800010], 0x44444444
    mov dword [0xBFFFFC], 0x77777777

    ; the tables: PT identity-maps 0..4 MiB with A = D = 0
    mov edi, PD
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov edi, PT
    mov eax, P_ | RW_
.fill:
    stosd
    add eax, 0x1000
    cmp edi, PT + 4096
    jb .fill
    mov dword [PT + 0x300 * 4], 0x5000 | P_ | RW_   ; linear 0x300000 -> 0x5000
    mov dword [PT + 0x301 * 4], 0x6000 | P_         ; linear 0x301000 -> 0x6000, read-only
    mov dword [PD], PT | P_ | RW_
    mov eax, PD
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    PRINT `paging: paging on\n`

    ; 1-3 accessed bits from the walks so far
    test dword [PD], A_
    jnz .a1
    FAIL(1)
.a1:
    mov eax, pm
    shr eax, 12
    test dword [PT + eax * 4], A_       ; the code page
    jnz .a2
    FAIL(2)
.a2:
    test dword [PT + 0x3FF * 4], A_ | D_   ; never touched
    jz .a3
    FAIL(3)
.a3:

    ; 4-8 the remapped page
    CHECK dword [0x300000], 0x11111111, 4
    mov eax, [PT + 0x300 * 4]
    and eax, A_ | D_
    CHECK eax, A_, 5                    ; read: A, not D
    mov dword [0x300004], 0x33333333
    CHECK dword [0x5004], 0x33333333, 6 ; the frame, through the identity map
    mov eax, [PT + 0x300 * 4]
    and eax, A_ | D_
    CHECK eax, A_ | D_, 7               ; write: D
    CHECK dword [0x300004], 0x33333333, 8

    ; 9-11 INVLPG / CR3
    mov dword [PT + 0x300 * 4], 0x6000 | P_ | RW_
    CHECK dword [0x300000], 0x11111111, 9   ; the TLB still has 0x300000 -> 0x5000
    invlpg [0x300000]
    CHECK dword [0x300000], 0x22222222, 10
    mov dword [PT + 0x300 * 4], 0x5000 | P_ | RW_
    mov eax, cr3
    mov cr3, eax                        ; flushes every (non-global) translation
    CHECK dword [0x300000], 0x11111111, 11

    ; 12-17 CR0.WP and a read-only page
    mov dword [0x301008], 0x55555555    ; WP = 0: a supervisor write succeeds
    CHECK dword [pf_count], 0, 12
    CHECK dword [0x6008], 0x55555555, 13
    mov eax, [PT + 0x301 * 4]
    and eax, A_ | D_ | RW_
    CHECK eax, A_ | D_, 14              ; D set, the page still read-only
    mov eax, cr0
    or eax, 0x10000                     ; WP = 1, no INVLPG
    mov cr0, eax
    mov dword [0x30100C], 0x66666666    ; faults; the handler sets R/W; restarts
    CHECK dword [pf_count], 1, 15
    CHECK dword [pf_err], 3, 16         ; present, write, supervisor
    CHECK dword [pf_cr2], 0x30100C, 17
    CHECK dword [0x600C], 0x66666666, 25

    ; 18-24 4 MiB pages
    mov eax, cr4
    or eax, 0x10                        ; PSE
    mov cr4, eax
    mov dword [PD + 1 * 4], 0x800000 | PS_ | P_ | RW_    ; linear 4..8 MiB -> 8..12 MiB
    mov dword [PD + 2 * 4], 0x800000 | PS_ | P_          ; linear 8..12 MiB -> the same, read-only
    CHECK dword [0x400010], 0x44444444, 18
    CHECK dword [0x7FFFFC], 0x77777777, 19   ; the last dword of the 4 MiB frame: 0xBFFFFC
    mov eax, [PD + 1 * 4]
    and eax, A_ | D_
    CHECK eax, A_, 20                   ; a 4 MiB PDE takes the A bit itself
    mov dword [0x400020], 0x88888888
    mov eax, [PD + 1 * 4]
    and eax, A_ | D_
    CHECK eax, A_ | D_, 21              ; and the D bit
    CHECK dword [0x800020], 0x88888888, 22   ; the alias sees the write
    mov eax, [PD + 2 * 4]
    and eax, A_ | D_
    CHECK eax, A_, 23                   ; the alias was only read
    CHECK dword [pf_count], 1, 24

    PRINT `paging: pass\n`
    PASS
