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
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <time.h>
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
  /* The first sample at once: a run shorter than the interval still has a measured peak. */
  it.it_value = (struct timespec){.tv_sec = 0, .tv_nsec = 1000};
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

/* memfds: pages that no tmpfs the plan mounted holds and no mapping may show. The device memfds live on,
 * learned from one of init's own. */
static dev_t memfd_dev;
static int memfd_dev_known;

static void learn_memfd_dev(void) {
  if (memfd_dev_known) return;
  memfd_dev_known = -1;
  int fd = memfd_create("cubicle-probe", MFD_CLOEXEC);
  if (fd < 0) return;
  struct stat st;
  if (fstat(fd, &st) == 0) {
    memfd_dev = st.st_dev;
    memfd_dev_known = 1;
  }
  close(fd);
}

/* The sealed copy of the caller's input the payload reads as stdin: the caller's memory, not the payload's. */
static dev_t stdin_dev;
static ino_t stdin_ino;
static int stdin_known;

void limits_note_stdin(void) {
  struct stat st;
  if (fstat(0, &st) == 0 && S_ISREG(st.st_mode)) stdin_dev = st.st_dev, stdin_ino = st.st_ino, stdin_known = 1;
}

/* A memfd open in several processes (or twice in one) counts once per sample. */
#define MEMFD_SEEN_MAX 1024
static ino_t memfd_seen[MEMFD_SEEN_MAX];
static size_t memfd_nseen;

/* Bytes allocated to the memfds a process holds open (written, fallocated or faulted in, mapped or not). */
static unsigned long long memfd_bytes(const char *pid) {
  if (memfd_dev_known != 1) return 0;
  char path[300];
  snprintf(path, sizeof path, "/proc/%s/fd", pid);
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return 0;
  }
  unsigned long long total = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    struct stat st;
    if (e->d_name[0] == '.' || fstatat(dfd, e->d_name, &st, 0) < 0) continue;
    if (st.st_dev != memfd_dev || !S_ISREG(st.st_mode)) continue;
    if (stdin_known && st.st_dev == stdin_dev && st.st_ino == stdin_ino) continue;
    int seen = 0;
    for (size_t i = 0; i < memfd_nseen && !seen; i++) seen = memfd_seen[i] == st.st_ino;
    if (seen) continue;
    if (memfd_nseen < MEMFD_SEEN_MAX) memfd_seen[memfd_nseen++] = st.st_ino; /* past it: counted again, never less */
    total += (unsigned long long)st.st_blocks * 512;
  }
  closedir(d);
  return total;
}

/* Devices of the plan's tmpfs mounts: their files count through statfs, whether mapped or not. */
static dev_t tmpfs_devs[16];
static size_t ntmpfs_devs = (size_t)-1;

static void learn_tmpfs_devs(const struct plan *p) {
  if (ntmpfs_devs != (size_t)-1) return;
  ntmpfs_devs = 0;
  for (size_t i = 0; i < p->nwatch_tmpfs && ntmpfs_devs < sizeof tmpfs_devs / sizeof *tmpfs_devs; i++) {
    struct stat st;
    if (stat(p->watch_tmpfs[i], &st) == 0) tmpfs_devs[ntmpfs_devs++] = st.st_dev;
  }
}

/* Whether a shared mapping's pages are already counted whole, as an object: a file on one of the plan's tmpfs
 * mounts (statfs), a SysV shm segment (its resident bytes), or a memfd some process holds open (the fd walk).
 * Shared anonymous mappings, and memfds no fd holds any more, count only through their mappings. */
static int counted_as_object(unsigned maj, unsigned min, unsigned long ino, const char *name) {
  for (size_t i = 0; i < ntmpfs_devs && ntmpfs_devs != (size_t)-1; i++)
    if (major(tmpfs_devs[i]) == maj && minor(tmpfs_devs[i]) == min) return 1;
  if (memfd_dev_known != 1 || major(memfd_dev) != maj || minor(memfd_dev) != min) return 0;
  if (strncmp(name, "/SYSV", 5) == 0) return 1;
  for (size_t i = 0; i < memfd_nseen; i++)
    if (memfd_seen[i] == (ino_t)ino) return 1;
  return 0;
}

