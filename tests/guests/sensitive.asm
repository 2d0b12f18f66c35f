; sensitive: the sensitive-but-unprivileged instructions (J. S. Robin and C. E. Irvine, USENIX
; Security 2000; vmcore/monitor/sensitive.py SENSITIVE_UNPRIVILEGED) observed from guest KERNEL
; code: CPL 0, protected mode, paging off. None of them faults at CPL 1-3, but each reads or
; does something that depends on the real CPL or the real system registers, so a monitor that
; runs the guest kernel deprivileged must hide the difference (tests/test_sensitive_guest.py).
;
; The guest boots like a boot sector (real mode at 0000:7C00), loads its own GDT (DPL-0 code and
; data, DPL-3 code and data, a TSS, an LDT), its own IDT, LTR and LLDT, and then prints one line
; `name=value` (value in hex) per observation to the debug console (port 0xE9). It checks
; nothing itself: the test compares the lines with what the SDM says CPL-0 hardware gives.
; It ends with status 0 on the debug-exit port (0xF4); status 0x100 + v is an exception v that
; nobody expected (lib.inc UNEXPECTED_STUBS), 0x200 + v an interrupt on an unused vector v.
;
; The raw bytes of every observed instruction are given beside it (32-bit code segment: the
; 66 prefix selects a 16-bit operand).
;
; Values that the SDM leaves model-specific are made deterministic here rather than read raw:
; - PUSH Sreg / far CALL / INT with a 32-bit operand size push either the zero-extended selector
;   or write only its 16 bits (SDM Vol. 2 PUSH, CALL): the slot is zeroed first, or the word read;
; - LAR's bits 19:16 are undefined (SDM Vol. 2 LAR: "00FxFF00H"): masked with 0x00F0FF00;
; - SLDT/STR/SMSW/MOV r, Sreg to a 32-bit register leave the upper half cleared or undefined: the
;   16-bit forms are used with EAX cleared first;
; - the descriptors' accessed bits are preset, so no load changes what LAR reads later.
%include "lib.inc"

LOAD     equ 0x7C00
GDT_ADDR equ 0x7D00                     ; fixed addresses, so the test knows what SGDT must say
LDT_ADDR equ 0x7D80
TSS_ADDR equ 0x7DC0
IDT      equ 0x1000
IDT_LIMIT equ 0x41 * 8 - 1              ; vectors 0..0x40: a limit that is not the usual 0x7FF
STACK    equ 0x7C00

KCODE   equ 0x08                        ; DPL 0 code
KDATA   equ 0x10                        ; DPL 0 data
UCODE   equ 0x1B                        ; DPL 3 code (RPL 3)
UDATA   equ 0x23                        ; DPL 3 data (RPL 3)
TSS_SEL equ 0x28
LDT_SEL equ 0x30

INT_VEC equ 0x40                        ; INT n, a DPL-0 interrupt gate
IRQ0_VEC equ 0x20                       ; the master PIC remapped to 0x20..0x27
PIT_COUNT equ 1000                      ; ~1.2 kHz: 100,000 instructions under the virtual clock
SPIN_LIMIT equ 2000000

; the data the handlers write (below the code, in the first 64 KiB)
FARCALL_CS  equ 0x600
FARCALL_EIP equ 0x604
INT_CS      equ 0x608
INT_FRAME_IF equ 0x60C
INT_HANDLER_IF equ 0x610
IRQ_FLAG    equ 0x614
IRQ_CS      equ 0x618
IRQ_FRAME_IF equ 0x61C
SGDT_BUF    equ 0x620                   ; 6 bytes
SIDT_BUF    equ 0x628                   ; 6 bytes

org LOAD
bits 16
start:
    REAL_MODE_START STACK
    lgdt [gdt_desc]
    mov eax, cr0
    or al, 1                            ; PE
    mov cr0, eax
    jmp dword KCODE:pm_entry

    times (GDT_ADDR - LOAD) - ($ - $$) db 0
