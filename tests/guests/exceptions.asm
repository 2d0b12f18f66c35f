; exceptions: protected-mode exception delivery through 32-bit interrupt and trap gates
; (SDM Vol. 3 §6.12-§6.15), each checked from the handler's side:
;   the vector, the error code (or its absence, from the frame size: 12 bytes pushed, 16 with
;   an error code), the saved CS, and the saved EIP: the faulting instruction for a fault,
;   the next one for a trap (INT3, INTO).
;  1 #DE  div by zero                    7 #NP  MOV ES with a not-present data segment
;  2 #UD  ud2                            8 #SS  an SS-relative access beyond the SS limit
;  3 #BP  int3 (trap)                    9 #SS  MOV SS with a not-present segment
;  4 #OF  into with OF = 1 (trap)       10 #PF  read of a not-present page: handler maps it,
;  5 #BR  bound out of range                    the instruction restarts and completes
;  6 #GP  MOV DS with a selector beyond 11 #PF  supervisor write to a read-only page, CR0.WP
;         the GDT limit (error = sel)   12 #DF  #GP whose gate is not present: #NP while
; 13 #GP  MOV DS with execute-only code         delivering #GP -> #DF, error code 0
; 14 #GP  delivered normally again once the gate is present
; 15 with EFLAGS.IF = 1 (the PICs masked): an interrupt gate clears IF in the handler, a
;    trap gate keeps it, both save IF = 1 and IRET restores it
; Status: check id * 16 + (1 vector, 2 error code present, 3 error code, 4 saved EIP,
; 5 saved CS, 6 frame size, 7.. test-specific); 0x100 + v: unexpected exception v.
%include "lib.inc"

IDT equ 0x1000                  ; 256 gates, built at run time
PD  equ 0x20000                 ; page directory: PDE 0 -> PT
PT  equ 0x21000                 ; identity map of 0..4 MiB
STACK_TOP equ 0x7000            ; below the code at 0x7C00

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
    dq 0                                            ; 0x00
    DESC 0, 0xFFFFF, ACC_CODE32, FLAGS_4G32         ; 0x08 code
    DESC 0, 0xFFFFF, ACC_DATA, FLAGS_4G32           ; 0x10 data
    DESC 0, 0xFFFFF, ACC_DATA & 0x7F, FLAGS_4G32    ; 0x18 data, not present
    DESC 0, 0xFFFF, ACC_DATA, FLAGS_BYTE32          ; 0x20 data (stack), limit 0xFFFF
    DESC 0, 0xFFFF, ACC_DATA & 0x7F, FLAGS_BYTE32   ; 0x28 stack segment, not present
    DESC 0, 0xFFFFF, 0x98, FLAGS_4G32               ; 0x30 code, execute-only
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1                            ; limit 0x37: selector 0x1000 is beyond
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd IDT

; what the handlers saw
got_vec: dd 0
got_err: dd 0
got_has: dd 0
got_eip: dd 0
got_cs:  dd 0
got_esp: dd 0
got_cr2: dd 0
got_flags: dd 0                 ; EFLAGS in the handler
got_saved_flags: dd 0           ; EFLAGS in the frame
pre_esp: dd 0
resume:  dd 0
bounds:  dd 0, 10

bits 32
; A handler that records the frame and returns to [resume]. %1 vector, %2 1 if the CPU
; pushes an error code for it.
%macro HANDLER 2
h%1:
    mov [got_esp], esp
%if %2
    pop dword [got_err]
    mov dword [got_has], 1
%else
    mov dword [got_has], 0
%endif
    mov dword [got_vec], %1
    push eax
    pushfd
    pop eax
    mov [got_flags], eax
    mov eax, [esp + 12]
    mov [got_saved_flags], eax
    mov eax, [esp + 4]
    mov [got_eip], eax
    mov eax, [esp + 8]
    mov [got_cs], eax
    mov eax, [resume]
    mov [esp + 4], eax
    pop eax
    iretd
%endmacro

HANDLER 0, 0
HANDLER 3, 0
HANDLER 4, 0
HANDLER 5, 0
HANDLER 6, 0
HANDLER 8, 1
HANDLER 11, 1
HANDLER 12, 1
HANDLER 13, 1

