/* Init, inside the new mount namespace: builds the fresh tmpfs root from the plan's ops and pivots into it.
 *
 * Layout while building: a small base tmpfs is mounted over /tmp and pivoted to, so the host's root sits at
 * /oldroot (bind sources are read from there) and the new root is a second tmpfs at /newroot. At the end
 * /newroot becomes the root and the base, with the host beneath it, is detached.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

#define BASE_DIR "/tmp"
#define HOST_PREFIX "/oldroot"
#define NEW_PREFIX "/newroot"

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#endif
#ifndef MOUNT_ATTR_NOEXEC
#define MOUNT_ATTR_NOEXEC 0x00000008
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
struct cub_mount_attr {
  unsigned long long attr_set, attr_clr, propagation, userns_fd;
};
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef RESOLVE_NO_MAGICLINKS
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_NO_SYMLINKS 0x04
#define RESOLVE_BENEATH 0x08
#endif
struct cub_open_how {
  unsigned long long flags, mode, resolve;
};

static int oldroot_fd = -1;

/* A root caller's image: a detached clone of the image directory, made by stage 0 before the clone (and
 * before host-ids) while it may still read root's private cache; init attaches it and layers over it. A
 * rootless caller's init reaches its own cache through the host root like a bind source. */
static int image_tree = -1;

/* Stage 0: as root, clones the image directory (reached without following any symlink) into a detached mount. */
void mount_image_open_from_parent(const struct plan *p) {
  if (!p->image || geteuid() != 0) return;
#if defined(SYS_open_tree) && defined(SYS_openat2)
  struct cub_open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
  int dir = (int)syscall(SYS_openat2, AT_FDCWD, p->image, &how, sizeof how);
  if (dir < 0) die_sys("openat2", errno, "image directory %s (symlinks are not followed)", p->image);
  image_tree = (int)syscall(SYS_open_tree, dir, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
  if (image_tree < 0) die_sys("open_tree", errno, "image directory %s (an image root needs Linux 5.11 or newer)", p->image);
  close(dir);
#else
  die_sys("open_tree", ENOSYS, "image directory %s (an image root needs Linux 5.11 or newer)", p->image);
#endif
}

static void join(char *out, const char *prefix, const char *path) {
  snprintf(out, PATH_MAX, "%s%s", prefix, path);
}

/* Creates the parents of an inside path, refusing to pass through any symlink. */
static void make_parents_under(const struct op *op, const char *prefix, const char *inside) {
  char buf[PATH_MAX];
  join(buf, prefix, inside);
  size_t base = strlen(prefix);
  for (char *s = buf + base + 1; (s = strchr(s, '/')); s++) {
    *s = '\0';
    struct stat st;
    if (lstat(buf, &st) == 0) {
      if (S_ISLNK(st.st_mode))
        die_op(op, "lstat", ELOOP, "%s passes through the symlink %s; use the real path", inside, buf + base);
      if (!S_ISDIR(st.st_mode)) die_op(op, "lstat", ENOTDIR, "%s is not a directory", buf + base);
    } else if (errno == ENOENT) {
      if (mkdir(buf, 0755) < 0) die_op(op, "mkdir", errno, "creating %s", buf + base);
    } else {
      die_op(op, "lstat", errno, "%s", buf + base);
    }
    *s = '/';
  }
  struct stat st;
  if (lstat(buf, &st) == 0 && S_ISLNK(st.st_mode))
    die_op(op, "lstat", ELOOP, "%s is a symlink; use the real path", inside);
}

static void make_parents(const struct op *op, const char *inside) { make_parents_under(op, NEW_PREFIX, inside); }

static unsigned long statvfs_to_ms(unsigned long f) {
  unsigned long ms = 0;
  if (f & ST_RDONLY) ms |= MS_RDONLY;
  if (f & ST_NOSUID) ms |= MS_NOSUID;
  if (f & ST_NODEV) ms |= MS_NODEV;
  if (f & ST_NOEXEC) ms |= MS_NOEXEC;
  if (f & ST_NOATIME) ms |= MS_NOATIME;
  if (f & ST_NODIRATIME) ms |= MS_NODIRATIME;
  if (f & ST_RELATIME) ms |= MS_RELATIME;
  return ms;
}

/* Adds restrictions to a mount and everything below it; never clears a flag the host set. */
static void restrict_mount(const struct op *op, const char *path, int rdonly, int nodev, int noexec) {
  struct cub_mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID};
  if (rdonly) attr.attr_set |= MOUNT_ATTR_RDONLY;
  if (nodev) attr.attr_set |= MOUNT_ATTR_NODEV;
  if (noexec) attr.attr_set |= MOUNT_ATTR_NOEXEC;
#ifdef SYS_mount_setattr
  if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) == 0) return;
  if (errno != ENOSYS) die_op(op, "mount_setattr", errno, "restricting %s", path);
