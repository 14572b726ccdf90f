/* Stage 1: PID 1 of the new pid namespace. Builds the root, forks the payload, reaps everything, and when
 * the payload exits kills every process left in the namespace before reporting the payload's status. */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

static void send_to_parent(int fd, const struct init_msg *m) {
  if (write_all(fd, m, sizeof *m) < 0) {
    kill(-1, SIGKILL);
    _exit(CUB_EXIT_SETUP_FAILED);
  }
}

struct notify_state {
  int mode;
  long long fork_us; /* the payload's fork, the origin of a stop's time */
  int stopped;       /* kill mode: the first notification stopped the sandbox */
  int reported;
  struct {
    int nr;
    unsigned arch;
  } seen[CUB_MAX_VIOLATIONS];
};

/* One seccomp user notification: in kill mode, report the syscall and kill everything; in log mode, report
 * each distinct syscall once and let the call proceed. Returns 0 when the listener has no more users. */
static int handle_notification(struct notify_state *ns, int listener, int to_parent) {
  static struct seccomp_notif_sizes sizes;
  static struct seccomp_notif *req;
  static struct seccomp_notif_resp *resp;
  if (!req) {
    if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) sizes = (struct seccomp_notif_sizes){sizeof *req, sizeof *resp, sizeof(struct seccomp_data)};
    req = calloc(1, sizes.seccomp_notif > sizeof *req ? sizes.seccomp_notif : sizeof *req);
    resp = calloc(1, sizes.seccomp_notif_resp > sizeof *resp ? sizes.seccomp_notif_resp : sizeof *resp);
    if (!req || !resp) {
      kill(-1, SIGKILL);
      _exit(CUB_EXIT_SETUP_FAILED);
    }
  }
  memset(req, 0, sizes.seccomp_notif > sizeof *req ? sizes.seccomp_notif : sizeof *req);
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0) {
    if (errno == EINTR || errno == ENOENT) return 1; /* interrupted, or the task died meanwhile */
    return 0;
  }
  int known = 0;
  for (int i = 0; i < ns->reported; i++)
    if (ns->seen[i].nr == req->data.nr && ns->seen[i].arch == req->data.arch) known = 1;
  if (!known && ns->reported < CUB_MAX_VIOLATIONS) {
    ns->seen[ns->reported].nr = req->data.nr;
    ns->seen[ns->reported].arch = req->data.arch;
    ns->reported++;
    struct init_msg v = {.kind = MSG_VIOLATION, .nr = req->data.nr, .arch = req->data.arch};
    send_to_parent(to_parent, &v);
  }
  if (ns->mode == CUB_NOTIFY_KILL) {
    kill(-1, SIGKILL); /* the blocked call never returns: the whole sandbox dies */
    if (!ns->stopped) {
      ns->stopped = 1;
      struct init_msg m = {.kind = MSG_STOP, .stop = {.kind = CUB_STOP_SECCOMP, .at_us = monotonic_us() - ns->fork_us, .observed = req->data.nr}};
      send_to_parent(to_parent, &m);
    }
    return 1;
  }
  memset(resp, 0, sizes.seccomp_notif_resp > sizeof *resp ? sizes.seccomp_notif_resp : sizeof *resp);
  resp->id = req->id;
  resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp) < 0 && errno != ENOENT) return 1;
  return 1;
}

static void take_identity(const struct plan *p) {
  /* Keep the namespace capabilities across the id change; mounts still need them. */
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_KEEPCAPS");
  /* Subordinate ids mapped by newgidmap leave setgroups allowed, and the caller's supplementary groups would
   * follow the sandbox: drop them (with the maps stage 0 writes, setgroups is denied and root dropped them). */
  if (p->newgidmap && setgroups(0, NULL) < 0) die_sys("setgroups", errno, "dropping the caller's supplementary groups");
  if (setresgid(p->inner_gid, p->inner_gid, p->inner_gid) < 0) die_sys("setresgid", errno, "gid %u", p->inner_gid);
  if (setresuid(p->inner_uid, p->inner_uid, p->inner_uid) < 0) die_sys("setresuid", errno, "uid %u", p->inner_uid);
  /* After the id change (which resets it): nobody inside may ptrace us or open /proc/1/{exe,mem}. */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_DUMPABLE");
}

