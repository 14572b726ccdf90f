/* Shared declarations of the helper: the parsed plan and each subsystem's entry points. */
#ifndef CUBICLE_HELPER_H
#define CUBICLE_HELPER_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"

struct op {
  enum cub_op code;
  unsigned index; /* position in the plan, reported back so the supervisor can name the op */
  const char *a[CUB_MAX_ARITY];
  int fd; /* bind-idmap: the detached idmapped tree stage 0 prepared (init attaches it) */
};

struct plan {
  char *buf;
  size_t len;
  struct op *ops; /* filesystem ops, in plan order */
  size_t nops;
  struct op *copy_out; /* copy-out ops, in plan order (init sends them on CUB_FD_COPY_OUT at the end) */
  size_t ncopy_out;
  int has_files; /* file-data ops read the sealed blob on CUB_FD_FILES */
  int has_rw_idmap; /* a read-write bind-idmap: the payload gets the setuid-bit guard */
  int has_host_ids;
  const char *newuidmap, *newgidmap; /* id-mapper: set when the maps are written by these tools */
  uid_t host_uid;
  gid_t host_gid;
  uid_t inner_uid, outer_uid;
  gid_t inner_gid, outer_gid;
  unsigned long long root_size;
  int root_ro;
  const char *image;  /* image: host directory of the root's lower layer */
  int image_writable;
  int loopback;
  /* network: the holder's socket, eth0's address (network byte order) and prefix length */
  const char *net_socket;
  uint32_t net_address;
  unsigned net_prefix;
  pid_t net_holder_pid;
  /* holder mode */
  const char *holder_socket;
  struct {
    int gid; /* 0: a uid_map line, 1: a gid_map line */
    unsigned long long inner, outer, count;
  } holder_maps[8];
  size_t nholder_maps;
  /* egress: a user-mode network stack stage 0 starts on the host side, and the allowlist it loads first */
  const char *stack_program, *stack_ifname;
  long long stack_timeout_ms;
  const char **stack_args; /* NULL-terminated; {init} and {api} are replaced by stage 0 */
  const char **stack_api;  /* NULL-terminated: requests to the stack's API socket once the link is up */
  const char *nft, *net_rules;
  const char *hostname;
  const char *cwd;
  const char *exec;
  const char **argv; /* NULL-terminated */
  const char **envp; /* NULL-terminated */
  const char **search; /* NULL-terminated */
  unsigned char *bpf;
  size_t bpf_len;
  int notify_mode; /* enum cub_notify_mode */
  const char *tty_ptmx; /* tty: the ptmx inside the new root; NULL without a terminal */
  unsigned tty_columns, tty_rows;
  const char *listen_join; /* listen-join: stage 0 serves the namespace fds on this socket */
  const char *join;        /* join: enter the sandbox whose stage 0 listens on this socket */
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
  const char *cgroup_memory_file; /* v2: memory.current, sampled by init */
  const char *cgroup_into;   /* v2: clone init into this group */
  const char *cgroup_events; /* v2: memory.events to watch */
  unsigned long long limit_memory;
  long long limit_tasks;
  const char *watch_tmpfs[16];
  size_t nwatch_tmpfs;
  /* a warm pool's sandbox (await): the run plan comes later on CUB_FD_RUN, read by init */
  int awaits;
  unsigned run_index_base; /* the run plan's ops are numbered from here (the first plan's end) */
  char *run_buf;
  struct op *late_files; /* the run plan's file-data ops, streamed from the pipe on CUB_FD_FILES */
  size_t nlate_files;
  struct op *late_inodes; /* the run plan's tmpfs-inodes ops */
  size_t nlate_inodes;
};

/* Why the sandbox was stopped by the helper itself: one entry of the exit event's stops. */
struct stop_fact {
  enum cub_stop_kind kind;
  long long at_us; /* since the payload's fork */
  long long observed;
};

/* init's sampler: what it saw so far, and the limit it stopped the sandbox for. */
struct sampler {
  long long samples;
  unsigned long long peak_memory, last_memory;
  long long peak_tasks, last_tasks;
  int stopped; /* a limit was passed: stop says which */
  struct stop_fact stop;
};

/* What init reports of itself and its sampler once everything is reaped (facts, not judgements). */
struct init_usage {
  long long utime_us, stime_us; /* init's own CPU, in total */
  long long since_fork_us;      /* init's own CPU since the payload's fork */
  int watched;                  /* the sampler ran: the fields below hold */
  long long samples;
  unsigned long long peak_memory;
  long long peak_tasks;
  long long cgroup_cpu_us; /* the CPU cgroup's usage since the fork, init's included; -1 without one */
};