#endif
  /* Kernels before 5.12: remount the top mount only, keeping the flags the host locked. */
  struct statvfs sv;
  if (statvfs(path, &sv) < 0) die_op(op, "statvfs", errno, "%s", path);
  unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID | statvfs_to_ms(sv.f_flag);
  if (rdonly) flags |= MS_RDONLY;
  if (nodev) flags |= MS_NODEV;
  if (noexec) flags |= MS_NOEXEC;
  if (mount(NULL, path, NULL, flags, NULL) < 0) die_op(op, "mount", errno, "remounting %s", path);
}

static void op_dir(const struct op *op) {
  char dst[PATH_MAX];
  make_parents(op, op->a[CUB_ARG_DIR_PATH]);
  join(dst, NEW_PREFIX, op->a[CUB_ARG_DIR_PATH]);
  mode_t mode = (mode_t)strtoul(op->a[CUB_ARG_DIR_MODE_OCTAL], NULL, 8);
  if (mkdir(dst, mode) < 0 && errno != EEXIST) die_op(op, "mkdir", errno, "%s", op->a[CUB_ARG_DIR_PATH]);
  if (chmod(dst, mode) < 0) die_op(op, "chmod", errno, "%s", op->a[CUB_ARG_DIR_PATH]);
}

/* Opens a bind source (or a rootless caller's image) beneath the host root without following any symlink (the supervisor refused symlinked
 * sources; this closes the race with anything swapping one in since). */
static int open_host_path(const struct op *op, const char *host_path) {
  if (oldroot_fd < 0) {
    oldroot_fd = open(HOST_PREFIX, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (oldroot_fd < 0) die_op(op, "open", errno, HOST_PREFIX);
  }
  const char *rel = host_path[1] ? host_path + 1 : ".";
#ifdef SYS_openat2
  struct cub_open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
  int fd = (int)syscall(SYS_openat2, oldroot_fd, rel, &how, sizeof how);
  if (fd >= 0) return fd;
  if (errno != ENOSYS) die_op(op, "openat2", errno, "%s (symlinks are not followed)", host_path);
#endif
  /* Kernels before 5.6: no symlink at the last component, at least. */
  fd = openat(oldroot_fd, rel, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) die_op(op, "open", errno, "%s", host_path);
  return fd;
}

/* Creates the mount point: a directory for a directory, an empty regular file for anything else. */
static void make_mount_point(const struct op *op, const char *dst, const char *inside, int is_dir) {
  make_parents(op, inside);
  if (is_dir) {
    if (mkdir(dst, 0755) < 0 && errno != EEXIST) die_op(op, "mkdir", errno, "mount point %s", inside);
    struct stat st;
    if (lstat(dst, &st) < 0 || !S_ISDIR(st.st_mode)) die_op(op, "lstat", ENOTDIR, "mount point %s is not a directory", inside);
    return;
  }
  /* O_NONBLOCK: a fifo planted at the mount point must not hang setup. */
  int fd = open(dst, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0644);
  if (fd < 0) die_op(op, "open", errno, "mount point %s", inside);
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) die_op(op, "fstat", EINVAL, "mount point %s is not a regular file", inside);
  close(fd);
}

