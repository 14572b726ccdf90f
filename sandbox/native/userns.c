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
static void run_mapper_ranges(const char *tool, pid_t child, const char *const *ranges) {
  char pid_s[16], why[512], shown[256];
  snprintf(pid_s, sizeof pid_s, "%d", (int)child);
  size_t nr = 0;
  while (ranges[nr]) nr++;
  if (nr > 24) die_msg("internal: too many id ranges for %s", tool);
  size_t at = 0;
  shown[0] = 0;
  for (size_t i = 0; i < nr && at < sizeof shown - 1; i++)
    at += (size_t)snprintf(shown + at, sizeof shown - at, " %s", ranges[i]);
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
    char *argv[32] = {(char *)tool, pid_s};
    for (size_t i = 0; i < nr; i++) argv[2 + i] = (char *)ranges[i];
    argv[2 + nr] = NULL;
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
    die_msg("%s %s%s failed (%s %d)%s%s", tool, pid_s, shown, WIFEXITED(st) ? "exit" : "signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), n ? ": " : "", why);
}

static void run_mapper(const char *tool, pid_t child, unsigned inner, unsigned outer) {
  char inner_s[16], outer_s[16];
  snprintf(inner_s, sizeof inner_s, "%u", inner);
  snprintf(outer_s, sizeof outer_s, "%u", outer);
  const char *ranges[] = {inner_s, outer_s, "1", NULL};
  run_mapper_ranges(tool, child, ranges);
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

/* A network holder's maps: its lines of each kind in one write (or one newuidmap/newgidmap call). */
void userns_write_holder_maps_from_parent(const struct plan *p, pid_t child) {
  for (int gid = 0; gid <= 1; gid++) {
    char text[512], nums[8][3][24];
    const char *ranges[25];
    size_t at = 0, nr = 0, k = 0;
    text[0] = 0;
    for (size_t i = 0; i < p->nholder_maps; i++) {
      if (p->holder_maps[i].gid != gid) continue;
      at += (size_t)snprintf(text + at, sizeof text - at, "%llu %llu %llu\n", p->holder_maps[i].inner, p->holder_maps[i].outer,
                             p->holder_maps[i].count);
      snprintf(nums[k][0], sizeof nums[k][0], "%llu", p->holder_maps[i].inner);
      snprintf(nums[k][1], sizeof nums[k][1], "%llu", p->holder_maps[i].outer);
      snprintf(nums[k][2], sizeof nums[k][2], "%llu", p->holder_maps[i].count);
      for (int j = 0; j < 3; j++) ranges[nr++] = nums[k][j];
      k++;
    }
    ranges[nr] = NULL;
    if (!k) die_msg("the holder plan has no %s map line", gid ? "gid" : "uid");
    if (p->newuidmap) run_mapper_ranges(gid ? p->newgidmap : p->newuidmap, child, ranges);
    else {
      /* a rootless owner maps only itself, and then may not keep setgroups */
      if (gid && geteuid() != 0) write_proc_file(child, "setgroups", "deny");
      write_proc_file(child, gid ? "gid_map" : "uid_map", text);
    }
  }
}