/* The Pss (KiB) of a process's *shared* mappings of objects an object count already holds, from its smaps (which,
 * unlike smaps_rollup, has no Pss_Shmem per mapping). A shared mapping of a shmem object holds only shmem pages,
 * so its Pss is its part of the rollup's Pss_Shmem; private mappings are left alone (their written pages are
 * anonymous, and subtracting them would hide shared memory elsewhere); -1 if unreadable. */
static long long shmem_counted_elsewhere(const char *pid) {
  char path[300], line[8192];
  snprintf(path, sizeof path, "/proc/%s/smaps", pid);
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  long long total = 0;
  int take = 0, partial = 0;
  while (fgets(line, sizeof line, f)) {
    int was_partial = partial;
    partial = strchr(line, '\n') == NULL;
    if (was_partial) continue; /* the rest of an overlong line (a long mapped file name) */
    if (isupper((unsigned char)line[0])) {
      unsigned long long kb;
      if (take && strncmp(line, "Pss:", 4) == 0 && sscanf(line + 4, "%llu", &kb) == 1) total += (long long)kb;
      continue;
    }
    /* a mapping's header: start-end perms offset major:minor inode name */
    char perms[8] = "";
    unsigned maj, min;
    unsigned long ino;
    int at = 0;
    take = 0;
    if (sscanf(line, "%*x-%*x %7s %*x %x:%x %lu %n", perms, &maj, &min, &ino, &at) < 4 || at == 0) continue;
    take = perms[3] == 's' && counted_as_object(maj, min, ino, line + at);
  }
  fclose(f);
  return total;
}

/* Pss_Anon and Pss_Shmem (KiB) from a process's smaps_rollup; 0 if it is unreadable. */
static int read_rollup(const char *pid, unsigned long long *anon, unsigned long long *shmem) {
  char path[300], buf[4096];
  snprintf(path, sizeof path, "/proc/%s/smaps_rollup", pid);
  if (read_small(path, buf, sizeof buf) < 0) return 0;
  char *a = strstr(buf, "\nPss_Anon:"), *m = strstr(buf, "\nPss_Shmem:");
  return a && m && sscanf(a + 10, "%llu", anon) == 1 && sscanf(m + 11, "%llu", shmem) == 1;
}

/* Memory a process owns: its anonymous pages plus the shared memory it maps (shared anonymous mappings,
 * tmpfs/SysV shm/memfd pages), proportionally (pages shared among processes are divided among them, so a sum
 * is not inflated). File pages mapped from programs and libraries are page cache, shared with the host and
 * reclaimable: not counted, as a memory cgroup does not count pages another group brought in. Over the
 * sample's budget, or for a process that hides smaps_rollup, its status (RssAnon + RssShmem + VmPTE) counts. */
static unsigned long long read_owned(const char *pid, int cheap) {
  char path[300], buf[4096];
  unsigned long long anon = 0, shmem = 0;
  /* Shared pages an object count already holds (a mapped memfd, tmpfs file or SysV segment) count once: smaps says
   * how much of the rollup's Pss_Shmem they are. A mapping that went away between the rollup and smaps (a munmap,
   * the process exiting) would be in the one and not the other, and count twice; so the rollup is read again after
   * smaps, and a smaller second figure means the reading is taken again (at most three times, then status counts,
   * which is never less). The first figure is the one used: the second may lack a mapping smaps still had. */
  int consistent = 0;
  long long twice = 0;
  for (int tries = 0; !cheap && !consistent && tries < 3; tries++) {
    unsigned long long anon2, shmem2;
    twice = 0;
    if (!read_rollup(pid, &anon, &shmem)) break;
    if (!shmem) {
      consistent = 1;
      break;
    }
    twice = shmem_counted_elsewhere(pid);
    if (twice < 0 || !read_rollup(pid, &anon2, &shmem2)) break;
    consistent = shmem2 >= shmem;
  }
  if (consistent) {
    if (twice > 0) shmem = (unsigned long long)twice < shmem ? shmem - (unsigned long long)twice : 0;
    /* its page tables: kernel memory a cgroup charges too */
    unsigned long long pte = 0;
    snprintf(path, sizeof path, "/proc/%s/status", pid);
    char *t = read_small(path, buf, sizeof buf) >= 0 ? strstr(buf, "\nVmPTE:") : NULL;
    if (t && sscanf(t + 7, "%llu", &pte) != 1) pte = 0;
    return (anon + shmem + pte) * 1024;
  }
  /* status is readable even for a process that made itself non-dumpable (smaps_rollup is not), and cheap. Its
   * shared memory counts whole in each process that maps it: more than the proportional share, never less, so
   * a payload cannot hide shared anonymous or memfd mappings by turning non-dumpable or exhausting the budget. */
  snprintf(path, sizeof path, "/proc/%s/status", pid);
  if (read_small(path, buf, sizeof buf) < 0) return 0;
  unsigned long long rss_anon = 0, rss_shmem = 0, pte = 0;
  char *a = strstr(buf, "\nRssAnon:"), *m = strstr(buf, "\nRssShmem:"), *t = strstr(buf, "\nVmPTE:");
  if (a && sscanf(a + 9, "%llu", &rss_anon) != 1) rss_anon = 0;
  if (m && sscanf(m + 10, "%llu", &rss_shmem) != 1) rss_shmem = 0;
  if (t && sscanf(t + 7, "%llu", &pte) != 1) pte = 0;
  return (rss_anon + rss_shmem + pte) * 1024;
}