static void op_bind(const struct op *op) {
  char dst[PATH_MAX];
  join(dst, NEW_PREFIX, op->a[CUB_ARG_BIND_PATH]);
  int src = open_host_path(op, op->a[CUB_ARG_BIND_HOST_PATH]);
  struct stat st;
  if (fstat(src, &st) < 0) die_op(op, "fstat", errno, "bind source %s", op->a[CUB_ARG_BIND_HOST_PATH]);
  make_mount_point(op, dst, op->a[CUB_ARG_BIND_PATH], S_ISDIR(st.st_mode));
  const char *access = op->a[CUB_ARG_BIND_ACCESS];
  int rdonly = strcmp(access, CUB_BIND_ACCESS_NAMES[CUB_BIND_RO]) == 0 || strcmp(access, CUB_BIND_ACCESS_NAMES[CUB_BIND_RO_NOEXEC]) == 0;
  int nodev = strcmp(access, CUB_BIND_ACCESS_NAMES[CUB_BIND_DEV]) != 0;
  int noexec = strcmp(access, CUB_BIND_ACCESS_NAMES[CUB_BIND_RO_NOEXEC]) == 0 || strcmp(access, CUB_BIND_ACCESS_NAMES[CUB_BIND_RW_NOEXEC]) == 0;
#if defined(SYS_open_tree) && defined(SYS_move_mount) && defined(SYS_mount_setattr)
  /* Clone the tree detached, restrict it, then attach it: it is never visible writable or suid. */
  int tree = (int)syscall(SYS_open_tree, src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
  if (tree >= 0) {
    struct cub_mount_attr attr = {.attr_set = MOUNT_ATTR_NOSUID | (rdonly ? MOUNT_ATTR_RDONLY : 0) | (nodev ? MOUNT_ATTR_NODEV : 0) |
                                              (noexec ? MOUNT_ATTR_NOEXEC : 0)};
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
      die_op(op, "mount_setattr", errno, "restricting %s", op->a[CUB_ARG_BIND_HOST_PATH]);
    if (syscall(SYS_move_mount, tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0)
      die_op(op, "move_mount", errno, "binding %s to %s", op->a[CUB_ARG_BIND_HOST_PATH], op->a[CUB_ARG_BIND_PATH]);
    close(tree);
    close(src);
    return;
  }
  if (errno != ENOSYS) die_op(op, "open_tree", errno, "bind source %s", op->a[CUB_ARG_BIND_HOST_PATH]);
#endif
  /* Kernels before 5.12: bind through the opened source's path, then restrict. */
  char src_path[PATH_MAX];
  join(src_path, HOST_PREFIX, op->a[CUB_ARG_BIND_HOST_PATH]);
  if (mount(src_path, dst, NULL, MS_BIND | MS_REC, NULL) < 0) die_op(op, "mount", errno, "binding %s to %s", op->a[CUB_ARG_BIND_HOST_PATH], op->a[CUB_ARG_BIND_PATH]);
  close(src);
  restrict_mount(op, dst, rdonly, nodev, noexec);
}

#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif

/* A user namespace whose single-id maps say diskUid -> uid and diskGid -> gid, for an idmapped mount: a child
 * unshares it, stage 0 (root) writes its maps and keeps a reference to it, and the child exits. */
static int idmap_userns(const struct op *op, unsigned disk_uid, unsigned disk_gid, unsigned uid, unsigned gid) {
  int ready[2], done[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) die_op(op, "pipe2", errno, "idmap namespace pipes");
  pid_t pid = fork();
  if (pid < 0) die_op(op, "fork", errno, "the idmap namespace holder");
  if (pid == 0) {
    close(ready[0]);
    close(done[1]);
    char c = unshare(CLONE_NEWUSER) == 0 ? 'u' : 'x';
    if (write(ready[1], &c, 1) != 1 || c != 'u') _exit(1);
    if (read(done[0], &c, 1) < 0) _exit(0); /* until stage 0 holds the namespace */
    _exit(0);
  }
  close(ready[1]);
  close(done[0]);
  char c = 0, path[64], map[64];
  if (read(ready[0], &c, 1) != 1 || c != 'u') die_op(op, "unshare", EPERM, "a user namespace for the idmapped mount");
  close(ready[0]);
  snprintf(map, sizeof map, "%u %u 1\n", disk_uid, uid);
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write_all(fd, map, strlen(map)) < 0) die_op(op, "write", errno, "the idmap's uid map");
  close(fd);
  snprintf(map, sizeof map, "%u %u 1\n", disk_gid, gid);
  snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
  fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write_all(fd, map, strlen(map)) < 0) die_op(op, "write", errno, "the idmap's gid map");
  close(fd);
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) die_op(op, "open", errno, "the idmap namespace");
  close(done[1]);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
  return ns;
}