; #PF: record, map the page (P and R/W in its PTE), INVLPG, and return to the same
; instruction, which restarts.
h14:
    mov [got_esp], esp
    pop dword [got_err]
    mov dword [got_has], 1
    mov dword [got_vec], 14
    push eax
    mov eax, [esp + 4]
    mov [got_eip], eax
    mov eax, [esp + 8]
    mov [got_cs], eax
    mov eax, cr2
    mov [got_cr2], eax
    shr eax, 12
    or dword [PT + eax * 4], 3
    mov eax, cr2
    invlpg [eax]
    pop eax
    iretd

; every other vector: report it
UNEXPECTED_STUBS

; BEGIN: set up the expectations; the instruction under test follows immediately.
%macro BEGIN 0
    %push try
    mov dword [got_vec], 0xFFFFFFFF
    mov dword [got_has], 0xFFFFFFFF
    mov dword [got_err], 0xFFFFFFFF
    mov dword [resume], %$resume
    mov [pre_esp], esp
%$fault:
%endmacro

; END id, vector, error code or NOERR, FAULT | TRAP | ABORT (where the saved EIP points).
; Preserves the general registers.
%macro END 4
%$resume:
    CHECK dword [got_vec], %2, (%1) * 16 + 1
    push eax
    mov eax, [pre_esp]
    sub eax, [got_esp]
%ifidn %3, NOERR
    CHECK dword [got_has], 0, (%1) * 16 + 2
    CHECK eax, 12, (%1) * 16 + 6
%else
    CHECK dword [got_has], 1, (%1) * 16 + 2
    CHECK dword [got_err], %3, (%1) * 16 + 3
    CHECK eax, 16, (%1) * 16 + 6
%endif
    pop eax
%ifidn %4, FAULT
    CHECK dword [got_eip], %$fault, (%1) * 16 + 4
%elifidn %4, TRAP
    CHECK dword [got_eip], %$resume, (%1) * 16 + 4
%endif
    CHECK dword [got_cs], 0x08, (%1) * 16 + 5
    %pop
%endmacro

pm:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, STACK_TOP
    PRINT `exceptions: protected mode\n`

    ; the IDT: every vector to its "unexpected" stub, then the handlers under test
    IDT_UNEXPECTED IDT
    SET_GATE IDT, 0, h0, INT_GATE
    SET_GATE IDT, 3, h3, TRAP_GATE
    SET_GATE IDT, 4, h4, TRAP_GATE
    SET_GATE IDT, 5, h5, INT_GATE
    SET_GATE IDT, 6, h6, INT_GATE
    SET_GATE IDT, 8, h8, INT_GATE
    SET_GATE IDT, 11, h11, INT_GATE
    SET_GATE IDT, 12, h12, INT_GATE
    SET_GATE IDT, 13, h13, TRAP_GATE
    SET_GATE IDT, 14, h14, INT_GATE
    lidt [idt_desc]

    ; 1 #DE
    xor edx, edx
    mov eax, 1
    xor ecx, ecx
    BEGIN
    div ecx
    END 1, 0, NOERR, FAULT

    ; 2 #UD
    BEGIN
    ud2
    END 2, 6, NOERR, FAULT

    ; 3 #BP: a trap, the saved EIP is the next instruction
    BEGIN
    int3
    END 3, 3, NOERR, TRAP

    ; 4 #OF: INTO traps only with OF = 1
    mov al, 0x7F
    add al, 1                           ; OF = 1
    BEGIN
    into
    END 4, 4, NOERR, TRAP
    mov dword [got_vec], 0xFFFFFFFF
    xor eax, eax                        ; OF = 0
    into
    CHECK dword [got_vec], 0xFFFFFFFF, 4 * 16 + 7

    ; 5 #BR: BOUND with the index above the upper bound faults; inside does not
    mov eax, 11
    BEGIN
    bound eax, [bounds]
    END 5, 5, NOERR, FAULT
    mov dword [got_vec], 0xFFFFFFFF
    mov eax, 10
    bound eax, [bounds]
    CHECK dword [got_vec], 0xFFFFFFFF, 5 * 16 + 7

    ; 6 #GP(selector): DS with a selector beyond the GDT limit; DS keeps its old value
    mov ax, 0x1000
    BEGIN
    mov ds, ax
    END 6, 13, 0x1000, FAULT
    mov ax, ds
    CHECK ax, 0x10, 6 * 16 + 7

    ; 13 #GP(selector): DS with an execute-only code segment
    mov ax, 0x30
    BEGIN
    mov ds, ax
    END 13, 13, 0x30, FAULT

    ; 7 #NP(selector): ES with a not-present data segment
    mov ax, 0x18
    BEGIN
    mov es, ax
    END 7, 11, 0x18, FAULT
    mov ax, es
    CHECK ax, 0x10, 7 * 16 + 7

    ; 8 #SS(0): SS limit 0xFFFF, an EBP-based (SS) access at 0x20000
    mov ax, 0x20
    mov ss, ax
    mov ebp, 0x20000
    BEGIN
    mov eax, [ebp]
    END 8, 12, 0, FAULT
    mov ax, 0x10
    mov ss, ax

    ; 9 #SS(selector): MOV SS with a not-present segment
    mov ax, 0x28
    BEGIN
    mov ss, ax
    END 9, 12, 0x28, FAULT
    mov ax, ss
    CHECK ax, 0x10, 9 * 16 + 7

    ; ---- paging: identity map 0..4 MiB, 0x300000 not present, 0x301000 read-only ------
    mov dword [0x300010], 0x12345678
    mov edi, PT
    mov eax, 0x003                      ; P | R/W