/* Sums columns of a /proc/sysvipc table (the sandbox's own IPC namespace): each row adds per_row plus
 * weight[i] times column cols[i]. */
static unsigned long long sysvipc_sum(const char *path, const int *cols, const unsigned *weight, int n, unsigned per_row) {
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  char line[512];
  unsigned long long total = 0;
  if (!fgets(line, sizeof line, f)) {
    fclose(f);
    return 0;
  }
  while (fgets(line, sizeof line, f)) {
    total += per_row;
    for (int k = 0; k < n; k++) {
      char *s = line;
      for (int i = 0; i < cols[k]; i++) {
        s += strspn(s, " ");
        s += strcspn(s, " ");
      }
      unsigned long long v;
      if (sscanf(s, "%llu", &v) == 1) total += v * weight[k];
    }
  }
  fclose(f);
  return total;
}

/* SysV IPC objects live in kernel memory no process maps (except attached shm): shm segments count their
 * resident bytes, attached or not; message queues their queued bytes, ~64 bytes of header per message and
 * ~256 per queue; semaphore sets ~64 bytes per semaphore and ~256 per set (the kernel's own sizes, rounded up). */
static unsigned long long sysv_ipc_bytes(void) {
  static const int shm_cols[] = {14}, msg_cols[] = {3, 4}, sem_cols[] = {3};
  static const unsigned shm_w[] = {1}, msg_w[] = {1, 64}, sem_w[] = {64};
  return sysvipc_sum("/proc/sysvipc/shm", shm_cols, shm_w, 1, 0) + sysvipc_sum("/proc/sysvipc/msg", msg_cols, msg_w, 2, 256) +
         sysvipc_sum("/proc/sysvipc/sem", sem_cols, sem_w, 1, 256);
}

long long self_cpu_us(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) < 0) return 0;
  return ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
}

static long long cg_cpu_at_fork = -1, self_at_fork;

void limits_mark_fork(void) {
  cg_cpu_at_fork = cgroup_cpu_us_from_init();
  self_at_fork = self_cpu_us();
}

/* The CPU cgroup's usage since the fork (init's own share included), or -1 without one. */
static long long cgroup_cpu_since_fork_us(void) {
  long long now = cgroup_cpu_us_from_init();
  return now < 0 || cg_cpu_at_fork < 0 ? -1 : now - cg_cpu_at_fork;
}

/* What the sampler judges: the cgroup's CPU less init's own sampling and reaping (enforcement only; the
 * exit event reports both raw numbers and the supervisor does its own arithmetic). */
static long long cgroup_payload_cpu_us(void) {
  long long cg = cgroup_cpu_since_fork_us();
  if (cg < 0) return -1;
  long long v = cg - (self_cpu_us() - self_at_fork);
  return v > 0 ? v : 0;
}

