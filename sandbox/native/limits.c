/* Limits: init's sampler (the whole sandbox's CPU, memory and tasks, read from its own /proc), the per-user
 * kernel counters capped in the sandbox's user namespace, and the payload stage's rlimits. */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "helper.h"

static const int RLIMIT_IDS[CUB_RLIMIT_COUNT] = {RLIMIT_CPU,  RLIMIT_FSIZE,   RLIMIT_DATA, RLIMIT_STACK,
                                                 RLIMIT_CORE, RLIMIT_NPROC,   RLIMIT_NOFILE, RLIMIT_MEMLOCK,
                                                 RLIMIT_AS,   RLIMIT_MSGQUEUE, RLIMIT_SIGPENDING};

/* Re-arms the sampler's timer at a new period. */
void limits_watch_pace(int timer, long long us) {
  struct itimerspec it = {.it_interval = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000}};
  it.it_value = it.it_interval;
  if (timerfd_settime(timer, 0, &it, NULL) < 0) { /* keep the old pace */ }
}

/* Reads a small file into buf; returns its length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = '\0';
  return n;
}

void limits_apply_ucounts(const struct plan *p) {
  for (size_t i = 0; i < p->nucounts; i++) {
    char path[96], val[32];
    snprintf(path, sizeof path, "/proc/sys/user/max_%s", p->ucounts[i].name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) continue; /* this kernel has no such counter */
      die_sys("open", errno, "%s (capping a per-user kernel counter)", path);
    }
    int n = snprintf(val, sizeof val, "%llu\n", p->ucounts[i].value);
    if (write_all(fd, val, (size_t)n) < 0) die_sys("write", errno, "%s", path);
    close(fd);
    char back[32];
    if (read_small(path, back, sizeof back) < 0 || strtoull(back, NULL, 10) != p->ucounts[i].value)
      die_sys("read", EINVAL, "%s did not read back as %llu", path, p->ucounts[i].value);
  }
}

void limits_apply_rlimits(const struct plan *p) {
  for (size_t i = 0; i < p->nrlimits; i++) {
    struct rlimit rl = {.rlim_cur = p->rlimits[i].soft == ~0ULL ? RLIM_INFINITY : p->rlimits[i].soft,
                        .rlim_max = p->rlimits[i].hard == ~0ULL ? RLIM_INFINITY : p->rlimits[i].hard};
    if (setrlimit(RLIMIT_IDS[p->rlimits[i].resource], &rl) < 0)
      die_sys("setrlimit", errno, "RLIMIT_%s", CUB_RLIMIT_NAMES[p->rlimits[i].resource]);
    struct rlimit back;
    if (getrlimit(RLIMIT_IDS[p->rlimits[i].resource], &back) < 0 || back.rlim_cur != rl.rlim_cur || back.rlim_max != rl.rlim_max)
      die_sys("getrlimit", EINVAL, "RLIMIT_%s did not read back as set", CUB_RLIMIT_NAMES[p->rlimits[i].resource]);
  }
}

int limits_watch_start(const struct plan *p) {
  if (p->watch_interval_us <= 0) return -1;
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (fd < 0) die_sys("timerfd_create", errno, "the limit sampler");
  struct itimerspec it = {.it_interval = {.tv_sec = p->watch_interval_us / 1000000, .tv_nsec = (p->watch_interval_us % 1000000) * 1000}};
  it.it_value = it.it_interval;
  if (timerfd_settime(fd, 0, &it, NULL) < 0) die_sys("timerfd_settime", errno, "the limit sampler");
  return fd;
}