void mount_prepare_idmaps(struct plan *p) {
  for (size_t i = 0; i < p->nops; i++) {
    struct op *op = &p->ops[i];
    if (op->code != CUB_OP_BIND_IDMAP) continue;
    const char *host = op->a[CUB_ARG_BIND_IDMAP_HOST_PATH];
    if (geteuid() != 0) die_op(op, NULL, 0, "an idmapped bind of %s needs the helper to start as root", host);
    int src = -1;
#ifdef SYS_openat2
    struct cub_open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    src = (int)syscall(SYS_openat2, AT_FDCWD, host, &how, sizeof how);
    if (src < 0 && errno != ENOSYS) die_op(op, "openat2", errno, "bind source %s (symlinks are not followed)", host);
#endif
    if (src < 0) src = open(host, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (src < 0) die_op(op, "open", errno, "bind source %s", host);
    int ns = idmap_userns(op, (unsigned)strtoul(op->a[CUB_ARG_BIND_IDMAP_DISK_UID], NULL, 10),
                          (unsigned)strtoul(op->a[CUB_ARG_BIND_IDMAP_DISK_GID], NULL, 10), p->outer_uid, p->outer_gid);
#if defined(SYS_open_tree) && defined(SYS_mount_setattr)
    int tree = (int)syscall(SYS_open_tree, src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (tree < 0) die_op(op, "open_tree", errno, "bind source %s", host);
    int rdonly = strcmp(op->a[CUB_ARG_BIND_IDMAP_ACCESS], CUB_BIND_ACCESS_NAMES[CUB_BIND_RO]) == 0;
    struct cub_mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (rdonly ? MOUNT_ATTR_RDONLY : 0),
                                  .userns_fd = (unsigned long long)ns};
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
      die_op(op, "mount_setattr", errno, "idmapping %s", host);
    op->fd = tree;
#else
    die_op(op, "open_tree", ENOSYS, "idmapped mounts need Linux 5.12+ headers at build time");
#endif
    close(ns);
    close(src);
  }
}

/* init: attaches the idmapped tree stage 0 prepared. */
static void op_bind_idmap(const struct op *op) {
  char dst[PATH_MAX];
  join(dst, NEW_PREFIX, op->a[CUB_ARG_BIND_IDMAP_PATH]);
  make_mount_point(op, dst, op->a[CUB_ARG_BIND_IDMAP_PATH], 1);
#ifdef SYS_move_mount
  if (syscall(SYS_move_mount, op->fd, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0)
    die_op(op, "move_mount", errno, "attaching the idmapped %s at %s", op->a[CUB_ARG_BIND_IDMAP_HOST_PATH], op->a[CUB_ARG_BIND_IDMAP_PATH]);
#endif
  close(op->fd);
}

static void op_remount_ro(const struct op *op) {
  char dst[PATH_MAX];
  join(dst, NEW_PREFIX, op->a[CUB_ARG_REMOUNT_RO_PATH]);
  struct cub_mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};
#ifdef SYS_mount_setattr
  if (syscall(SYS_mount_setattr, AT_FDCWD, dst, AT_SYMLINK_NOFOLLOW, &attr, sizeof attr) == 0) return;
  if (errno != ENOSYS) die_op(op, "mount_setattr", errno, "making %s read-only", op->a[CUB_ARG_REMOUNT_RO_PATH]);
#endif
  (void)attr;
  struct statvfs sv;
  if (statvfs(dst, &sv) < 0) die_op(op, "statvfs", errno, "%s", op->a[CUB_ARG_REMOUNT_RO_PATH]);
  if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | statvfs_to_ms(sv.f_flag), NULL) < 0)
    die_op(op, "mount", errno, "making %s read-only", op->a[CUB_ARG_REMOUNT_RO_PATH]);
}

