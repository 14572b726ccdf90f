/* rtnetlink, just enough for a network: a bridge, a veth pair with one end created in another network namespace, a
 * link's master; and the ioctls that give an interface its address and bring it up. Each request is acked; a
 * kernel refusal dies with the errno it carried. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helper.h"

struct nl_req {
  struct nlmsghdr h;
  struct ifinfomsg ifi;
  char attrs[512];
};

int nl_open(void) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) die_sys("socket", errno, "opening an rtnetlink socket");
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die_sys("bind", errno, "binding the rtnetlink socket");
  return fd;
}

static struct rtattr *attr_put(struct nlmsghdr *h, size_t cap, unsigned short type, const void *data, size_t len) {
  size_t at = NLMSG_ALIGN(h->nlmsg_len);
  if (at + RTA_SPACE(len) > cap) die_msg("internal: rtnetlink request too large");
  struct rtattr *a = (struct rtattr *)((char *)h + at); /* h heads the whole request buffer */
  a->rta_type = type;
  a->rta_len = (unsigned short)RTA_LENGTH(len);
  if (len) memcpy(RTA_DATA(a), data, len);
  h->nlmsg_len = (unsigned)(at + RTA_SPACE(len));
  return a;
}

static struct rtattr *nest_begin(struct nlmsghdr *h, size_t cap, unsigned short type) { return attr_put(h, cap, type, NULL, 0); }

static void nest_end(struct nlmsghdr *h, struct rtattr *nest) { nest->rta_len = (unsigned short)((char *)h + h->nlmsg_len - (char *)nest); }

static void req_init(struct nl_req *r, unsigned flags) {
  memset(r, 0, sizeof *r);
  r->h.nlmsg_len = NLMSG_LENGTH(sizeof r->ifi);
  r->h.nlmsg_type = RTM_NEWLINK;
  r->h.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
  r->h.nlmsg_seq = 1;
  r->ifi.ifi_family = AF_UNSPEC;
}

/* Sends one request and waits for its ack; returns 0 or the kernel's errno. */
static int nl_talk(int nl, struct nlmsghdr *h) {
  if (send(nl, h, h->nlmsg_len, 0) < 0) return errno;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(nl, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    for (struct nlmsghdr *m = (struct nlmsghdr *)buf; NLMSG_OK(m, (unsigned)n); m = NLMSG_NEXT(m, n))
      if (m->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = NLMSG_DATA(m);
        return -e->error;
      }
  }
}

void nl_bridge_create(int nl, const char *name) {
  struct nl_req r;
  req_init(&r, NLM_F_CREATE | NLM_F_EXCL);
  attr_put(&r.h, sizeof r, IFLA_IFNAME, name, strlen(name) + 1);
  struct rtattr *info = nest_begin(&r.h, sizeof r, IFLA_LINKINFO);
  attr_put(&r.h, sizeof r, IFLA_INFO_KIND, "bridge", 6);
  nest_end(&r.h, info);
  int err = nl_talk(nl, &r.h);
  if (err) die_sys("rtnetlink", err, "creating the bridge %s", name);
}

void nl_veth_create(int nl, const char *name, const char *peer, pid_t peer_netns_pid) {
  struct nl_req r;
  req_init(&r, NLM_F_CREATE | NLM_F_EXCL);
  attr_put(&r.h, sizeof r, IFLA_IFNAME, name, strlen(name) + 1);
  struct rtattr *info = nest_begin(&r.h, sizeof r, IFLA_LINKINFO);
  attr_put(&r.h, sizeof r, IFLA_INFO_KIND, "veth", 4);
  struct rtattr *data = nest_begin(&r.h, sizeof r, IFLA_INFO_DATA);
  struct rtattr *peer_info = nest_begin(&r.h, sizeof r, VETH_INFO_PEER);
  /* the peer's own ifinfomsg, then its attributes */
  struct ifinfomsg pifi = {.ifi_family = AF_UNSPEC};
  size_t at = NLMSG_ALIGN(r.h.nlmsg_len);
  if (at + NLMSG_ALIGN(sizeof pifi) > sizeof r) die_msg("internal: rtnetlink request too large");
  memcpy((char *)&r + at, &pifi, sizeof pifi);
  r.h.nlmsg_len = (unsigned)(at + NLMSG_ALIGN(sizeof pifi));
  attr_put(&r.h, sizeof r, IFLA_IFNAME, peer, strlen(peer) + 1);
  unsigned pid = (unsigned)peer_netns_pid;
  attr_put(&r.h, sizeof r, IFLA_NET_NS_PID, &pid, sizeof pid);
  nest_end(&r.h, peer_info);
  nest_end(&r.h, data);
  nest_end(&r.h, info);
  int err = nl_talk(nl, &r.h);
  if (err) die_sys("rtnetlink", err, "creating the veth pair %s/%s (peer in the netns of pid %d)", name, peer, (int)peer_netns_pid);
}

static unsigned ifindex_of(const char *name) {
  unsigned i = if_nametoindex(name);
  if (!i) die_sys("if_nametoindex", errno, "finding interface %s", name);
  return i;
}

void nl_set_master(int nl, const char *name, const char *master) {
  struct nl_req r;
  req_init(&r, 0);
  r.ifi.ifi_index = (int)ifindex_of(name);
  unsigned m = ifindex_of(master);
  attr_put(&r.h, sizeof r, IFLA_MASTER, &m, sizeof m);
  int err = nl_talk(nl, &r.h);
  if (err) die_sys("rtnetlink", err, "attaching %s to %s", name, master);
}

void net_iface_up(const char *name) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) die_sys("socket", errno, "creating a socket to bring %s up", name);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die_sys("ioctl", errno, "SIOCGIFFLAGS on %s", name);
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die_sys("ioctl", errno, "SIOCSIFFLAGS on %s", name);
  close(s);
}

/* The address and netmask; the kernel adds the subnet's route itself. */
void net_iface_address(const char *name, uint32_t address, unsigned prefix) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) die_sys("socket", errno, "creating a socket to address %s", name);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = address;
  if (ioctl(s, SIOCSIFADDR, &ifr) < 0) die_sys("ioctl", errno, "SIOCSIFADDR on %s", name);
  sin->sin_addr.s_addr = htonl(prefix ? ~0U << (32 - prefix) : 0);
  if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) die_sys("ioctl", errno, "SIOCSIFNETMASK on %s", name);
  close(s);
}
