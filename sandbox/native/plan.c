/* Reads and validates the plan (fd 3) and the seccomp program (fd 4). Anything malformed is refused. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "helper.h"

static size_t read_bounded(int fd, char **out, size_t max, const char *what) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap + 1);
  if (!buf) die_sys("malloc", ENOMEM, "out of memory reading the %s", what);
  for (;;) {
    if (len == cap) {
      if (cap > max) die_msg("the %s is larger than %zu bytes", what, max);
      cap *= 2;
      char *nb = realloc(buf, cap + 1);
      if (!nb) die_sys("realloc", ENOMEM, "out of memory reading the %s", what);
      buf = nb;
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die_sys("read", errno, "reading the %s from fd %d", what, fd);
    }
    if (n == 0) break;
    len += (size_t)n;
    if (len > max) die_msg("the %s is larger than %zu bytes", what, max);
  }
  buf[len] = '\0';
  *out = buf;
  return len;
}

/* Absolute, no empty, '.' or '..' components, bounded length. */
int path_is_clean_absolute(const char *path) {
  size_t len = strlen(path);
  if (len == 0 || path[0] != '/' || len >= PATH_MAX - 64) return 0;
  if (len == 1) return 1;
  if (path[len - 1] == '/') return 0;
  const char *c = path + 1;
  for (;;) {
    const char *slash = strchr(c, '/');
    size_t n = slash ? (size_t)(slash - c) : strlen(c);
    if (n == 0) return 0;
    if (n == 1 && c[0] == '.') return 0;
    if (n == 2 && c[0] == '.' && c[1] == '.') return 0;
    if (!slash) return 1;
    c = slash + 1;
  }
}

static unsigned long long parse_num(const char *s, unsigned long long max, const struct op *op, const char *what) {
  if (!*s || strlen(s) > 20) die_op(op, NULL, 0, "%s '%s' is not a decimal number", what, s);
  unsigned long long v = 0;
  for (const char *c = s; *c; c++) {
    if (*c < '0' || *c > '9') die_op(op, NULL, 0, "%s '%s' is not a decimal number", what, s);
    if (v > (ULLONG_MAX - 9) / 10) die_op(op, NULL, 0, "%s '%s' is out of range", what, s);
    v = v * 10 + (unsigned)(*c - '0');
  }
  if (v > max) die_op(op, NULL, 0, "%s %s is out of range (max %llu)", what, s, max);
  return v;
}

static void check_mode(const char *s, const struct op *op) {
  size_t n = strlen(s);
  if (n == 0 || n > 4) die_op(op, NULL, 0, "mode '%s' is not 1-4 octal digits", s);
  for (const char *c = s; *c; c++)
    if (*c < '0' || *c > '7') die_op(op, NULL, 0, "mode '%s' is not octal", s);
}

static void check_path(const char *s, const struct op *op) {
  if (!path_is_clean_absolute(s))
    die_op(op, NULL, 0, "path '%s' must be absolute without '.', '..' or empty components", s);
}

/* Grows an array geometrically so it holds at least `want` items (a plan may hold ~10^6 arguments). */
static void *grow(void *arr, size_t *cap, size_t want, size_t size) {
  if (want <= *cap) return arr;
  size_t n = *cap ? *cap : 16;
  while (n < want) n *= 2;
  void *na = realloc(arr, n * size);
  if (!na) die_sys("realloc", ENOMEM, "out of memory building the plan");
  *cap = n;
  return na;
}

/* A NULL-terminated vector with its count and capacity. */
struct vec {
  const char ***items;
  size_t count, cap;
};

static void vec_push(struct vec *v, const char *s) {
  *v->items = grow(*v->items, &v->cap, v->count + 2, sizeof **v->items);
  (*v->items)[v->count++] = s;
  (*v->items)[v->count] = NULL;
}

static size_t ops_cap, copy_out_cap, late_cap, inodes_cap;

/* The argument of a filesystem op that names its target inside the new root. */
static unsigned fs_path_arg(enum cub_op code) {
  switch (code) {
  case CUB_OP_BIND: return CUB_ARG_BIND_PATH;
  case CUB_OP_COPY: return CUB_ARG_COPY_PATH;
  case CUB_OP_SYMLINK: return CUB_ARG_SYMLINK_PATH;
  case CUB_OP_DIR: return CUB_ARG_DIR_PATH;
  case CUB_OP_FILE: return CUB_ARG_FILE_PATH;
  case CUB_OP_FILE_DATA: return CUB_ARG_FILE_DATA_PATH;
  case CUB_OP_BIND_IDMAP: return CUB_ARG_BIND_IDMAP_PATH;
  case CUB_OP_TMPFS: return CUB_ARG_TMPFS_PATH;
  case CUB_OP_PROC: return CUB_ARG_PROC_PATH;
  case CUB_OP_DEVPTS: return CUB_ARG_DEVPTS_PATH;
  case CUB_OP_REMOUNT_RO: return CUB_ARG_REMOUNT_RO_PATH;
  default: return 0;
  }
}

