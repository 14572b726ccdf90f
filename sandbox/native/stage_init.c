/* Stage 1: PID 1 of the new pid namespace. Builds the root, forks the payload, reaps everything, and when
 * the payload exits kills every process left in the namespace before reporting the payload's status. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
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

static void take_identity(const struct plan *p) {
  /* Keep the namespace capabilities across the id change; mounts still need them. */
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_KEEPCAPS");
  if (setresgid(p->inner_gid, p->inner_gid, p->inner_gid) < 0) die_sys("setresgid", errno, "gid %u", p->inner_gid);
  if (setresuid(p->inner_uid, p->inner_uid, p->inner_uid) < 0) die_sys("setresuid", errno, "uid %u", p->inner_uid);
  /* After the id change (which resets it): nobody inside may ptrace us or open /proc/1/{exe,mem}. */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_DUMPABLE");
}

void stage_init_main(const struct plan *p, int from_parent, int to_parent, long long t0_us) {
  report_set_stage(CUB_STAGE_INIT);
  report_set_failure_fd(to_parent);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_PDEATHSIG");
  char go;
  if (read(from_parent, &go, 1) != 1) _exit(CUB_EXIT_SETUP_FAILED); /* the parent failed and reported it */
  prctl(PR_SET_NAME, "cubicle-init", 0, 0, 0);

  take_identity(p);
  /* The id change cleared the parent-death signal; set it again, then make sure the parent is still there. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_PDEATHSIG");
  struct pollfd alive = {.fd = from_parent, .events = POLLIN};
  if (poll(&alive, 1, 0) > 0 && (alive.revents & (POLLHUP | POLLERR))) _exit(CUB_EXIT_SETUP_FAILED);
  umask(0);
  mount_build_root(p);
  if (p->hostname && sethostname(p->hostname, strlen(p->hostname)) < 0) die_sys("sethostname", errno, "%s", p->hostname);
  if (p->loopback) net_loopback_up();

  /* Only SIGCHLD matters to init (the kernel drops other signals to a pid-namespace init without handlers);
   * "terminate" arrives as a byte from the parent. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) die_sys("sigprocmask", errno, "blocking signals");
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) die_sys("signalfd", errno, "init's signal fd");

  int exec_pipe[2];
  if (pipe2(exec_pipe, O_CLOEXEC) < 0) die_sys("pipe2", errno, "exec report pipe");
  long long fork_us = monotonic_us();
  pid_t payload = fork();
  if (payload < 0) die_sys("fork", errno, "forking the payload");
  if (payload == 0) {
    close(exec_pipe[0]);
    close(from_parent);
    close(to_parent);
    close(sfd);
    stage_exec_main(p, exec_pipe[1]);
  }
  close(exec_pipe[1]);

  /* EOF on the exec pipe means execve succeeded (close-on-exec); a message means stage 2 reported a failure. */
  struct init_msg m = {0};
  ssize_t n;
  do n = read(exec_pipe[0], &m, sizeof m);
  while (n < 0 && errno == EINTR);
  close(exec_pipe[0]);
  if (n != 0) {
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {}
    struct init_msg f = {.kind = MSG_FAILED};
    send_to_parent(to_parent, &f);
    _exit(CUB_EXIT_SETUP_FAILED);
  }
  struct init_msg ok = {.kind = MSG_EXEC_OK, .payload_pid = payload, .setup_us = fork_us - t0_us};
  send_to_parent(to_parent, &ok);
  /* Signalling and reaping its own uid's processes needs no capability: init keeps none. */
  caps_clear_sets();

  /* Init holds none of the payload's stdio: EOF reaches the caller when the payload's side closes. */
  close(0);
  close(1);
  close(2);

  int payload_done = 0, payload_status = 0;
  long long wall_us = 0;
  struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN}, {.fd = from_parent, .events = POLLIN}};
  for (;;) {
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR) continue;
      kill(-1, SIGKILL);
      _exit(CUB_EXIT_SETUP_FAILED);
    }
    if (pfd[1].revents) {
      char cmd;
      ssize_t n = read(from_parent, &cmd, 1);
      if (n == 1 && cmd == 't') {
        kill(-1, SIGTERM); /* terminate: ask everything inside to stop */
      } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        kill(-1, SIGKILL); /* the parent is gone: nothing may outlive it */
        _exit(CUB_EXIT_SETUP_FAILED);
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
      if (r < 0 && errno == ECHILD && payload_done) {
        struct init_msg done = {.kind = MSG_STATUS, .payload_pid = payload, .wait_status = payload_status, .wall_us = wall_us};
        send_to_parent(to_parent, &done);
        _exit(CUB_EXIT_OK);
      }
      break;
    }
  }
}
