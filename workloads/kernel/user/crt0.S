/* crt0.S - entry of every user program. The kernel starts it in ring 3 with
 * ESP pointing at a pointer to the argument string (on the stack above). */
    .text
    .global _start
_start:
    movl (%esp), %eax
    andl $-16, %esp
    subl $12, %esp
    pushl %eax
    call umain                      /* int umain(const char *arg) */
    movl %eax, (%esp)
    call wl_exit
1:  jmp 1b

    .section .note.GNU-stack, "", @progbits