/* Which plan is being read: the one on fd plan (whole, or up to await), or a warm sandbox's run plan. */
enum plan_part { PART_FIRST, PART_RUN };

static unsigned long long late_offset; /* a run plan's file-data: the blob's bytes claimed so far */

/* A run plan's file: its content is the next `length` bytes of the files stream (offsets in order, no gap). */
static void check_late_file(struct plan *p, struct op *op) {
  const char **a = op->a;
  check_path(a[CUB_ARG_FILE_DATA_PATH], op);
  if (strcmp(a[CUB_ARG_FILE_DATA_PATH], "/") == 0) die_op(op, NULL, 0, "an op cannot target the root itself");
  check_mode(a[CUB_ARG_FILE_DATA_MODE_OCTAL], op);
  unsigned long long off = parse_num(a[CUB_ARG_FILE_DATA_OFFSET], 1ULL << 40, op, "file offset");
  unsigned long long len = parse_num(a[CUB_ARG_FILE_DATA_LENGTH], 1ULL << 40, op, "file length");
  if (off != late_offset) die_op(op, NULL, 0, "file offset %llu is not where the previous file ended (%llu)", off, late_offset);
  late_offset += len;
  p->late_files = grow(p->late_files, &late_cap, p->nlate_files + 1, sizeof *p->late_files);
  p->late_files[p->nlate_files++] = *op;
  p->has_files = 1;
}