/* A warm sandbox, built up to its mounts: stage 0 hears it is warm, then init waits for the run plan. A command or
 * EOF from stage 0 meanwhile ends it (nothing ran). The run's setup time counts from the run plan's arrival. */
static const struct plan *await_run(const struct plan *p, int from_parent, int to_parent, long long *t0_us) {
  static struct plan run;
  struct init_msg warm = {.kind = MSG_WARM};
  send_to_parent(to_parent, &warm);
  prctl(PR_SET_NAME, "cubicle-warm", 0, 0, 0);
  struct pollfd pfd[2] = {{.fd = CUB_FD_RUN, .events = POLLIN}, {.fd = from_parent, .events = POLLIN}};
  for (;;) {
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die_sys("poll", errno, "waiting for the run plan on fd %d", CUB_FD_RUN);
    }
    if (pfd[1].revents) _exit(CUB_EXIT_OK);
    if (pfd[0].revents) break;
  }
  prctl(PR_SET_NAME, "cubicle-init", 0, 0, 0);
  *t0_us = monotonic_us();
  run = *p;
  plan_read_run(&run, CUB_FD_RUN, CUB_FD_BPF);
  close(CUB_FD_RUN);
  close(CUB_FD_BPF);
  mount_tmpfs_inodes(&run);
  mount_files_from_pipe(&run);
  return &run;
}

