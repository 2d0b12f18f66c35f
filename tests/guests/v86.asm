; v86: virtual-8086 mode (SDM Vol. 3 §20.2-§20.3, §16.5 (I/O bitmap), §6.12.1; Vol. 2 IRET,
; INT n, CLI, PUSHF).
; Ring 0 sets up a GDT, a TSS (SS0:ESP0, an I/O permission bitmap allowing only 0xE9 and
; 0xF4-0xF7), an IDT with a DPL-3 interrupt gate for INT 0x30 and a #GP handler, then IRETD
; from CPL 0 with VM = 1, IOPL = 3 in the popped EFLAGS into V86 code at 0000:v86_entry,
; SS:SP = 0500:1000, ES/DS/FS/GS = 2000/1000/3000/4000 from the 9-dword frame.
;   1x  V86 sees the segment registers and SS:ESP of the frame (11-15); PUSHFD (IOPL 3)
;       shows IOPL 3 and VM = 0 in the image (16-17)
;   2x  segment arithmetic: a byte written at 1000:0000 is read at 0FFF:0010 (21) and by
;       ring 0 at linear 0x10000 (0x205); a selector with no GDT entry (0x1234) loads
;       without a fault and addresses linear 0x12340 (22)
;   3x  INT 0x30 (IOPL 3, DPL-3 gate) into ring 0: the handler checks CPL 0, SS0:ESP0 with 9
;       dwords pushed, the frame (EIP, CS, EFLAGS with VM and IOPL 3, ESP, SS, ES, DS, FS,
;       GS), DS/ES/FS/GS read as 0, VM = IF = 0 in its own EFLAGS (0x201-0x20F); it
;       changes the saved DS and returns EAX: after IRETD, V86 has the result (31), the new
;       DS (32), its ES/FS/GS (33) and SS:SP (34)
;   4x  OUT to a port the bitmap denies, with IOPL = 3: #GP(0) (the bitmap is always
;       consulted in V86 mode)
;   5x  a data access beyond the 64 KiB segment limit ([ebx] with EBX = 0x10000): #GP(0)
;   6x  HLT: #GP(0)
;   then INT 0x30 with AX = 2: the handler clears IOPL in the saved EFLAGS; with IOPL = 0:
;   7x-Cx  CLI, STI, PUSHF, POPF, INT 0x30, IRET: #GP(0)
;   (each #GP check: n1 error code 0, n2 saved EIP = the instruction, n3 saved CS = 0, n4
;   VM = 1 in the saved EFLAGS, n5 the 10-dword frame on the TSS stack)
;   finally OUT to port 0xE9 still works with IOPL = 0 (the bitmap allows it): V86 prints
;   "v86: pass" and writes 0 to the debug-exit port itself.
; Status: check id * 16 + n; 0x100 + v: unexpected exception v (or #GP from ring 0:
; 0x10D); ring-0 checks 0x200 + n.
%include "lib.inc"

IDT    equ 0x1000
KSTACK equ 0x7000                       ; TSS ESP0
V86_SS equ 0x0500
V86_SP equ 0x1000                       ; linear 0x6000

; the mailbox, at linear 0x600 (V86 reaches it with DS = 0)
MB_RESUME equ 0x600
MB_ERR    equ 0x604
MB_EIP    equ 0x608
MB_CS     equ 0x60C
MB_EFLAGS equ 0x610
MB_ESP    equ 0x614

KCODE equ 0x08
KDATA equ 0x10
TSS_SEL equ 0x18

EFL_VM   equ 0x20000
EFL_IOPL equ 0x3000
EFL_IF   equ 0x0200

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
TSS_LIMIT equ tss_end - tss - 1

align 8
gdt:
    dq 0
    DESC 0, 0xFFFFF, ACC_CODE32, FLAGS_4G32         ; 0x08 code
    DESC 0, 0xFFFFF, ACC_DATA, FLAGS_4G32           ; 0x10 data
    DESC TSS_ADDR, TSS_LIMIT, 0x89, 0               ; 0x18 32-bit TSS
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
UNEXPECTED_STUBS

