/* entry.S - multiboot entry, trap entry stubs, the context switch. */

#define MB_HEADER_MAGIC 0x1BADB002
#define MB_HEADER_FLAGS (1 << 1)          /* memory info */
#define BOOT_STACK_SIZE 16384

    .section .multiboot, "a"
    .align 4
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

    .section .bss
    .align 16
boot_stack:
    .skip BOOT_STACK_SIZE
boot_stack_top:

    .section .text
    .global _start
_start:
    movl $boot_stack_top, %esp
    xorl %ebp, %ebp
    cld
    pushl %ebx                      /* multiboot info */
    pushl %eax                      /* boot magic */
    call kmain
1:  cli
    hlt
    jmp 1b

/* gdt_load(const struct dtr *): loads the GDT and reloads every segment register. */
    .global gdt_load
gdt_load:
    movl 4(%esp), %eax
    lgdt (%eax)
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    ljmp $0x08, $1f
1:  ret

/* One stub per vector: push a zero error code where the CPU pushes none, then
 * the vector number, and join alltraps. */
.macro VEC_NOERR n
    .text
vec\n:
    pushl $0
    pushl $\n
    jmp alltraps
    .section .rodata
    .long vec\n
.endm
.macro VEC_ERR n
    .text
vec\n:
    pushl $\n
    jmp alltraps
    .section .rodata
    .long vec\n
.endm

    .section .rodata
    .align 4
    .global trap_vectors
trap_vectors:                       /* vectors 0-47, then 0x80 */
    VEC_NOERR 0
    VEC_NOERR 1
    VEC_NOERR 2
    VEC_NOERR 3
    VEC_NOERR 4
    VEC_NOERR 5
    VEC_NOERR 6
    VEC_NOERR 7
    VEC_ERR   8
    VEC_NOERR 9
    VEC_ERR   10
    VEC_ERR   11
    VEC_ERR   12
    VEC_ERR   13
    VEC_ERR   14
    VEC_NOERR 15
    VEC_NOERR 16
    VEC_ERR   17
    VEC_NOERR 18
    VEC_NOERR 19
    VEC_NOERR 20
    VEC_NOERR 21
    VEC_NOERR 22
    VEC_NOERR 23
    VEC_NOERR 24
    VEC_NOERR 25
    VEC_NOERR 26
    VEC_NOERR 27
    VEC_NOERR 28
    VEC_NOERR 29
    VEC_ERR   30
    VEC_NOERR 31
    VEC_NOERR 32
    VEC_NOERR 33
    VEC_NOERR 34
    VEC_NOERR 35
    VEC_NOERR 36
    VEC_NOERR 37
    VEC_NOERR 38
    VEC_NOERR 39
    VEC_NOERR 40
    VEC_NOERR 41
    VEC_NOERR 42
    VEC_NOERR 43
    VEC_NOERR 44
    VEC_NOERR 45
    VEC_NOERR 46
    VEC_NOERR 47
    VEC_NOERR 128

    .text
alltraps:
    pushl %ds
    pushl %es
    pushl %fs
    pushl %gs
    pushal
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    cld
    pushl %esp                      /* struct trapframe * */
    call trap
    addl $4, %esp
    .global trapret
trapret:
    popal
    popl %gs
    popl %fs
    popl %es
    popl %ds
    addl $8, %esp                   /* vector and error code */
    iret

/* swtch(uint32_t *save_esp, uint32_t new_esp): saves the callee-saved registers
 * on this kernel stack, stores ESP in *save_esp, and resumes the stack new_esp
 * (which swtch saved earlier, or proc.c built to return into trapret). */
    .global swtch
swtch:
    movl 4(%esp), %eax
    movl 8(%esp), %edx
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl %esp, (%eax)
    movl %edx, %esp
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

/* Kernel-side nanobenchmark helpers that must be exactly these instructions. */
    .global nano_ret
nano_ret:
    ret

    .section .note.GNU-stack, "", @progbits