/* The window size that follows a resize byte (stage 0 writes the whole message at once). */
static void read_resize(int from_parent) {
  unsigned char sz[CUB_RESIZE_BYTES - 1];
  size_t got = 0;
  while (got < sizeof sz) {
    ssize_t n = read(from_parent, sz + got, sizeof sz - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    got += (size_t)n;
  }
  tty_resize_from_init((unsigned)sz[0] << 8 | sz[1], (unsigned)sz[2] << 8 | sz[3]);
}

/* Everything inside has ended: copy-out, init's usage, then the payload's status; init is done. */
static __attribute__((noreturn)) void report_end(const struct plan *p, const struct sampler *smp, int watched, int to_parent,
                                                 pid_t payload, int payload_status, long long wall_us) {
  copy_out_send(p);
  struct init_msg um = {.kind = MSG_USAGE};
  limits_final(smp, watched, &um.usage);
  send_to_parent(to_parent, &um);
  struct init_msg done = {.kind = MSG_STATUS, .payload_pid = payload, .wait_status = payload_status, .wall_us = wall_us};
  send_to_parent(to_parent, &done);
  _exit(CUB_EXIT_OK);
}

void stage_init_main(const struct plan *p, int from_parent, int to_parent, long long t0_us) {
  report_set_stage(CUB_STAGE_INIT);
  report_set_failure_fd(to_parent);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_PDEATHSIG");
  char go;
  if (read(from_parent, &go, 1) != 1 || go != CUB_INIT_CMD_GO) _exit(CUB_EXIT_SETUP_FAILED); /* the parent failed and reported it */
  prctl(PR_SET_NAME, "cubicle-init", 0, 0, 0);

  take_identity(p);
  /* The id change cleared the parent-death signal; set it again, then make sure the parent is still there. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_PDEATHSIG");
  struct pollfd alive = {.fd = from_parent, .events = POLLIN};
  if (poll(&alive, 1, 0) > 0 && (alive.revents & (POLLHUP | POLLERR))) _exit(CUB_EXIT_SETUP_FAILED);
  umask(0);
  mount_build_root(p);
  if (p->has_files) close(CUB_FD_FILES); /* its content is in the sandbox now */
  if (p->hostname && sethostname(p->hostname, strlen(p->hostname)) < 0) die_sys("sethostname", errno, "%s", p->hostname);
  if (p->loopback) net_loopback_up();
  net_configure_from_init(p);
  limits_apply_ucounts(p);
  mount_proc_sys_readonly();
  if (p->awaits) p = await_run(p, from_parent, to_parent, &t0_us);
  limits_note_stdin(); /* before the terminal takes fd 0 */
  tty_open_from_init(p);

  /* Only SIGCHLD matters to init (the kernel drops other signals to a pid-namespace init without handlers);
   * "terminate" arrives as a byte from the parent. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) die_sys("sigprocmask", errno, "blocking signals");
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) die_sys("signalfd", errno, "init's signal fd");

  /* A stop asked for during setup (or a parent gone): the payload never starts. A command arriving after this
   * check waits in the pipe and is handled as soon as the payload runs. */
  struct pollfd asked = {.fd = from_parent, .events = POLLIN};
  if (poll(&asked, 1, 0) > 0) {
    char cmd = 0;
    ssize_t n = read(from_parent, &cmd, 1);
    if (n == 1 && cmd == CUB_INIT_CMD_RESIZE) read_resize(from_parent);
    else if (n <= 0 || cmd == CUB_INIT_CMD_KILL || cmd == CUB_INIT_CMD_TERMINATE) _exit(CUB_EXIT_OK);
  }

  int exec_pipe[2];
  if (pipe2(exec_pipe, O_CLOEXEC) < 0) die_sys("pipe2", errno, "exec report pipe");
  long long fork_us = monotonic_us();
  limits_mark_fork();
  /* CLONE_VFORK: init resumes once the payload stage has exec'd or died. CLONE_FILES: a seccomp listener the
   * stage creates appears in init's fd table too (execve unshares the table; every fd here is close-on-exec,
   * so the payload's copy holds only 0-2). Neither side closes a shared fd before that. */
  pid_t payload = (pid_t)syscall(SYS_clone, CLONE_VFORK | CLONE_FILES | SIGCHLD, NULL, NULL, NULL, NULL);
  if (payload < 0) die_sys("clone", errno, "starting the payload");
  if (payload == 0) stage_exec_main(p, exec_pipe[1]);
  cgroup_memory_close();
  close(exec_pipe[1]);

  /* The stage reported its listener, or a failure (and then it has exited); EOF ends its reports. */
  int listener;
  if (read_exec_reports(exec_pipe[0], &listener)) {
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {}
    struct init_msg f = {.kind = MSG_FAILED};
    send_to_parent(to_parent, &f);
    _exit(CUB_EXIT_SETUP_FAILED);
  }
  struct init_msg ok = {.kind = MSG_EXEC_OK, .payload_pid = payload, .setup_us = fork_us - t0_us, .fork_at_us = fork_us};
  send_to_parent(to_parent, &ok);
  /* Signalling and reaping its own uid's processes needs no capability: init keeps none. */
  caps_clear_sets();

  /* Init holds none of the payload's stdio: EOF reaches the caller when the payload's side closes. With a
   * terminal, these are init's copies of its slave: the master reads EIO once the payload's are closed too. */
  close(0);
  close(1);
  close(2);

  int payload_done = 0, payload_status = 0;
  long long wall_us = 0;
  int timer = limits_watch_start(p);
  long long pace_us = p->watch_interval_us, fast_ticks = 0;
  struct sampler smp;
  memset(&smp, 0, sizeof smp);
  struct pollfd pfd[4 + TTY_POLL_FDS] = {{.fd = sfd, .events = POLLIN}, {.fd = from_parent, .events = POLLIN},
                                         {.fd = listener, .events = POLLIN}, {.fd = timer, .events = POLLIN}};
  struct notify_state ns = {.mode = p->notify_mode, .fork_us = fork_us};
  /* all_reaped: everything inside has ended; init still passes on what the terminal showed, unless told to stop */
  int all_reaped = 0, stop_relay = 0;
  for (;;) {
    if (all_reaped && (stop_relay || tty_relay_drained())) report_end(p, &smp, timer >= 0, to_parent, payload, payload_status, wall_us);
    tty_relay_events(pfd + 4);
    if (poll(pfd, 4 + TTY_POLL_FDS, tty_relay_timeout_ms()) < 0) {
      if (errno == EINTR) continue;
      kill(-1, SIGKILL);
      _exit(CUB_EXIT_SETUP_FAILED);
    }
    if (pfd[1].revents) {
      char cmd;
      ssize_t n = read(from_parent, &cmd, 1);
      if (n == 1 && cmd == CUB_INIT_CMD_RESIZE) {
        read_resize(from_parent);
      } else if (n == 1 && cmd == CUB_INIT_CMD_TERMINATE) {
        kill(-1, SIGTERM); /* terminate: ask everything inside to stop */
        stop_relay = all_reaped;
      } else if (n == 1 && cmd == CUB_INIT_CMD_KILL) {
        kill(-1, SIGKILL); /* kill: everything stops now; init still reaps and reports what was used */
        stop_relay = 1;
      } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        kill(-1, SIGKILL); /* the parent is gone: nothing may outlive it */
        _exit(CUB_EXIT_SETUP_FAILED);
      }
    }
    tty_relay_handle(pfd + 4);
    if (pfd[2].revents) {
      if (!handle_notification(&ns, listener, to_parent)) pfd[2].fd = -1; /* every filtered task is gone */
    }
    if (pfd[3].revents) {
      uint64_t ticks;
      if (read(timer, &ticks, sizeof ticks) < 0) { /* spurious wake-up */ }
      long long t0 = monotonic_us();
      /* Near the task cap (fork bombs churn), a cheap tasks-only sample every ms, with a full sample every
       * tenth tick; past half the memory limit, a full sample every ms (one large allocation is touched at a few
       * GB/s: the sooner it is seen, the less it overshoots); elsewhere the plan's period. Never more often than
       * ten times the sample's own cost, so init's own CPU stays small with many processes. */
      int near_cap = p->limit_tasks && smp.last_tasks * 2 >= p->limit_tasks;
      int near_memory = p->limit_memory && p->measure_memory && smp.last_memory * 2 >= p->limit_memory;
      int tasks_only = near_cap && !near_memory && (++fast_ticks % 10) != 0;
      if (!payload_done && !smp.stopped && limits_sample(p, &smp, t0 - fork_us, tasks_only)) {
        kill(-1, SIGKILL); /* a limit was passed: the whole sandbox stops at once */
        pfd[3].fd = -1;
        struct init_msg m = {.kind = MSG_STOP, .stop = smp.stop};
        send_to_parent(to_parent, &m);
      } else {
        int fast = (p->limit_tasks && smp.last_tasks * 2 >= p->limit_tasks) ||
                   (p->limit_memory && p->measure_memory && smp.last_memory * 2 >= p->limit_memory);
        long long want = fast ? 1000 : p->watch_interval_us;
        long long cost = (monotonic_us() - t0) * 10;
        if (cost > want) want = cost > 200000 ? 200000 : cost;
        if (want != pace_us) limits_watch_pace(timer, pace_us = want);
      }
    }
    if (!(pfd[0].revents & POLLIN)) continue;
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof si) != sizeof si) continue;
    for (;;) {
      int st;
      pid_t r = waitpid(-1, &st, WNOHANG);
      if (r > 0) {
        if (r == payload && !payload_done) {
          payload_done = 1;
          payload_status = st;
          wall_us = monotonic_us() - fork_us;
          kill(-1, SIGKILL); /* leftovers, daemons included, die with the payload */
        }
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == ECHILD && payload_done) all_reaped = 1;
      break;
    }
  }
}
