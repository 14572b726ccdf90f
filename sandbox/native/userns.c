/* Stage 0, host side: gives the child its single-id uid/gid maps (setgroups denied first). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
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

void userns_write_maps_from_parent(const struct plan *p, pid_t child) {
  char map[96];
  report_set_stage(CUB_STAGE_USERNS);
  write_proc_file(child, "setgroups", "deny");
  snprintf(map, sizeof map, "%u %u 1\n", (unsigned)p->inner_uid, (unsigned)p->outer_uid);
  write_proc_file(child, "uid_map", map);
  snprintf(map, sizeof map, "%u %u 1\n", (unsigned)p->inner_gid, (unsigned)p->outer_gid);
  write_proc_file(child, "gid_map", map);
  report_set_stage(CUB_STAGE_PARENT);
}
