/* Stage 0: the helper's entry point, on the host side. Reads the plan, clones into new namespaces, writes the
 * id maps, then supervises: relays control commands, watches the memory cgroup, collects what init reports,
 * and writes the single terminal event. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

#define NS_FLAGS (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWCGROUP)

/* A helper started with 0-2 closed would hand those numbers to its own pipes; give them /dev/null first. */
static void ensure_stdio_open(void) {
  for (int fd = 0; fd < 3; fd++) {
    if (fcntl(fd, F_GETFD) >= 0) continue;
    int n = open("/dev/null", O_RDWR);
    if (n >= 0 && n != fd) {
      dup2(n, fd);
      close(n);
    }
  }
}

static void require_fds(void) {
  int fds[] = {CUB_FD_PLAN, CUB_FD_BPF, CUB_FD_STATUS, CUB_FD_CONTROL};
  for (size_t i = 0; i < sizeof fds / sizeof *fds; i++) {
    int fl = fcntl(fds[i], F_GETFD);
    if (fl < 0) {
      fprintf(stderr, "cubicle-helper: fd %d is not open; the helper is started by the cubicle library, not by hand\n",
              fds[i]);
      _exit(CUB_EXIT_USAGE);
    }
    fcntl(fds[i], F_SETFD, fl | FD_CLOEXEC);
  }
}

/* Everything stage 0 holds while it supervises, and what it learns. */
struct parent {
  const struct plan *plan;
  long long t0; /* the helper's start: init measures setupUs from it */
  pid_t init;
  int to_init, from_init; /* internal pipes: commands down (InitCommand bytes), init_msg up */
  int sigchld_fd, oom_fd, events_fd;
  int join_fd;                /* listen-join: the join socket, or -1 */
  int ns_fds[CUB_NS_COUNT];   /* listen-join: init's namespaces, opened before its release */
  uid_t owner;                /* the uid that started the helper: only its processes may join */
  int holder_fd; /* a network's holder: the connection that makes this sandbox one of its members, or -1 */
  long long kill_deadline; /* init was asked to kill everything; past this, init itself is killed */
  int stop_asked;          /* the supervisor or the OOM watch asked for a stop: an early end of init is no setup failure */
  unsigned char resize[CUB_RESIZE_BYTES]; /* a window size message being reassembled from the control fd */
  unsigned resize_have;
  /* what init reported */
  int exec_ok, failed, have_status, have_usage;
  long long setup_us;
  long long fork_at_us; /* the payload's fork (monotonic), the origin of a stop's time */
  int payload_pid;
  struct init_msg status;
  struct init_usage usage;
  struct stop_fact stops[CUB_MAX_STOPS];
  unsigned nstops;
  struct cub_ev_exit_violations_item violations[CUB_MAX_VIOLATIONS];
  unsigned nviolations;
  long long oom_seen_us; /* when stage 0 saw the memory cgroup's OOM (monotonic), 0 if it did not */
  /* how init ended */
  int init_status;
  struct rusage ru;
  struct cub_ev_ready ready;
};

static void say_hello(void) {
  struct cub_ev_hello ev = {.v = CUB_PROTOCOL_VERSION};
  cub_emit_hello(&ev);
}

static void prepare_process(void) {
  ensure_stdio_open();
  require_fds();
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_PDEATHSIG");
  prctl(PR_SET_NAME, "cubicle-parent", 0, 0, 0);
  /* Terminal signals are the supervisor's to handle (it decides how to stop the sandbox); the payload resets them. */
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
}

/* A plan with await leaves the seccomp program, the files stream, the copy-out pipe and the run plan to init. */
static void require_warm_fds(void) {
  int fds[] = {CUB_FD_FILES, CUB_FD_COPY_OUT, CUB_FD_RUN};
  for (size_t i = 0; i < sizeof fds / sizeof *fds; i++) {
    int fl = fcntl(fds[i], F_GETFD);
    if (fl < 0) die_msg("a plan with await needs fd %d open (files %d, copy-out %d, run %d)", fds[i], CUB_FD_FILES, CUB_FD_COPY_OUT, CUB_FD_RUN);
    fcntl(fds[i], F_SETFD, fl | FD_CLOEXEC);
  }
}