/* Messages from init (stage 1) to the parent (stage 0), fixed size so each write is atomic. */
enum init_msg_kind { MSG_EXEC_OK = 1, MSG_STATUS, MSG_FAILED, MSG_LISTENER, MSG_VIOLATION, MSG_STOP, MSG_USAGE, MSG_WARM };
struct init_msg {
  int kind;
  int payload_pid; /* inside the pid namespace */
  int wait_status;
  long long setup_us; /* MSG_EXEC_OK: the helper's start (a warm sandbox: its run plan's arrival) to the payload's fork */
  long long fork_at_us; /* MSG_EXEC_OK: the payload's fork (monotonic clock) */
  long long wall_us;
  int fd;             /* MSG_LISTENER: the seccomp listener's fd number */
  int nr;             /* MSG_VIOLATION: syscall number */
  unsigned arch;      /* MSG_VIOLATION: AUDIT_ARCH_* */
  struct stop_fact stop;     /* MSG_STOP: init stopped the sandbox */
  struct init_usage usage;   /* MSG_USAGE (sent once, just before MSG_STATUS) */
};

/* report.c: fatal errors. die*() always emit one error event (cub_emit_error) before exiting. */
void report_set_stage(const char *stage);
void report_set_failure_fd(int fd);
__attribute__((noreturn)) void die_op(const struct op *op, const char *syscall_name, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
__attribute__((noreturn)) void die_sys(const char *syscall_name, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
__attribute__((noreturn)) void die_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
long long monotonic_us(void);

/* plan.c */
void plan_read(struct plan *p, int plan_fd, int bpf_fd); /* a plan with await leaves bpf_fd unread */
/* init, in a warm sandbox: the run plan (only run ops) and the seccomp program, added to the first plan */
void plan_read_run(struct plan *p, int run_fd, int bpf_fd);
int path_is_clean_absolute(const char *path);

/* userns.c: run by the parent for the child pid */
void userns_write_maps_from_parent(const struct plan *p, pid_t child);
void userns_write_holder_maps_from_parent(const struct plan *p, pid_t child);

/* mount.c: run by init, inside the new namespaces */
void mount_image_open_from_parent(const struct plan *p);
void mount_build_root(const struct plan *p);
void mount_proc_sys_readonly(void);
/* init, in a warm sandbox once the root is entered: the run plan's files, streamed from the pipe on CUB_FD_FILES */
void mount_files_from_pipe(const struct plan *p);
/* init, in a warm sandbox once the root is entered: the run's inode caps on the tmpfs mounts the first plan made */
void mount_tmpfs_inodes(const struct plan *p); /* after init has capped the ucounts: nobody inside may change /proc/sys */

/* net.c */
void net_loopback_up(void);
/* Stage 0, before the clone: joins the network's holder (its user and network namespaces); returns the connection,
 * which stage 0 holds for the sandbox's lifetime (the holder counts it as a member). */
int net_join_holder_from_parent(const struct plan *p);
/* Stage 0, after the clone, still privileged in the holder's user namespace: the veth pair, eth0 in init's netns. */
void net_attach_from_parent(const struct plan *p, pid_t init);
/* init: eth0's address, up, and ICMP echo sockets for the payload's gid. */
void net_configure_from_init(const struct plan *p);

/* netlink.c: rtnetlink in the current network namespace */
int nl_open(void);
void nl_bridge_create(int nl, const char *name);
void nl_veth_create(int nl, const char *name, const char *peer, pid_t peer_netns_pid);
void nl_set_master(int nl, const char *name, const char *master);
void net_iface_up(const char *name);
void net_iface_address(const char *name, uint32_t address, unsigned prefix);

/* holder.c: a network's holder (the helper in holder mode) */
__attribute__((noreturn)) void holder_main(const struct plan *p);

/* egress.c: stage 0 forks the stack's watchdog from the host's namespaces (prepare, before a holder join), starts
 * the stack and loads the allowlist before init is released; it stops the stack once init is reaped (and the stack
 * dies with stage 0 whatever ends it). Init closes stage 0's ends of the watchdog's pipes (close_in_child). */
void egress_prepare_from_parent(const struct plan *p);
void egress_start_from_parent(const struct plan *p, pid_t init);
void egress_close_in_child(void);
void egress_stop_from_parent(void);

/* caps.c: run by the payload stage before exec */
void caps_drop_all(void);
/* capset to all-zero: effective, permitted, inheritable */
void caps_clear_sets(void);

/* cgroup.c: named by the side that runs them. Stage 0 joins and opens everything before the clone; init
 * inherits the CPU usage file and reads it. */
void cgroup_join_from_parent(const struct plan *p);
void cgroup_memory_prepare_from_parent(const struct plan *p); /* v1: root gives the payload's group to the host ids */
void cgroup_memory_open_from_parent(const struct plan *p);    /* v1: after the id drop, the payload's group */
void cgroup_memory_join_from_exec(void);                      /* v1: the payload alone joins that group */
void cgroup_memory_close(void);
void cgroup_cpu_open_from_parent(const struct plan *p);
int cgroup_oom_watch_from_parent(const struct plan *p); /* v1 OOM eventfd, or -1 */
int cgroup_oom_fired_from_parent(int oom_fd);           /* 1: the memory cgroup hit its limit */
int cgroup_events_open_from_parent(const struct plan *p); /* v2 memory.events, or -1 */
int cgroup_events_oom_from_parent(int events_fd);       /* 1: an OOM was counted, 0: none, -1: unreadable */
int cgroup_into_fd_from_parent(const struct plan *p);   /* the group to clone init into, or -1 */
long long cgroup_cpu_us_from_init(void);                /* the CPU cgroup's usage in us, or -1 */
long long cgroup_memory_from_init(void);                /* the memory cgroup's charge in bytes, or -1 */

/* limits.c: init's sampler and the payload's rlimits */
void limits_apply_ucounts(const struct plan *p);
int limits_watch_start(const struct plan *p); /* returns a timerfd, or -1 when nothing is watched */
void limits_watch_pace(int timer, long long us);
/* One sample; returns 1 when a limit was passed (then s->stop says which), 0 otherwise. */
int limits_sample(const struct plan *p, struct sampler *s, long long since_fork_us, int tasks_only);
/* Called once at the payload's fork: the baseline init's own CPU and the cgroup's are measured from. */
void limits_mark_fork(void);
/* Once everything is reaped: init's own CPU, the cgroup's, and what the sampler saw. */
void limits_final(const struct sampler *s, int watched, struct init_usage *u);
long long self_cpu_us(void);
void limits_apply_rlimits(const struct plan *p);
/* Called by init before it closes its stdio: the payload's stdin file is not the payload's memory. */
void limits_note_stdin(void);
/* init, once everything inside has ended: the copy-out files to the supervisor. */
void copy_out_send(const struct plan *p);
/* stage 0, as root, before the namespaces exist: the detached idmapped trees of bind-idmap ops. */
void mount_prepare_idmaps(struct plan *p);
/* The payload stage, with a read-write idmapped bind: no setuid/setgid bit can be set (see guard.c). */
void guard_setuid_bits(void);

/* tty.c: a terminal inside. Init opens it (its slave becomes 0-2), relays its master with the helper's
 * stdin/stdout, and resizes it; the payload stage makes it its controlling terminal. */
#define TTY_POLL_FDS 3
void tty_open_from_init(const struct plan *p);
void tty_take_control_from_exec(const struct plan *p);
void tty_resize_from_init(unsigned columns, unsigned rows);
void tty_relay_events(struct pollfd *pfd); /* fills TTY_POLL_FDS entries (fd -1 where nothing is wanted) */
void tty_relay_handle(const struct pollfd *pfd);
int tty_relay_timeout_ms(void); /* how soon the relay wants tty_relay_handle called again without an event; -1: no need */
int tty_relay_drained(void); /* 1 once everything the terminal showed has been written (or without a terminal) */
/* stage_parent.c: a root caller's (or subordinate ids') payload may reopen its stdio pipes (see there). */
void open_stdio_pipes_to_sandbox(const struct plan *p);
/* join.c: stage 0 of a named sandbox serves its join socket; the join mode enters such a sandbox. */
int join_listen_from_parent(const struct plan *p);                 /* the listening socket, or -1 */
void join_open_ns_from_parent(pid_t init, int ns_fds[CUB_NS_COUNT]); /* while init may still be inspected */
/* One connection on the listening socket; returns the control byte asked for (terminate/kill) or 0. */
char join_serve_from_parent(int listen_fd, uid_t owner, pid_t init, const int ns_fds[CUB_NS_COUNT]);
__attribute__((noreturn)) void join_main(const struct plan *p);

/* stages */
__attribute__((noreturn)) void stage_init_main(const struct plan *p, int from_parent_fd, int to_parent_fd,
                                               long long t0_us);
__attribute__((noreturn)) void stage_exec_main(const struct plan *p, int exec_report_fd);
/* The parent's side of exec_report_fd: reads the stage's reports until EOF, then closes `fd`. Sets *listener to
 * the seccomp listener's fd (-1 without one); returns 1 if the stage failed (it wrote the error event), else 0. */
int read_exec_reports(int fd, int *listener);

ssize_t write_all(int fd, const void *buf, size_t len);

#endif
