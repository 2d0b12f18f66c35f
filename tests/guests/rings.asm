; rings: privilege levels, the TSS and system calls (SDM Vol. 3 §5.5-§5.9, §6.12, §7.2,
; §16.5 (I/O bitmap), Vol. 2 IRET, INT n, SYSENTER, SYSEXIT).
; Kernel (ring 0): a GDT with DPL-3 user segments and a TSS (SS0:ESP0, an I/O permission
; bitmap), LTR, an IDT whose INT 0x80 gate has DPL 3, paging with user pages, the SYSENTER
; MSRs; then IRET to ring 3. User (ring 3, its own pages at 0x9000 code / 0xA000 data+stack):
;   1-3    after IRET: CPL 3, SS:ESP from the frame, DS/ES nulled (their DPL 0 < CPL 3)
;   4      I/O to a port the bitmap allows (0xE9: the user prints)
;   5-6    INT 0x80 (DPL-3 interrupt gate) into ring 0: the handler checks CPL 0, its
;          stack = TSS SS0:ESP0 with the user's SS:ESP, EFLAGS, CS:EIP pushed; IRET back
;   7-9    HLT, CLI (IOPL 0), MOV from CR0 at ring 3: #GP(0) with the user's frame
;   10-11  IN from a port the bitmap denies, a 16-bit OUT whose second port is denied: #GP(0)
;   12-13  user read of a supervisor page: #PF error 5; user write to its read-only code
;          page: #PF error 7 (CR2 checked)
;   14     POPF at CPL 3 with IOPL 0 changes neither IF nor IOPL
;   15     SYSENTER to ring 0 (CS/SS/ESP/EIP from the MSRs) and SYSEXIT back
;   16     a far CALL through a DPL-3 call gate (one parameter) into ring 0: the handler
;          checks the TSS stack with the user's SS:ESP, the copied parameter and CS:EIP;
;          it loads DS with a DPL-0 segment, and RETF 4 to ring 3 nulls DS
;   17-18  INT n and INT3 through gates with DPL 0 from ring 3: #GP(vector * 8 + 2)
;   19-20  VERR/VERW/LAR/LSL at ring 3 judge descriptors by CPL and RPL
;   then INT 0x80 with EAX = 0: the kernel checks the TSS and reports the pass.
; Status: check id * 16 + n; 0x100 + v: unexpected exception v in ring 0; kernel-side checks
; 0x200 + n.
%include "lib.inc"

IDT   equ 0x1000
PD    equ 0x20000
PT    equ 0x21000
KSTACK equ 0x7000                       ; TSS ESP0 (page 6, supervisor)
SYSENTER_STACK equ 0x6000
UCODE_PAGE equ 0x9000                   ; user code, user read-only
UDATA_PAGE equ 0xA000                   ; user data and stack, user read/write
USTACK equ 0xB000
; the mailbox in the user data page: the ring-0 handlers write what they saw here
MB_RESUME   equ UDATA_PAGE + 0x00
MB_VEC      equ UDATA_PAGE + 0x04
MB_ERR      equ UDATA_PAGE + 0x08
MB_EIP      equ UDATA_PAGE + 0x0C
MB_CS       equ UDATA_PAGE + 0x10
MB_ESP      equ UDATA_PAGE + 0x14
MB_SS       equ UDATA_PAGE + 0x18
MB_CR2      equ UDATA_PAGE + 0x1C
MB_USER_ESP equ UDATA_PAGE + 0x20
MB_SYSENTER equ UDATA_PAGE + 0x24

KCODE equ 0x08
KDATA equ 0x10
UCODE equ 0x1B
UDATA equ 0x23
TSS_SEL equ 0x28

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

TSS_ADDR equ tss - $$ + 0x7C00
GATE_ADDR equ callgate_entry - $$ + 0x7C00
GATE_SEL equ 0x33                       ; GDT index 6, RPL 3
TSS_LIMIT equ tss_end - tss - 1

align 8
gdt:
    dq 0
    DESC 0, 0xFFFFF, ACC_CODE32, FLAGS_4G32         ; 0x08 kernel code
    DESC 0, 0xFFFFF, ACC_DATA, FLAGS_4G32           ; 0x10 kernel data
    DESC 0, 0xFFFFF, ACC_UCODE, FLAGS_4G32          ; 0x18 user code, DPL 3
    DESC 0, 0xFFFFF, ACC_UDATA, FLAGS_4G32          ; 0x20 user data, DPL 3
    DESC TSS_ADDR, TSS_LIMIT, 0x89, 0               ; 0x28 32-bit TSS, available
    dw GATE_ADDR & 0xFFFF, KCODE                    ; 0x30 32-bit call gate, DPL 3,
    db 1, 0xEC                                      ;      1 parameter dword
    dw GATE_ADDR >> 16
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd IDT

