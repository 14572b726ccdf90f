/* Stage 0: the helper's entry point, on the host side. Reads the plan, clones into new namespaces, writes the
 * id maps, then supervises: relays control commands, and reports the single terminal event. */
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
#include <sys/eventfd.h>
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

static unsigned long long ns_inode(pid_t pid, const char *ns) {
  char path[64];
  struct stat st;
  snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, ns);
  return stat(path, &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

/* Namespace inodes, read while init is still dumpable (before its release): later, only root could read them. */
static unsigned long long ns_ids[6];
static const char *const NS_NAMES[6] = {"user", "mnt", "pid", "net", "uts", "ipc"};

static void read_ns_ids(pid_t init) {
  for (int i = 0; i < 6; i++) ns_ids[i] = ns_inode(init, NS_NAMES[i]);
}

static void report_ready(pid_t init, const struct init_msg *m) {
  char line[512];
  snprintf(line, sizeof line,
           "{\"ev\":\"" CUB_EV_READY "\",\"initPid\":%d,\"payloadPid\":%d,\"setupUs\":%lld,"
           "\"ns\":{\"user\":%llu,\"mnt\":%llu,\"pid\":%llu,\"net\":%llu,\"uts\":%llu,\"ipc\":%llu}}\n",
           (int)init, m->payload_pid, m->setup_us, ns_ids[0], ns_ids[1], ns_ids[2], ns_ids[3], ns_ids[4], ns_ids[5]);
  report_event_raw(line);
}

static struct {
  int nr;
  unsigned arch;
} violations[CUB_MAX_VIOLATIONS];
static int nviolations;

static void record_violation(const struct init_msg *m) {
  if (nviolations < CUB_MAX_VIOLATIONS) violations[nviolations].nr = m->nr, violations[nviolations++].arch = m->arch;
}

static struct sample_report sample;
static int have_sample, oom_fired;

/* Root only, before clone: every process of the sandbox starts inside these cgroups. */
static void join_cgroups(const struct plan *p) {
  for (size_t i = 0; i < p->ncgroup_join; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cgroup.procs", p->cgroup_join[i]);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die_sys("open", errno, "%s (joining the sandbox's cgroup)", path);
    if (write_all(fd, "0\n", 2) < 0) die_sys("write", errno, "%s (joining the sandbox's cgroup)", path);
    close(fd);
  }
}

/* cgroup v1: with the OOM killer disabled in the sandbox's memory cgroup, an eventfd says when it hits its
 * limit; stage 0 then kills the whole sandbox (memory-limit). Returns the eventfd, or -1. */
static int watch_oom(const struct plan *p) {
  if (!p->oom_watch_dir) return -1;
  char path[PATH_MAX], line[64];
  snprintf(path, sizeof path, "%s/memory.oom_control", p->oom_watch_dir);
  int ofd = open(path, O_RDONLY | O_CLOEXEC);
  if (ofd < 0) die_sys("open", errno, "%s", path);
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) die_sys("eventfd", errno, "OOM notifications");
  snprintf(path, sizeof path, "%s/cgroup.event_control", p->oom_watch_dir);
  int cfd = open(path, O_WRONLY | O_CLOEXEC);
  if (cfd < 0) die_sys("open", errno, "%s", path);
  int n = snprintf(line, sizeof line, "%d %d", efd, ofd);
  if (write_all(cfd, line, (size_t)n) < 0) die_sys("write", errno, "%s", path);
  close(cfd);
  return efd; /* ofd stays open: the registration lives as long as it does */
}

static void report_exit(int have_status, const struct init_msg *st, int init_status, const struct rusage *ru_in) {
  /* wait4 on init counts init's own CPU (sampling, reaping) too: that is not the payload's */
  struct rusage adj = *ru_in;
  const struct rusage *ru = &adj;
  if (have_sample) {
    long long u = adj.ru_utime.tv_sec * 1000000LL + adj.ru_utime.tv_usec - sample.init_utime_us;
    long long s = adj.ru_stime.tv_sec * 1000000LL + adj.ru_stime.tv_usec - sample.init_stime_us;
    if (u < 0) u = 0;
    if (s < 0) s = 0;
    adj.ru_utime.tv_sec = u / 1000000, adj.ru_utime.tv_usec = u % 1000000;
    adj.ru_stime.tv_sec = s / 1000000, adj.ru_stime.tv_usec = s % 1000000;
  }
  char line[1024 + CUB_MAX_VIOLATIONS * 40], how[96], viol[CUB_MAX_VIOLATIONS * 40 + 32], samp[320];
  samp[0] = '\0';
  if (have_sample)
    snprintf(samp, sizeof samp, ",\"sample\":{\"samples\":%lld,\"peakMemory\":%llu,\"peakTasks\":%lld,\"limit\":\"%s\",\"limitAtUs\":%lld,\"observed\":%llu,\"cpuUs\":%lld,\"cpuFromCgroup\":%s}",
             sample.samples, sample.peak_memory, sample.peak_tasks, CUB_LIMIT_NAMES[sample.limit_kind], sample.limit_at_us, sample.limit_observed, sample.cpu_us, sample.cpu_from_cgroup ? "true" : "false");
  size_t off = (size_t)snprintf(viol, sizeof viol, ",\"violations\":[");
  for (int i = 0; i < nviolations; i++)
    off += (size_t)snprintf(viol + off, sizeof viol - off, "%s{\"nr\":%d,\"arch\":%u}", i ? "," : "", violations[i].nr, violations[i].arch);
  snprintf(viol + off, sizeof viol - off, "]%s%s", samp, oom_fired ? ",\"oom\":true" : "");
  if (have_status && WIFEXITED(st->wait_status))
    snprintf(how, sizeof how, "\"code\":%d", WEXITSTATUS(st->wait_status));
  else if (have_status && WIFSIGNALED(st->wait_status))
    snprintf(how, sizeof how, "\"signal\":%d,\"core\":%s", WTERMSIG(st->wait_status),
             WCOREDUMP(st->wait_status) ? "true" : "false");
  else /* init itself was killed (kill command, or its parent gone): the whole namespace died with it */
    snprintf(how, sizeof how, "\"signal\":%d,\"killed\":true", WIFSIGNALED(init_status) ? WTERMSIG(init_status) : SIGKILL);
  snprintf(line, sizeof line,
           "{\"ev\":\"" CUB_EV_EXIT "\",%s,\"wallUs\":%lld,\"usage\":{\"utimeUs\":%lld,\"stimeUs\":%lld,"
           "\"maxRssKb\":%ld,\"minflt\":%ld,\"majflt\":%ld,\"nvcsw\":%ld,\"nivcsw\":%ld,\"inblock\":%ld,\"oublock\":%ld}%s}\n",
           how, have_status ? st->wall_us : -1LL, (long long)ru->ru_utime.tv_sec * 1000000LL + ru->ru_utime.tv_usec,
           (long long)ru->ru_stime.tv_sec * 1000000LL + ru->ru_stime.tv_usec, ru->ru_maxrss, ru->ru_minflt,
           ru->ru_majflt, ru->ru_nvcsw, ru->ru_nivcsw, ru->ru_inblock, ru->ru_oublock, viol);
  report_event_raw(line);
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

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
struct cub_clone_args {
  unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

/* fork-like clone into the new namespaces; with a v2 group, init starts inside it (no migration) and stage 0
 * stays outside (an OOM group kill can never take the supervisor side down). */
static pid_t clone_init(const struct plan *p) {
  if (!p->cgroup_into) return (pid_t)syscall(SYS_clone, NS_FLAGS | SIGCHLD, NULL, NULL, NULL, NULL);
#ifdef SYS_clone3
  int cg = open(p->cgroup_into, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) die_sys("open", errno, "%s (the run's cgroup)", p->cgroup_into);
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
  errno = ENOSYS;
  return -1;
#endif
}

/* Kill: once the payload runs, init kills everything and still reaps and reports what was used; if it does
 * not within a second (or before exec), init itself is killed, which takes the whole namespace. */
static void kill_via_init(pid_t init, int go_fd, int exec_ok, long long *deadline) {
  if (*deadline) return; /* already asked; the deadline stands */
  if (exec_ok && write(go_fd, "k", 1) == 1) {
    *deadline = monotonic_us() + 1000000;
    return;
  }
  kill(init, SIGKILL);
}

static void null_stdio(void) {
  int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0) return;
  for (int i = 0; i < 3; i++) dup2(fd, i);
  if (fd > 2) close(fd);
}

int main(int argc, char **argv) {
  long long t0 = monotonic_us();
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("cubicle-helper protocol %d\n", CUB_PROTOCOL_VERSION);
    return 0;
  }
  ensure_stdio_open();
  require_fds();
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_PDEATHSIG");
  prctl(PR_SET_NAME, "cubicle-parent", 0, 0, 0);
  /* Terminal signals are the supervisor's to handle (it decides how to stop the sandbox); the payload resets them. */
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  char hello[96];
  snprintf(hello, sizeof hello, "{\"ev\":\"" CUB_EV_HELLO "\",\"v\":%d,\"pid\":%d}\n", CUB_PROTOCOL_VERSION, (int)getpid());
  report_event_raw(hello);

  struct plan plan;
  plan_read(&plan, CUB_FD_PLAN, CUB_FD_BPF);
  close(CUB_FD_PLAN);
  close(CUB_FD_BPF);

  /* Root's supplementary groups would follow the sandbox; drop them (others keep theirs, as any process). */
  if (geteuid() == 0 && setgroups(0, NULL) < 0) die_sys("setgroups", errno, "dropping supplementary groups");
  join_cgroups(&plan);
  if (plan.cgroup_cpu_file) {
    plan.cgroup_cpu_fd = open(plan.cgroup_cpu_file, O_RDONLY | O_CLOEXEC);
    if (plan.cgroup_cpu_fd < 0) die_sys("open", errno, "%s", plan.cgroup_cpu_file);
  }
  int oom_fd = watch_oom(&plan);
  int events_fd = -1;
  if (plan.cgroup_events) {
    events_fd = open(plan.cgroup_events, O_RDONLY | O_CLOEXEC);
    if (events_fd < 0) die_sys("open", errno, "%s", plan.cgroup_events);
  }
  if (plan.has_host_ids) become_host_user(&plan);

  int go[2], up[2];
  if (pipe2(go, O_CLOEXEC) < 0 || pipe2(up, O_CLOEXEC) < 0) die_sys("pipe2", errno, "internal pipes");
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die_sys("sigprocmask", errno, "blocking SIGCHLD");
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die_sys("signalfd", errno, "SIGCHLD fd");

  pid_t init = clone_init(&plan);
  if (init < 0) die_sys(plan.cgroup_into ? "clone3" : "clone", errno, "creating the namespaces%s", plan.cgroup_into ? " (into the run's cgroup)" : "");
  if (init == 0) {
    if (events_fd >= 0) close(events_fd);
    if (oom_fd >= 0) close(oom_fd);
    close(go[1]);
    close(up[0]);
    close(CUB_FD_CONTROL);
    close(sfd);
    stage_init_main(&plan, go[0], up[1], t0);
  }
  close(go[0]);
  close(up[1]);
  null_stdio(); /* only the payload holds the caller's stdio */

  read_ns_ids(init);
  userns_write_maps_from_parent(&plan, init);
  if (write_all(go[1], "g", 1) < 0) die_sys("write", errno, "releasing init");
  drop_to_outer_ids(&plan);
  /* Nothing of stage 0 is for anyone to inspect from now on. */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_DUMPABLE");

  int failed = 0, exec_ok = 0, have_status = 0, init_status = 0;
  struct init_msg status = {0};
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  struct pollfd pfd[5] = {{.fd = CUB_FD_CONTROL, .events = POLLIN}, {.fd = up[0], .events = POLLIN},
                          {.fd = sfd, .events = POLLIN}, {.fd = oom_fd, .events = POLLIN},
                          {.fd = events_fd, .events = POLLPRI}};
  long long kill_deadline = 0;
  for (;;) {
    int timeout = -1;
    if (kill_deadline) {
      long long left = kill_deadline - monotonic_us();
      timeout = left > 0 ? (int)(left / 1000) + 1 : 0;
    }
    int ready = poll(pfd, 5, timeout);
    if (kill_deadline && monotonic_us() >= kill_deadline) { /* init did not stop the sandbox in time */
      kill(init, SIGKILL); /* and with init, everything in its namespace */
      kill_deadline = 0;
      continue;
    }
    if (ready < 0) {
      if (errno == EINTR) continue;
      kill(init, SIGKILL);
      die_sys("poll", errno, "supervising init");
    }
    if (pfd[0].revents) {
      char cmd[64];
      ssize_t n = read(CUB_FD_CONTROL, cmd, sizeof cmd);
      if (n <= 0 && !(n < 0 && errno == EINTR)) { /* EOF: the supervisor is gone; nothing may outlive it */
        kill(init, SIGKILL);
        pfd[0].fd = -1;
      }
      /* terminate goes to init as a byte on its own pipe (a signal's sender could be forged from inside) */
      for (ssize_t i = 0; i < n; i++) {
        if (cmd[i] == CUB_CTL_TERMINATE && write(go[1], "t", 1) == 1) continue;
        kill_via_init(init, go[1], exec_ok, &kill_deadline);
      }
    }
    if (pfd[1].revents) {
      struct init_msg m;
      ssize_t n = read(up[0], &m, sizeof m);
      if (n == (ssize_t)sizeof m) {
        if (m.kind == MSG_EXEC_OK) exec_ok = 1, report_ready(init, &m);
        else if (m.kind == MSG_STATUS) have_status = 1, status = m;
        else if (m.kind == MSG_FAILED) failed = 1;
        else if (m.kind == MSG_VIOLATION) record_violation(&m);
        else if (m.kind == MSG_SAMPLE) have_sample = 1, sample = m.sample;
      } else if (n == 0 || (n < 0 && errno != EINTR)) {
        pfd[1].fd = -1;
      }
    }
    if (pfd[3].revents) {
      uint64_t events;
      if (read(oom_fd, &events, sizeof events) == sizeof events && events > 0) {
        oom_fired = 1;
        kill_via_init(init, go[1], exec_ok, &kill_deadline); /* the memory cgroup is at its limit: all stops */
      }
      pfd[3].fd = -1;
    }
    if (pfd[4].revents) { /* memory.events changed: an OOM means the group is at its limit */
      char ev[512];
      ssize_t n = pread(events_fd, ev, sizeof ev - 1, 0);
      if (n <= 0) pfd[4].fd = -1; /* unreadable: stop watching rather than spin */
      if (n > 0) {
        ev[n] = '\0';
        char *o = strstr(ev, "\noom ");
        char *k = strstr(ev, "\noom_kill ");
        if ((o && strtoull(o + 5, NULL, 10) > 0) || (k && strtoull(k + 10, NULL, 10) > 0)) {
          oom_fired = 1;
          kill_via_init(init, go[1], exec_ok, &kill_deadline);
          pfd[4].fd = -1;
        }
      }
    }
    if (pfd[2].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {}
      pid_t r = wait4(init, &init_status, WNOHANG, &ru);
      if (r == init) break;
    }
  }
  /* Drain what init wrote just before exiting. */
  struct init_msg m;
  while (read(up[0], &m, sizeof m) == (ssize_t)sizeof m) {
    if (m.kind == MSG_EXEC_OK) exec_ok = 1, report_ready(init, &m);
    else if (m.kind == MSG_STATUS) have_status = 1, status = m;
    else if (m.kind == MSG_FAILED) failed = 1;
    else if (m.kind == MSG_VIOLATION) record_violation(&m);
    else if (m.kind == MSG_SAMPLE) have_sample = 1, sample = m.sample;
  }
  if (failed) _exit(CUB_EXIT_SETUP_FAILED); /* the failing stage already wrote the error event */
  if (!exec_ok) {
    report_set_stage(CUB_STAGE_INIT);
    if (WIFSIGNALED(init_status))
      die_msg("init was killed by signal %d before the payload started", WTERMSIG(init_status));
    die_msg("init exited with status %d before the payload started", WEXITSTATUS(init_status));
  }
  report_exit(have_status, &status, init_status, &ru);
  return CUB_EXIT_OK;
}