void limits_final(const struct sampler *s, int watched, struct init_usage *u) {
  memset(u, 0, sizeof *u);
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    u->utime_us = ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec;
    u->stime_us = ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec;
  }
  u->since_fork_us = self_cpu_us() - self_at_fork;
  u->watched = watched;
  u->samples = s->samples;
  u->peak_memory = s->peak_memory;
  u->peak_tasks = s->peak_tasks;
  u->cgroup_cpu_us = cgroup_cpu_since_fork_us();
}

static int stop_at(struct sampler *s, enum cub_stop_kind kind, long long at_us, long long observed) {
  s->stopped = 1;
  s->stop = (struct stop_fact){.kind = kind, .at_us = at_us, .observed = observed};
  return 1;
}

/* A sample spends at most this much of init's own CPU reading PSS; past it, status. Bounds init's CPU whatever the
 * payload does. CPU, not wall time: on a busy host init is preempted mid-sample, and a wall-clock budget then ran
 * out before the first process was read, and status, which counts mapped memfds, tmpfs files and SysV segments a
 * second time, gave false memory-limits. */
#define PSS_BUDGET_US 5000

static long long own_cpu_us(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0) return 0;
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int limits_sample(const struct plan *p, struct sampler *s, long long since_fork_us, int tasks_only) {
  if (s->stopped) return 1;
  int measure = p->measure_memory && !tasks_only;
  /* Wall time and a cgroup's CPU need no walk of /proc: judged first, so a slow walk never delays them. */
  if (p->limit_wall_us && since_fork_us > p->limit_wall_us) return stop_at(s, CUB_STOP_WALL, since_fork_us, since_fork_us);
  long long cg_first = cgroup_payload_cpu_us();
  if (p->limit_cpu_us && cg_first > p->limit_cpu_us) return stop_at(s, CUB_STOP_CPU, since_fork_us, cg_first);
  static long hz;
  if (!hz) hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
  unsigned long long ticks = 0, memory = 0;
  long long tasks = 0;
  memfd_nseen = 0;
  if (measure) {
    learn_memfd_dev();
    learn_tmpfs_devs(p);
    /* First every memfd held open (counted whole, once), so that the mappings of those memfds are not counted
     * again in the processes' shared memory below. */
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)))
      if (isdigit((unsigned char)e->d_name[0]) && strcmp(e->d_name, "1") != 0) memory += memfd_bytes(e->d_name);
    if (d) closedir(d);
  }
  long long pss_started = own_cpu_us();
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
      /* each thread's kernel stack (16 KiB on x86-64 and arm64), charged by a cgroup too */
      if (measure) memory += read_owned(e->d_name, own_cpu_us() - pss_started > PSS_BUDGET_US) + (unsigned long long)th * 16384;
    }
    closedir(d);
  }
  /* SysV shm segments (resident bytes, attached or not) and the bytes queued in SysV message queues */
  if (measure) memory += sysv_ipc_bytes();
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
  long long cg = cgroup_payload_cpu_us();
  if (cg >= 0) cpu_us = cg;
  s->samples++;
  s->last_tasks = tasks;
  if (measure) s->last_memory = memory;
  if (measure && memory > s->peak_memory) s->peak_memory = memory;
  long long charged = cgroup_memory_from_init(); /* v2: the group's own count, enforced by the kernel */
  if (charged > 0 && (unsigned long long)charged > s->peak_memory) s->peak_memory = (unsigned long long)charged;
  if (tasks > s->peak_tasks) s->peak_tasks = tasks;
  if (measure && p->limit_memory && memory > p->limit_memory) return stop_at(s, CUB_STOP_MEMORY, since_fork_us, (long long)memory);
  if (p->limit_tasks && tasks > p->limit_tasks) return stop_at(s, CUB_STOP_TASKS, since_fork_us, tasks);
  if (p->limit_cpu_us && cpu_us > p->limit_cpu_us) return stop_at(s, CUB_STOP_CPU, since_fork_us, cpu_us);
  if (p->limit_wall_us && since_fork_us > p->limit_wall_us) return stop_at(s, CUB_STOP_WALL, since_fork_us, since_fork_us);
  return 0;
}