align 16
tss:
    dd 0                        ; 0x00 previous task link
    dd KSTACK                   ; 0x04 ESP0
    dd KDATA                    ; 0x08 SS0
    times 0x66 - 0x0C db 0
    dw iomap - tss              ; 0x66 I/O map base
iomap:                          ; one bit per port, 1 = denied; ports 0..0x3FF
    times 0xE9 / 8 db 0xFF
    db 0xFF & ~(1 << (0xE9 % 8))        ; 0xE8..0xEF: only 0xE9 allowed
    db 0x0F                             ; 0xF0..0xF7: 0xF4..0xF7 allowed (debug exit)
    times 128 - (0xF0 / 8) - 1 db 0xFF
    db 0xFF                             ; the byte after the map (SDM §16.5.2)
tss_end:

bits 32
; ---- ring 0 ------------------------------------------------------------------------------

; A handler for an exception taken at ring 3: record the frame (vector, error code, CS:EIP,
; SS:ESP; CR2 for #PF) in the mailbox, then return to ring 3 at [MB_RESUME].
%macro UHANDLER 2
uh%1:
%if %2
    pop dword [ss:MB_ERR]
%else
    mov dword [ss:MB_ERR], 0xFFFFFFFF
%endif
    mov dword [ss:MB_VEC], %1
    push eax
    mov eax, [esp + 4]
    mov [ss:MB_EIP], eax
    mov eax, [esp + 8]
    mov [ss:MB_CS], eax
    mov eax, [esp + 16]
    mov [ss:MB_ESP], eax
    mov eax, [esp + 20]
    mov [ss:MB_SS], eax
%if %1 == 14
    mov eax, cr2
    mov [ss:MB_CR2], eax
%endif
    mov eax, [ss:MB_RESUME]
    mov [esp + 4], eax
    pop eax
    iretd
%endmacro

UHANDLER 13, 1
UHANDLER 14, 1

; INT 0x80, DPL 3: EAX = 0 ends the test, otherwise returns EAX + 1 after checking that it
; runs at CPL 0 on the TSS stack with the user's frame on it.
syscall:
    push eax
    mov ax, cs
    and ax, 3
    CHECK ax, 0, 0x201                  ; CPL 0
    mov ax, ss
    CHECK ax, KDATA, 0x202              ; SS0 from the TSS
    lea eax, [esp + 4]
    CHECK eax, KSTACK - 20, 0x203       ; ESP0 from the TSS, five dwords pushed
    mov eax, [esp + 4 + 4]
    CHECK eax, UCODE, 0x204             ; the user's CS
    mov eax, [esp + 4 + 12]
    CHECK eax, [ss:MB_USER_ESP], 0x205  ; the user's ESP
    mov eax, [esp + 4 + 16]
    CHECK eax, UDATA, 0x206             ; the user's SS
    mov eax, [esp + 4]
    CHECK eax, [ss:MB_RESUME], 0x207    ; the user's EIP: after the INT
    pop eax
    test eax, eax
    jz .finish
    inc eax
    iretd
.finish:
    mov ax, KDATA
    mov ds, ax
    str ax
    CHECK ax, TSS_SEL, 0x208
    PRINT `rings: back in ring 0, pass\n`
    PASS

; SYSENTER lands here: CS/SS from IA32_SYSENTER_CS, ESP/EIP from the MSRs, CPL 0
sysenter_entry:
    mov ax, cs
    CHECK ax, KCODE, 0x209
    mov ax, ss
    CHECK ax, KDATA, 0x20A
    CHECK esp, SYSENTER_STACK, 0x20B
    mov dword [ss:MB_SYSENTER], 1
    sysexit                             ; to CS = 0x1B, SS = 0x23, EIP = EDX, ESP = ECX

; a far CALL through the call gate lands here, on the TSS stack:
; [esp] EIP, [esp+4] CS, [esp+8] the parameter, [esp+12] ESP, [esp+16] SS (all the user's)
callgate_entry:
    mov ax, cs
    CHECK ax, KCODE, 0x20D
    CHECK esp, KSTACK - 20, 0x20E
    CHECK dword [esp + 4], UCODE, 0x20F
    CHECK dword [esp + 8], 0xABCD, 0x210
    mov eax, [ss:MB_USER_ESP]
    CHECK dword [esp + 12], eax, 0x211
    CHECK dword [esp + 16], UDATA, 0x212
    mov eax, [ss:MB_RESUME]
    CHECK dword [esp], eax, 0x213
    mov ax, KDATA                       ; DPL 0: RETF to ring 3 nulls it
    mov ds, ax
    retf 4

UNEXPECTED_STUBS

kernel:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, KSTACK
    PRINT `rings: ring 0\n`

    ; IDT: stubs for 0..31, then the handlers
    IDT_UNEXPECTED IDT
    SET_GATE IDT, 13, uh13, INT_GATE
    SET_GATE IDT, 14, uh14, INT_GATE
    SET_GATE IDT, 3, syscall, INT_GATE                ; DPL 0: INT3 from ring 3 is #GP
    SET_GATE IDT, 0x80, syscall, INT_GATE | 0x60     ; DPL 3: INT 0x80 allowed from ring 3
    SET_GATE IDT, 0x81, syscall, INT_GATE            ; DPL 0: not from ring 3
    lidt [idt_desc]

    ; the TSS
    mov ax, TSS_SEL
    ltr ax
    test byte [gdt + TSS_SEL + 5], 0x02     ; LTR marks it busy
    jnz .busy
    FAIL(0x20C)
.busy:

    ; SYSENTER MSRs
    mov ecx, 0x174
    xor edx, edx
    mov eax, KCODE
    wrmsr
    mov ecx, 0x175
    mov eax, SYSENTER_STACK
    wrmsr
    mov ecx, 0x176
    mov eax, sysenter_entry
    wrmsr

    ; paging: identity 0..4 MiB, supervisor; the user code page user read-only, the user
    ; data page user read/write
    mov edi, PT
    mov eax, 0x003
.fill:
    stosd
    add eax, 0x1000
    cmp edi, PT + 4096
    jb .fill
    mov dword [PT + (UCODE_PAGE >> 12) * 4], UCODE_PAGE | 0x5     ; P, U
    mov dword [PT + (UDATA_PAGE >> 12) * 4], UDATA_PAGE | 0x7     ; P, R/W, U
    mov edi, PD
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [PD], PT | 0x7
    mov eax, PD
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax

    ; IRET to ring 3 with DS = ES = the kernel's data segment: IRET nulls them
    push dword UDATA                    ; SS
    push dword USTACK                   ; ESP
    push dword 0x002                    ; EFLAGS: IOPL 0, IF 0
    push dword UCODE                    ; CS
    push dword user                     ; EIP
    iretd

; ---- ring 3 --------------------------------------------------------------------------------
    times UCODE_PAGE - 0x7C00 - ($ - $$) db 0xCC
user:
    mov ax, ds
    CHECK ax, 0, 3                      ; nulled by IRET (DPL 0 < CPL 3); checked first
    mov ax, es
    CHECK ax, 0, 3
    mov ax, UDATA
    mov ds, ax
    mov es, ax
    mov ax, cs
    CHECK ax, UCODE, 1                  ; CPL 3
    mov ax, ss
    CHECK ax, UDATA, 2
    CHECK esp, USTACK, 2

    ; 4: the I/O bitmap allows port 0xE9
    PRINT `rings: ring 3\n`

; UBEGIN / UEND id, vector, error code: an exception taken from ring 3 into ring 0 and back
%macro UBEGIN 0
    %push try
    mov dword [MB_VEC], 0xFFFFFFFF
    mov dword [MB_RESUME], %$resume
    mov [MB_USER_ESP], esp
%$fault:
%endmacro
%macro UEND 3
%$resume:
    CHECK dword [MB_VEC], %2, (%1) * 16 + 1
    CHECK dword [MB_ERR], %3, (%1) * 16 + 2
    CHECK dword [MB_EIP], %$fault, (%1) * 16 + 3
    CHECK dword [MB_CS], UCODE, (%1) * 16 + 4
    CHECK dword [MB_SS], UDATA, (%1) * 16 + 5
    CHECK dword [MB_ESP], esp, (%1) * 16 + 6
    mov ax, cs
    CHECK ax, UCODE, (%1) * 16 + 7      ; back at ring 3
    %pop
%endmacro

    ; 5-6: a system call
    mov dword [MB_RESUME], .after_syscall   ; the syscall handler checks its saved EIP against it
    mov [MB_USER_ESP], esp
    mov eax, 0x1234
    int 0x80
.after_syscall:
    CHECK eax, 0x1235, 5
    CHECK esp, USTACK, 6
    mov ax, cs
    CHECK ax, UCODE, 6
    mov ax, ds
    CHECK ax, UDATA, 6                  ; a DPL-3 data segment survives the IRET

    ; 7-9: privileged instructions
    UBEGIN
    hlt
    UEND 7, 13, 0
    UBEGIN
    cli
    UEND 8, 13, 0
    UBEGIN
    mov eax, cr0
    UEND 9, 13, 0

    ; 10-11: the I/O bitmap denies port 0x80, and port 0xEA (the second byte of a word at 0xE9)
    UBEGIN
    in al, 0x80
    UEND 10, 13, 0
    mov dx, 0xE9
    UBEGIN
    out dx, ax
    UEND 11, 13, 0

    ; 12-13: user pages
    UBEGIN
    mov eax, [0x7C00]                   ; supervisor page
    UEND 12, 14, 5
    CHECK dword [MB_CR2], 0x7C00, 12 * 16 + 8
    UBEGIN
    mov dword [UCODE_PAGE + 0x800], 0   ; user read-only page
    UEND 13, 14, 7
    CHECK dword [MB_CR2], UCODE_PAGE + 0x800, 13 * 16 + 8

    ; 14: POPF at CPL 3 > IOPL keeps IF and IOPL
    pushfd
    or dword [esp], 0x3200              ; IF, IOPL 3
    popfd
    pushfd
    pop eax
    and eax, 0x3200
    CHECK eax, 0, 14

    ; 15: SYSENTER / SYSEXIT
    mov dword [MB_SYSENTER], 0
    mov ecx, esp
    mov edx, .after_sysexit
    sysenter
.after_sysexit:
    CHECK dword [MB_SYSENTER], 1, 15 * 16 + 1
    mov ax, cs
    CHECK ax, UCODE, 15 * 16 + 2
    mov ax, ss
    CHECK ax, UDATA, 15 * 16 + 3
    CHECK esp, USTACK, 15 * 16 + 4

    ; 16: a call gate into ring 0 and RETF 4 back
    push dword 0xABCD                   ; the parameter, copied to the ring-0 stack
    mov dword [MB_RESUME], .after_call
    mov [MB_USER_ESP], esp
    call GATE_SEL:0                     ; the offset is the gate's
.after_call:
    mov ax, cs
    CHECK ax, UCODE, 16 * 16 + 1
    CHECK esp, USTACK, 16 * 16 + 2      ; RETF 4 dropped the parameter from the user stack too
    mov ax, ds
    CHECK ax, 0, 16 * 16 + 3            ; nulled: its DPL 0 < CPL 3
    mov ax, UDATA
    mov ds, ax

    ; 19: VERR / VERW at CPL 3
    mov ax, KDATA
    verr ax
    jnz .v1                             ; DPL 0 < CPL 3: not readable from here
    FAIL(19 * 16 + 1)
.v1:
    mov ax, UDATA
    verw ax
    jz .v2
    FAIL(19 * 16 + 2)
.v2:
    mov ax, UCODE
    verw ax
    jnz .v3                             ; code is never writable
    FAIL(19 * 16 + 3)
.v3:
    ; 20: LAR / LSL
    mov eax, 0xFFFFFFFF
    mov bx, UDATA
    lar eax, bx
    and eax, 0x00F0FF00                 ; bits 19:16 (the limit's) are undefined (SDM: 00FxFF00H)
    CHECK eax, 0x00C0F300, 20 * 16 + 1  ; G D/B | P DPL S type (with accessed: the loads set it)
    lsl eax, bx
    CHECK eax, 0xFFFFFFFF, 20 * 16 + 2
    mov ebx, 0x12345678
    mov ax, KDATA
    lsl ebx, ax
    jnz .l1                             ; DPL 0 < CPL 3: ZF = 0, EBX unchanged
    FAIL(20 * 16 + 3)
.l1:
    CHECK ebx, 0x12345678, 20 * 16 + 4

    ; 17-18: software interrupts through a DPL-0 gate: #GP, error code = IDT index | IDT bit
    UBEGIN
    int 0x81
    UEND 17, 13, 0x81 * 8 + 2
    UBEGIN
    int3
    UEND 18, 13, 3 * 8 + 2

    ; the end: INT 0x80 with EAX = 0
    mov dword [MB_RESUME], .never
    mov [MB_USER_ESP], esp
    xor eax, eax
    int 0x80
.never:
    FAIL(21)
