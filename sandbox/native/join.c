/* Named sandboxes: stage 0 serves a join socket, and the join mode enters a running sandbox through it.
 *
 * Init makes itself non-dumpable, so once it runs nobody but host root may open /proc/INIT/ns/<name>. Stage 0 opens
 * them while it still may (before init's release) and hands them only to processes of its owner's uid (SO_PEERCRED)
 * that connect to a socket in the owner's private runtime directory. The join mode then does what nsenter would, in
 * the order the kernel requires: the user namespace first (its owner gains the capabilities the others need), the
 * mount namespace (which also moves root and cwd to the sandbox's root), the rest, and a fork, so the command runs
 * inside the pid namespace; the child takes the payload's ids and its last stage (stage_exec.c) as the payload does. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif

static int ns_flag(const char *name) {
  static const struct {
    const char *name;
    int flag;
  } flags[] = {{"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS},  {"pid", CLONE_NEWPID},      {"net", CLONE_NEWNET},
               {"uts", CLONE_NEWUTS},   {"ipc", CLONE_NEWIPC}, {"cgroup", CLONE_NEWCGROUP}};
  for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
    if (strcmp(flags[i].name, name) == 0) return flags[i].flag;
  return -1;
}

static void fill_address(struct sockaddr_un *a, const char *path) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  memcpy(a->sun_path, path, strlen(path) + 1); /* plan.c bounded it below sizeof sun_path */
}

int join_listen_from_parent(const struct plan *p) {
  if (!p->listen_join) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) die_sys("socket", errno, "the join socket");
  struct sockaddr_un a;
  fill_address(&a, p->listen_join);
  mode_t old = umask(0077); /* the socket file is the owner's alone, in a directory that is the owner's alone */
  int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
  int err = errno;
  umask(old);
  if (rc < 0) die_sys("bind", err, "%s (the join socket; a stale one is removed by the library before the run)", p->listen_join);
  if (listen(fd, 16) < 0) die_sys("listen", errno, "%s", p->listen_join);
  return fd;
}

void join_open_ns_from_parent(pid_t init, int ns_fds[CUB_NS_COUNT]) {
  for (int i = 0; i < CUB_NS_COUNT; i++) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)init, CUB_NS_NAMES[i]);
    ns_fds[i] = open(path, O_RDONLY | O_CLOEXEC);
    if (ns_fds[i] < 0) die_sys("open", errno, "%s (kept for joining the sandbox later)", path);
  }
}

/* Sends the reply line and every namespace fd in one message; a peer that does not read loses it (never blocks). */
static void send_ns(int conn, pid_t init, const int ns_fds[CUB_NS_COUNT]) {
  char line[64];
  int n = snprintf(line, sizeof line, "cubicle-join %d %d\n", CUB_PROTOCOL_VERSION, (int)init);
  struct iovec iov = {.iov_base = line, .iov_len = (size_t)n};
  union {
    char buf[CMSG_SPACE(sizeof(int) * CUB_NS_COUNT)];
    struct cmsghdr align;
  } u;
  memset(&u, 0, sizeof u);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * CUB_NS_COUNT);
  memcpy(CMSG_DATA(c), ns_fds, sizeof(int) * CUB_NS_COUNT);
  (void)sendmsg(conn, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

char join_serve_from_parent(int listen_fd, uid_t owner, pid_t init, const int ns_fds[CUB_NS_COUNT]) {
  int conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) return 0;
  struct ucred cred;
  socklen_t len = sizeof cred;
  char req = 0;
  /* Only the owner's processes (the same uid that started this helper: root for a root caller) get anything. */
  if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != owner) {
    close(conn);
    return 0;
  }
  struct pollfd pf = {.fd = conn, .events = POLLIN};
  if (poll(&pf, 1, 200) != 1 || read(conn, &req, 1) != 1) req = 0; /* a silent client never holds stage 0 up */
  if (req == CUB_JOIN_REQ_JOIN) send_ns(conn, init, ns_fds);
  close(conn);
  if (req == CUB_JOIN_REQ_TERMINATE) return CUB_CTL_TERMINATE;
  if (req == CUB_JOIN_REQ_KILL) return CUB_CTL_KILL;
  return 0;
}

/* ---- join mode ---- */

/* Connects to the sandbox's join socket and receives init's host pid and its namespace fds. */
static pid_t receive_ns(const char *path, int ns_fds[CUB_NS_COUNT]) {
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) die_sys("socket", errno, "connecting to the sandbox");
  struct sockaddr_un a;
  fill_address(&a, path);
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0)
    die_sys("connect", errno, "%s: the sandbox's join socket (has the sandbox ended?)", path);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char req = CUB_JOIN_REQ_JOIN;
  if (write_all(s, &req, 1) < 0) die_sys("write", errno, "asking the sandbox for its namespaces");
  char line[64];
  struct iovec iov = {.iov_base = line, .iov_len = sizeof line - 1};
  union {
    char buf[CMSG_SPACE(sizeof(int) * CUB_NS_COUNT)];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) die_sys("recvmsg", n < 0 ? errno : ECONNRESET, "the sandbox gave no namespaces (it is not this user's, or it is ending)");
  close(s);
  line[n] = '\0';
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  int version = 0, init = 0;
  if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int) * CUB_NS_COUNT) || (msg.msg_flags & MSG_CTRUNC) ||
      sscanf(line, "cubicle-join %d %d", &version, &init) != 2)
    die_msg("the sandbox's join socket sent a malformed reply");
  memcpy(ns_fds, CMSG_DATA(c), sizeof(int) * CUB_NS_COUNT);
  if (version != CUB_PROTOCOL_VERSION) die_msg("the sandbox runs protocol %d, this helper %d; join it with the same cubicle", version, CUB_PROTOCOL_VERSION);
  return (pid_t)init;
}

