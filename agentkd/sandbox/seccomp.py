"""A small seccomp-BPF filter for the bwrap backend, built without libseccomp.

Denies (EPERM) syscalls a Python kernel never needs and that widen the kernel attack surface (ptrace,
mount, namespaces, keyrings, bpf, io_uring, module loading...), allows `socket()` only for AF_UNIX
(the worker channel), and rejects non-native ABIs. x86_64 only; elsewhere `build()` returns None and
`agentkd sandbox check` reports seccomp as inactive.
"""

from __future__ import annotations

import errno
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
# BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

X86_64_DENY = {
    "ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155, "unshare": 272, "setns": 308,
    "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "userfaultfd": 323,
    "perf_event_open": 298, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "kexec_load": 246, "kexec_file_load": 320, "process_vm_readv": 310, "process_vm_writev": 311,
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "iopl": 172, "ioperm": 173,
    "open_by_handle_at": 304, "name_to_handle_at": 303, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "fsopen": 430, "fsmount": 432, "move_mount": 429, "open_tree": 428,
    "chroot": 161, "quotactl": 179,
}
X86_64_SOCKET, X86_64_CLONE, X86_64_CLONE3 = 41, 56, 435
AF_UNIX = 1
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build() -> bytes | None:
    """The filter as a raw `struct sock_filter[]` program (what `bwrap --seccomp FD` reads), or None."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    eperm = RET_ERRNO | errno.EPERM
    p = [
        _ins(LD_W_ABS, 4),  # arch
        _ins(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        _ins(RET_K, eperm),
        _ins(LD_W_ABS, 0),  # syscall number
        _ins(JGE_K, 0x40000000, 0, 1),  # x32 ABI
        _ins(RET_K, eperm),
    ]
    for nr in sorted(X86_64_DENY.values()):
        p += [_ins(JEQ_K, nr, 0, 1), _ins(RET_K, eperm)]
    p += [_ins(JEQ_K, X86_64_CLONE3, 0, 1), _ins(RET_K, RET_ERRNO | errno.ENOSYS)]  # glibc falls back to clone
    p += [
        _ins(JEQ_K, X86_64_CLONE, 0, 4),
        _ins(LD_W_ABS, 16),  # clone flags (low 32 bits)
        _ins(JSET_K, CLONE_NS_FLAGS, 0, 1),
        _ins(RET_K, eperm),
        _ins(RET_K, RET_ALLOW),
        _ins(JEQ_K, X86_64_SOCKET, 1, 0),
        _ins(RET_K, RET_ALLOW),
        _ins(LD_W_ABS, 16),  # socket domain
        _ins(JEQ_K, AF_UNIX, 0, 1),
        _ins(RET_K, RET_ALLOW),
        _ins(RET_K, RET_ERRNO | errno.EAFNOSUPPORT),
    ]
    return b"".join(p)


X86_64_KILL = 62


def build_episode() -> bytes | None:
    """An extra filter for `SandboxPool` episodes sharing one container (stacked on `build()`'s):
    `kill(-1, sig)` fails with EPERM, so one episode's code cannot signal every process of the container
    at once (the other episodes' kernels run as the same uid). Targeted kills of another episode's pids
    are not prevented: process mode is not a wall between episodes."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    eperm = RET_ERRNO | errno.EPERM
    return b"".join([
        _ins(LD_W_ABS, 4),  # arch
        _ins(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        _ins(RET_K, eperm),
        _ins(LD_W_ABS, 0),
        _ins(JEQ_K, X86_64_KILL, 0, 3),
        _ins(LD_W_ABS, 16),  # pid (low 32 bits: pid_t)
        _ins(JEQ_K, 0xFFFFFFFF, 0, 1),
        _ins(RET_K, eperm),
        _ins(RET_K, RET_ALLOW),
    ])