gdt:                                    ; at GDT_ADDR; accessed bits (type bit 0) preset
    dq 0                                                ; 0x00 null
    DESC 0, 0xFFFFF, ACC_CODE32 | 1, FLAGS_4G32         ; 0x08 code, DPL 0, 0..4 GiB  (9B)
    DESC 0, 0xFFFFF, ACC_DATA | 1, FLAGS_4G32           ; 0x10 data, DPL 0, 0..4 GiB  (93)
    DESC 0, 0xFFFFF, ACC_UCODE | 1, FLAGS_4G32          ; 0x18 code, DPL 3            (FB)
    DESC 0, 0xFFFFF, ACC_UDATA | 1, FLAGS_4G32          ; 0x20 data, DPL 3            (F3)
    DESC TSS_ADDR, 0x67, 0x89, 0                        ; 0x28 32-bit TSS, available (LTR: busy, 8B)
    DESC LDT_ADDR, 0x0F, 0x82, 0                        ; 0x30 LDT, two entries
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1                ; 0x37
    dd gdt
idt_desc:
    dw IDT_LIMIT
    dd IDT

    times (LDT_ADDR - LOAD) - ($ - $$) db 0
ldt:                                    ; at LDT_ADDR
    dq 0
    DESC 0, 0xFFFFF, ACC_DATA | 1, FLAGS_4G32           ; LDT selector 0x0C: data, DPL 0

    times (TSS_ADDR - LOAD) - ($ - $$) db 0
tss:                                    ; at TSS_ADDR: nothing switches to it; LTR needs one
    dd 0                                ; previous task link
    dd STACK                            ; ESP0
    dd KDATA                            ; SS0
    times 0x66 - 0x0C db 0
    dw 0x68                             ; I/O map base: past the limit, no bitmap

bits 32
hexdigits: db "0123456789abcdef"

; show: print "<name>=<value>\n", name at ESI (NUL-terminated), value in EAX, ECX hex digits
; (its low ECX * 4 bits). Preserves every register; the flags are not preserved (no PUSHF here:
; it is one of the instructions under test).
show:
    pushad
    mov ebx, eax
    mov dx, DEBUG_CONSOLE
.name:
    lodsb
    test al, al
    jz .eq
    out dx, al
    jmp .name
.eq:
    mov al, '='
    out dx, al
    mov eax, ecx                        ; rotate the value's top wanted digit to the top
    neg eax
    add eax, 8
    shl eax, 2
    xchg eax, ecx
    shl ebx, cl
    mov ecx, eax
.digit:
    rol ebx, 4
    mov eax, ebx
    and eax, 0x0F
    mov al, [hexdigits + eax]
    out dx, al
    loop .digit
    mov al, 10
    out dx, al
    popad
    ret

; SHOW "name", digits: print EAX as name=<digits hex digits>
%macro SHOW 2
    jmp %%code
%%name: db %1, 0
%%code:
    mov esi, %%name
    mov ecx, %2
    call show
%endmacro

; SHOW_ZF "name": print ZF as name=1 or name=0 (SETZ does not read the real CPL)
%macro SHOW_ZF 1
    setz al                             ; 0F 94 C0
    movzx eax, al
    SHOW %1, 1
%endmacro

UNEXPECTED_STUBS

; an interrupt on a vector nothing should raise (the PIC's other lines, the slave's): 0x200 + v
%macro STRAY 1
stray%1:
    EXIT 0x200 + %1
%endmacro
%assign v 0x21
%rep 15
STRAY v
%assign v v + 1
%endrep

; far CALL target, same ring (CPL 0 -> CPL 0): [esp] EIP, [esp+4] CS (low word: SDM CALL
; "Push(CS) padded with 16 high-order bits"; some CPUs write only the word)
far_target:
    movzx eax, word [esp + 4]
    mov [FARCALL_CS], eax
    mov eax, [esp]
    mov [FARCALL_EIP], eax
    retf                                ; CB                     retf (far return, same ring)

; INT 0x40 through a DPL-0 interrupt gate: [esp] EIP, [esp+4] CS, [esp+8] EFLAGS
int_handler:
    push eax
    movzx eax, word [esp + 4 + 4]
    mov [INT_CS], eax
    mov eax, [esp + 4 + 8]
    and eax, 0x200                      ; the IF the INT found
    mov [INT_FRAME_IF], eax
    pushfd                              ; 9C                     pushfd: the gate cleared IF
    pop eax
    and eax, 0x200
    mov [INT_HANDLER_IF], eax
    pop eax
    iretd                               ; CF                     iretd

; IRQ 0 (PIT): set the flag, record the frame, EOI
irq0_handler:
    push eax
    mov dword [IRQ_FLAG], 1
    movzx eax, word [esp + 4 + 4]
    mov [IRQ_CS], eax
    mov eax, [esp + 4 + 8]
    and eax, 0x200
    mov [IRQ_FRAME_IF], eax
    mov al, 0x20                        ; non-specific EOI
    out 0x20, al
    pop eax
    iretd

