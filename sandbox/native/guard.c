/* A second seccomp filter, for runs with a read-write idmapped bind: files the payload makes there belong to a
 * host user, so it must not be able to give them a setuid or setgid bit (another local user could run them as
 * that user; the mount's nosuid does not hold on the host's own mounts of the same files). It refuses with EPERM
 * every chmod, create or mknod whose mode has S_ISUID or S_ISGID, and openat2 with ENOSYS (its mode is behind a
 * pointer; libc falls back to openat). Filters stack and the strictest answer wins, so it holds whatever the
 * policy allows, policy none included. A call from an architecture it does not know is refused. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

#define SUID_SGID 06000
#define NR_OFF ((unsigned)offsetof(struct seccomp_data, nr))
#define ARCH_OFF ((unsigned)offsetof(struct seccomp_data, arch))
#define ARG_OFF(i) ((unsigned)(offsetof(struct seccomp_data, args) + 8 * (i))) /* low 32 bits: little-endian */
#define OPENAT2_NR 437

struct guarded {
  unsigned nr, mode_arg;
};

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define NATIVE_NR_MASK 0xBFFFFFFFu /* x32 calls carry bit 30 and the same numbers */
static const struct guarded NATIVE[] = {{90, 1}, {91, 1}, {268, 2}, {452, 2}, {2, 2}, {257, 3}, {85, 1}, {133, 1}, {259, 2}};
static const struct guarded I386[] = {{15, 1}, {94, 1}, {306, 2}, {452, 2}, {5, 2}, {295, 3}, {8, 1}, {14, 1}, {297, 2}};
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#define NATIVE_NR_MASK 0xFFFFFFFFu
static const struct guarded NATIVE[] = {{52, 1}, {53, 2}, {452, 2}, {56, 3}, {33, 2}};
#endif

static size_t emit(struct sock_filter *f, size_t n, struct sock_filter ins) {
  f[n] = ins;
  return n + 1;
}

/* One arch's checks: each guarded call with a suid/sgid mode is EPERM; openat2 is ENOSYS; the rest allowed. */
static size_t block(struct sock_filter *f, size_t n, const struct guarded *g, size_t count, unsigned mask) {
  for (size_t i = 0; i < count; i++) {
    n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR_OFF));
    n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, mask));
    n = emit(f, n, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, g[i].nr, 0, 4));
    n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_OFF(g[i].mode_arg)));
    n = emit(f, n, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, SUID_SGID, 0, 1));
    n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
    n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  }
  n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR_OFF));
  n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, mask));
  n = emit(f, n, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, OPENAT2_NR, 0, 1));
  n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
  return emit(f, n, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
}

#define BLOCK_LEN(count) ((count) * 7 + 5)

void guard_setuid_bits(void) {
#ifdef NATIVE_ARCH
  struct sock_filter f[256];
  size_t n = 0;
  const size_t native = sizeof NATIVE / sizeof *NATIVE;
  n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARCH_OFF));
  n = emit(f, n, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, BLOCK_LEN(native)));
  n = block(f, n, NATIVE, native, NATIVE_NR_MASK);
#ifdef __x86_64__
  const size_t i386 = sizeof I386 / sizeof *I386;
  n = emit(f, n, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_I386, 0, BLOCK_LEN(i386)));
  n = block(f, n, I386, i386, 0xFFFFFFFFu);
#endif
  n = emit(f, n, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
  struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) die_sys("seccomp", errno, "installing the setuid-bit guard");
#else
  die_msg("read-write idmapped binds need the setuid-bit guard, which this architecture's helper lacks");
#endif
}
