/* Stage 0, host side: gives the child its single-id uid/gid maps. Either stage 0 writes them itself (the
 * caller's own ids, or root's leased ids; setgroups denied first), or, for a rootless caller's subordinate ids,
 * the setuid tools newuidmap/newgidmap write them: the kernel lets only them map ids the caller does not hold. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

static void write_proc_file(pid_t child, const char *name, const char *content) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", (int)child, name);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die_sys("open", errno, "opening %s", path);
  if (write_all(fd, content, strlen(content)) < 0) {
    int err = errno;
    close(fd);
    die_sys("write", err, "writing '%s' to %s", content, path);
  }
  close(fd);
}

/* Runs `tool PID INNER OUTER 1` with an empty environment, /dev/null as stdin/stdout and nothing else open but
 * a pipe for its complaint, which becomes part of the setup failure. */
static void run_mapper(const char *tool, pid_t child, unsigned inner, unsigned outer) {
  char pid_s[16], inner_s[16], outer_s[16], why[512];
  snprintf(pid_s, sizeof pid_s, "%d", (int)child);
  snprintf(inner_s, sizeof inner_s, "%u", inner);
  snprintf(outer_s, sizeof outer_s, "%u", outer);
  int err_pipe[2];
  if (pipe2(err_pipe, O_CLOEXEC) < 0) die_sys("pipe2", errno, "a pipe for %s", tool);
  pid_t pid = fork();
  if (pid < 0) die_sys("fork", errno, "starting %s", tool);
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(err_pipe[1], 2) < 0) _exit(126);
    /* none of the helper's own fds (plan, status, control, the payload's stdio) reach a setuid program */
    if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
      for (int fd = 3; fd < 1024; fd++) close(fd);
    char *argv[] = {(char *)tool, pid_s, inner_s, outer_s, (char *)"1", NULL};
    char *envp[] = {NULL};
    execve(tool, argv, envp);
    dprintf(2, "execve: %s", strerror(errno));
    _exit(127);
  }
  close(err_pipe[1]);
  size_t n = 0;
  for (;;) {
    ssize_t r = read(err_pipe[0], why + n, sizeof why - 1 - n);
    if (r > 0 && (n += (size_t)r) < sizeof why - 1) continue;
    if (r < 0 && errno == EINTR) continue;
    break;
  }
  close(err_pipe[0]);
  why[n] = 0;
  while (n && (why[n - 1] == '\n' || why[n - 1] == ' ')) why[--n] = 0;
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) die_sys("waitpid", errno, "waiting for %s", tool);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    die_msg("%s %s %s %s 1 failed (%s %d)%s%s", tool, pid_s, inner_s, outer_s, WIFEXITED(st) ? "exit" : "signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), n ? ": " : "", why);
}

void userns_write_maps_from_parent(const struct plan *p, pid_t child) {
  char map[96];
  report_set_stage(CUB_STAGE_USERNS);
  if (p->newuidmap) {
    run_mapper(p->newuidmap, child, p->inner_uid, p->outer_uid);
    run_mapper(p->newgidmap, child, p->inner_gid, p->outer_gid);
    report_set_stage(CUB_STAGE_PARENT);
    return;
  }
  write_proc_file(child, "setgroups", "deny");
  snprintf(map, sizeof map, "%u %u 1\n", (unsigned)p->inner_uid, (unsigned)p->outer_uid);
  write_proc_file(child, "uid_map", map);
  snprintf(map, sizeof map, "%u %u 1\n", (unsigned)p->inner_gid, (unsigned)p->outer_gid);
  write_proc_file(child, "gid_map", map);
  report_set_stage(CUB_STAGE_PARENT);
}
