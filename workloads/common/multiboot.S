/* Multiboot v1 entry for the guest build of every workload.
 * The loader enters _start in 32-bit protected mode with flat segments,
 * EAX = 0x2BADB002 and EBX = physical address of the multiboot info. */

#define MB_HEADER_MAGIC 0x1BADB002
#define MB_FLAG_MEMINFO (1 << 1)          /* ask for mem_lower/mem_upper */
#define MB_HEADER_FLAGS MB_FLAG_MEMINFO
#define DEBUG_EXIT_PORT 0xF4              /* QEMU isa-debug-exit */
#define STACK_SIZE      65536

    .section .multiboot, "a"
    .align 4
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

    .section .bss
    .align 16
stack_bottom:
    .skip STACK_SIZE
stack_top:

    .section .text
    .global _start
    .type _start, @function
_start:
    movl $stack_top, %esp
    xorl %ebp, %ebp
    cld                                 /* the C ABI assumes DF = 0 */
    subl $8, %esp                       /* keep ESP 16-byte aligned at the call */
    pushl %ebx                          /* multiboot info */
    pushl %eax                          /* boot magic */
    call wl_guest_main                  /* returns the exit status */
    movl $DEBUG_EXIT_PORT, %edx
    outl %eax, %dx
1:  cli                                 /* no debug-exit device: stop here */
    hlt
    jmp 1b
    .size _start, . - _start

    .section .note.GNU-stack, "", @progbits
