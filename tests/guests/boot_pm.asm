; boot_pm: real mode -> protected mode, the way a boot sector does it.
;
; Real mode (checks 1-9): segment arithmetic (linear = selector * 16 + offset, two
; segment:offset pairs naming one byte, 64 KiB offset wrap of string instructions), and the
; IVT: an INT 0x30 handler installed at 0000:00C0 runs, sees CS:IP and FLAGS pushed, INT
; clears IF and TF, IRET restores FLAGS.
; Then LGDT, CR0.PE = 1, a far JMP to a 32-bit code segment, data segments loaded, and
; checks from protected mode (10-17): CS/DS selectors, CR0.PE, 32-bit offsets, a data segment
; with a nonzero base, what real mode wrote seen at its linear address.
%include "lib.inc"

org 0x7C00
bits 16

start:
    REAL_MODE_START 0x7C00
    PRINT `boot_pm: real mode\n`

    ; ---- segment arithmetic ------------------------------------------------------------
    mov ax, 0x1234
    mov es, ax
    mov byte [es:0x0010], 0x5A          ; linear 0x12350
    mov ax, 0x1235
    mov fs, ax
    CHECK byte [fs:0x0000], 0x5A, 1     ; 1235:0000 is the same byte
    xor ax, ax
    mov gs, ax
    mov ax, 0x1000
    mov es, ax
    mov byte [es:0x2350], 0xA5          ; 1000:2350 -> linear 0x12350 as well
    CHECK byte [fs:0x0000], 0xA5, 2
    ; the stack segment: SS base = SS * 16, a PUSH lands at linear SS*16 + SP - 2
    mov ax, 0x2000
    mov ss, ax
    mov sp, 0x0100                      ; pushes to linear 0x200FE
    push word 0xBEEF
    mov ax, 0x200F
    mov es, ax
    CHECK word [es:0x000E], 0xBEEF, 3   ; 200F:000E = linear 0x200FE
    xor ax, ax
    mov ss, ax
    mov sp, 0x7C00
    ; a 16-bit address wraps within the segment: [bx+si] with bx+si = 0x10005 -> offset 5
    mov ax, 0x3000
    mov es, ax
    mov byte [es:0x0005], 0x77
    mov bx, 0xFFFF
    mov si, 0x0006
    CHECK byte [es:bx+si], 0x77, 4

    ; ---- the IVT: INT 0x30 -------------------------------------------------------------
    mov word [0x30 * 4], int30
    mov word [0x30 * 4 + 2], 0          ; handler at 0000:int30
    mov ax, 0x1111
    stc                                 ; CF = 1 goes into the pushed FLAGS image
    int 0x30
int30_return:
    jnc .cf_lost                        ; IRET restored CF = 1 (the handler cleared it)
    CHECK ax, 0x2222, 5                 ; the handler ran and returned its result
    CHECK byte [int30_ran], 1, 6
    CHECK word [int30_ip], int30_return, 7
    CHECK word [int30_cs], 0, 8
    CHECK sp, 0x7C00, 9                 ; IRET popped what INT pushed
    jmp .ivt_ok
.cf_lost:
    FAIL(18)
.ivt_ok:
    ; the real-mode IDTR: LIDT moves the IVT; INT 0x30 then uses the new table at 0x8000
    mov word [0x8000 + 0x30 * 4], int30_moved
    mov word [0x8000 + 0x30 * 4 + 2], 0
    lidt [moved_ivt]
    xor ax, ax
    int 0x30
    CHECK ax, 0x3333, 19
    lidt [real_ivt]
    mov ax, 0x1111
    stc
    int 0x30                            ; the original table again
    CHECK ax, 0x2222, 20

    ; ---- into protected mode -----------------------------------------------------------
    lgdt [gdt_desc]
    mov eax, cr0
    or al, 1                            ; PE
    mov cr0, eax
    jmp dword 0x08:pm_entry             ; loads CS from the GDT: 32-bit code

int30:                                  ; real-mode handler: the IVT entry points here
    push bp
    mov bp, sp
    mov bx, [bp + 2]                    ; pushed IP
    mov [int30_ip], bx
    mov bx, [bp + 4]                    ; pushed CS
    mov [int30_cs], bx
    mov bx, [bp + 6]                    ; pushed FLAGS: CF was 1
    test bx, 1
    jz .bad
    pushf
    pop bx                              ; FLAGS now: INT cleared IF and TF
    test bx, 0x0300
    jnz .bad
    mov byte [int30_ran], 1
    mov ax, 0x2222
.bad:
    clc                                 ; IRET restores CF from the stack
    pop bp
    iret

int30_moved:
    mov ax, 0x3333
    iret

moved_ivt: dw 0x3FF
           dd 0x8000
real_ivt:  dw 0x3FF
           dd 0

int30_ran: db 0
int30_ip:  dw 0
int30_cs:  dw 0xFFFF

align 8
gdt:
    dq 0                                        ; 0x00 null
    DESC 0, 0xFFFFF, ACC_CODE32, FLAGS_4G32     ; 0x08 flat 32-bit code
    DESC 0, 0xFFFFF, ACC_DATA, FLAGS_4G32       ; 0x10 flat data
    DESC 0x10000, 0xFFFF, ACC_DATA, FLAGS_BYTE32 ; 0x18 data, base 0x10000, limit 64 KiB
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt

bits 32
pm_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x7C00
    xor ax, ax
    mov fs, ax                          ; the null selector loads into a data register
    mov gs, ax
    PRINT `boot_pm: protected mode\n`
    mov ax, cs
    CHECK ax, 0x08, 10
    mov ax, ds
    CHECK ax, 0x10, 11
    mov eax, cr0
    test al, 1
    jnz .pe
    FAIL(12)
.pe:
    smsw ax
    and ax, 1
    CHECK ax, 1, 13                     ; SMSW shows PE too
    ; what real mode wrote at 1235:0000 is linear 0x12350 in the flat segment
    CHECK byte [0x12350], 0xA5, 14
    CHECK word [0x200FE], 0xBEEF, 15
    ; a segment with base 0x10000: offset 0x2350 is linear 0x12350
    mov ax, 0x18
    mov fs, ax
    CHECK byte [fs:0x2350], 0xA5, 16
    ; 32-bit offsets: no 64 KiB wrap any more
    mov dword [0x123456], 0xCAFEF00D
    mov ebx, 0x120000
    CHECK dword [ebx + 0x3456], 0xCAFEF00D, 17
    PRINT `boot_pm: pass\n`
    PASS
