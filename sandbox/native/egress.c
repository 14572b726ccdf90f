/* Stage 0, host side: egress for a sandbox. After the id maps are written and before init is released, stage 0
 * starts a user-mode network stack (slirp4netns) attached to the sandbox's user and network namespaces, waits until
 * its interface inside has a default route, then loads the allowlist (an nftables ruleset) into the sandbox's
 * network namespace. Only then is init released, so the payload never runs without the link or the rules.
 *
 * The watchdog that starts the stack is forked early, before stage 0 joins a private network's holder, and waits
 * there for init's pid: the stack must live in the host's network namespace (a published port is a socket on the
 * host's loopback), and once stage 0 is inside the holder's user namespace it can never return to the host's.
 *
 * Lifetime: the stack runs under a small watchdog process that holds the read end of a pipe whose write end only
 * stage 0 holds. When stage 0 ends, however it ends (SIGKILL included), the pipe reports EOF and the watchdog
 * SIGKILLs the stack (and removes its API socket): a parent-death signal alone is not enough, since the stack
 * changes its credentials (it joins the sandbox's user namespace), which clears it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

#define STACK_ERR_MAX 1024

static pid_t watchdog = -1;  /* the stack's parent */
static int watchdog_pipe = -1; /* stage 0's end: closing it stops the stack */
static int stack_err_fd = -1;  /* what the stack (or the watchdog) wrote, until the link is up */
static char api_dir[64], api_path[96]; /* the stack's API socket, in a directory of stage 0's own */

static void remove_api_socket(void) {
  if (!api_dir[0]) return;
  unlink(api_path);
  rmdir(api_dir);
}

static void close_from(int lowest) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)lowest, ~0U, 0) == 0) return;
#endif
  for (int fd = lowest; fd < 4096; fd++) close(fd);
}

/* Stdio on /dev/null; every other fd closed but a and b (both above 2). */
static void keep_only(int a, int b) {
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    for (int i = 0; i < 3; i++)
      if (null != i) dup2(null, i);
    if (null > 2) close(null);
  }
  int lo = a < b ? a : b, hi = a < b ? b : a;
  for (int fd = 3; fd < lo; fd++) close(fd);
  for (int fd = lo + 1; fd < hi; fd++) close(fd);
  close_from(hi + 1);
}

/* In a child: default signal state, stdio from the given fds (-1: /dev/null), nothing else open. */
static void child_stdio(int in, int out, int err) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  int null = open("/dev/null", O_RDWR);
  int want[3] = {in, out, err};
  /* move each source above 2 first, so a dup2 never overwrites a source still needed */
  for (int i = 0; i < 3; i++) want[i] = fcntl(want[i] >= 0 ? want[i] : null, F_DUPFD, 10);
  for (int i = 0; i < 3; i++) dup2(want[i], i);
  close_from(3);
}

/* Reads what a failed child wrote (up to STACK_ERR_MAX bytes), as one line. */
static void read_err(int fd, char *buf, size_t size) {
  size_t n = 0;
  fcntl(fd, F_SETFL, O_NONBLOCK);
  for (;;) {
    ssize_t r = read(fd, buf + n, size - 1 - n);
    if (r <= 0) break;
    n += (size_t)r;
    if (n >= size - 1) break;
  }
  buf[n] = 0;
  /* one line; a stack's complaints that it has no syslog to write to are noise here */
  size_t out = 0;
  for (char *line = buf, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = 0;
    if (strncmp(line, "Failed to send ", 15) == 0 || !*line) continue;
    if (out) buf[out++] = ' ';
    size_t len = strlen(line);
    memmove(buf + out, line, len);
    out += len;
  }
  buf[out] = 0;
  for (size_t i = 0; i < out; i++)
    if (buf[i] == '\t') buf[i] = ' ';
}

/* `arg` with {init} and {api} replaced. */
static const char *expand(const char *arg, const char *pid, const char *api);

/* The watchdog: reads init's pid from stage 0's pipe (EOF first: the sandbox never started), starts the stack, then
 * waits for that pipe to close (or the stack to end), and kills it. */
