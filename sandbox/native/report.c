/* Fatal errors: every one goes through die_*(), which writes the structured error event (its emitter is
 * generated from the protocol declaration) and exits. */
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

static __attribute__((noreturn)) void die_common(const struct op *op, const char *syscall_name, int err,
                                                  const char *fmt, va_list ap) {
  char msg[1025]; /* the event carries at most 1024 bytes of it */
  vsnprintf(msg, sizeof msg, fmt, ap);
  struct cub_ev_error ev = {.stage = current_stage, .msg = msg};
  if (op) {
    ev.has_op = 1, ev.op = CUB_OP_SPECS[op->code].name;
    ev.has_op_index = 1, ev.op_index = op->index;
  }
  if (syscall_name) {
    ev.has_syscall = 1, ev.syscall = syscall_name;
    ev.has_errno_ = 1, ev.errno_ = err;
  }
  cub_emit_error(&ev);
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
