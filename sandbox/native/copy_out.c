/* init, once everything inside has ended: the files the caller asked for (copyOut) go to the supervisor on
 * CUB_FD_COPY_OUT. Everything there is the payload's: a file is sent only if it is a regular file, reached
 * without a symlink (O_NOFOLLOW on a flat name in the work directory, a mount the payload cannot move), with no
 * other hard link, within its size caps; anything else is named with why. Nothing inside runs any more, so
 * nothing can change a file between its check and its read. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helper.h"

static enum cub_copy_out_status status_of_open_error(int err) {
  switch (err) {
  case ENOENT:
  case ENOTDIR: return CUB_COPY_OUT_MISSING;
  case ELOOP: return CUB_COPY_OUT_SYMLINK;
  case ENXIO: /* a socket */
  case ENODEV: return CUB_COPY_OUT_NOT_REGULAR;
  default: return CUB_COPY_OUT_UNREADABLE;
  }
}

/* Sends exactly `size` bytes of fd (zeros past an early end, so the framing holds); -1 when the reader is gone. */
static int send_content(int fd, unsigned long long size) {
  char buf[65536];
  while (size > 0) {
    size_t want = size < sizeof buf ? (size_t)size : sizeof buf;
    ssize_t n = read(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      memset(buf, 0, want);
      n = (ssize_t)want;
    }
    if (write_all(CUB_FD_COPY_OUT, buf, (size_t)n) < 0) return -1;
    size -= (unsigned long long)n;
  }
  return 0;
}

void copy_out_send(const struct plan *p) {
  if (!p->ncopy_out) return;
  signal(SIGPIPE, SIG_IGN); /* a supervisor that stopped reading gets nothing more; init still reports */
  unsigned long long total = 0;
  for (size_t i = 0; i < p->ncopy_out; i++) {
    const struct op *op = &p->copy_out[i];
    unsigned long long max = strtoull(op->a[CUB_ARG_COPY_OUT_MAX_BYTES], NULL, 10);
    unsigned long long cap = strtoull(op->a[CUB_ARG_COPY_OUT_TOTAL_BYTES], NULL, 10);
    enum cub_copy_out_status status = CUB_COPY_OUT_OK;
    struct stat st;
    int fd = open(op->a[CUB_ARG_COPY_OUT_PATH], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) status = status_of_open_error(errno);
    else if (fstat(fd, &st) < 0) status = CUB_COPY_OUT_UNREADABLE;
    else if (S_ISDIR(st.st_mode)) status = CUB_COPY_OUT_DIRECTORY;
    else if (!S_ISREG(st.st_mode)) status = CUB_COPY_OUT_NOT_REGULAR;
    else if (st.st_nlink != 1) status = CUB_COPY_OUT_HARDLINK;
    else if ((unsigned long long)st.st_size > max || total + (unsigned long long)st.st_size > cap) status = CUB_COPY_OUT_TOO_LARGE;
    unsigned long long size = status == CUB_COPY_OUT_OK ? (unsigned long long)st.st_size : 0;
    char head[64];
    int len = snprintf(head, sizeof head, "%u %s %llu\n", op->index, CUB_COPY_OUT_STATUS_NAMES[status], size);
    int gone = write_all(CUB_FD_COPY_OUT, head, (size_t)len) < 0 || (size && send_content(fd, size) < 0);
    if (fd >= 0) close(fd);
    if (gone) break;
    total += size;
  }
  close(CUB_FD_COPY_OUT);
}