pm_entry:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, STACK

    ; the IDT: stubs for the exceptions, the PIC's vectors, INT 0x40
    IDT_UNEXPECTED IDT
    SET_GATE IDT, IRQ0_VEC, irq0_handler, INT_GATE
%assign v 0x21
%rep 15
    SET_GATE IDT, v, stray %+ v, INT_GATE
%assign v v + 1
%endrep
    SET_GATE IDT, INT_VEC, int_handler, INT_GATE
    lidt [idt_desc]
    mov ax, TSS_SEL
    ltr ax
    mov ax, LDT_SEL
    lldt ax

    ; the 8259A pair: remapped to 0x20 / 0x28, everything masked until the POPF test
    mov al, 0x11                        ; ICW1: edge, cascade, ICW4
    out 0x20, al
    out 0xA0, al
    mov al, IRQ0_VEC                    ; ICW2
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 0x04                        ; ICW3: slave on IR2
    out 0x21, al
    mov al, 0x02
    out 0xA1, al
    mov al, 0x01                        ; ICW4: 8086 mode
    out 0x21, al
    out 0xA1, al
    mov al, 0xFF                        ; OCW1: all masked
    out 0x21, al
    out 0xA1, al

    ; ---- descriptor-table registers --------------------------------------------------------
    sgdt [SGDT_BUF]                     ; 0F 01 05 20 06 00 00   sgdt [0x620]
    movzx eax, word [SGDT_BUF]
    SHOW "sgdt_limit", 4
    mov eax, [SGDT_BUF + 2]
    SHOW "sgdt_base", 8

    sidt [SIDT_BUF]                     ; 0F 01 0D 28 06 00 00   sidt [0x628]
    movzx eax, word [SIDT_BUF]
    SHOW "sidt_limit", 4
    mov eax, [SIDT_BUF + 2]
    SHOW "sidt_base", 8

    xor eax, eax
    sldt ax                             ; 66 0F 00 C0            sldt ax
    SHOW "sldt", 4

    xor eax, eax
    str ax                              ; 66 0F 00 C8            str ax
    SHOW "str", 4

    xor eax, eax
    smsw ax                             ; 66 0F 01 E0            smsw ax
    SHOW "smsw", 4

    ; ---- CS and SS: their RPL is the CPL ---------------------------------------------------
    push dword 0                        ; zero the slot: PUSH Sreg may write only 16 bits
    add esp, 4
    push cs                             ; 0E                     push cs
    pop eax
    SHOW "push_cs", 8

    xor eax, eax
    mov ax, cs                          ; 66 8C C8               mov ax, cs
    SHOW "mov_cs", 4

    xor eax, eax
    mov ax, ss                          ; 66 8C D0               mov ax, ss
    SHOW "mov_ss", 4

    push dword 0
    add esp, 4
    push ss                             ; 16                     push ss
    pop eax
    SHOW "push_ss", 8

    ; ---- LAR / LSL / VERR / VERW: judged at the CPL ----------------------------------------
    mov ebx, KCODE
    mov eax, 0xFFFFFFFF
    lar eax, ebx                        ; 0F 02 C3               lar eax, ebx
    pushad
    SHOW_ZF "lar_kcode_zf"
    popad
    and eax, 0x00F0FF00                 ; bits 19:16 undefined
    SHOW "lar_kcode", 8
    mov eax, 0x12345678
    lsl eax, ebx                        ; 0F 03 C3               lsl eax, ebx
    pushad
    SHOW_ZF "lsl_kcode_zf"
    popad
    SHOW "lsl_kcode", 8

    mov ebx, UDATA
    mov eax, 0xFFFFFFFF
    lar eax, ebx                        ; 0F 02 C3               lar eax, ebx
    pushad
    SHOW_ZF "lar_udata_zf"
    popad
    and eax, 0x00F0FF00
    SHOW "lar_udata", 8
    mov eax, 0x12345678
    lsl eax, ebx                        ; 0F 03 C3               lsl eax, ebx
    pushad
    SHOW_ZF "lsl_udata_zf"
    popad
    SHOW "lsl_udata", 8

    ; the system descriptors STR and SLDT name (LAR/LSL accept TSS and LDT types)
    mov ebx, TSS_SEL
    mov eax, 0xFFFFFFFF
    lar eax, ebx                        ; 0F 02 C3               lar eax, ebx
    pushad
    SHOW_ZF "lar_tss_zf"
    popad
    and eax, 0x00F0FF00
    SHOW "lar_tss", 8
    mov eax, 0x12345678
    lsl eax, ebx                        ; 0F 03 C3               lsl eax, ebx
    SHOW "lsl_tss", 8

    mov ebx, LDT_SEL
    mov eax, 0xFFFFFFFF
    lar eax, ebx                        ; 0F 02 C3               lar eax, ebx
    and eax, 0x00F0FF00
    SHOW "lar_ldt", 8
    mov eax, 0x12345678
    lsl eax, ebx                        ; 0F 03 C3               lsl eax, ebx
    SHOW "lsl_ldt", 8

    mov ebx, KDATA
    verr bx                             ; 0F 00 E3               verr bx
    SHOW_ZF "verr_kdata"
    verw bx                             ; 0F 00 EB               verw bx
    SHOW_ZF "verw_kdata"

    ; ---- PUSHF: IF and IOPL as the guest set them --------------------------------------------
    cli                                 ; FA                     cli
    pushfd                              ; 9C                     pushfd
    pop eax
    push eax
    and eax, 0x200
    SHOW "pushf_cli_if", 4
    pop eax
    shr eax, 12
    and eax, 3
    SHOW "pushf_iopl", 1

    sti                                 ; FB                     sti (every IRQ is masked)
    pushfd                              ; 9C                     pushfd
    cli
    pop eax
    and eax, 0x200
    SHOW "pushf_sti_if", 4

    ; ---- far CALL / RETF, far JMP within ring 0 ----------------------------------------------
    mov dword [FARCALL_CS], 0xFFFF
    call KCODE:far_target               ; 9A <far_target:4> 08 00    call 0x08:far_target
