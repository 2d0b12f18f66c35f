; tasks: hardware task switching (SDM Vol. 3 §7.3-§7.4, Vol. 2 JMP, CALL, IRET, INT n).
; Protected mode without paging; four 32-bit TSSs in the GDT: A (the kernel's, loaded with
; LTR), B (its own EIP/ESP/EFLAGS/general and segment registers), C (the #DE handler task,
; through a task gate in the IDT), D (the #GP handler task, likewise).
;   1x  a far JMP to TSS B's selector: B starts with the registers of its TSS (11-16), sees
;       CR0.TS = 1 (17), TR = B (18), B busy and A not busy (19-1A), and JMPs back to A;
;   2x  A resumes after its JMP with its registers intact (21-27), TR = A (28), A busy and
;       B not (29-2A), B's state saved in its TSS (2B-2D), CR0.TS = 1 (2E), NT = 0 (2F)
;   3x  a far CALL through a task gate (GDT, type 5) to B: B sees NT = 1 (31), its back
;       link = A (32), both busy (33-34), TR = B (35); IRET back to A: A's registers (36),
;       TR = A (37), B not busy, A busy (38-39), A's NT still 0 (3A), NT cleared in the
;       EFLAGS image saved in B's TSS (3B), B's back link kept (3C), CR0.TS = 1 (3D)
;   4x  #DE from DIV through an IDT task gate to task C: C sees NT = 1 (41), back link A
;       (42), no error code on its stack (43), the saved EIP in A's TSS = the DIV (44),
;       the saved ECX = 0 (45); it sets the saved ECX to 5 and IRETs: the DIV is restarted
;       and gives 20 (46-48), TR = A, C not busy (49-4A)
;   5x  #GP(0x80) from a MOV DS with a selector beyond the GDT limit through a task gate to
;       task D: the error code is pushed on D's stack (51-52), the saved EIP = the MOV (53);
;       D moves A's saved EIP past it, pops the error code and IRETs (54-56)
; Status: check id * 16 + n; 0x100 + v: unexpected exception v.
%include "lib.inc"

IDT     equ 0x1000
A_STACK equ 0x7000
B_STACK equ 0x6000
C_STACK equ 0x5000
D_STACK equ 0x4000

KCODE   equ 0x08
KDATA   equ 0x10
TSSA_SEL equ 0x18
TSSB_SEL equ 0x20
GATEB_SEL equ 0x28
TSSC_SEL equ 0x30
KDATA2  equ 0x38                        ; a second flat data segment: B's DS and FS
TSSD_SEL equ 0x40

B_EFLAGS equ 0x00000897                 ; OF SF AF PF CF and the reserved bit 1

; TSS offsets (32-bit TSS, SDM Figure 7-2)
T_LINK  equ 0x00
T_ESP0  equ 0x04
T_SS0   equ 0x08
T_CR3   equ 0x1C
T_EIP   equ 0x20
T_EFLAGS equ 0x24
T_EAX   equ 0x28
T_ECX   equ 0x2C
T_EDX   equ 0x30
T_EBX   equ 0x34
T_ESP   equ 0x38
T_EBP   equ 0x3C
T_ESI   equ 0x40
T_EDI   equ 0x44
T_ES    equ 0x48
T_CS    equ 0x4C
T_SS    equ 0x50
T_DS    equ 0x54
T_FS    equ 0x58
T_GS    equ 0x5C
T_LDT   equ 0x60
T_IOMAP equ 0x66
TSS_SIZE equ 0x68

; TSS32 eip, esp, eflags, eax, ecx, edx, ebx, ebp, esi, edi, es, cs, ss, ds, fs, gs
%macro TSS32 16
    dd 0                                ; link
    dd 0, 0, 0, 0, 0, 0                 ; ESP0 SS0 ESP1 SS1 ESP2 SS2
    dd 0                                ; CR3 (paging is off)
    dd %1, %3                           ; EIP EFLAGS
    dd %4, %5, %6, %7, %2, %8, %9, %10  ; EAX ECX EDX EBX ESP EBP ESI EDI
    dd %11, %12, %13, %14, %15, %16     ; ES CS SS DS FS GS
    dd 0                                ; LDT
    dw 0, TSS_SIZE                      ; T, I/O map base beyond the limit: no bitmap
%endmacro

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
    jmp dword KCODE:kernel

%define ADDR(x) ((x) - $$ + 0x7C00)

align 8
gdt:
    dq 0
    DESC 0, 0xFFFFF, ACC_CODE32, FLAGS_4G32         ; 0x08 code
    DESC 0, 0xFFFFF, ACC_DATA, FLAGS_4G32           ; 0x10 data
    DESC ADDR(tss_a), TSS_SIZE - 1, 0x89, 0         ; 0x18 TSS A, available
    DESC ADDR(tss_b), TSS_SIZE - 1, 0x89, 0         ; 0x20 TSS B, available
    dw 0, TSSB_SEL                                  ; 0x28 task gate to TSS B
    db 0, 0x85
    dw 0
    DESC ADDR(tss_c), TSS_SIZE - 1, 0x89, 0         ; 0x30 TSS C
    DESC 0, 0xFFFFF, ACC_DATA, FLAGS_4G32           ; 0x38 data (a second selector)
    DESC ADDR(tss_d), TSS_SIZE - 1, 0x89, 0         ; 0x40 TSS D
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd IDT

align 16
tss_a:
    times TSS_SIZE db 0
    align 16
tss_b:
    TSS32 task_b1, B_STACK, B_EFLAGS, 0xB0B0B0B0, 0xB1B1B1B1, 0xB2B2B2B2, 0xB3B3B3B3, \
          0xB4B4B4B4, 0xB5B5B5B5, 0xB6B6B6B6, KDATA, KCODE, KDATA, KDATA2, KDATA2, KDATA
    align 16
tss_c:
    TSS32 task_c, C_STACK, 0x2, 0, 0, 0, 0, 0, 0, 0, KDATA, KCODE, KDATA, KDATA, KDATA, KDATA
    align 16
tss_d:
    TSS32 task_d, D_STACK, 0x2, 0, 0, 0, 0, 0, 0, 0, KDATA, KCODE, KDATA, KDATA, KDATA, KDATA

bits 32

; IS_SET / IS_CLEAR operand, mask, n: fail with n unless the bits are all set / all clear
%macro IS_SET 3
    test %1, %2
    jnz %%ok
    EXIT %3
%%ok:
%endmacro
%macro IS_CLEAR 3
    test %1, %2
    jz %%ok
    EXIT %3
%%ok:
%endmacro
%define BUSY(sel) byte [gdt + (sel) + 5], 0x02

UNEXPECTED_STUBS

; ---- task B ------------------------------------------------------------------------------
task_b1:                                ; entered by the JMP in part 1
    pushfd
    CHECK dword [esp], B_EFLAGS, 0x11   ; EFLAGS from the TSS (a JMP leaves NT = 0)
    add esp, 4
    CHECK esp, B_STACK, 0x12
    CHECK eax, 0xB0B0B0B0, 0x13
    CHECK ecx, 0xB1B1B1B1, 0x13
    CHECK edx, 0xB2B2B2B2, 0x13
    CHECK ebx, 0xB3B3B3B3, 0x13
    CHECK ebp, 0xB4B4B4B4, 0x14
    CHECK esi, 0xB5B5B5B5, 0x14
    CHECK edi, 0xB6B6B6B6, 0x14
    mov ax, ds
    CHECK ax, KDATA2, 0x15
    mov ax, fs
    CHECK ax, KDATA2, 0x15
    mov ax, es
    CHECK ax, KDATA, 0x16
    mov ax, gs
    CHECK ax, KDATA, 0x16
    mov ax, ss
    CHECK ax, KDATA, 0x16
    mov ax, cs
    CHECK ax, KCODE, 0x16
    mov eax, cr0
    IS_SET eax, 0x8, 0x17               ; CR0.TS: set by every task switch
    str ax
    CHECK ax, TSSB_SEL, 0x18
    IS_SET BUSY(TSSB_SEL), 0x19
    IS_CLEAR BUSY(TSSA_SEL), 0x1A       ; a JMP clears the old task's busy bit
    PRINT `tasks: in task B\n`
    mov eax, 0xB7B7B7B7
    jmp TSSA_SEL:0
b1_after:
    FAIL(0x1F)                          ; B is never resumed here

task_b2:                                ; entered by the CALL through the task gate in part 3
    pushfd
    IS_SET dword [esp], 0x4000, 0x31    ; NT: a nested task
    add esp, 4
    CHECK dword [tss_b + T_LINK], TSSA_SEL, 0x32
    IS_SET BUSY(TSSB_SEL), 0x33
    IS_SET BUSY(TSSA_SEL), 0x34         ; a CALL keeps the old task busy
    str ax
    CHECK ax, TSSB_SEL, 0x35
    mov eax, 0xB8B8B8B8
    iretd                               ; NT = 1: back to the task in the link field
    FAIL(0x3F)

; ---- task C: #DE -------------------------------------------------------------------------
task_c:
    pushfd
    IS_SET dword [esp], 0x4000, 0x41
    add esp, 4
    CHECK dword [tss_c + T_LINK], TSSA_SEL, 0x42
    CHECK esp, C_STACK, 0x43            ; #DE has no error code
    CHECK dword [tss_a + T_EIP], de_fault, 0x44     ; a fault: the DIV itself
    CHECK dword [tss_a + T_ECX], 0, 0x45
    mov dword [tss_a + T_ECX], 5        ; fix the divisor; the DIV is restarted
    iretd
    jmp task_c                          ; the next #DE would start here

; ---- task D: #GP -------------------------------------------------------------------------
task_d:
    CHECK esp, D_STACK - 4, 0x51        ; the error code is pushed on the handler task's stack
    CHECK dword [esp], 0x80, 0x52       ; the selector beyond the GDT limit
    CHECK dword [tss_a + T_EIP], gp_fault, 0x53
    mov dword [tss_a + T_EIP], gp_fault_end         ; skip the MOV
    add esp, 4                          ; the handler pops the error code itself
    iretd
    jmp task_d

; ---- task A ------------------------------------------------------------------------------
kernel:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, A_STACK
    mov ax, KDATA2
    mov fs, ax
    xor ax, ax
    mov gs, ax

    ; IDT: stubs for 0..31, task gates for #DE and #GP
    IDT_UNEXPECTED IDT
    mov dword [IDT + 0 * 8], TSSC_SEL << 16         ; task gate: selector in bytes 2-3
    mov dword [IDT + 0 * 8 + 4], 0x8500             ; P, DPL 0, type 5
    mov dword [IDT + 13 * 8], TSSD_SEL << 16
    mov dword [IDT + 13 * 8 + 4], 0x8500
    lidt [idt_desc]

    mov ax, TSSA_SEL
    ltr ax
    IS_SET BUSY(TSSA_SEL), 0x01
    PRINT `tasks: in task A\n`

    ; ---- 1-2: JMP to TSS B and back --------------------------------------------------
    mov eax, 0xA0A0A0A0
    mov ecx, 0xA1A1A1A1
    mov edx, 0xA2A2A2A2
    mov ebx, 0xA3A3A3A3
    mov ebp, 0xA4A4A4A4
    mov esi, 0xA5A5A5A5
    mov edi, 0xA6A6A6A6
    jmp TSSB_SEL:0                      ; the offset is ignored
a_resume1:
    CHECK eax, 0xA0A0A0A0, 0x21
    CHECK ecx, 0xA1A1A1A1, 0x21
    CHECK edx, 0xA2A2A2A2, 0x21
    CHECK ebx, 0xA3A3A3A3, 0x21
    CHECK ebp, 0xA4A4A4A4, 0x22
    CHECK esi, 0xA5A5A5A5, 0x22
    CHECK edi, 0xA6A6A6A6, 0x22
    CHECK esp, A_STACK, 0x23
    mov ax, ds
    CHECK ax, KDATA, 0x24
    mov ax, ss
    CHECK ax, KDATA, 0x24
    mov ax, fs
    CHECK ax, KDATA2, 0x25
    mov ax, gs
    CHECK ax, 0, 0x26                   ; a null selector saved and restored
    mov ax, cs
    CHECK ax, KCODE, 0x27
    str ax
    CHECK ax, TSSA_SEL, 0x28
    IS_SET BUSY(TSSA_SEL), 0x29
    IS_CLEAR BUSY(TSSB_SEL), 0x2A
    CHECK dword [tss_b + T_EIP], b1_after, 0x2B     ; B's state saved at its JMP
    CHECK dword [tss_b + T_EAX], 0xB7B7B7B7, 0x2C
    CHECK dword [tss_b + T_DS], KDATA2, 0x2D
    CHECK dword [tss_a + T_LINK], 0, 0x2D           ; a JMP does not write the link
    mov eax, cr0
    IS_SET eax, 0x8, 0x2E
    clts
    pushfd
    IS_CLEAR dword [esp], 0x4000, 0x2F
    add esp, 4
    PRINT `tasks: back in task A\n`

    ; ---- 3: CALL through a task gate, IRET back ----------------------------------------
    mov dword [tss_b + T_EIP], task_b2
    mov dword [tss_b + T_ESP], B_STACK
    mov dword [tss_b + T_EFLAGS], 0x2
    mov dword [tss_b + T_LINK], 0
    mov eax, 0xA7A7A7A7
    mov ebx, 0xA8A8A8A8
    call GATEB_SEL:0
    CHECK eax, 0xA7A7A7A7, 0x36
    CHECK ebx, 0xA8A8A8A8, 0x36
    CHECK esp, A_STACK, 0x36
    str ax
    CHECK ax, TSSA_SEL, 0x37
    IS_CLEAR BUSY(TSSB_SEL), 0x38       ; IRET clears the returning task's busy bit
    IS_SET BUSY(TSSA_SEL), 0x39
    pushfd
    IS_CLEAR dword [esp], 0x4000, 0x3A  ; A's own NT as before the CALL
    add esp, 4
    IS_CLEAR dword [tss_b + T_EFLAGS], 0x4000, 0x3B ; SDM Table 7-2: IRET clears the old
                                                    ; task's NT in its saved EFLAGS
    CHECK dword [tss_b + T_LINK], TSSA_SEL, 0x3C
    CHECK dword [tss_b + T_EAX], 0xB8B8B8B8, 0x3C
    mov eax, cr0
    IS_SET eax, 0x8, 0x3D
    clts
    PRINT `tasks: call and iret through a task gate\n`

    ; ---- 4: #DE through a task gate ----------------------------------------------------
    mov eax, 100
    xor edx, edx
    xor ecx, ecx
de_fault:
    div ecx                             ; #DE -> task C, which sets ECX = 5
    CHECK eax, 20, 0x46
    CHECK edx, 0, 0x47
    CHECK ecx, 5, 0x48
    str ax
    CHECK ax, TSSA_SEL, 0x49
    IS_CLEAR BUSY(TSSC_SEL), 0x4A
    IS_SET BUSY(TSSA_SEL), 0x4A
    clts

    ; ---- 5: #GP with an error code through a task gate ---------------------------------
    mov ax, 0x80                        ; beyond the GDT limit
gp_fault:
    mov ds, ax
    FAIL(0x54)                          ; task D skips this
gp_fault_end:
    mov ax, ds
    CHECK ax, KDATA, 0x55               ; the MOV did not happen
    str ax
    CHECK ax, TSSA_SEL, 0x56
    IS_CLEAR BUSY(TSSD_SEL), 0x56
    PRINT `tasks: exceptions through task gates\n`
    PRINT `tasks: pass\n`
    PASS
