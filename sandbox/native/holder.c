/* Holder mode: a network's long-lived holder. The helper clones a child into a new user and network namespace
 * (the kernel requires a single-threaded caller for the user namespace), writes the child's id maps from outside,
 * and the child builds the bridge, listens on the network's socket and answers joins with its namespaces' fds;
 * once the child is up, the helper reports its pid and exits, leaving the child to its own session. The child
 * exits when the network is removed and its last member connection has closed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

#define HOLDER_MAX_MEMBERS 1024

/* What the holder keeps while it serves. */
struct holder {
  int listen_fd;
  int ns_fds[2]; /* its user and network namespaces, handed to each member */
  int removed;
  const char *path; /* its socket, and the inode bound there: once the path is gone or another file, the network is */
  ino_t ino;
  struct pollfd pfd[1 + HOLDER_MAX_MEMBERS]; /* [0]: the listening socket; then one per member */
  nfds_t n;
};

static void answer(int conn, char byte, const int *fds) {
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } ctl;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fds) {
    memset(&ctl, 0, sizeof ctl);
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof ctl.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(2 * sizeof(int));
    memcpy(CMSG_DATA(c), fds, 2 * sizeof(int));
  }
  while (sendmsg(conn, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

/* One new connection: only the holder's owner (the same uid, as this namespace sees it) is served. */
static void serve_connection(struct holder *h) {
  int conn = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) return;
  struct ucred cred;
  socklen_t len = sizeof cred;
  struct timeval tv = {.tv_sec = 1};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char req = 0;
  if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != geteuid() || read(conn, &req, 1) != 1) {
    answer(conn, CUB_HOLDER_NO, NULL);
    close(conn);
    return;
  }
  if (req == CUB_HOLDER_JOIN && !h->removed && h->n < 1 + HOLDER_MAX_MEMBERS) {
    answer(conn, CUB_HOLDER_OK, h->ns_fds);
    h->pfd[h->n++] = (struct pollfd){.fd = conn, .events = POLLIN};
    return;
  }
  if (req == CUB_HOLDER_REMOVE) h->removed = 1;
  answer(conn, req == CUB_HOLDER_REMOVE || req == CUB_HOLDER_PING ? CUB_HOLDER_OK : CUB_HOLDER_NO, NULL);
  close(conn);
}

/* A network whose socket path is gone (its directory removed without `rm`: a create that died before writing the
 * record, a cleaned runtime directory) is removed too: nothing can reach the holder any more. */
static void check_socket_path(struct holder *h) {
  struct stat st;
  if (stat(h->path, &st) < 0 || st.st_ino != h->ino) h->removed = 1;
}

/* Serves until the network is removed and no member is left. */
static __attribute__((noreturn)) void serve(struct holder *h) {
  h->pfd[0] = (struct pollfd){.fd = h->listen_fd, .events = POLLIN};
  h->n = 1;
  for (;;) {
    check_socket_path(h);
    if (h->removed && h->n == 1) _exit(0);
    if (poll(h->pfd, h->n, 5000) < 0) {
      if (errno == EINTR) continue;
      _exit(1);
    }
    for (nfds_t i = h->n; i-- > 1;) {
      if (!h->pfd[i].revents) continue;
      char junk[16];
      if (read(h->pfd[i].fd, junk, sizeof junk) > 0) continue; /* a member says nothing; it only stays connected */
      close(h->pfd[i].fd);
      h->pfd[i] = h->pfd[--h->n];
    }
    if (h->pfd[0].revents & POLLIN) serve_connection(h);
  }
}

static int open_ns(const char *name) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/ns/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die_sys("open", errno, "%s", path);
  return fd;
}

static int listen_on(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die_sys("socket", errno, "the holder's socket");
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  mode_t old = umask(077); /* the socket is its owner's alone */
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  umask(old);
  if (rc < 0) die_sys("bind", errno, "binding the holder's socket %s", path);
  if (listen(fd, 64) < 0) die_sys("listen", errno, "%s", path);
  return fd;
}

/* The child, in its new namespaces once the maps are written: bridge, socket, then serve. */
static __attribute__((noreturn)) void holder_child(const struct plan *p, int go_fd, int ready_fd) {
  char go;
  if (read(go_fd, &go, 1) != 1 || go != CUB_INIT_CMD_GO) _exit(CUB_EXIT_SETUP_FAILED); /* the parent reported why */
  close(go_fd);
  prctl(PR_SET_NAME, "cubicle-holder", 0, 0, 0);
  if (setsid() < 0) die_sys("setsid", errno, "a session of its own");
  if (chdir("/") < 0) die_sys("chdir", errno, "/");
  struct holder h = {.removed = 0};
  net_loopback_up();
  int nl = nl_open();
  nl_bridge_create(nl, "br0");
  close(nl);
  net_iface_up("br0");
  h.ns_fds[0] = open_ns("user");
  h.ns_fds[1] = open_ns("net");
  h.listen_fd = listen_on(p->holder_socket);
  struct stat st;
  if (stat(p->holder_socket, &st) < 0) die_sys("stat", errno, "%s", p->holder_socket);
  h.path = p->holder_socket;
  h.ino = st.st_ino;
  /* From here it only answers on its socket: no capability is needed (members get their capabilities in its
   * namespaces as the user namespace's owner, never from it), so none is kept, nor any way back to one. */
  caps_drop_all();
  /* Nobody, not even a process of the same uid, may ptrace it or open its /proc files (members get its namespaces
   * through the socket, from the owner's own directory). */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die_sys("prctl", errno, "PR_SET_DUMPABLE");
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  /* Nothing of the caller's stays open: stdio, the status and control fds. */
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0)
    for (int fd = 0; fd < 3; fd++) dup2(null, fd);
  if (null > 2) close(null);
  close(CUB_FD_CONTROL);
  char ok = CUB_HOLDER_OK;
  if (write(ready_fd, &ok, 1) != 1) _exit(CUB_EXIT_SETUP_FAILED);
  close(ready_fd);
  close(CUB_FD_STATUS);
  report_set_failure_fd(-1);
  serve(&h);
}

void holder_main(const struct plan *p) {
  report_set_stage(CUB_STAGE_HOLDER);
  int go[2], ready[2];
  if (pipe2(go, O_CLOEXEC) < 0 || pipe2(ready, O_CLOEXEC) < 0) die_sys("pipe2", errno, "the holder's pipes");
  /* The new user namespace needs a single-threaded caller: this helper is one. */
  pid_t child = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD, NULL, NULL, NULL, NULL);
  if (child < 0) die_sys("clone", errno, "creating the holder's user and network namespaces");
  if (child == 0) {
    close(go[1]);
    close(ready[0]);
    holder_child(p, go[0], ready[1]);
  }
  close(go[0]);
  close(ready[1]);
  userns_write_holder_maps_from_parent(p, child);
  char g = CUB_INIT_CMD_GO;
  if (write_all(go[1], &g, 1) < 0) die_sys("write", errno, "releasing the holder");
  char ok = 0;
  ssize_t n;
  do n = read(ready[0], &ok, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1 || ok != CUB_HOLDER_OK) {
    int st = 0;
    waitpid(child, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == CUB_EXIT_SETUP_FAILED) _exit(CUB_EXIT_SETUP_FAILED); /* it reported why */
    die_msg("the holder ended before it was up (%s %d)", WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
  }
  struct cub_ev_holder ev = {.pid = child};
  cub_emit_holder(&ev);
  _exit(CUB_EXIT_OK);
}