static void read_plan(struct plan *plan) {
  plan_read(plan, CUB_FD_PLAN, CUB_FD_BPF);
  close(CUB_FD_PLAN);
  if (plan->awaits) require_warm_fds();
  else close(CUB_FD_BPF);
}

/* Root's supplementary groups would follow the sandbox; drop them (others keep theirs, as any process). */
static void drop_supplementary_groups(void) {
  if (geteuid() == 0 && setgroups(0, NULL) < 0) die_sys("setgroups", errno, "dropping supplementary groups");
}

/* A root caller's sandbox (or a rootless one on subordinate ids) runs as host ids of its own, not the owner of the anonymous pipes it gets as 0-2
 * (mode 0600): `echo > /dev/stdout` and open("/proc/self/fd/1") would fail with EACCES. Opening the pipe again
 * through /proc needs ptrace access to a process that holds it, so mode 0666 lets no one else in: only the
 * sandbox itself and the caller's processes hold them. Named FIFOs (another device than pipefs) are left as
 * they are: their mode is a file's on disk. */
void open_stdio_pipes_to_sandbox(const struct plan *p) {
  /* rootless with its own ids: the payload runs as the caller, who owns them (on a network, the caller is the
   * holder's id 0; any other outer id there is one of its subordinate ids) */
  if (geteuid() != 0 && !p->newuidmap && !(p->net_socket && p->outer_uid != 0)) return;
  int probe[2];
  struct stat pipefs, st;
  if (pipe2(probe, O_CLOEXEC) < 0) die_sys("pipe2", errno, "probing the pipe filesystem");
  int ok = fstat(probe[0], &pipefs);
  close(probe[0]);
  close(probe[1]);
  if (ok < 0) return;
  for (int fd = 0; fd < 3; fd++)
    if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_dev == pipefs.st_dev && fchmod(fd, 0666) < 0 &&
        errno != EPERM) /* EPERM: the caller's own inherited pipe of another user; the payload still writes to its fd */
      die_sys("fchmod", errno, "letting the sandbox's user reopen its stdio pipe on fd %d", fd);
}

/* An id change clears the parent-death signal: set it again, and catch a parent that died meanwhile. */
static void rearm_parent_death(pid_t parent) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_PDEATHSIG");
  if (getppid() != parent) _exit(CUB_EXIT_SETUP_FAILED);
}

/* Root asked for a rootless sandbox: drop to the given host user before any namespace exists. */
static void become_host_user(const struct plan *p) {
  if (geteuid() != 0) die_msg("host-ids needs the helper to start as root (it is uid %u)", (unsigned)geteuid());
  pid_t parent = getppid();
  if (setresgid(p->host_gid, p->host_gid, p->host_gid) < 0) die_sys("setresgid", errno, "host gid %u", (unsigned)p->host_gid);
  if (setresuid(p->host_uid, p->host_uid, p->host_uid) < 0) die_sys("setresuid", errno, "host uid %u", (unsigned)p->host_uid);
  rearm_parent_death(parent);
  /* The id change made us non-dumpable, which would make our child's /proc files root's: the id maps could
   * not be written. Dumpable until the maps are written (stage 0 turns it off again right after). */
  if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_DUMPABLE");
}

/* After the sandbox exists, a root stage 0 needs no privilege: only to signal and reap init (same uid). */
static void drop_to_outer_ids(const struct plan *p) {
  if (geteuid() != 0) return;
  pid_t parent = getppid();
  if (setresgid(p->outer_gid, p->outer_gid, p->outer_gid) < 0) die_sys("setresgid", errno, "outer gid %u", (unsigned)p->outer_gid);
  if (setresuid(p->outer_uid, p->outer_uid, p->outer_uid) < 0) die_sys("setresuid", errno, "outer uid %u", (unsigned)p->outer_uid);
  rearm_parent_death(parent);
}

/* The pipes to and from init, and SIGCHLD, SIGTERM and SIGHUP as an fd (init inherits them blocked, and
 * handles none of them; the payload stage resets its mask). */