.fill:
    stosd
    add eax, 0x1000
    cmp edi, PT + 4096
    jb .fill
    mov dword [PT + 0x300 * 4], 0x300000            ; not present
    mov dword [PT + 0x301 * 4], 0x301001            ; present, read-only
    mov dword [PD], PT | 3
    mov eax, PD
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000                  ; PG
    mov cr0, eax
    PRINT `exceptions: paging on\n`

    ; 10 #PF, not present, supervisor read: error code 0; the handler maps the page and
    ; the MOV restarts and completes
    xor eax, eax
    BEGIN
    mov eax, [0x300010]
    END 10, 14, 0, FAULT
    CHECK eax, 0x12345678, 10 * 16 + 7
    CHECK dword [got_cr2], 0x300010, 10 * 16 + 8
    mov eax, cr2
    CHECK eax, 0x300010, 10 * 16 + 9

    ; 11 #PF, protection, supervisor write with CR0.WP = 1: error code 3 (P | W)
    mov eax, cr0
    or eax, 0x10000                     ; WP
    mov cr0, eax
    BEGIN
    mov dword [0x301020], 0xAABBCCDD
    END 11, 14, 3, FAULT
    CHECK dword [0x301020], 0xAABBCCDD, 11 * 16 + 7
    CHECK dword [got_cr2], 0x301020, 11 * 16 + 8

    ; 12 #DF: the #GP gate not present -> #NP while delivering #GP -> double fault,
    ; error code 0 (the saved CS:EIP of a #DF is undefined)
    and byte [IDT + 13 * 8 + 5], 0x7F
    mov ax, 0x1000
    BEGIN
    mov ds, ax
    END 12, 8, 0, ABORT
    or byte [IDT + 13 * 8 + 5], 0x80
    ; #GP is delivered normally again
    mov ax, 0x1000
    BEGIN
    mov ds, ax
    END 14, 13, 0x1000, FAULT

    ; 15: IF through interrupt and trap gates
    mov al, 0xFF
    out 0x21, al                        ; mask every IRQ at both PICs
    out 0xA1, al
    sti
    BEGIN
    int3                                ; trap gate
    END 15, 3, NOERR, TRAP
    test dword [got_flags], 0x200
    jnz .t1
    FAIL(15 * 16 + 7)                   ; a trap gate leaves IF alone
.t1:
    test dword [got_saved_flags], 0x200
    jnz .t2
    FAIL(15 * 16 + 8)
.t2:
    BEGIN
    ud2                                 ; interrupt gate
    END 15, 6, NOERR, FAULT
    test dword [got_flags], 0x200
    jz .t3
    FAIL(15 * 16 + 9)                   ; an interrupt gate clears IF
.t3:
    test dword [got_saved_flags], 0x200
    jnz .t4
    FAIL(15 * 16 + 10)
.t4:
    pushfd
    pop eax
    test eax, 0x200
    jnz .t5
    FAIL(15 * 16 + 11)                  ; IRET restored IF = 1
.t5:
    cli

    PRINT `exceptions: pass\n`
    PASS