static __attribute__((noreturn)) void watchdog_main(const struct plan *p, int from_parent, int report_w) {
  prctl(PR_SET_NAME, "cubicle-netwatch", 0, 0, 0);
  keep_only(from_parent, report_w); /* forked early: none of stage 0's fds (the caller's stdio, status, control) */
  pid_t init = 0;
  ssize_t got;
  while ((got = read(from_parent, &init, sizeof init)) < 0 && errno == EINTR) {}
  if (got != (ssize_t)sizeof init || init <= 0) {
    remove_api_socket();
    _exit(0);
  }
  char pid[16];
  snprintf(pid, sizeof pid, "%d", (int)init);
  size_t n = 0;
  while (p->stack_args[n]) n++;
  const char **argv = calloc(n + 3, sizeof *argv);
  if (!argv) _exit(126);
  size_t k = 0;
  argv[k++] = p->stack_program;
  /* started by root (a root caller's default ids): slirp4netns drops every capability but CAP_NET_BIND_SERVICE and
   * keeps only /etc and /run of the host's files once its link is made (a rootless stack has none to drop) */
  if (geteuid() == 0) argv[k++] = "--enable-sandbox";
  for (size_t i = 0; i < n; i++) argv[k++] = expand(p->stack_args[i], pid, api_path);
  int err[2];
  if (pipe2(err, O_CLOEXEC) < 0) _exit(126);
  pid_t stack = fork();
  if (stack < 0) _exit(126);
  if (stack == 0) {
    child_stdio(-1, -1, err[1]);
    execv(argv[0], (char *const *)argv);
    dprintf(2, "cannot run %s: %s", argv[0], strerror(errno));
    _exit(127);
  }
  close(err[1]);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  /* The stack's log is drained for as long as it runs (a full pipe would block it); its tail says why it ended. */
  char tail[STACK_ERR_MAX];
  size_t have = 0;
  struct pollfd pfd[2] = {{.fd = from_parent, .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
  for (;;) {
    int st;
    if (waitpid(stack, &st, WNOHANG) == stack) {
      ssize_t r;
      while (have < sizeof tail && (r = read(err[0], tail + have, sizeof tail - have)) > 0) have += (size_t)r;
      if (have) write_all(report_w, tail, have);
      _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    /* wake up every 100 ms to notice the stack's own end; EOF (or anything) on the pipe from stage 0 means stop */
    if (poll(pfd, 2, 100) <= 0) continue;
    if (pfd[0].revents) break;
    if (pfd[1].revents) {
      char buf[4096];
      ssize_t r = read(err[0], buf, sizeof buf);
      if (r <= 0) {
        pfd[1].fd = -1;
        continue;
      }
      if ((size_t)r >= sizeof tail) memcpy(tail, buf + r - sizeof tail, have = sizeof tail);
      else {
        if (have + (size_t)r > sizeof tail) {
          size_t drop = have + (size_t)r - sizeof tail;
          memmove(tail, tail + drop, have - drop);
          have -= drop;
        }
        memcpy(tail + have, buf, (size_t)r);
        have += (size_t)r;
      }
    }
  }
  kill(stack, SIGKILL);
  while (waitpid(stack, NULL, 0) < 0 && errno == EINTR) {}
  remove_api_socket();
  _exit(0);
}

/* Init's network namespace has the stack's default route (read through /proc/INIT/net while init is still
 * dumpable, before its release). */
static int has_default_route(pid_t init, const char *ifname) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/net/route", (int)init);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  char line[512], iface[32], dest[16];
  int found = 0;
  while (!found && fgets(line, sizeof line, f))
    if (sscanf(line, "%31s %15s", iface, dest) == 2 && strcmp(iface, ifname) == 0 && strcmp(dest, "00000000") == 0) found = 1;
  fclose(f);
  return found;
}

/* Waits for the stack's link inside; dies (after stopping the stack) when it ends first or takes too long. */
static void wait_for_link(const struct plan *p, pid_t init, int stack_err) {
  long long deadline = monotonic_us() + p->stack_timeout_ms * 1000;
  for (;;) {
    if (has_default_route(init, p->stack_ifname)) return;
    int st;
    int gone = waitpid(watchdog, &st, WNOHANG) == watchdog;
    if (gone || monotonic_us() > deadline) {
      char why[STACK_ERR_MAX];
      read_err(stack_err, why, sizeof why);
      if (gone) watchdog = -1;
      egress_stop_from_parent();
      if (!gone)
        die_msg("egress: the network stack %s did not bring up %s within %lld ms%s%s", p->stack_program, p->stack_ifname,
                p->stack_timeout_ms, *why ? ": " : "", why);
      die_msg("egress: the network stack %s exited (%s %d) before its link came up%s%s", p->stack_program,
              WIFEXITED(st) && WEXITSTATUS(st) < 128 ? "exit" : "signal", WIFEXITED(st) ? (WEXITSTATUS(st) >= 128 ? WEXITSTATUS(st) - 128 : WEXITSTATUS(st)) : WTERMSIG(st),
              *why ? ": " : "", *why ? why : " (no message)");
    }
    usleep(1000);
  }
}

/* The rules child: joins the sandbox's user and network namespaces and becomes nft reading the ruleset on stdin. */
static __attribute__((noreturn)) void rules_main(const struct plan *p, pid_t init, int rules_r, int err_w) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)init);
  int userns = open(path, O_RDONLY | O_CLOEXEC);
  snprintf(path, sizeof path, "/proc/%d/ns/net", (int)init);
  int netns = open(path, O_RDONLY | O_CLOEXEC);
  if (userns < 0 || netns < 0 || setns(userns, CLONE_NEWUSER) < 0 || setns(netns, CLONE_NEWNET) < 0) {
    dprintf(err_w, "joining the sandbox's namespaces: %s", strerror(errno));
    _exit(126);
  }
  /* Capabilities in the sandbox's user namespace do not survive execve for a uid that is not root there (and
   * inside only the sandbox's own ids are mapped): become the sandbox's ids, keeping CAP_NET_ADMIN as ambient. */
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2] = {{0}};
  unsigned bit = CAP_TO_MASK(CAP_NET_ADMIN);
  d[CAP_TO_INDEX(CAP_NET_ADMIN)].effective = d[CAP_TO_INDEX(CAP_NET_ADMIN)].permitted = bit;
  d[CAP_TO_INDEX(CAP_NET_ADMIN)].inheritable = bit;
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 || setresgid(p->inner_gid, p->inner_gid, p->inner_gid) < 0 ||
      setresuid(p->inner_uid, p->inner_uid, p->inner_uid) < 0 || syscall(SYS_capset, &h, d) < 0 ||
      prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0) < 0) {
    dprintf(err_w, "keeping CAP_NET_ADMIN for nft: %s", strerror(errno));
    _exit(126);
  }
  child_stdio(rules_r, -1, err_w);
  const char *argv[] = {p->nft, "-f", "/dev/stdin", NULL};
  execv(p->nft, (char *const *)argv);
  dprintf(2, "cannot run %s: %s", p->nft, strerror(errno));
  _exit(127);
}