/* utime+stime+cutime+cstime (clock ticks) and the thread count of one process, from /proc/PID/stat. */
static int read_stat(const char *pid, unsigned long long *ticks, long *threads) {
  char path[300], buf[1024];
  snprintf(path, sizeof path, "/proc/%s/stat", pid);
  if (read_small(path, buf, sizeof buf) < 0) return -1;
  char *s = strrchr(buf, ')'); /* the command name may hold spaces and parens */
  if (!s) return -1;
  unsigned long long ut, st;
  long long cut, cst, nthreads;
  /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
   * priority nice num_threads */
  if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld %*d %*d %lld", &ut, &st, &cut, &cst,
             &nthreads) != 5)
    return -1;
  *ticks = ut + st + (unsigned long long)(cut > 0 ? cut : 0) + (unsigned long long)(cst > 0 ? cst : 0);
  *threads = (long)nthreads;
  return 0;
}

/* Proportional set size: shared pages divided among the processes sharing them, so a sum is not inflated.
 * A process that made itself non-dumpable hides smaps_rollup from init (which holds no capability), and a
 * sample over budget stops walking page tables: then the resident size from statm (cheap, always readable)
 * counts instead. */
static unsigned long long read_pss(const char *pid, int cheap) {
  char path[300], buf[4096];
  snprintf(path, sizeof path, "/proc/%s/smaps_rollup", pid);
  unsigned long long kb = 0;
  if (!cheap && read_small(path, buf, sizeof buf) >= 0) {
    char *line = strstr(buf, "\nPss:");
    if (line && sscanf(line + 5, "%llu", &kb) == 1) return kb * 1024;
  }
  snprintf(path, sizeof path, "/proc/%s/statm", pid);
  unsigned long long size, resident;
  if (read_small(path, buf, sizeof buf) >= 0 && sscanf(buf, "%llu %llu", &size, &resident) == 2)
    return resident * (unsigned long long)sysconf(_SC_PAGESIZE);
  return 0;
}

/* SysV shared memory segments of the sandbox's own IPC namespace: resident bytes, attached or not. */
static unsigned long long sysv_shm_bytes(void) {
  FILE *f = fopen("/proc/sysvipc/shm", "re");
  if (!f) return 0;
  char line[512];
  unsigned long long total = 0;
  if (!fgets(line, sizeof line, f)) {
    fclose(f);
    return 0;
  }
  while (fgets(line, sizeof line, f)) {
    /* key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap */
    unsigned long long rss = 0;
    if (sscanf(line, "%*d %*d %*o %*u %*d %*d %*u %*u %*u %*u %*u %*u %*u %*u %llu", &rss) == 1) total += rss;
  }
  fclose(f);
  return total;
}

long long self_cpu_us(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) < 0) return 0;
  return ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
}

static long long cg_cpu_at_fork = -1, self_at_fork;

static long long read_cgroup_cpu_us(const struct plan *p) {
  char buf[64];
  if (p->cgroup_cpu_fd < 0) return -1;
  ssize_t n = pread(p->cgroup_cpu_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  if (strncmp(buf, "usage_usec ", 11) == 0) return (long long)strtoull(buf + 11, NULL, 10); /* v2 cpu.stat */
  return (long long)(strtoull(buf, NULL, 10) / 1000);                                      /* v1 cpuacct.usage, ns */
}

void limits_mark_fork(const struct plan *p) {
  cg_cpu_at_fork = read_cgroup_cpu_us(p);
  self_at_fork = self_cpu_us();
}

/* The payload's CPU from the cgroup: everything in it since the fork, less init's own sampling and reaping. */
static long long cgroup_payload_cpu_us(const struct plan *p) {
  long long now = read_cgroup_cpu_us(p);
  if (now < 0 || cg_cpu_at_fork < 0) return -1;
  long long v = (now - cg_cpu_at_fork) - (self_cpu_us() - self_at_fork);
  return v > 0 ? v : 0;
}

void limits_final(const struct plan *p, struct sample_report *r) {
  r->init_self_us = self_cpu_us();
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    r->init_utime_us = ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec;
    r->init_stime_us = ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
  }
  long long cg = cgroup_payload_cpu_us(p);
  if (cg >= 0) r->cpu_us = cg, r->cpu_from_cgroup = 1;
}