static void check_op(struct plan *p, struct op *op, int *seen, enum plan_part part) {
  const char **a = op->a;
  if (part == PART_RUN && op->code != CUB_OP_END && !CUB_OP_SPECS[op->code].run)
    die_op(op, NULL, 0, "'%s' cannot be in a run plan: it belongs to the plan the warm sandbox was made from", CUB_OP_SPECS[op->code].name);
  if (part == PART_RUN && op->code == CUB_OP_FILE_DATA) {
    check_late_file(p, op);
    seen[op->code]++;
    return;
  }
  switch (op->code) {
  case CUB_OP_USERNS:
    if (seen[CUB_OP_USERNS]) die_op(op, NULL, 0, "userns given twice");
    p->inner_uid = (uid_t)parse_num(a[CUB_ARG_USERNS_INNER_UID], 0xfffffffeULL, op, "inner uid");
    p->inner_gid = (gid_t)parse_num(a[CUB_ARG_USERNS_INNER_GID], 0xfffffffeULL, op, "inner gid");
    p->outer_uid = (uid_t)parse_num(a[CUB_ARG_USERNS_OUTER_UID], 0xfffffffeULL, op, "outer uid");
    p->outer_gid = (gid_t)parse_num(a[CUB_ARG_USERNS_OUTER_GID], 0xfffffffeULL, op, "outer gid");
    break;
  case CUB_OP_HOST_IDS:
    if (seen[CUB_OP_HOST_IDS]) die_op(op, NULL, 0, "host-ids given twice");
    p->host_uid = (uid_t)parse_num(a[CUB_ARG_HOST_IDS_HOST_UID], 0xfffffffeULL, op, "host uid");
    p->host_gid = (gid_t)parse_num(a[CUB_ARG_HOST_IDS_HOST_GID], 0xfffffffeULL, op, "host gid");
    if (p->host_uid == 0 || p->host_gid == 0) die_op(op, NULL, 0, "host-ids must be unprivileged (not 0)");
    p->has_host_ids = 1;
    break;
  case CUB_OP_ID_MAPPER:
    if (seen[CUB_OP_ID_MAPPER]) die_op(op, NULL, 0, "id-mapper given twice");
    check_path(a[CUB_ARG_ID_MAPPER_NEWUIDMAP], op);
    check_path(a[CUB_ARG_ID_MAPPER_NEWGIDMAP], op);
    p->newuidmap = a[CUB_ARG_ID_MAPPER_NEWUIDMAP];
    p->newgidmap = a[CUB_ARG_ID_MAPPER_NEWGIDMAP];
    break;
  case CUB_OP_ROOT:
    if (seen[CUB_OP_ROOT]) die_op(op, NULL, 0, "root given twice");
    if (p->nops) die_op(op, NULL, 0, "root must come before every filesystem op");
    p->root_size = parse_num(a[CUB_ARG_ROOT_SIZE_BYTES], 1ULL << 40, op, "root size");
    if (p->root_size < 4096) die_op(op, NULL, 0, "root size must be at least 4096 bytes");
    break;
  case CUB_OP_IMAGE:
    if (seen[CUB_OP_IMAGE]) die_op(op, NULL, 0, "image given twice");
    if (!seen[CUB_OP_ROOT] || p->nops) die_op(op, NULL, 0, "image must come right after root, before every filesystem op");
    check_path(a[CUB_ARG_IMAGE_HOST_PATH], op);
    if (strcmp(a[CUB_ARG_IMAGE_WRITABLE], "0") != 0 && strcmp(a[CUB_ARG_IMAGE_WRITABLE], "1") != 0)
      die_op(op, NULL, 0, "image writable must be 0 or 1");
    p->image = a[CUB_ARG_IMAGE_HOST_PATH];
    p->image_writable = a[CUB_ARG_IMAGE_WRITABLE][0] == '1';
    p->ops = grow(p->ops, &ops_cap, p->nops + 1, sizeof *p->ops);
    p->ops[p->nops++] = *op;
    break;
  case CUB_OP_DIR:
  case CUB_OP_FILE:
  case CUB_OP_FILE_DATA:
  case CUB_OP_TMPFS:
  case CUB_OP_PROC:
  case CUB_OP_DEVPTS:
  case CUB_OP_REMOUNT_RO:
  case CUB_OP_SYMLINK:
  case CUB_OP_BIND:
  case CUB_OP_BIND_IDMAP:
  case CUB_OP_COPY: {
    if (!seen[CUB_OP_ROOT]) die_op(op, NULL, 0, "filesystem op before root");
    if (seen[CUB_OP_ROOT_RO]) die_op(op, NULL, 0, "filesystem op after root-ro");
    const char *path = a[fs_path_arg(op->code)];
    check_path(path, op);
    if (strcmp(path, "/") == 0) die_op(op, NULL, 0, "an op cannot target the root itself");
    if (op->code == CUB_OP_BIND) check_path(a[CUB_ARG_BIND_HOST_PATH], op);
    if (op->code == CUB_OP_BIND_IDMAP) {
      check_path(a[CUB_ARG_BIND_IDMAP_HOST_PATH], op);
      parse_num(a[CUB_ARG_BIND_IDMAP_DISK_UID], 0xfffffffeULL, op, "disk uid");
      parse_num(a[CUB_ARG_BIND_IDMAP_DISK_GID], 0xfffffffeULL, op, "disk gid");
      const char *acc = a[CUB_ARG_BIND_IDMAP_ACCESS];
      if (strcmp(acc, CUB_BIND_ACCESS_NAMES[CUB_BIND_RO]) != 0 && strcmp(acc, CUB_BIND_ACCESS_NAMES[CUB_BIND_RW]) != 0)
        die_op(op, NULL, 0, "bind-idmap access '%s' is not ro or rw", acc);
      if (strcmp(acc, CUB_BIND_ACCESS_NAMES[CUB_BIND_RW]) == 0) p->has_rw_idmap = 1;
      if (strtoull(a[CUB_ARG_BIND_IDMAP_DISK_UID], NULL, 10) == 0 || strtoull(a[CUB_ARG_BIND_IDMAP_DISK_GID], NULL, 10) == 0)
        die_op(op, NULL, 0, "bind-idmap never maps host root's files to the sandbox");
    }
    if (op->code == CUB_OP_COPY) check_path(a[CUB_ARG_COPY_HOST_PATH], op);
    if (op->code == CUB_OP_DIR) check_mode(a[CUB_ARG_DIR_MODE_OCTAL], op);
    if (op->code == CUB_OP_FILE) check_mode(a[CUB_ARG_FILE_MODE_OCTAL], op);
    if (op->code == CUB_OP_FILE_DATA) {
      check_mode(a[CUB_ARG_FILE_DATA_MODE_OCTAL], op);
      parse_num(a[CUB_ARG_FILE_DATA_OFFSET], 1ULL << 40, op, "file offset");
      parse_num(a[CUB_ARG_FILE_DATA_LENGTH], 1ULL << 40, op, "file length");
      p->has_files = 1;
    }
    if (op->code == CUB_OP_COPY) check_mode(a[CUB_ARG_COPY_MODE_OCTAL], op);
    if (op->code == CUB_OP_TMPFS) {
      if (parse_num(a[CUB_ARG_TMPFS_SIZE_BYTES], 1ULL << 40, op, "tmpfs size") < 4096) die_op(op, NULL, 0, "tmpfs size must be at least 4096 bytes");
      check_mode(a[CUB_ARG_TMPFS_MODE_OCTAL], op);
      if (parse_num(a[CUB_ARG_TMPFS_INODES], 1ULL << 30, op, "tmpfs inodes") < 16) die_op(op, NULL, 0, "tmpfs inodes must be at least 16");
    }
    if (op->code == CUB_OP_SYMLINK && (!*a[CUB_ARG_SYMLINK_TARGET] || strlen(a[CUB_ARG_SYMLINK_TARGET]) >= PATH_MAX - 64))
      die_op(op, NULL, 0, "symlink target is empty or too long");
    if (op->code == CUB_OP_BIND) {
      const char *access = a[CUB_ARG_BIND_ACCESS];
      int ok = 0;
      for (int i = 0; i < CUB_BIND_ACCESS_COUNT; i++) ok |= strcmp(access, CUB_BIND_ACCESS_NAMES[i]) == 0;
      if (!ok) die_op(op, NULL, 0, "bind access '%s' is not ro, rw or dev", access);
    }
    p->ops = grow(p->ops, &ops_cap, p->nops + 1, sizeof *p->ops);
    p->ops[p->nops++] = *op;
    break;
  }
  case CUB_OP_ROOT_RO:
    p->root_ro = 1;
    break;
  case CUB_OP_COPY_OUT:
    check_path(a[CUB_ARG_COPY_OUT_PATH], op);
    parse_num(a[CUB_ARG_COPY_OUT_MAX_BYTES], 1ULL << 40, op, "copy-out max bytes");
    parse_num(a[CUB_ARG_COPY_OUT_TOTAL_BYTES], 1ULL << 40, op, "copy-out total bytes");
    p->copy_out = grow(p->copy_out, &copy_out_cap, p->ncopy_out + 1, sizeof *p->copy_out);
    p->copy_out[p->ncopy_out++] = *op;
    break;
  case CUB_OP_HOSTNAME:
    if (!*a[CUB_ARG_HOSTNAME_NAME] || strlen(a[CUB_ARG_HOSTNAME_NAME]) > 64) die_op(op, NULL, 0, "hostname must be 1-64 bytes");
    p->hostname = a[CUB_ARG_HOSTNAME_NAME];
    break;
  case CUB_OP_LOOPBACK:
    p->loopback = 1;
    break;
  case CUB_OP_NETWORK: {
    if (seen[CUB_OP_NETWORK]) die_op(op, NULL, 0, "network given twice");
    check_path(a[CUB_ARG_NETWORK_SOCKET], op);
    if (strlen(a[CUB_ARG_NETWORK_SOCKET]) >= 108) die_op(op, NULL, 0, "the holder's socket path is longer than 107 bytes");
    if (inet_pton(AF_INET, a[CUB_ARG_NETWORK_ADDRESS], &p->net_address) != 1)
      die_op(op, NULL, 0, "'%.64s' is not an IPv4 address", a[CUB_ARG_NETWORK_ADDRESS]);
    p->net_prefix = (unsigned)parse_num(a[CUB_ARG_NETWORK_PREFIX_LEN], 30, op, "prefix length");
    if (p->net_prefix < 8) die_op(op, NULL, 0, "prefix length %u is below 8", p->net_prefix);
    p->net_holder_pid = (pid_t)parse_num(a[CUB_ARG_NETWORK_HOLDER_PID], 1U << 22, op, "holder pid");
    if (p->net_holder_pid < 1) die_op(op, NULL, 0, "holder pid must be positive");
    p->net_socket = a[CUB_ARG_NETWORK_SOCKET];
    break;
  }
  case CUB_OP_HOLDER:
    if (seen[CUB_OP_HOLDER]) die_op(op, NULL, 0, "holder given twice");
    check_path(a[CUB_ARG_HOLDER_SOCKET], op);
    if (strlen(a[CUB_ARG_HOLDER_SOCKET]) >= 108) die_op(op, NULL, 0, "the holder's socket path is longer than 107 bytes");
    p->holder_socket = a[CUB_ARG_HOLDER_SOCKET];
    break;
  case CUB_OP_HOLDER_MAP: {
    const char *kind = a[CUB_ARG_HOLDER_MAP_KIND];
    if (strcmp(kind, "uid") != 0 && strcmp(kind, "gid") != 0) die_op(op, NULL, 0, "holder-map kind '%.16s' is not uid or gid", kind);
    if (p->nholder_maps >= sizeof p->holder_maps / sizeof *p->holder_maps) die_op(op, NULL, 0, "too many holder-map lines");
    unsigned long long inner = parse_num(a[CUB_ARG_HOLDER_MAP_INNER], 0xfffffffeULL, op, "inner id");
    unsigned long long outer = parse_num(a[CUB_ARG_HOLDER_MAP_OUTER], 0xfffffffeULL, op, "outer id");
    unsigned long long count = parse_num(a[CUB_ARG_HOLDER_MAP_COUNT], 0xffffffffULL, op, "count");
    if (count == 0 || inner + count > 0xffffffffULL || outer + count > 0xffffffffULL) die_op(op, NULL, 0, "holder-map range out of bounds");
    p->holder_maps[p->nholder_maps].gid = kind[0] == 'g';
    p->holder_maps[p->nholder_maps].inner = inner;
    p->holder_maps[p->nholder_maps].outer = outer;
    p->holder_maps[p->nholder_maps++].count = count;
    break;
  }
  case CUB_OP_NET_STACK:
    if (seen[CUB_OP_NET_STACK]) die_op(op, NULL, 0, "net-stack given twice");
    check_path(a[CUB_ARG_NET_STACK_PROGRAM], op);
    if (!*a[CUB_ARG_NET_STACK_IFNAME] || strlen(a[CUB_ARG_NET_STACK_IFNAME]) >= 16 || strchr(a[CUB_ARG_NET_STACK_IFNAME], '/'))
      die_op(op, NULL, 0, "net-stack interface name must be 1-15 bytes without '/'");
    p->stack_program = a[CUB_ARG_NET_STACK_PROGRAM];
    p->stack_ifname = a[CUB_ARG_NET_STACK_IFNAME];
    p->stack_timeout_ms = (long long)parse_num(a[CUB_ARG_NET_STACK_TIMEOUT_MS], 600000, op, "net-stack timeout");
    break;
  case CUB_OP_NET_STACK_ARG: /* collected by plan_read */
  case CUB_OP_NET_API:
    break;
  case CUB_OP_NET_RULES:
    if (seen[CUB_OP_NET_RULES]) die_op(op, NULL, 0, "net-rules given twice");
    check_path(a[CUB_ARG_NET_RULES_NFT], op);
    p->nft = a[CUB_ARG_NET_RULES_NFT];
    p->net_rules = a[CUB_ARG_NET_RULES_RULESET];
    break;
  case CUB_OP_CWD:
    check_path(a[CUB_ARG_CWD_PATH], op);
    p->cwd = a[CUB_ARG_CWD_PATH];
    break;
  case CUB_OP_ENV: /* collected by plan_read */
  case CUB_OP_ARG:
    break;
  case CUB_OP_SEARCH:
    check_path(a[CUB_ARG_SEARCH_DIR], op);
    break;
  case CUB_OP_TTY:
    if (seen[CUB_OP_TTY]) die_op(op, NULL, 0, "tty given twice");
    check_path(a[CUB_ARG_TTY_PTMX], op);
    p->tty_ptmx = a[CUB_ARG_TTY_PTMX];
    p->tty_columns = (unsigned)parse_num(a[CUB_ARG_TTY_COLUMNS], 65535, op, "terminal columns");
    p->tty_rows = (unsigned)parse_num(a[CUB_ARG_TTY_ROWS], 65535, op, "terminal rows");
    break;
  case CUB_OP_EXEC:
    if (seen[CUB_OP_EXEC]) die_op(op, NULL, 0, "exec given twice");
    if (!*a[CUB_ARG_EXEC_PROGRAM]) die_op(op, NULL, 0, "exec program is empty");
    /* A relative path with a '/' (./a.out) is left to execve, which resolves it against the cwd, as a shell would. */
    if (a[CUB_ARG_EXEC_PROGRAM][0] == '/') check_path(a[CUB_ARG_EXEC_PROGRAM], op);
    p->exec = a[CUB_ARG_EXEC_PROGRAM];
    break;
  case CUB_OP_SECCOMP: {
    if (seen[CUB_OP_SECCOMP]) die_op(op, NULL, 0, "seccomp given twice");
    int found = -1;
    for (int i = 0; i < CUB_NOTIFY_MODE_COUNT; i++)
      if (strcmp(a[CUB_ARG_SECCOMP_NOTIFY_MODE], CUB_NOTIFY_MODE_NAMES[i]) == 0) found = i;
    if (found < 0) die_op(op, NULL, 0, "seccomp notify mode '%s' is not none, kill or log", a[CUB_ARG_SECCOMP_NOTIFY_MODE]);
    p->notify_mode = found;
    break;
  }
  case CUB_OP_LISTEN_JOIN:
  case CUB_OP_JOIN: {
    const char *path = a[0];
    check_path(path, op);
    if (strlen(path) >= 108) die_op(op, NULL, 0, "socket path %s is longer than a unix socket address allows (107 bytes)", path);
    if (p->join || p->listen_join) die_op(op, NULL, 0, "listen-join and join are given once, and not together");
    if (op->code == CUB_OP_JOIN) p->join = path;
    else p->listen_join = path;
    break;
  }
  case CUB_OP_CGROUP_JOIN:
    check_path(a[CUB_ARG_CGROUP_JOIN_DIR], op);
    if (p->ncgroup_join >= 8) die_op(op, NULL, 0, "at most 8 cgroup-join ops");
    p->cgroup_join[p->ncgroup_join++] = a[CUB_ARG_CGROUP_JOIN_DIR];
    break;
  case CUB_OP_CGROUP_OOM_WATCH:
    check_path(a[CUB_ARG_CGROUP_OOM_WATCH_DIR], op);
    if (p->oom_watch_dir) die_op(op, NULL, 0, "cgroup-oom-watch given twice");
    p->oom_watch_dir = a[CUB_ARG_CGROUP_OOM_WATCH_DIR];
    break;
  case CUB_OP_UCOUNT: {
    const char *name = a[CUB_ARG_UCOUNT_NAME];
    size_t n = strlen(name);
    if (n == 0 || n > 40 || strspn(name, "abcdefghijklmnopqrstuvwxyz_") != n) die_op(op, NULL, 0, "ucount name '%s' is not [a-z_]+", name);
    if (p->nucounts >= 16) die_op(op, NULL, 0, "at most 16 ucount ops");
    p->ucounts[p->nucounts].name = name;
    p->ucounts[p->nucounts++].value = parse_num(a[CUB_ARG_UCOUNT_VALUE], 0x7fffffffULL, op, "ucount value");
    break;
  }
  case CUB_OP_WATCH:
    if (seen[CUB_OP_WATCH]) die_op(op, NULL, 0, "watch given twice");
    p->watch_interval_us = (long long)parse_num(a[CUB_ARG_WATCH_INTERVAL_US], 10000000ULL, op, "watch interval");
    if (p->watch_interval_us < 1000) die_op(op, NULL, 0, "watch interval must be at least 1000 us");
    p->limit_cpu_us = (long long)parse_num(a[CUB_ARG_WATCH_CPU_US], 1ULL << 50, op, "cpu limit");
    p->limit_wall_us = (long long)parse_num(a[CUB_ARG_WATCH_WALL_US], 1ULL << 50, op, "wall limit");
    p->limit_memory = parse_num(a[CUB_ARG_WATCH_MEMORY_BYTES], 1ULL << 50, op, "memory limit");
    p->limit_tasks = (long long)parse_num(a[CUB_ARG_WATCH_TASKS], 1ULL << 22, op, "task limit");
    p->measure_memory = (int)parse_num(a[CUB_ARG_WATCH_MEASURE_MEMORY], 1, op, "measureMemory");
    break;
  case CUB_OP_CGROUP_INTO:
    check_path(a[CUB_ARG_CGROUP_INTO_DIR], op);
    if (p->cgroup_into) die_op(op, NULL, 0, "cgroup-into given twice");
    p->cgroup_into = a[CUB_ARG_CGROUP_INTO_DIR];
    break;
  case CUB_OP_CGROUP_EVENTS:
    check_path(a[CUB_ARG_CGROUP_EVENTS_FILE], op);
    if (p->cgroup_events) die_op(op, NULL, 0, "cgroup-events given twice");
    p->cgroup_events = a[CUB_ARG_CGROUP_EVENTS_FILE];
    break;
  case CUB_OP_CGROUP_CPU:
    check_path(a[CUB_ARG_CGROUP_CPU_USAGE_FILE], op);
    if (p->cgroup_cpu_file) die_op(op, NULL, 0, "cgroup-cpu given twice");
    p->cgroup_cpu_file = a[CUB_ARG_CGROUP_CPU_USAGE_FILE];
    break;
  case CUB_OP_CGROUP_MEMORY:
    check_path(a[CUB_ARG_CGROUP_MEMORY_CURRENT_FILE], op);
    if (p->cgroup_memory_file) die_op(op, NULL, 0, "cgroup-memory given twice");
    p->cgroup_memory_file = a[CUB_ARG_CGROUP_MEMORY_CURRENT_FILE];
    break;
  case CUB_OP_WATCH_TMPFS:
    check_path(a[CUB_ARG_WATCH_TMPFS_PATH], op);
    if (p->nwatch_tmpfs >= 16) die_op(op, NULL, 0, "at most 16 watch-tmpfs ops");
    p->watch_tmpfs[p->nwatch_tmpfs++] = a[CUB_ARG_WATCH_TMPFS_PATH];
    break;
  case CUB_OP_RLIMIT: {
    const char *res = a[CUB_ARG_RLIMIT_RESOURCE], *soft = a[CUB_ARG_RLIMIT_SOFT], *hard = a[CUB_ARG_RLIMIT_HARD];
    int found = -1;
    for (int i = 0; i < CUB_RLIMIT_COUNT; i++)
      if (strcmp(res, CUB_RLIMIT_NAMES[i]) == 0) found = i;
    if (found < 0) die_op(op, NULL, 0, "rlimit resource '%s' is unknown", res);
    for (size_t i = 0; i < p->nrlimits; i++)
      if (p->rlimits[i].resource == found) die_op(op, NULL, 0, "rlimit %s given twice", res);
    unsigned long long v[2];
    const char *given[2] = {soft, hard};
    for (int i = 0; i < 2; i++) v[i] = strcmp(given[i], "unlimited") == 0 ? ~0ULL : parse_num(given[i], ~0ULL - 1, op, "rlimit value");
    if (v[0] > v[1]) die_op(op, NULL, 0, "rlimit %s: soft %s is above hard %s", res, soft, hard);
    p->rlimits[p->nrlimits].resource = found;
    p->rlimits[p->nrlimits].soft = v[0];
    p->rlimits[p->nrlimits++].hard = v[1];
    break;
  }
  case CUB_OP_TMPFS_INODES:
    check_path(a[CUB_ARG_TMPFS_INODES_PATH], op);
    if (strcmp(a[CUB_ARG_TMPFS_INODES_PATH], "/") == 0) die_op(op, NULL, 0, "the root is no tmpfs of the first plan");
    if (parse_num(a[CUB_ARG_TMPFS_INODES_INODES], 1ULL << 30, op, "tmpfs inodes") < 16) die_op(op, NULL, 0, "tmpfs inodes must be at least 16");
    p->late_inodes = grow(p->late_inodes, &inodes_cap, p->nlate_inodes + 1, sizeof *p->late_inodes);
    p->late_inodes[p->nlate_inodes++] = *op;
    break;
  case CUB_OP_AWAIT:
    if (seen[CUB_OP_AWAIT]) die_op(op, NULL, 0, "await given twice");
    p->awaits = 1;
    break;
  case CUB_OP_END:
  case CUB_OP__COUNT:
    break;
  }
  seen[op->code]++;
}