static void op_copy(const struct op *op) {
  char src[PATH_MAX], dst[PATH_MAX];
  join(src, HOST_PREFIX, op->a[CUB_ARG_COPY_HOST_PATH]);
  join(dst, NEW_PREFIX, op->a[CUB_ARG_COPY_PATH]);
  int in = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (in < 0) die_op(op, "open", errno, "copy source %s", op->a[CUB_ARG_COPY_HOST_PATH]);
  struct stat st;
  if (fstat(in, &st) < 0) die_op(op, "fstat", errno, "copy source %s", op->a[CUB_ARG_COPY_HOST_PATH]);
  if (!S_ISREG(st.st_mode)) die_op(op, "fstat", EINVAL, "copy source %s is not a regular file", op->a[CUB_ARG_COPY_HOST_PATH]);
  make_parents(op, op->a[CUB_ARG_COPY_PATH]);
  int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)strtoul(op->a[CUB_ARG_COPY_MODE_OCTAL], NULL, 8));
  if (out < 0) die_op(op, "open", errno, "copy target %s", op->a[CUB_ARG_COPY_PATH]);
  char buf[65536];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die_op(op, "read", errno, "copy source %s", op->a[CUB_ARG_COPY_HOST_PATH]);
    if (n == 0) break;
    if (write_all(out, buf, (size_t)n) < 0) die_op(op, "write", errno, "copy target %s", op->a[CUB_ARG_COPY_PATH]);
  }
  close(in);
  close(out);
}

static void op_symlink(const struct op *op) {
  char dst[PATH_MAX];
  make_parents(op, op->a[CUB_ARG_SYMLINK_PATH]);
  join(dst, NEW_PREFIX, op->a[CUB_ARG_SYMLINK_PATH]);
  if (symlink(op->a[CUB_ARG_SYMLINK_TARGET], dst) < 0) die_op(op, "symlink", errno, "%s -> %s", op->a[CUB_ARG_SYMLINK_PATH], op->a[CUB_ARG_SYMLINK_TARGET]);
}

static void op_file(const struct op *op) {
  char dst[PATH_MAX];
  make_parents(op, op->a[CUB_ARG_FILE_PATH]);
  join(dst, NEW_PREFIX, op->a[CUB_ARG_FILE_PATH]);
  int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, (mode_t)strtoul(op->a[CUB_ARG_FILE_MODE_OCTAL], NULL, 8));
  if (fd < 0) die_op(op, "open", errno, "%s", op->a[CUB_ARG_FILE_PATH]);
  if (write_all(fd, op->a[CUB_ARG_FILE_CONTENT], strlen(op->a[CUB_ARG_FILE_CONTENT])) < 0) die_op(op, "write", errno, "%s", op->a[CUB_ARG_FILE_PATH]);
  close(fd);
}

