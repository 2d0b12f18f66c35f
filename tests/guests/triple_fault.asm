; triple_fault: a guest that shuts the processor down on purpose. In protected mode with an
; IDT whose limit is 0, INT3 cannot be delivered (the gate is beyond the limit: #GP), nor can
; that #GP (#GP again: a double fault), nor the #DF: a triple fault, which ends the run with
; Exit.SHUTDOWN naming the first exception, #BP.
%include "lib.inc"

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
    dw 0                                ; limit 0: no gate can be read
    dd 0x1000

bits 32
pm:
    mov ax, 0x10
    mov ds, ax
    mov ss, ax
    mov esp, 0x9000
    lidt [idt_desc]
    PRINT `triple_fault: int3 with an empty IDT\n`
    jmp int3_here

    times 0x200 - ($ - $$) nop          ; the INT3 at a known address: 0x7E00
int3_here:
    int3
    ; never reached
    FAIL(1)