/* The user namespace first: its owner gets the capabilities that entering the others needs. */
static void enter_namespaces(int ns_fds[CUB_NS_COUNT], struct cub_ev_ready *ready) {
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < CUB_NS_COUNT; i++) {
      int is_user = strcmp(CUB_NS_NAMES[i], "user") == 0;
      if (is_user != (pass == 0)) continue;
      struct stat st;
      if (fstat(ns_fds[i], &st) == 0) {
#define SET_NS(name) \
  if (strcmp(CUB_NS_NAMES[i], #name) == 0) ready->ns.name = (long long)st.st_ino;
        CUB_EV_READY_NS_FIELDS(SET_NS)
#undef SET_NS
      }
      if (setns(ns_fds[i], ns_flag(CUB_NS_NAMES[i])) < 0)
        die_sys("setns", errno, "entering the sandbox's %s namespace", CUB_NS_NAMES[i]);
      close(ns_fds[i]);
    }
}

/* The child: the payload's ids, then the payload's own last stage. */
static __attribute__((noreturn)) void join_child(const struct plan *p, int report_fd) {
  report_set_failure_fd(report_fd);
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_KEEPCAPS");
  if (p->newgidmap && setgroups(0, NULL) < 0) die_sys("setgroups", errno, "dropping the caller's supplementary groups");
  if (setresgid(p->inner_gid, p->inner_gid, p->inner_gid) < 0) die_sys("setresgid", errno, "gid %u", p->inner_gid);
  if (setresuid(p->inner_uid, p->inner_uid, p->inner_uid) < 0) die_sys("setresuid", errno, "uid %u", p->inner_uid);
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_DUMPABLE");
  stage_exec_main(p, report_fd);
}

/* The command's pid as the sandbox sees it (the last NSpid column), or 0. */
static int inner_pid(pid_t pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *line = strstr(buf, "\nNSpid:");
  if (!line) return 0;
  char *end = strchr(line + 1, '\n');
  if (end) *end = '\0';
  char *last = strrchr(line, '\t');
  return last ? atoi(last + 1) : 0;
}

struct joined {
  pid_t child;
  long long fork_us;
  int stopped;
  struct cub_ev_exit ev;
};

static void stop_child(struct joined *j, int sig) {
  kill(-j->child, sig); /* its session's group (stage_exec made it a session leader) */
  kill(j->child, sig);
}

/* A seccomp notification from the command (or what it started): as init does for the payload, in kill mode the
 * command is killed (here: its process group) and the call is reported; in log mode it is reported and goes on. */
static int notified(const struct plan *p, struct joined *j, int listener) {
  struct seccomp_notif_sizes sizes;
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0) sizes.seccomp_notif = sizeof(struct seccomp_notif), sizes.seccomp_notif_resp = sizeof(struct seccomp_notif_resp);
  char req_buf[512] __attribute__((aligned(8))), resp_buf[512] __attribute__((aligned(8)));
  if (sizes.seccomp_notif > sizeof req_buf || sizes.seccomp_notif_resp > sizeof resp_buf) return 0;
  memset(req_buf, 0, sizeof req_buf);
  struct seccomp_notif *req = (struct seccomp_notif *)req_buf;
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0) return errno == EINTR || errno == ENOENT;
  int known = 0;
  for (unsigned i = 0; i < j->ev.n_violations; i++)
    if (j->ev.violations[i].nr == req->data.nr && (unsigned)j->ev.violations[i].arch == req->data.arch) known = 1;
  if (!known && j->ev.n_violations < CUB_MAX_VIOLATIONS)
    j->ev.violations[j->ev.n_violations++] = (struct cub_ev_exit_violations_item){.nr = req->data.nr, .arch = req->data.arch};
  if (p->notify_mode == CUB_NOTIFY_KILL) {
    stop_child(j, SIGKILL);
    if (!j->stopped && j->ev.n_stops < CUB_MAX_STOPS) {
      j->stopped = 1;
      j->ev.stops[j->ev.n_stops++] =
          (struct cub_ev_exit_stops_item){.kind = CUB_STOP_SECCOMP, .at_us = monotonic_us() - j->fork_us, .observed = req->data.nr};
    }
    return 1;
  }
  memset(resp_buf, 0, sizeof resp_buf);
  struct seccomp_notif_resp *resp = (struct seccomp_notif_resp *)resp_buf;
  resp->id = req->id;
  resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  (void)ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
  return 1;
}