/* A sample spends at most this long reading PSS; past it, statm. Bounds init's CPU whatever the payload does. */
#define PSS_BUDGET_US 5000

int limits_sample(const struct plan *p, struct sample_report *r, long long since_fork_us, int tasks_only) {
  int measure = p->measure_memory && !tasks_only;
  long long started = monotonic_us();
  /* Wall time and a cgroup's CPU need no walk of /proc: judged first, so a slow walk never delays them. */
  if (!r->limit_kind && p->limit_wall_us && since_fork_us > p->limit_wall_us) {
    r->limit_kind = CUB_LIMIT_WALL, r->limit_at_us = since_fork_us, r->limit_observed = (unsigned long long)since_fork_us;
    return r->limit_kind;
  }
  long long cg_first = cgroup_payload_cpu_us(p);
  if (!r->limit_kind && p->limit_cpu_us && cg_first > p->limit_cpu_us) {
    r->cpu_us = cg_first, r->cpu_from_cgroup = 1;
    r->limit_kind = CUB_LIMIT_CPU, r->limit_at_us = since_fork_us, r->limit_observed = (unsigned long long)cg_first;
    return r->limit_kind;
  }
  static long hz;
  if (!hz) hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
  unsigned long long ticks = 0, memory = 0;
  long long tasks = 0;
  DIR *d = opendir("/proc");
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (!isdigit((unsigned char)e->d_name[0]) || strcmp(e->d_name, "1") == 0) continue; /* init is not the payload */
      unsigned long long t;
      long th;
      if (read_stat(e->d_name, &t, &th) < 0) continue; /* exited meanwhile */
      ticks += t;
      tasks += th;
      if (measure) memory += read_pss(e->d_name, monotonic_us() - started > PSS_BUDGET_US);
    }
    closedir(d);
  }
  if (measure) memory += sysv_shm_bytes();
  for (size_t i = 0; measure && i < p->nwatch_tmpfs; i++) {
    struct statfs sf;
    if (statfs(p->watch_tmpfs[i], &sf) == 0) memory += (unsigned long long)(sf.f_blocks - sf.f_bfree) * (unsigned long long)sf.f_bsize;
  }
  struct rusage ru; /* everything init has reaped */
  long long reaped_us = 0;
  if (getrusage(RUSAGE_CHILDREN, &ru) == 0)
    reaped_us = ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
  long long cpu_us = (long long)(ticks * 1000000ULL / (unsigned long long)hz) + reaped_us;
  /* With a CPU cgroup, its counter is authoritative: it includes children nobody waited for (SIGCHLD ignored). */
  long long cg = cgroup_payload_cpu_us(p);
  if (cg >= 0) cpu_us = cg, r->cpu_from_cgroup = 1;
  r->cpu_us = cpu_us;
  r->samples++;
  r->last_tasks = tasks;
  if (measure && memory > r->peak_memory) r->peak_memory = memory;
  if (tasks > r->peak_tasks) r->peak_tasks = tasks;
  if (r->limit_kind) return r->limit_kind;
  int kind = 0;
  unsigned long long observed = 0;
  if (measure && p->limit_memory && memory > p->limit_memory) kind = CUB_LIMIT_MEMORY, observed = memory;
  else if (p->limit_tasks && tasks > p->limit_tasks) kind = CUB_LIMIT_TASKS, observed = (unsigned long long)tasks;
  else if (p->limit_cpu_us && cpu_us > p->limit_cpu_us) kind = CUB_LIMIT_CPU, observed = (unsigned long long)cpu_us;
  else if (p->limit_wall_us && since_fork_us > p->limit_wall_us) kind = CUB_LIMIT_WALL, observed = (unsigned long long)since_fork_us;
  if (kind) {
    r->limit_kind = kind;
    r->limit_at_us = since_fork_us;
    r->limit_observed = observed;
  }
  return kind;
}