/* Checks the header and every op of a plan in buf; `index` numbers its first op. Returns what was seen. */
static void parse_ops(struct plan *p, char *buf, size_t len, unsigned index, enum plan_part part, int *seen) {
  if (len == 0 || buf[len - 1] != '\0') die_msg("the plan must be a sequence of NUL-terminated tokens");
  /* Tokenize. */
  char *cur = buf, *endp = buf + len;
  const char *tok[3];
  for (int i = 0; i < 2; i++) {
    if (cur >= endp) die_msg("the plan is truncated before its header");
    tok[i] = cur;
    cur += strlen(cur) + 1;
  }
  if (strcmp(tok[0], CUB_PLAN_MAGIC) != 0) die_msg("the plan does not start with '" CUB_PLAN_MAGIC "'");
  char want[16];
  snprintf(want, sizeof want, "%d", CUB_PROTOCOL_VERSION);
  if (strcmp(tok[1], want) != 0)
    die_msg("plan protocol version '%s' is not supported (the helper speaks %s); rebuild with npm run build", tok[1], want);

  struct vec argv = {.items = &p->argv}, envv = {.items = &p->envp}, search = {.items = &p->search}, stack = {.items = &p->stack_args},
             api = {.items = &p->stack_api};
  unsigned first = index;
  int ended = 0;
  while (cur < endp) {
    if (ended) die_msg("the plan has tokens after 'end'");
    if (index - first >= CUB_MAX_OPS) die_msg("the plan has more than %d ops", CUB_MAX_OPS);
    const char *name = cur;
    cur += strlen(cur) + 1;
    int code = -1;
    for (int c = 0; c < CUB_OP__COUNT; c++)
      if (strcmp(name, CUB_OP_SPECS[c].name) == 0) code = c;
    struct op op = {.index = index++, .fd = -1};
    if (code < 0) die_msg("unknown plan opcode '%.200s' at op %u", name, op.index);
    op.code = (enum cub_op)code;
    for (unsigned i = 0; i < CUB_OP_SPECS[code].arity; i++) {
      if (cur >= endp) die_op(&op, NULL, 0, "'%s' needs %u arguments", name, CUB_OP_SPECS[code].arity);
      op.a[i] = cur;
      size_t len = strlen(cur);
      if (len + 1 > CUB_TOKEN_MAX_BYTES) die_op(&op, NULL, 0, "argument %u is longer than %d bytes with its NUL", i, CUB_TOKEN_MAX_BYTES);
      cur += len + 1;
    }
    if (op.code == CUB_OP_END) ended = 1, p->run_index_base = op.index;
    if (op.code == CUB_OP_ARG) vec_push(&argv, op.a[CUB_ARG_ARG_VALUE]);
    if (op.code == CUB_OP_SEARCH) vec_push(&search, op.a[CUB_ARG_SEARCH_DIR]);
    if (op.code == CUB_OP_NET_STACK_ARG) vec_push(&stack, op.a[CUB_ARG_NET_STACK_ARG_VALUE]);
    if (op.code == CUB_OP_NET_API) vec_push(&api, op.a[CUB_ARG_NET_API_REQUEST]);
    if (op.code == CUB_OP_ENV) {
      const char *kv = op.a[CUB_ARG_ENV_KEY_EQUALS_VALUE];
      if (!strchr(kv, '=') || kv[0] == '=') die_op(&op, NULL, 0, "env entry is not KEY=VALUE");
      vec_push(&envv, kv);
    }
    check_op(p, &op, seen, part);
  }
  if (!ended) die_msg("the plan has no 'end'");
}