static const char *expand(const char *arg, const char *pid, const char *api) {
  if (!strchr(arg, '{')) return arg;
  size_t cap = strlen(arg) + 1;
  for (const char *q = arg; (q = strchr(q, '{')); q++) cap += strlen(pid) + strlen(api);
  char *out = malloc(cap), *o = out;
  if (!out) die_sys("malloc", ENOMEM, "network stack arguments");
  for (const char *q = arg; *q;) {
    if (strncmp(q, "{init}", 6) == 0) o = stpcpy(o, pid), q += 6;
    else if (strncmp(q, "{api}", 5) == 0) o = stpcpy(o, api), q += 5;
    else *o++ = *q++;
  }
  *o = 0;
  return out;
}

/* One request to the stack's API socket; dies unless the reply says "return". */
static void api_request(const struct plan *p, const char *request) {
  long long deadline = monotonic_us() + p->stack_timeout_ms * 1000;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", api_path);
  int s;
  for (;;) {
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die_sys("socket", errno, "the network stack's API socket");
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) break;
    int err = errno;
    close(s);
    if ((err != ENOENT && err != ECONNREFUSED) || monotonic_us() > deadline) {
      egress_stop_from_parent();
      die_sys("connect", err, "the network stack's API socket %s", api_path);
    }
    usleep(1000);
  }
  char reply[1024];
  size_t got = 0;
  if (write_all(s, request, strlen(request)) < 0) got = 0;
  shutdown(s, SHUT_WR);
  for (;;) {
    ssize_t r = read(s, reply + got, sizeof reply - 1 - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
    if (got >= sizeof reply - 1) break;
  }
  close(s);
  reply[got] = 0;
  if (!strstr(reply, "\"return\"")) {
    egress_stop_from_parent();
    die_msg("egress: the network stack refused %s: %s", request, got ? reply : "(no reply)");
  }
}

