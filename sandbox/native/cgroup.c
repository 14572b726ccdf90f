/* The sandbox's cgroups, as far as the helper touches them. The supervisor created and configured them;
 * stage 0 (the parent) joins them, opens what init and it will watch, all before the clone; init reads the
 * CPU counter. Each function is named by the side that runs it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "helper.h"

/* The CPU usage file (v1 cpuacct.usage in ns, or v2 cpu.stat), opened by stage 0 before the clone so init,
 * which inherits both this fd and this variable, can read it without any path into the host. */
static int cpu_fd = -1;
/* The same for v2 memory.current: init samples the group's charge (the peak on kernels without memory.peak). */
static int memory_fd = -1;

/* cgroup v1: the memory limit sits on a child of the run's group that holds the payload only (its OOM events are
 * watched). The kernel's OOM killer stays on there: with it off, a kernel allocation the full group could not hold
 * (a SysV message, a pipe buffer) failed with ENOMEM and raised no OOM event, so a payload could fill the group and
 * end ok. Its victim is the group's largest process, and memory no process maps (an unmapped memfd of a payload
 * already being killed) left stage 0 or init the largest when they were in the group: they were killed and the
 * run's usage lost. So stage 0 and init stay in the run's group (init's cgroup namespace is rooted there) and the
 * payload's last stage moves itself into the child through an fd stage 0 opens. Stage 0 opens it with the ids the
 * sandbox runs as on the host (root hands that file to them first): it is dumpable for a while after dropping
 * root, and a file opened as root would let whoever took it from there move any process (v1 checks the opener's
 * credentials); opened as the sandbox's host user it moves only that user's processes. */
static int memory_join_fd = -1;

void cgroup_memory_prepare_from_parent(const struct plan *p) {
  if (!p->oom_watch_dir || !p->has_host_ids || geteuid() != 0) return;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/cgroup.procs", p->oom_watch_dir);
  if (chown(path, p->host_uid, p->host_gid) < 0) die_sys("chown", errno, "%s (to the sandbox's host ids)", path);
}

/* After the id drop, before the clone. */
void cgroup_memory_open_from_parent(const struct plan *p) {
  if (!p->oom_watch_dir) return;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/cgroup.procs", p->oom_watch_dir);
  memory_join_fd = open(path, O_WRONLY | O_CLOEXEC);
  if (memory_join_fd < 0) die_sys("open", errno, "%s (the payload's memory cgroup)", path);
}

/* The payload's last stage, before execve (the fd closes on exec). */
void cgroup_memory_join_from_exec(void) {
  if (memory_join_fd >= 0 && write_all(memory_join_fd, "0\n", 2) < 0)
    die_sys("write", errno, "cgroup.procs (the payload joining its memory cgroup)");
}

void cgroup_memory_close(void) {
  if (memory_join_fd >= 0) close(memory_join_fd);
  memory_join_fd = -1;
}

/* Root only, before clone: every process of the sandbox starts inside these cgroups. */
void cgroup_join_from_parent(const struct plan *p) {
  for (size_t i = 0; i < p->ncgroup_join; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cgroup.procs", p->cgroup_join[i]);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die_sys("open", errno, "%s (joining the sandbox's cgroup)", path);
    if (write_all(fd, "0\n", 2) < 0) die_sys("write", errno, "%s (joining the sandbox's cgroup)", path);
    close(fd);
  }
}

/* Opens the CPU usage file and, with v2, memory.current. */
void cgroup_cpu_open_from_parent(const struct plan *p) {
  if (p->cgroup_cpu_file) {
    cpu_fd = open(p->cgroup_cpu_file, O_RDONLY | O_CLOEXEC);
    if (cpu_fd < 0) die_sys("open", errno, "%s", p->cgroup_cpu_file);
  }
  if (p->cgroup_memory_file) {
    memory_fd = open(p->cgroup_memory_file, O_RDONLY | O_CLOEXEC);
    if (memory_fd < 0) die_sys("open", errno, "%s", p->cgroup_memory_file);
  }
}

/* cgroup v1: an eventfd says when the sandbox's memory cgroup hits its limit (the kernel's OOM killer may already
 * have killed one process); stage 0 then stops the whole sandbox. */
int cgroup_oom_watch_from_parent(const struct plan *p) {
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

int cgroup_oom_fired_from_parent(int oom_fd) {
  uint64_t events;
  return read(oom_fd, &events, sizeof events) == (ssize_t)sizeof events && events > 0;
}

/* cgroup v2: memory.events, polled for POLLPRI; its oom and oom_kill counts say the group hit its limit. */
int cgroup_events_open_from_parent(const struct plan *p) {
  if (!p->cgroup_events) return -1;
  int fd = open(p->cgroup_events, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die_sys("open", errno, "%s", p->cgroup_events);
  return fd;
}

int cgroup_events_oom_from_parent(int events_fd) {
  char ev[512];
  ssize_t n = pread(events_fd, ev, sizeof ev - 1, 0);
  if (n <= 0) return -1;
  ev[n] = '\0';
  const char *o = strstr(ev, "\noom ");
  const char *k = strstr(ev, "\noom_kill ");
  return (o && strtoull(o + 5, NULL, 10) > 0) || (k && strtoull(k + 10, NULL, 10) > 0);
}

/* cgroup v2: the group init is cloned straight into (CLONE_INTO_CGROUP), so stage 0 stays outside it. */
int cgroup_into_fd_from_parent(const struct plan *p) {
  if (!p->cgroup_into) return -1;
  int fd = open(p->cgroup_into, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) die_sys("open", errno, "%s (the run's cgroup)", p->cgroup_into);
  return fd;
}

/* The start of a counter file read again from offset 0 (the kernel renders it anew): 0, or -1 when unreadable. */
static int reread(int fd, char *buf, size_t size) {
  if (fd < 0) return -1;
  ssize_t n = pread(fd, buf, size - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  return 0;
}

long long cgroup_cpu_us_from_init(void) {
  char buf[64];
  if (reread(cpu_fd, buf, sizeof buf) < 0) return -1;
  if (strncmp(buf, "usage_usec ", 11) == 0) return (long long)strtoull(buf + 11, NULL, 10); /* v2 cpu.stat */
  return (long long)(strtoull(buf, NULL, 10) / 1000);                                      /* v1 cpuacct.usage, ns */
}

long long cgroup_memory_from_init(void) {
  char buf[32];
  return reread(memory_fd, buf, sizeof buf) < 0 ? -1 : (long long)strtoull(buf, NULL, 10);
}