static void open_init_channels(struct parent *s, int *init_end_down, int *init_end_up) {
  int down[2], up[2];
  if (pipe2(down, O_CLOEXEC) < 0 || pipe2(up, O_CLOEXEC) < 0) die_sys("pipe2", errno, "internal pipes");
  s->to_init = down[1], *init_end_down = down[0];
  s->from_init = up[0], *init_end_up = up[1];
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigaddset(&chld, SIGTERM);
  sigaddset(&chld, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die_sys("sigprocmask", errno, "blocking SIGCHLD");
  s->sigchld_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (s->sigchld_fd < 0) die_sys("signalfd", errno, "SIGCHLD fd");
}

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
struct cub_clone_args {
  unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

/* fork-like clone into the new namespaces; with a v2 group, init starts inside it (no migration) and stage 0
 * stays outside (an OOM group kill can never take the supervisor side down). */
static pid_t clone_init(const struct plan *p) {
  int cg = cgroup_into_fd_from_parent(p);
  if (cg < 0) return (pid_t)syscall(SYS_clone, NS_FLAGS | SIGCHLD, NULL, NULL, NULL, NULL);
#ifdef SYS_clone3
  struct cub_clone_args args;
  memset(&args, 0, sizeof args);
  args.flags = NS_FLAGS | CLONE_INTO_CGROUP;
  args.exit_signal = SIGCHLD;
  args.cgroup = (unsigned long long)cg;
  pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
  int err = errno;
  close(cg); /* parent and child alike: neither needs it once cloned */
  errno = err;
  return pid;
#else
  close(cg);
  errno = ENOSYS;
  return -1;
#endif
}

static void null_stdio(void) {
  int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0) return;
  for (int i = 0; i < 3; i++) dup2(fd, i);
  if (fd > 2) close(fd);
}

/* Clones init, which waits for the go byte; in the child this never returns. */
static void start_init(struct parent *s) {
  int init_down, init_up;
  open_init_channels(s, &init_down, &init_up);
  s->init = clone_init(s->plan);
  if (s->init < 0)
    die_sys(s->plan->cgroup_into ? "clone3" : "clone", errno, "creating the namespaces%s", s->plan->cgroup_into ? " (into the run's cgroup)" : "");
  if (s->init == 0) {
    if (s->events_fd >= 0) close(s->events_fd);
    if (s->oom_fd >= 0) close(s->oom_fd);
    if (s->join_fd >= 0) close(s->join_fd);
    if (s->holder_fd >= 0) close(s->holder_fd);
    egress_close_in_child();
    close(s->to_init);
    close(s->from_init);
    close(CUB_FD_CONTROL);
    close(s->sigchld_fd);
    stage_init_main(s->plan, init_down, init_up, s->t0);
  }
  cgroup_memory_close();
  close(init_down);
  close(init_up);
  /* init's: the files blob, and the copy-out pipe (EOF once init is gone). Only when the plan says they were
   * given: otherwise those numbers may be stage 0's own fds. */
  if (s->plan->has_files || s->plan->awaits) close(CUB_FD_FILES);
  if (s->plan->ncopy_out || s->plan->awaits) close(CUB_FD_COPY_OUT);
  if (s->plan->awaits) {
    close(CUB_FD_BPF);
    close(CUB_FD_RUN);
  }
  null_stdio(); /* only the payload holds the caller's stdio */
  /* A command written after init has exited must fail with EPIPE, not kill stage 0 (and lose the run's
   * report). Set only here, after the clone: init and the payload keep the default disposition. */
  signal(SIGPIPE, SIG_IGN);
}

static unsigned long long ns_inode(pid_t pid, const char *ns) {
  char path[64];
  struct stat st;
  snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, ns);
  return stat(path, &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

/* Namespace inodes, read while init is still dumpable (before its release): later, only root could read
 * them. The ready event's ns fields are named as /proc/PID/ns names them. */
static void read_ns_ids(struct parent *s) {
#define READ_NS(name) s->ready.ns.name = (long long)ns_inode(s->init, #name);
  CUB_EV_READY_NS_FIELDS(READ_NS)
#undef READ_NS
}

static void release_init(struct parent *s) {
  char go = CUB_INIT_CMD_GO;
  if (write_all(s->to_init, &go, 1) < 0) die_sys("write", errno, "releasing init");
}

/* Nothing of stage 0 is for anyone to inspect from now on. */
static void make_undumpable(void) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_DUMPABLE");
}

/* Kill: init kills everything and still reaps and reports what was used. Init reads its commands once the
 * payload runs, and checks for one right before starting it (a stop asked for during setup means the payload
 * never starts); if it has not ended the sandbox within a second, init itself is killed, which takes the
 * whole namespace. The write fails (EPIPE) only once init is gone, and then nothing is left to kill. */
static void kill_via_init(struct parent *s) {
  s->stop_asked = 1;
  if (s->kill_deadline) return; /* already asked; the deadline stands */
  char cmd = CUB_INIT_CMD_KILL;
  if (write(s->to_init, &cmd, 1) == 1) {
    s->kill_deadline = monotonic_us() + 1000000;
    return;
  }
  kill(s->init, SIGKILL);
}

/* A stop of a kind already recorded keeps its first time. */
static void record_stop(struct parent *s, const struct stop_fact *f) {
  for (unsigned i = 0; i < s->nstops; i++)
    if (s->stops[i].kind == f->kind) return;
  if (s->nstops < CUB_MAX_STOPS) s->stops[s->nstops++] = *f;
}

static void record_violation(struct parent *s, const struct init_msg *m) {
  if (s->nviolations < CUB_MAX_VIOLATIONS)
    s->violations[s->nviolations++] = (struct cub_ev_exit_violations_item){.nr = m->nr, .arch = m->arch};
}

static void report_ready(struct parent *s) {
  s->ready.init_pid = s->init;
  s->ready.payload_pid = s->payload_pid;
  s->ready.setup_us = s->setup_us;
  cub_emit_ready(&s->ready);
}

static void handle_init_msg(struct parent *s, const struct init_msg *m) {
  switch (m->kind) {
  case MSG_EXEC_OK:
    s->exec_ok = 1, s->setup_us = m->setup_us, s->fork_at_us = m->fork_at_us, s->payload_pid = m->payload_pid;
    report_ready(s);
    break;
  case MSG_WARM: cub_emit_warm(&(struct cub_ev_warm){.init_pid = s->init}); break;
  case MSG_STATUS: s->have_status = 1, s->status = *m; break;
  case MSG_FAILED: s->failed = 1; break;
  case MSG_VIOLATION: record_violation(s, m); break;
  case MSG_STOP: record_stop(s, &m->stop); break;
  case MSG_USAGE: s->have_usage = 1, s->usage = m->usage; break;
  default: break;
  }
}

/* One control byte, from the supervisor or a join socket client. terminate goes to init as a byte on its own pipe
 * (a signal's sender could be forged from inside); anything else kills. */
static void apply_control(struct parent *s, char cmd) {
  char term = CUB_INIT_CMD_TERMINATE;
  if (cmd == CUB_CTL_TERMINATE) s->stop_asked = 1;
  if (cmd == CUB_CTL_TERMINATE && write(s->to_init, &term, 1) == 1) return;
  kill_via_init(s);
}

/* Control bytes from the supervisor; EOF means it is gone and nothing may outlive it. */
static int relay_control(struct parent *s) {
  char cmd[64];
  ssize_t n = read(CUB_FD_CONTROL, cmd, sizeof cmd);
  if (n < 0 && errno == EINTR) return 1;
  if (n <= 0) {
    kill(s->init, SIGKILL);
    return 0;
  }
  for (ssize_t i = 0; i < n; i++) {
    if (s->resize_have) { /* the size of a window; passed on whole, in one write */
      s->resize[s->resize_have++] = (unsigned char)cmd[i];
      if (s->resize_have == CUB_RESIZE_BYTES) {
        s->resize_have = 0;
        if (write(s->to_init, s->resize, CUB_RESIZE_BYTES) < 0) { /* init is gone: nothing to resize */ }
      }
      continue;
    }
    if (cmd[i] == CUB_CTL_RESIZE) {
      s->resize[0] = CUB_INIT_CMD_RESIZE;
      s->resize_have = 1;
      continue;
    }
    apply_control(s, cmd[i]);
  }
  return 1;
}

/* The memory cgroup is at its limit: the whole sandbox stops (memory-limit). */
static void oom_seen(struct parent *s) {
  if (!s->oom_seen_us) s->oom_seen_us = monotonic_us();
  kill_via_init(s);
}

/* Until init is reaped: control bytes, init's messages, the OOM watches, the kill deadline. */
static void supervise(struct parent *s) {
  struct pollfd pfd[6] = {{.fd = CUB_FD_CONTROL, .events = POLLIN}, {.fd = s->from_init, .events = POLLIN},
                          {.fd = s->sigchld_fd, .events = POLLIN}, {.fd = s->oom_fd, .events = POLLIN},
                          {.fd = s->events_fd, .events = POLLPRI},  {.fd = s->join_fd, .events = POLLIN}};
  for (;;) {
    int timeout = -1;
    if (s->kill_deadline > 0) {
      long long left = s->kill_deadline - monotonic_us();
      timeout = left > 0 ? (int)(left / 1000) + 1 : 0;
    }
    int ready = poll(pfd, 6, timeout);
    if (s->kill_deadline > 0 && monotonic_us() >= s->kill_deadline) { /* init did not stop the sandbox in time */
      kill(s->init, SIGKILL); /* and with init, everything in its namespace */
      s->kill_deadline = -1; /* done: no second deadline */
      continue;
    }
    if (ready < 0) {
      if (errno == EINTR) continue;
      kill(s->init, SIGKILL);
      die_sys("poll", errno, "supervising init");
    }
    if (pfd[0].revents && !relay_control(s)) pfd[0].fd = -1;
    if (pfd[5].revents) {
      char cmd = join_serve_from_parent(s->join_fd, s->owner, s->init, s->ns_fds);
      if (cmd) apply_control(s, cmd);
    }
    if (pfd[1].revents) {
      struct init_msg m;
      ssize_t n = read(s->from_init, &m, sizeof m);
      if (n == (ssize_t)sizeof m) handle_init_msg(s, &m);
      else if (n == 0 || (n < 0 && errno != EINTR)) pfd[1].fd = -1;
    }
    if (pfd[3].revents) {
      if (cgroup_oom_fired_from_parent(s->oom_fd)) oom_seen(s);
      pfd[3].fd = -1;
    }
    if (pfd[4].revents) { /* memory.events changed */
      int oom = cgroup_events_oom_from_parent(s->events_fd);
      if (oom > 0) oom_seen(s);
      if (oom != 0) pfd[4].fd = -1; /* seen, or unreadable: stop watching rather than spin */
    }
    if (pfd[2].revents) {
      struct signalfd_siginfo si;
      /* SIGTERM or SIGHUP from outside: the sandbox is killed as on request, and still reported */
      while (read(s->sigchld_fd, &si, sizeof si) == sizeof si)
        if (si.ssi_signo != SIGCHLD) kill_via_init(s);
      if (wait4(s->init, &s->init_status, WNOHANG, &s->ru) == s->init) return;
    }
  }
}

/* What init wrote just before exiting. */
static void drain_init(struct parent *s) {
  struct init_msg m;
  while (read(s->from_init, &m, sizeof m) == (ssize_t)sizeof m) handle_init_msg(s, &m);
}

static long long tv_us(struct timeval tv) { return (long long)tv.tv_sec * 1000000LL + tv.tv_usec; }

/* The terminal exit event: facts only. Written once everything holding the status fd is gone, so the line
 * (which may exceed PIPE_BUF) cannot interleave with another. */
static void report_exit(struct parent *s) {
  static struct cub_ev_exit ev; /* static: zeroed, and large */
  if (s->have_status && WIFEXITED(s->status.wait_status)) ev.has_code = 1, ev.code = WEXITSTATUS(s->status.wait_status);
  else if (s->have_status && WIFSIGNALED(s->status.wait_status)) ev.has_signal = 1, ev.signal = WTERMSIG(s->status.wait_status);
  /* else init itself died before reporting (killed, or its parent gone): the namespace died with it. Init
   * exits on its own only after SIGKILLing everything inside. */
  else ev.has_init_signal = 1, ev.init_signal = WIFSIGNALED(s->init_status) ? WTERMSIG(s->init_status) : SIGKILL;
  if (s->have_status) ev.has_wall_us = 1, ev.wall_us = s->status.wall_us;
  ev.rusage = (struct cub_ev_exit_rusage){
      .utime_us = tv_us(s->ru.ru_utime), .stime_us = tv_us(s->ru.ru_stime), .max_rss_kb = s->ru.ru_maxrss,
      .minflt = s->ru.ru_minflt, .majflt = s->ru.ru_majflt, .nvcsw = s->ru.ru_nvcsw, .nivcsw = s->ru.ru_nivcsw};
  if (s->have_usage) {
    ev.has_init = 1;
    ev.init = (struct cub_ev_exit_init){.utime_us = s->usage.utime_us, .stime_us = s->usage.stime_us, .since_fork_us = s->usage.since_fork_us};
  }
  if (s->have_usage && s->usage.watched) {
    ev.has_sample = 1;
    ev.sample = (struct cub_ev_exit_sample){.samples = s->usage.samples, .peak_memory = (long long)s->usage.peak_memory, .peak_tasks = s->usage.peak_tasks};
    if (s->usage.cgroup_cpu_us >= 0) ev.sample.has_cgroup_cpu_us = 1, ev.sample.cgroup_cpu_us = s->usage.cgroup_cpu_us;
  }
  if (s->oom_seen_us) { /* on init's time axis: since the payload's fork (before it: since the helper's start) */
    long long at = s->oom_seen_us - (s->fork_at_us ? s->fork_at_us : s->t0);
    record_stop(s, &(struct stop_fact){.kind = CUB_STOP_OOM, .at_us = at > 0 ? at : 0, .observed = 0});
  }
  for (unsigned i = 0; i < s->nstops; i++)
    ev.stops[ev.n_stops++] = (struct cub_ev_exit_stops_item){.kind = s->stops[i].kind, .at_us = s->stops[i].at_us, .observed = s->stops[i].observed};
  for (unsigned i = 0; i < s->nviolations; i++) ev.violations[ev.n_violations++] = s->violations[i];
  cub_emit_exit(&ev);
}

/* Exactly one terminal event: the failing stage already wrote its error; init dying before exec on its own
 * is one; otherwise the exit event. A sandbox stopped on request (kill, terminate, OOM) before or while its
 * payload started ends with the exit event too: nothing failed, and the record says what stopped it. */
static void report_outcome(struct parent *s) {
  if (s->failed) _exit(CUB_EXIT_SETUP_FAILED);
  if (!s->exec_ok && !s->stop_asked) {
    report_set_stage(CUB_STAGE_INIT);
    if (WIFSIGNALED(s->init_status)) die_msg("init was killed by signal %d before the payload started", WTERMSIG(s->init_status));
    die_msg("init exited with status %d before the payload started", WEXITSTATUS(s->init_status));
  }
  report_exit(s);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("cubicle-helper protocol %d\n", CUB_PROTOCOL_VERSION);
    return 0;
  }
  struct parent s = {.t0 = monotonic_us(), .oom_fd = -1, .events_fd = -1, .join_fd = -1, .owner = getuid(), .holder_fd = -1};
  prepare_process();
  say_hello();
  struct plan plan;
  read_plan(&plan);
  s.plan = &plan;
  if (plan.join) join_main(&plan);
  if (plan.holder_socket) holder_main(&plan);
  drop_supplementary_groups();
  open_stdio_pipes_to_sandbox(&plan);
  cgroup_join_from_parent(&plan);
  cgroup_cpu_open_from_parent(&plan);
  mount_image_open_from_parent(&plan);
  s.oom_fd = cgroup_oom_watch_from_parent(&plan);
  s.events_fd = cgroup_events_open_from_parent(&plan);
  mount_prepare_idmaps(&plan); /* as root, before the namespaces exist */
  s.join_fd = join_listen_from_parent(&plan); /* bound before any id change, in the owner's directory */
  cgroup_memory_prepare_from_parent(&plan);
  if (plan.has_host_ids) become_host_user(&plan);
  cgroup_memory_open_from_parent(&plan);
  egress_prepare_from_parent(&plan); /* the stack's watchdog, from the host's namespaces (before any holder join) */
  if (plan.net_socket) s.holder_fd = net_join_holder_from_parent(&plan); /* the sandbox's namespaces become the holder's children */
  start_init(&s); /* init waits for the go byte */
  read_ns_ids(&s);
  if (s.join_fd >= 0) join_open_ns_from_parent(s.init, s.ns_fds);
  userns_write_maps_from_parent(&plan, s.init);
  net_attach_from_parent(&plan, s.init);
  egress_start_from_parent(&plan, s.init); /* the link and its allowlist exist before anything inside runs */
  release_init(&s);
  drop_to_outer_ids(&plan);
  make_undumpable();
  supervise(&s);
  egress_stop_from_parent();
  drain_init(&s);
  report_outcome(&s);
  return CUB_EXIT_OK;
}