/* Forks the watchdog (which starts the stack once it has init's pid), from the host's namespaces. */
void egress_prepare_from_parent(const struct plan *p) {
  if (!p->stack_program || watchdog > 0) return;
  report_set_stage(CUB_STAGE_PARENT);
  int wants_api = 0;
  for (size_t i = 0; p->stack_args[i]; i++) wants_api |= strstr(p->stack_args[i], "{api}") != NULL;
  if (wants_api || p->stack_api[0]) {
    snprintf(api_dir, sizeof api_dir, "/tmp/cubicle-net-XXXXXX");
    if (!mkdtemp(api_dir)) die_sys("mkdtemp", errno, "a directory for the network stack's API socket in /tmp");
    snprintf(api_path, sizeof api_path, "%s/api", api_dir);
  }
  int life[2], err[2];
  if (pipe2(life, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) die_sys("pipe2", errno, "pipes for the network stack");
  watchdog = fork();
  if (watchdog < 0) die_sys("fork", errno, "starting the network stack");
  if (watchdog == 0) {
    close(life[1]);
    close(err[0]);
    watchdog_main(p, life[0], err[1]);
  }
  close(life[0]);
  close(err[1]);
  watchdog_pipe = life[1];
  stack_err_fd = err[0];
}

void egress_start_from_parent(const struct plan *p, pid_t init) {
  if (!p->stack_program) return;
  egress_prepare_from_parent(p);
  report_set_stage(CUB_STAGE_PARENT);
  int rules_in[2], rules_err[2];
  if (pipe2(rules_in, O_CLOEXEC) < 0 || pipe2(rules_err, O_CLOEXEC) < 0) die_sys("pipe2", errno, "pipes for the allowlist");
  /* a watchdog that is gone already (EPIPE) shows up in wait_for_link as a stack that exited */
  if (write_all(watchdog_pipe, &init, sizeof init) < 0 && errno != EPIPE) die_sys("write", errno, "starting the network stack");
  wait_for_link(p, init, stack_err_fd);
  close(stack_err_fd);
  stack_err_fd = -1;
  for (size_t i = 0; p->stack_api[i]; i++) api_request(p, p->stack_api[i]);

  pid_t rules = fork();
  if (rules < 0) die_sys("fork", errno, "loading the egress allowlist");
  if (rules == 0) {
    close(rules_in[1]);
    close(rules_err[0]);
    rules_main(p, init, rules_in[0], rules_err[1]);
  }
  close(rules_in[0]);
  close(rules_err[1]);
  /* the ruleset is small (the supervisor bounds it); a child that exits early makes this EPIPE, not a signal */
  ssize_t w = write_all(rules_in[1], p->net_rules, strlen(p->net_rules));
  int werr = errno;
  close(rules_in[1]);
  int st;
  while (waitpid(rules, &st, 0) < 0)
    if (errno != EINTR) die_sys("waitpid", errno, "waiting for nft");
  char why[STACK_ERR_MAX];
  read_err(rules_err[0], why, sizeof why);
  close(rules_err[0]);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    egress_stop_from_parent();
    die_msg("egress: %s could not load the allowlist into the sandbox's network namespace (%s %d)%s%s", p->nft,
            WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), *why ? ": " : "", why);
  }
  if (w < 0) {
    egress_stop_from_parent();
    die_sys("write", werr, "feeding the allowlist to nft");
  }
}

void egress_close_in_child(void) {
  if (watchdog_pipe >= 0) close(watchdog_pipe);
  if (stack_err_fd >= 0) close(stack_err_fd);
}

void egress_stop_from_parent(void) {
  if (stack_err_fd >= 0) close(stack_err_fd);
  stack_err_fd = -1;
  if (watchdog_pipe >= 0) close(watchdog_pipe);
  watchdog_pipe = -1;
  if (watchdog > 0)
    while (waitpid(watchdog, NULL, 0) < 0 && errno == EINTR) {}
  watchdog = -1;
  remove_api_socket();
}
