/* Init, inside the new network namespace: brings loopback up (without a network it is the only interface). With a
 * private network, stage 0 joins the network's holder before the clone and makes the sandbox's veth pair after it,
 * and init addresses eth0. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "helper.h"

void net_loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) die_sys("socket", errno, "creating a socket to bring loopback up");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die_sys("ioctl", errno, "SIOCGIFFLAGS on lo");
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die_sys("ioctl", errno, "SIOCSIFFLAGS on lo");
  close(s);
}

/* Receives one answer byte and, with a join, the holder's two namespace fds. Returns the byte. */
static char holder_answer(int conn, int fds[2]) {
  char byte = 0;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } ctl;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  ssize_t n;
  do n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) die_sys("recvmsg", errno, "reading the network holder's answer (it did not answer within 5 s)");
  if (n == 0) die_msg("the network's holder closed the connection without answering; `cubicle network ls` shows whether it is up");
  fds[0] = fds[1] = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(2 * sizeof(int)))
      memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
  return byte;
}

int net_join_holder_from_parent(const struct plan *p) {
  int conn = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (conn < 0) die_sys("socket", errno, "a socket to the network's holder");
  struct timeval tv = {.tv_sec = 5};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, p->net_socket, sizeof sa.sun_path - 1);
  if (connect(conn, (struct sockaddr *)&sa, sizeof sa) < 0)
    die_sys("connect", errno, "reaching the network's holder at %s: it is gone (cubicle network rm NAME, then create it again)", p->net_socket);
  struct ucred peer;
  socklen_t len = sizeof peer;
  if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0) die_sys("getsockopt", errno, "SO_PEERCRED of the network's holder");
  if (peer.pid != p->net_holder_pid)
    die_msg("the network's holder is pid %d, not %d as its record said: the network was removed and created again "
            "meanwhile; run again",
            (int)peer.pid, (int)p->net_holder_pid);
  char req = CUB_HOLDER_JOIN;
  if (write(conn, &req, 1) != 1) die_sys("write", errno, "asking the network's holder to join");
  int fds[2];
  char answer = holder_answer(conn, fds);
  if (answer != CUB_HOLDER_OK || fds[0] < 0 || fds[1] < 0)
    die_msg("the network's holder refused the sandbox: the network is being removed");
  /* Both joins need a single-threaded caller (the kernel refuses a user namespace to a threaded one). Joining the
   * holder's user namespace gives stage 0 every capability in it, and none outside; its network namespace is where
   * the bridge is. The sandbox's own namespaces, cloned next, are then children of the holder's. */
  if (setns(fds[0], CLONE_NEWUSER) < 0) die_sys("setns", errno, "joining the network holder's user namespace");
  if (setns(fds[1], CLONE_NEWNET) < 0) die_sys("setns", errno, "joining the network holder's network namespace");
  close(fds[0]);
  close(fds[1]);
  /* A caller's supplementary groups must not follow the sandbox; where the holder's map allows setgroups, drop
   * them here (a rootless owner without subordinate ids has setgroups denied and keeps them, as without a network). */
  if (setgroups(0, NULL) < 0 && errno != EPERM) die_sys("setgroups", errno, "dropping supplementary groups in the holder's namespace");
  return conn;
}

void net_attach_from_parent(const struct plan *p, pid_t init) {
  if (!p->net_socket) return;
  char host_end[IFNAMSIZ];
  snprintf(host_end, sizeof host_end, "cv%x", (unsigned)getpid());
  int nl = nl_open();
  nl_veth_create(nl, host_end, "eth0", init);
  nl_set_master(nl, host_end, "br0");
  close(nl);
  net_iface_up(host_end);
}

void net_configure_from_init(const struct plan *p) {
  if (!p->net_socket) return;
  net_iface_address("eth0", p->net_address, p->net_prefix);
  net_iface_up("eth0");
  /* ICMP echo sockets (ping without privilege) for the payload's gid, in this network namespace only */
  char range[48];
  snprintf(range, sizeof range, "%u %u\n", (unsigned)getgid(), (unsigned)getgid());
  int fd = open("/proc/sys/net/ipv4/ping_group_range", O_WRONLY | O_CLOEXEC);
  if (fd < 0) die_sys("open", errno, "/proc/sys/net/ipv4/ping_group_range");
  if (write_all(fd, range, strlen(range)) < 0) die_sys("write", errno, "/proc/sys/net/ipv4/ping_group_range");
  close(fd);
}