/* A file of the caller's files option with exactly the given mode: `length` bytes of the sealed blob on
 * CUB_FD_FILES at `offset` (a cold run), or the next `length` bytes of the pipe there (a warm sandbox's run). */
static void write_file_data(const struct op *op, const char *prefix, int from_pipe) {
  char dst[PATH_MAX];
  const char *path = op->a[CUB_ARG_FILE_DATA_PATH];
  make_parents_under(op, prefix, path);
  join(dst, prefix, path);
  mode_t mode = (mode_t)strtoul(op->a[CUB_ARG_FILE_DATA_MODE_OCTAL], NULL, 8);
  unsigned long long off = strtoull(op->a[CUB_ARG_FILE_DATA_OFFSET], NULL, 10), left = strtoull(op->a[CUB_ARG_FILE_DATA_LENGTH], NULL, 10);
  int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) die_op(op, "open", errno, "%s", path);
  char buf[65536];
  while (left > 0) {
    size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
    ssize_t n = from_pipe ? read(CUB_FD_FILES, buf, want) : pread(CUB_FD_FILES, buf, want, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die_op(op, from_pipe ? "read" : "pread", n < 0 ? errno : EIO, "the content of %s (fd %d)", path, CUB_FD_FILES);
    if (write_all(fd, buf, (size_t)n) < 0) die_op(op, "write", errno, "%s", path);
    off += (unsigned long long)n;
    left -= (unsigned long long)n;
  }
  if (fchmod(fd, mode) < 0) die_op(op, "fchmod", errno, "%s", path); /* exactly this mode, whatever the umask */
  close(fd);
}

static void op_file_data(const struct op *op) { write_file_data(op, NEW_PREFIX, 0); }

void mount_tmpfs_inodes(const struct plan *p) {
  for (size_t i = 0; i < p->nlate_inodes; i++) {
    const struct op *op = &p->late_inodes[i];
    const char *path = op->a[CUB_ARG_TMPFS_INODES_PATH];
    struct statfs sf;
    if (statfs(path, &sf) < 0) die_op(op, "statfs", errno, "%s", path);
    if (sf.f_type != TMPFS_MAGIC) die_op(op, "statfs", EINVAL, "%s is not a tmpfs of the first plan", path);
    char data[48];
    snprintf(data, sizeof data, "nr_inodes=%s", op->a[CUB_ARG_TMPFS_INODES_INODES]);
    /* the flags it was mounted with (op_tmpfs): a remount keeps exactly those, and only the inode cap changes */
    if (mount(NULL, path, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, data) < 0) die_op(op, "mount", errno, "remounting %s with %s", path, data);
  }
}

void mount_files_from_pipe(const struct plan *p) {
  /* In the entered root: nothing has run inside yet, so every path is as the first plan made it. */
  for (size_t i = 0; i < p->nlate_files; i++) write_file_data(&p->late_files[i], "", 1);
  char extra;
  ssize_t n;
  while ((n = read(CUB_FD_FILES, &extra, 1)) < 0 && errno == EINTR) {}
  if (n != 0) die_sys("read", n < 0 ? errno : EPROTO, "the files stream on fd %d holds more than the run plan's files", CUB_FD_FILES);
  close(CUB_FD_FILES);
}

static void op_tmpfs(const struct op *op) {
  char dst[PATH_MAX], data[96];
  make_parents(op, op->a[CUB_ARG_TMPFS_PATH]);
  join(dst, NEW_PREFIX, op->a[CUB_ARG_TMPFS_PATH]);
  if (mkdir(dst, 0755) < 0 && errno != EEXIST) die_op(op, "mkdir", errno, "%s", op->a[CUB_ARG_TMPFS_PATH]);
  snprintf(data, sizeof data, "size=%s,mode=%s,nr_inodes=%s", op->a[CUB_ARG_TMPFS_SIZE_BYTES], op->a[CUB_ARG_TMPFS_MODE_OCTAL],
           op->a[CUB_ARG_TMPFS_INODES]);
  if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, data) < 0) die_op(op, "mount", errno, "tmpfs on %s", op->a[CUB_ARG_TMPFS_PATH]);
}