/* What a plan needs before its payload can run (the whole plan, or the first plan and its run plan together). */
static void check_payload(struct plan *p, const int *seen) {
  if (!seen[CUB_OP_EXEC]) die_msg("the plan has no exec op");
  if (!p->argv) die_msg("the plan has no argv (at least argv[0] is required)");
  static const char *empty[1] = {NULL};
  if (!p->envp) p->envp = empty;
  if (!p->search) p->search = empty;
  if (!p->stack_args) p->stack_args = empty;
  if (!p->stack_api) p->stack_api = empty;
  /* the stack never runs without the allowlist, nor the allowlist without a stack to guard */
  if (!p->stack_program != !p->nft) die_msg("net-stack and net-rules come together (egress never runs without its allowlist)");
  if (!p->cwd) p->cwd = "/";
  if (p->notify_mode != CUB_NOTIFY_NONE && p->bpf_len == 0) die_msg("seccomp notify mode %s needs a seccomp program on fd %d", CUB_NOTIFY_MODE_NAMES[p->notify_mode], CUB_FD_BPF);
}

static void read_bpf(struct plan *p, int bpf_fd) {
  char *raw_bpf = NULL;
  p->bpf_len = read_bounded(bpf_fd, &raw_bpf, (size_t)CUB_BPF_MAX_INSNS * 8, "seccomp program");
  p->bpf = (unsigned char *)raw_bpf;
  if (p->bpf_len % 8 != 0) die_msg("the seccomp program is %zu bytes, not a multiple of 8", p->bpf_len);
}

