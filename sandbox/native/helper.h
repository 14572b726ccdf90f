/* Shared declarations of the helper: the parsed plan and each subsystem's entry points. */
#ifndef CUBICLE_HELPER_H
#define CUBICLE_HELPER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"

struct op {
  enum cub_op code;
  unsigned index; /* position in the plan, reported back so the supervisor can name the op */
  const char *a[CUB_MAX_ARITY];
};

struct plan {
  char *buf;
  size_t len;
  struct op *ops; /* filesystem ops, in plan order */
  size_t nops;
  int has_host_ids;
  uid_t host_uid;
  gid_t host_gid;
  uid_t inner_uid, outer_uid;
  gid_t inner_gid, outer_gid;
  unsigned long long root_size;
  int root_ro;
  int loopback;
  const char *hostname;
  const char *cwd;
  const char *exec;
  const char **argv; /* NULL-terminated */
  const char **envp; /* NULL-terminated */
  const char **search; /* NULL-terminated */
  unsigned char *bpf;
  size_t bpf_len;
  int notify_mode; /* enum cub_notify_mode */
  /* limits */
  const char *cgroup_join[8];
  size_t ncgroup_join;
  const char *oom_watch_dir;
  struct {
    const char *name;
    unsigned long long value;
  } ucounts[16];
  size_t nucounts;
  struct {
    int resource; /* index into CUB_RLIMIT_NAMES */
    unsigned long long soft, hard;
  } rlimits[CUB_RLIMIT_COUNT];
  size_t nrlimits;
  long long watch_interval_us, limit_cpu_us, limit_wall_us;
  int measure_memory;
  const char *cgroup_cpu_file;
  const char *cgroup_into;   /* v2: clone init into this group */
  const char *cgroup_events; /* v2: memory.events to watch */
  int cgroup_cpu_fd; /* opened by stage 0 before clone; init inherits it */
  unsigned long long limit_memory;
  long long limit_tasks;
  const char *watch_tmpfs[16];
  size_t nwatch_tmpfs;
};

/* What init's sampler saw: peaks, and the first limit passed. */
struct sample_report {
  int limit_kind; /* enum cub_limit_kind, 0 = none */
  long long limit_at_us;
  unsigned long long limit_observed;
  unsigned long long peak_memory;
  long long peak_tasks;
  long long samples;
  long long last_tasks;
  long long cpu_us;        /* the payload's CPU, as judged (cgroup cpuacct when there is one) */
  int cpu_from_cgroup;
  long long init_self_us;  /* init's own CPU (sampling, reaping): not the payload's */
  long long init_utime_us, init_stime_us;
};

/* Messages from init (stage 1) to the parent (stage 0), fixed size so each write is atomic. */
enum init_msg_kind { MSG_READY = 1, MSG_EXEC_OK, MSG_STATUS, MSG_FAILED, MSG_LISTENER, MSG_VIOLATION, MSG_SAMPLE };
struct init_msg {
  int kind;
  int payload_pid; /* inside the pid namespace */
  int wait_status;
  long long setup_us;
  long long wall_us;
  int fd;             /* MSG_LISTENER: the seccomp listener's fd number */
  int nr;             /* MSG_VIOLATION: syscall number */
  unsigned arch;      /* MSG_VIOLATION: AUDIT_ARCH_* */
  struct sample_report sample; /* MSG_SAMPLE (sent once, just before MSG_STATUS) */
};

/* report.c: the structured status channel. die*() always emit one error event before exiting. */
void report_set_stage(const char *stage);
void report_set_failure_fd(int fd);
void report_event_raw(const char *json_line);
__attribute__((noreturn)) void die_op(const struct op *op, const char *syscall_name, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
__attribute__((noreturn)) void die_sys(const char *syscall_name, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
__attribute__((noreturn)) void die_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
size_t json_escape(char *dst, size_t cap, const char *src);
long long monotonic_us(void);

/* plan.c */
void plan_read(struct plan *p, int plan_fd, int bpf_fd);
int path_is_clean_absolute(const char *path);

/* userns.c: run by the parent for the child pid */
void userns_write_maps_from_parent(const struct plan *p, pid_t child);

/* mount.c: run by init, inside the new namespaces */
void mount_build_root(const struct plan *p);

/* net.c */
void net_loopback_up(void);

/* caps.c: run by the payload stage before exec */
void caps_drop_all(void);
/* capset to all-zero: effective, permitted, inheritable */
void caps_clear_sets(void);

/* limits.c: init's sampler and the payload's rlimits */
void limits_apply_ucounts(const struct plan *p);
int limits_watch_start(const struct plan *p); /* returns a timerfd, or -1 when nothing is watched */
void limits_watch_pace(int timer, long long us);
/* One sample; returns the limit kind passed (0 if none) and fills the report. */
int limits_sample(const struct plan *p, struct sample_report *r, long long since_fork_us, int tasks_only);
/* Called once at the payload's fork: the baseline the cgroup's CPU counter is measured from. */
void limits_mark_fork(const struct plan *p);
/* One last CPU reading once everything is reaped. */
void limits_final(const struct plan *p, struct sample_report *r);
long long self_cpu_us(void);
void limits_apply_rlimits(const struct plan *p);

/* stages */
__attribute__((noreturn)) void stage_init_main(const struct plan *p, int from_parent_fd, int to_parent_fd,
                                               long long t0_us);
__attribute__((noreturn)) void stage_exec_main(const struct plan *p, int exec_report_fd);

ssize_t write_all(int fd, const void *buf, size_t len);

#endif
