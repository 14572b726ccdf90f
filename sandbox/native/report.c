/* The status channel: JSON lines on CUB_FD_STATUS. Every fatal path goes through die_*(). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helper.h"

static const char *current_stage = CUB_STAGE_PARENT;
static int failure_fd = -1;

void report_set_stage(const char *stage) { current_stage = stage; }
void report_set_failure_fd(int fd) { failure_fd = fd; }

long long monotonic_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

ssize_t write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, p + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)n;
  }
  return (ssize_t)done;
}

/* Escapes src as the inside of a JSON string; bytes >= 0x7f are emitted as \u00XX (latin-1). */
size_t json_escape(char *dst, size_t cap, const char *src) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (const unsigned char *s = (const unsigned char *)src; *s && o + 7 < cap; s++) {
    if (*s == '"' || *s == '\\') {
      dst[o++] = '\\';
      dst[o++] = (char)*s;
    } else if (*s < 0x20 || *s >= 0x7f) {
      dst[o++] = '\\', dst[o++] = 'u', dst[o++] = '0', dst[o++] = '0';
      dst[o++] = hex[*s >> 4], dst[o++] = hex[*s & 15];
    } else {
      dst[o++] = (char)*s;
    }
  }
  dst[o] = '\0';
  return o;
}

void report_event_raw(const char *json_line) {
  /* One write per line: lines are < PIPE_BUF so concurrent stages never interleave. */
  (void)write_all(CUB_FD_STATUS, json_line, strlen(json_line));
}

static __attribute__((noreturn)) void die_common(const struct op *op, const char *syscall_name, int err,
                                                  const char *fmt, va_list ap) {
  char msg[1024], emsg[2048], line[3800];
  vsnprintf(msg, sizeof msg, fmt, ap);
  json_escape(emsg, sizeof emsg, msg);
  int n = snprintf(line, sizeof line, "{\"ev\":\"" CUB_EV_ERROR "\",\"stage\":\"%s\"", current_stage);
  if (op)
    n += snprintf(line + n, sizeof line - (size_t)n, ",\"op\":\"%s\",\"opIndex\":%u", CUB_OP_SPECS[op->code].name,
                  op->index);
  if (syscall_name)
    n += snprintf(line + n, sizeof line - (size_t)n, ",\"syscall\":\"%s\",\"errno\":%d", syscall_name, err);
  snprintf(line + n, sizeof line - (size_t)n, ",\"msg\":\"%s\"}\n", emsg);
  report_event_raw(line);
  if (failure_fd >= 0) {
    struct init_msg m = {.kind = MSG_FAILED};
    (void)write_all(failure_fd, &m, sizeof m);
  }
  _exit(CUB_EXIT_SETUP_FAILED);
}

void die_op(const struct op *op, const char *syscall_name, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  die_common(op, syscall_name, err, fmt, ap);
}

void die_sys(const char *syscall_name, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  die_common(NULL, syscall_name, err, fmt, ap);
}

void die_msg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  die_common(NULL, NULL, 0, fmt, ap);
}