void plan_read(struct plan *p, int plan_fd, int bpf_fd) {
  memset(p, 0, sizeof *p);
  p->len = read_bounded(plan_fd, &p->buf, CUB_PLAN_MAX_BYTES, "plan");
  ops_cap = copy_out_cap = 0;
  int seen[CUB_OP__COUNT] = {0};
  parse_ops(p, p->buf, p->len, 0, PART_FIRST, seen);
  if (seen[CUB_OP_HOLDER]) { /* holder mode: nothing of a run may come with it */
    for (int c = 0; c < CUB_OP__COUNT; c++)
      if (seen[c] && c != CUB_OP_HOLDER && c != CUB_OP_HOLDER_MAP && c != CUB_OP_ID_MAPPER && c != CUB_OP_END)
        die_msg("a holder plan cannot carry '%s'", CUB_OP_SPECS[c].name);
    if (!p->nholder_maps) die_msg("a holder plan needs its holder-map lines");
    return;
  }
  if (seen[CUB_OP_HOLDER_MAP]) die_msg("holder-map belongs to a holder plan");
  /* on a private network, the stack only publishes ports, on an interface of its own beside the network's eth0 */
  if (seen[CUB_OP_NETWORK] && p->stack_ifname && strcmp(p->stack_ifname, "eth0") == 0)
    die_msg("on a private network the net-stack interface cannot be eth0 (the network's link inside)");
  if (!seen[CUB_OP_USERNS]) die_msg("the plan has no userns op");
  if (!seen[CUB_OP_ROOT] && !p->join) die_msg("the plan has no root op");
  if (p->image && p->image_writable == p->root_ro) die_msg("an image root is read-only (root-ro) unless it is writable, never both");
  if (p->awaits) {
    for (int c = 0; c < CUB_OP__COUNT; c++)
      if (seen[c] && CUB_OP_SPECS[c].run) die_msg("a plan with await holds no '%s': it belongs to the run plan on fd %d", CUB_OP_SPECS[c].name, CUB_FD_RUN);
    return; /* the seccomp program comes with the run plan */
  }
  read_bpf(p, bpf_fd);
  check_payload(p, seen);
}

void plan_read_run(struct plan *p, int run_fd, int bpf_fd) {
  if (!p->awaits) die_msg("a run plan for a plan without await");
  size_t len = read_bounded(run_fd, &p->run_buf, CUB_PLAN_MAX_BYTES, "run plan");
  read_bpf(p, bpf_fd);
  late_cap = copy_out_cap = inodes_cap = 0;
  late_offset = 0;
  int seen[CUB_OP__COUNT] = {0};
  parse_ops(p, p->run_buf, len, p->run_index_base, PART_RUN, seen);
  check_payload(p, seen);
}
