/* Stage 2: the payload's last steps before execve. Seccomp is installed last. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/keyctl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "helper.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static void reset_signals(void) {
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) die_sys("sigprocmask", errno, "unblocking signals");
  for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL); /* SIGKILL/SIGSTOP/RT reserved fail: fine */
}

/* A new session, a new session keyring: the one the caller's process holds would otherwise stay possessed by the
 * payload (possession grants access whatever the ids), with or without a filter. Joined after init's id change,
 * so the keyring belongs to the sandbox's user; anonymous, so nothing outside can join it by name. */
static void fresh_session_keyring(void) {
  if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) >= 0) return;
  if (errno == ENOSYS) return; /* a kernel without keys: there is no keyring to inherit */
  die_sys("keyctl", errno, "KEYCTL_JOIN_SESSION_KEYRING: a fresh session keyring, so the caller's stays out of reach");
}

/* Everything but 0-2 closes on exec; the status and exec-report fds stay usable until then. */
static void mark_fds_cloexec(void) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  if (errno != ENOSYS && errno != EINVAL) die_sys("close_range", errno, "marking fds close-on-exec");
#endif
  struct rlimit rl;
  long max = (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY) ? (long)rl.rlim_max : 65536;
  if (max > 1 << 20) max = 1 << 20;
  for (long fd = 3; fd < max; fd++) {
    int fl = fcntl((int)fd, F_GETFD);
    if (fl >= 0 && fcntl((int)fd, F_SETFD, fl | FD_CLOEXEC) < 0) die_sys("fcntl", errno, "F_SETFD on fd %ld", fd);
  }
}

/* With a notify mode, the filter's listener fd lands in the fd table this stage shares with init (CLONE_FILES);
 * its number goes to init on the report pipe. execve then unshares the table, and the listener, being
 * close-on-exec, is not in the payload's copy. */
static void install_seccomp(const struct plan *p, int report_fd) {
  if (p->bpf_len == 0) return;
  struct sock_fprog prog = {.len = (unsigned short)(p->bpf_len / 8), .filter = (struct sock_filter *)p->bpf};
  unsigned flags = p->notify_mode == CUB_NOTIFY_NONE ? 0 : SECCOMP_FILTER_FLAG_NEW_LISTENER;
  long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  if (fd < 0) die_sys("seccomp", errno, "installing the filter (%zu instructions)", p->bpf_len / 8);
  if (flags) {
    struct init_msg m = {.kind = MSG_LISTENER, .fd = (int)fd};
    if (write_all(report_fd, &m, sizeof m) < 0) die_sys("write", errno, "passing the seccomp listener to init");
  }
}

static __attribute__((noreturn)) void exec_payload(const struct plan *p) {
  char *const *argv = (char *const *)p->argv;
  char *const *envp = (char *const *)p->envp;
  if (strchr(p->exec, '/')) {
    execve(p->exec, argv, envp);
    die_sys("execve", errno, "%s", p->exec);
  }
  int saved = ENOENT;
  char path[4096];
  for (const char **dir = p->search; *dir; dir++) {
    int n = snprintf(path, sizeof path, "%s/%s", strcmp(*dir, "/") == 0 ? "" : *dir, p->exec);
    if (n < 0 || (size_t)n >= sizeof path) continue;
    execve(path, argv, envp);
    if (errno != ENOENT && errno != ENOTDIR) saved = errno;
    if (errno != ENOENT && errno != ENOTDIR && errno != EACCES) break;
  }
  die_sys("execve", saved, "%s (searched the sandbox's PATH)", p->exec);
}

int read_exec_reports(int fd, int *listener) {
  int failed = 0;
  *listener = -1;
  for (;;) {
    struct init_msg m;
    ssize_t n = read(fd, &m, sizeof m);
    if (n < 0 && errno == EINTR) continue;
    if (n != (ssize_t)sizeof m) break;
    if (m.kind == MSG_LISTENER) *listener = m.fd;
    else failed = 1;
  }
  close(fd);
  return failed;
}

void stage_exec_main(const struct plan *p, int exec_report_fd) {
  report_set_stage(CUB_STAGE_EXEC);
  report_set_failure_fd(exec_report_fd);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_PDEATHSIG");
  prctl(PR_SET_NAME, "cubicle-exec", 0, 0, 0);
  reset_signals();
  if (setsid() < 0) die_sys("setsid", errno, "new session");
  tty_take_control_from_exec(p);
  fresh_session_keyring();
  cgroup_memory_join_from_exec();
  limits_apply_rlimits(p);
  caps_drop_all();
  if (chdir(p->cwd) < 0) die_sys("chdir", errno, "working directory %s", p->cwd);
  mark_fds_cloexec();
  umask(022);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_NO_NEW_PRIVS");
  if (p->has_rw_idmap) guard_setuid_bits();
  install_seccomp(p, exec_report_fd); /* last: the filter must still allow write (failure report) and execve */
  exec_payload(p);
}