static long long tv_us(struct timeval tv) { return (long long)tv.tv_sec * 1000000LL + tv.tv_usec; }

/* Until the command ends: control bytes (terminate, kill; EOF kills), seccomp notifications, SIGCHLD. */
static void supervise_child(const struct plan *p, struct joined *j, int sfd, int listener) {
  struct pollfd pfd[3] = {{.fd = CUB_FD_CONTROL, .events = POLLIN}, {.fd = sfd, .events = POLLIN}, {.fd = listener, .events = POLLIN}};
  for (;;) {
    if (poll(pfd, 3, -1) < 0) {
      if (errno == EINTR) continue;
      stop_child(j, SIGKILL);
      die_sys("poll", errno, "supervising the command");
    }
    if (pfd[0].revents) {
      char cmd[64];
      ssize_t n = read(CUB_FD_CONTROL, cmd, sizeof cmd);
      if (n == 0 || (n < 0 && errno != EINTR)) {
        stop_child(j, SIGKILL); /* the caller is gone: the command goes with it */
        pfd[0].fd = -1;
      }
      for (ssize_t i = 0; i < n; i++) stop_child(j, cmd[i] == CUB_CTL_TERMINATE ? SIGTERM : SIGKILL);
    }
    if (pfd[2].revents && !notified(p, j, listener)) pfd[2].fd = -1;
    if (pfd[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si)
        if (si.ssi_signo != SIGCHLD) stop_child(j, SIGKILL);
      int st;
      struct rusage ru;
      if (wait4(j->child, &st, WNOHANG, &ru) == j->child) {
        if (WIFEXITED(st)) j->ev.has_code = 1, j->ev.code = WEXITSTATUS(st);
        else j->ev.has_signal = 1, j->ev.signal = WTERMSIG(st);
        j->ev.has_wall_us = 1, j->ev.wall_us = monotonic_us() - j->fork_us;
        j->ev.rusage = (struct cub_ev_exit_rusage){.utime_us = tv_us(ru.ru_utime), .stime_us = tv_us(ru.ru_stime), .max_rss_kb = ru.ru_maxrss,
                                                   .minflt = ru.ru_minflt, .majflt = ru.ru_majflt, .nvcsw = ru.ru_nvcsw, .nivcsw = ru.ru_nivcsw};
        return;
      }
    }
  }
}

void join_main(const struct plan *p) {
  report_set_stage(CUB_STAGE_JOIN);
  long long t0 = monotonic_us();
  prctl(PR_SET_NAME, "cubicle-join", 0, 0, 0);
  if (geteuid() == 0 && setgroups(0, NULL) < 0) die_sys("setgroups", errno, "dropping supplementary groups");
  cgroup_join_from_parent(p); /* as root: the command counts in the sandbox's cgroups */
  int ns_fds[CUB_NS_COUNT];
  static struct joined j;
  struct cub_ev_ready ready;
  memset(&ready, 0, sizeof ready);
  ready.init_pid = receive_ns(p->join, ns_fds);
  open_stdio_pipes_to_sandbox(p);
  enter_namespaces(ns_fds, &ready);
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_DUMPABLE");

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) die_sys("sigprocmask", errno, "blocking SIGCHLD");
  int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die_sys("signalfd", errno, "SIGCHLD fd");
  int report[2];
  if (pipe2(report, O_CLOEXEC) < 0) die_sys("pipe2", errno, "exec report pipe");
  j.fork_us = monotonic_us();
  /* As init starts the payload: CLONE_VFORK resumes us once it has exec'd or died; CLONE_FILES brings its seccomp
   * listener into our fd table. After setns(pid), the child is inside the sandbox's pid namespace. */
  j.child = (pid_t)syscall(SYS_clone, CLONE_VFORK | CLONE_FILES | SIGCHLD, NULL, NULL, NULL, NULL);
  if (j.child < 0) die_sys("clone", errno, "starting the command inside the sandbox");
  if (j.child == 0) join_child(p, report[1]);
  close(report[1]);
  int listener;
  if (read_exec_reports(report[0], &listener)) {
    waitpid(j.child, NULL, 0);
    _exit(CUB_EXIT_SETUP_FAILED); /* the child wrote the error event */
  }
  ready.payload_pid = inner_pid(j.child);
  ready.setup_us = j.fork_us - t0;
  cub_emit_ready(&ready);
  /* This process holds nothing of the command's stdio (EOF reaches the caller when the command's side closes),
   * and keeps no privilege in the sandbox: the command's ids, no capabilities. */
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  for (int fd = 0; fd < 3; fd++)
    if (null >= 0) dup3(null, fd, 0);
  if (null > 2) close(null);
  if (setresgid(p->inner_gid, p->inner_gid, p->inner_gid) < 0 || setresuid(p->inner_uid, p->inner_uid, p->inner_uid) < 0) {
    stop_child(&j, SIGKILL);
    die_sys("setresuid", errno, "taking the sandbox's ids in the join process");
  }
  caps_clear_sets();
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  supervise_child(p, &j, sfd, listener);
  cub_emit_exit(&j.ev);
  _exit(CUB_EXIT_OK);
}