; INT 0x30 from V86 (AX = 1: check the frame, AX = 2: set IOPL 0 in the saved EFLAGS)
; frame: [esp] EIP, +4 CS, +8 EFLAGS, +12 ESP, +16 SS, +20 ES, +24 DS, +28 FS, +32 GS
int30:
    CHECK esp, KSTACK - 36, 0x201       ; SS0:ESP0 from the TSS, nine dwords
    push eax
    mov ax, ss
    CHECK ax, KDATA, 0x202
    mov ax, cs
    CHECK ax, KCODE, 0x203
    mov ax, ds                          ; the V86 data segment registers are nulled
    CHECK ax, 0, 0x204
    mov ax, es
    CHECK ax, 0, 0x204
    mov ax, fs
    CHECK ax, 0, 0x204
    mov ax, gs
    CHECK ax, 0, 0x204
    CHECK byte [ss:0x10000], 0x5A, 0x205    ; written by V86 at 1000:0000
    CHECK byte [ss:0x12340], 0x77, 0x205    ; and at 1234:0000
    pushfd
    pop eax
    test eax, EFL_VM | EFL_IF           ; an interrupt gate: VM and IF cleared
    jz .flags_ok
    EXIT 0x206
.flags_ok:
    pop eax
    cmp ax, 2
    je .iopl0
    CHECK ax, 1, 0x207
    CHECK dword [esp], v86_int30_ret, 0x208  ; the next instruction
    CHECK dword [esp + 4], 0, 0x209          ; CS
    mov eax, [esp + 8]
    and eax, EFL_VM | EFL_IOPL
    CHECK eax, EFL_VM | EFL_IOPL, 0x20A      ; EFLAGS: VM = 1, IOPL 3
    CHECK dword [esp + 12], V86_SP, 0x20B    ; ESP
    CHECK dword [esp + 16], V86_SS, 0x20B    ; SS
    CHECK dword [esp + 20], 0x2000, 0x20C    ; ES
    CHECK dword [esp + 24], 0x1000, 0x20D    ; DS
    CHECK dword [esp + 28], 0x3000, 0x20E    ; FS
    CHECK dword [esp + 32], 0x4000, 0x20F    ; GS
    mov dword [esp + 24], 0x0FFF        ; IRETD pops a new DS
    mov eax, 0x600D
    iretd
.iopl0:
    and dword [esp + 8], ~EFL_IOPL
    iretd

; #GP: from V86, record the frame in the mailbox and resume at [MB_RESUME]
; [esp] error code, +4 EIP, +8 CS, +12 EFLAGS, +16 ESP, ...
gp_handler:
    test dword [esp + 12], EFL_VM
    jnz .from_v86
    EXIT 0x10D
.from_v86:
    push eax
    lea eax, [esp + 4]
    mov [ss:MB_ESP], eax
    mov eax, [esp + 4]
    mov [ss:MB_ERR], eax
    mov eax, [esp + 8]
    mov [ss:MB_EIP], eax
    mov eax, [esp + 12]
    mov [ss:MB_CS], eax
    mov eax, [esp + 16]
    mov [ss:MB_EFLAGS], eax
    mov eax, [ss:MB_RESUME]
    mov [esp + 8], eax
    pop eax
    add esp, 4                          ; the error code
    iretd

kernel:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, KSTACK
    PRINT `v86: ring 0\n`

    IDT_UNEXPECTED IDT
    SET_GATE IDT, 13, gp_handler, INT_GATE
    SET_GATE IDT, 0x30, int30, INT_GATE | 0x60      ; DPL 3
    lidt [idt_desc]

    mov ax, TSS_SEL
    ltr ax

    ; IRETD to V86: GS FS DS ES SS ESP EFLAGS CS EIP
    push dword 0x4000
    push dword 0x3000
    push dword 0x1000
    push dword 0x2000
    push dword V86_SS
    push dword V86_SP
    push dword EFL_VM | EFL_IOPL | 0x2
    push dword 0
    push dword v86_entry
    iretd

; ---- virtual-8086 mode -------------------------------------------------------------------
bits 16

; VBEGIN / VEND id, error code: a #GP taken from V86 (DS = 0 for the mailbox)
%macro VBEGIN 0
    %push try
    mov dword [MB_ERR], 0xFFFFFFFF
    mov dword [MB_RESUME], %$resume