static void op_proc(const struct op *op) {
  char dst[PATH_MAX];
  make_parents(op, op->a[CUB_ARG_PROC_PATH]);
  join(dst, NEW_PREFIX, op->a[CUB_ARG_PROC_PATH]);
  if (mkdir(dst, 0555) < 0 && errno != EEXIST) die_op(op, "mkdir", errno, "%s", op->a[CUB_ARG_PROC_PATH]);
  if (mount("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    die_op(op, "mount", errno, "proc on %s", op->a[CUB_ARG_PROC_PATH]);
}

/* A devpts of the sandbox's own: its ptys are numbered and listed apart from the host's, and anyone inside may
 * open its ptmx. New ptys belong to the sandbox's user and group, readable by nobody else. */
static void op_devpts(const struct plan *p, const struct op *op) {
  char dst[PATH_MAX], data[96];
  make_parents(op, op->a[CUB_ARG_DEVPTS_PATH]);
  join(dst, NEW_PREFIX, op->a[CUB_ARG_DEVPTS_PATH]);
  if (mkdir(dst, 0755) < 0 && errno != EEXIST) die_op(op, "mkdir", errno, "%s", op->a[CUB_ARG_DEVPTS_PATH]);
  snprintf(data, sizeof data, "newinstance,ptmxmode=0666,mode=0620,gid=%u", (unsigned)p->inner_gid);
  if (mount("devpts", dst, "devpts", MS_NOSUID | MS_NOEXEC, data) < 0)
    die_op(op, "mount", errno, "devpts on %s (%s)", op->a[CUB_ARG_DEVPTS_PATH], data);
}

static void enter_base(void) {
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die_sys("mount", errno, "making / private");
  if (mount("tmpfs", BASE_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "size=65536,mode=0700") < 0)
    die_sys("mount", errno, "tmpfs on " BASE_DIR " (the build area)");
  if (chdir(BASE_DIR) < 0) die_sys("chdir", errno, BASE_DIR);
  if (mkdir("newroot", 0755) < 0 || mkdir("oldroot", 0755) < 0) die_sys("mkdir", errno, "build area directories");
  if (syscall(SYS_pivot_root, ".", "oldroot") < 0) die_sys("pivot_root", errno, "entering the build area");
  if (chdir("/") < 0) die_sys("chdir", errno, "/");
}

static void enter_newroot(const struct plan *p) {
  if (chdir(NEW_PREFIX) < 0) die_sys("chdir", errno, NEW_PREFIX);
  /* pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then drops it and,
   * with it, every path to the host. */
  if (syscall(SYS_pivot_root, ".", ".") < 0) die_sys("pivot_root", errno, "entering the new root");
  if (umount2(".", MNT_DETACH) < 0) die_sys("umount2", errno, "detaching the old root");
  if (chdir("/") < 0) die_sys("chdir", errno, "/");
  if (p->root_ro && mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
    die_sys("mount", errno, "remounting the root read-only");
}

/* An image root, the first filesystem op: the root tmpfs holds the overlay's upper and work directories, the
 * image is its lower layer (named relative to the current directory, so no option needs escaping). */
static void op_image(const struct plan *p, const struct op *op) {
  const char *image = op->a[CUB_ARG_IMAGE_HOST_PATH];
  if (mkdir("/layers", 0700) < 0) die_op(op, "mkdir", errno, "/layers");
  char data[64];
  snprintf(data, sizeof data, "size=%llu,mode=0755", p->root_size);
  if (mount("tmpfs", "/layers", "tmpfs", MS_NOSUID | MS_NODEV, data) < 0) die_op(op, "mount", errno, "the root tmpfs (the overlay's upper)");
  if (mkdir("/layers/upper", 0755) < 0 || mkdir("/layers/work", 0700) < 0 || mkdir("/layers/lower", 0755) < 0)
    die_op(op, "mkdir", errno, "the overlay's directories");
  if (image_tree >= 0) {
#ifdef SYS_move_mount
    if (syscall(SYS_move_mount, image_tree, "", AT_FDCWD, "/layers/lower", MOVE_MOUNT_F_EMPTY_PATH) < 0)
#endif
      die_op(op, "move_mount", errno, "attaching the image %s", image);
    close(image_tree);
    image_tree = -1;
    if (chdir("/layers/lower") < 0) die_op(op, "chdir", errno, "the image %s", image);
  } else {
    int dir = open_host_path(op, image);
    if (fchdir(dir) < 0) die_op(op, "fchdir", errno, "the image %s", image);
    close(dir);
  }
  static const char *const opts[] = {"lowerdir=.,upperdir=/layers/upper,workdir=/layers/work,userxattr",
                                     "lowerdir=.,upperdir=/layers/upper,workdir=/layers/work"};
  int err = 0;
  for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
    if (mount("overlay", NEW_PREFIX, "overlay", MS_NOSUID | MS_NODEV, opts[i]) == 0) {
      err = 0;
      break;
    }
    if (!err) err = errno; /* the first try's reason */
  }
  if (err)
    die_op(op, "mount", err,
           "an overlay on the image %s (an image root needs overlayfs inside a user namespace: Linux 5.11 or newer "
           "with the overlay module loaded)",
           image);
  if (chdir("/") < 0) die_op(op, "chdir", errno, "/");
}

void mount_build_root(const struct plan *p) {
  char data[64];
  enter_base();
  if (mkdir(NEW_PREFIX, 0755) < 0 && errno != EEXIST) die_sys("mkdir", errno, NEW_PREFIX);
  snprintf(data, sizeof data, "size=%llu,mode=0755", p->root_size);
  if (!p->image && mount("tmpfs", NEW_PREFIX, "tmpfs", MS_NOSUID | MS_NODEV, data) < 0) die_sys("mount", errno, "the root tmpfs");
  for (size_t i = 0; i < p->nops; i++) {
    const struct op *op = &p->ops[i];
    switch (op->code) {
    case CUB_OP_DIR: op_dir(op); break;
    case CUB_OP_BIND: op_bind(op); break;
    case CUB_OP_COPY: op_copy(op); break;
    case CUB_OP_SYMLINK: op_symlink(op); break;
    case CUB_OP_FILE: op_file(op); break;
    case CUB_OP_FILE_DATA: op_file_data(op); break;
    case CUB_OP_BIND_IDMAP: op_bind_idmap(op); break;
    case CUB_OP_TMPFS: op_tmpfs(op); break;
    case CUB_OP_PROC: op_proc(op); break;
    case CUB_OP_DEVPTS: op_devpts(p, op); break;
    case CUB_OP_REMOUNT_RO: op_remount_ro(op); break;
    case CUB_OP_IMAGE: op_image(p, op); break;
    default: die_op(op, NULL, 0, "not a filesystem op");
    }
  }
  if (oldroot_fd >= 0) close(oldroot_fd);
  oldroot_fd = -1;
  enter_newroot(p);
}

/* After init has written the sandbox's sysctls: /proc/sys is bound over itself read-only, so the payload
 * (even as uid 0 inside, which owns the IPC namespace's files) cannot raise a limit init set. */
void mount_proc_sys_readonly(void) {
  if (access("/proc/sys", F_OK) < 0) return; /* no /proc inside */
  if (mount("/proc/sys", "/proc/sys", NULL, MS_BIND | MS_REC, NULL) < 0) die_sys("mount", errno, "binding /proc/sys");
  if (mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    die_sys("mount", errno, "making /proc/sys read-only");
}