.after_call:
    mov eax, [FARCALL_CS]
    SHOW "far_call_cs", 8
    xor eax, eax
    cmp dword [FARCALL_EIP], .after_call
    sete al
    SHOW "far_call_eip_ok", 1

    jmp KCODE:.reloaded                 ; EA <.reloaded:4> 08 00     jmp 0x08:.reloaded
.reloaded:
    xor eax, eax
    mov ax, cs                          ; 66 8C C8               mov ax, cs
    SHOW "far_jmp_cs", 4

    ; ---- INT n to a DPL-0 interrupt gate, with IF = 1 ----------------------------------------
    mov dword [INT_CS], 0xFFFF
    mov dword [INT_FRAME_IF], 0xFFFF
    mov dword [INT_HANDLER_IF], 0xFFFF
    sti                                 ; (every IRQ is still masked)
    int INT_VEC                         ; CD 40                  int 0x40
    cli
    mov eax, [INT_CS]
    SHOW "int_cs", 8
    mov eax, [INT_FRAME_IF]
    SHOW "int_frame_if", 4
    mov eax, [INT_HANDLER_IF]
    SHOW "int_handler_if", 4

    ; ---- POPF restoring IF: judged by whether IRQ 0 arrives, not by PUSHF --------------------
    mov dword [IRQ_FLAG], 0
    mov dword [IRQ_CS], 0xFFFF
    mov dword [IRQ_FRAME_IF], 0xFFFF
    cli                                 ; FA                     cli
    mov al, 0x34                        ; PIT counter 0, LSB+MSB, mode 2 (rate generator)
    out 0x43, al
    mov al, PIT_COUNT & 0xFF
    out 0x40, al
    mov al, PIT_COUNT >> 8
    out 0x40, al
    mov al, 0xFE                        ; unmask IRQ 0 only
    out 0x21, al
    push dword 0x00000202               ; 68 02 02 00 00         push 0x202 (IF = 1, bit 1)
    popfd                               ; 9D                     popfd
    mov ecx, SPIN_LIMIT
.spin:
    cmp dword [IRQ_FLAG], 0
    jne .spun
    dec ecx
    jnz .spin
.spun:
    cli
    mov al, 0xFF                        ; mask everything again
    out 0x21, al
    mov eax, [IRQ_FLAG]
    SHOW "popf_if_irq", 1
    mov eax, [IRQ_CS]
    SHOW "irq_cs", 8
    mov eax, [IRQ_FRAME_IF]
    SHOW "irq_frame_if", 4

    PASS