%$fault:
%endmacro
%macro VEND 2
%$resume:
    CHECK dword [MB_ERR], %2, (%1) * 16 + 1
    CHECK dword [MB_EIP], %$fault, (%1) * 16 + 2
    CHECK dword [MB_CS], 0, (%1) * 16 + 3
    test dword [MB_EFLAGS], EFL_VM
    jnz %%vm
    EXIT (%1) * 16 + 4
%%vm:
    CHECK dword [MB_ESP], KSTACK - 40, (%1) * 16 + 5    ; TSS stack, ten dwords
    %pop
%endmacro

v86_entry:
    mov ax, ds
    CHECK ax, 0x1000, 0x11
    mov ax, es
    CHECK ax, 0x2000, 0x12
    mov ax, fs
    CHECK ax, 0x3000, 0x13
    mov ax, gs
    CHECK ax, 0x4000, 0x14
    mov ax, ss
    CHECK ax, V86_SS, 0x15
    CHECK esp, V86_SP, 0x15
    pushfd                              ; IOPL 3: allowed
    pop eax
    test eax, EFL_VM                    ; PUSHFD clears VM (and RF) in the image
    jz .vm_hidden
    EXIT 0x16
.vm_hidden:
    and eax, EFL_IOPL
    CHECK eax, EFL_IOPL, 0x17

    ; 2: segment arithmetic
    mov byte [0], 0x5A                  ; DS = 0x1000: linear 0x10000
    mov ax, 0x0FFF
    mov fs, ax
    CHECK byte [fs:0x10], 0x5A, 0x21    ; 0FFF:0010 = linear 0x10000
    mov ax, 0x1234                      ; no descriptor table in V86: any value loads
    mov es, ax
    mov byte [es:0], 0x77               ; linear 0x12340
    mov ax, 0x1230
    mov fs, ax
    CHECK byte [fs:0x40], 0x77, 0x22
    mov ax, 0x2000
    mov es, ax
    mov ax, 0x3000
    mov fs, ax
    mov ax, 0x4000
    mov gs, ax
    PRINT `v86: virtual-8086 mode\n`    ; OUT 0xE9: allowed by the bitmap

    ; 3: INT 0x30 into ring 0 and IRETD back
    mov ax, 1
    int 0x30
v86_int30_ret:
    CHECK ax, 0x600D, 0x31
    mov ax, ds
    CHECK ax, 0x0FFF, 0x32              ; the DS the handler put in the frame
    mov ax, es
    CHECK ax, 0x2000, 0x33
    mov ax, fs
    CHECK ax, 0x3000, 0x33
    mov ax, gs
    CHECK ax, 0x4000, 0x33
    mov ax, ss
    CHECK ax, V86_SS, 0x34
    CHECK esp, V86_SP, 0x34
    PRINT `v86: int 0x30 to ring 0 and back\n`

    xor ax, ax
    mov ds, ax                          ; the mailbox

    ; 4: OUT to a denied port with IOPL 3
    VBEGIN
    out 0x80, al
    VEND 4, 0

    ; 5: beyond the 64 KiB limit of a V86 segment
    mov ebx, 0x10000
    VBEGIN
    mov al, [ebx]
    VEND 5, 0

    ; 6: HLT (CPL 3)
    VBEGIN
    hlt
    VEND 6, 0

    ; IOPL 0 from here
    mov ax, 2
    int 0x30

    VBEGIN
    cli
    VEND 7, 0
    VBEGIN
    sti
    VEND 8, 0
    VBEGIN
    pushf
    VEND 9, 0
    VBEGIN
    popf
    VEND 0xA, 0
    VBEGIN
    int 0x30
    VEND 0xB, 0
    VBEGIN
    iret
    VEND 0xC, 0

    ; OUT with IOPL 0, allowed by the bitmap (no PRINT: it uses PUSHF)
    mov si, pass_text
.print:
    cs lodsb
    test al, al
    jz .printed
    out DEBUG_CONSOLE, al
    jmp .print
.printed:
    PASS                                ; OUT 0xF4 from V86: allowed by the bitmap

pass_text: db `v86: pass\n`, 0
