/* A terminal inside the sandbox. Init opens a pty on the sandbox's own devpts instance, gives its slave to the
 * payload as stdio (the payload stage then makes it its controlling terminal), and relays the master: what the
 * helper's stdin brings is typed into the terminal, what the terminal shows goes to the helper's stdout. Init
 * never blocks on either side: every fd of the relay is non-blocking and each direction holds one buffer. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "helper.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

static struct {
  int master, in, out;
  unsigned char in_buf[4096]; /* typed, not yet written to the master */
  size_t in_len, in_off;
  unsigned char out_buf[65536]; /* shown, not yet written to stdout */
  size_t out_len, out_off;
  int in_done;     /* stdin ended (or failed): nothing more is typed but the end-of-file character */
  int eof_typed;   /* how often it was typed: once per mode (canonical or not) the terminal was quiet in */
  int eof_mode;    /* ICANON when it was last typed; -1 before */
  int quiet_mode;  /* ICANON while nothing typed was waiting to be read; -1 while something was */
  long long quiet_since;
  int master_hup;  /* no slave is open: nothing can be typed any more */
  int master_done; /* the master read EIO: everything shown has been read */
  int out_broken;  /* stdout refuses writes: what is shown is read and dropped */
} t = {.master = -1, .in = -1, .out = -1, .eof_mode = -1, .quiet_mode = -1};

/* How long the payload must have left the input queue empty, in one mode, before the end-of-file character is
 * typed: a line editor reads a line in raw mode, runs it in canonical mode, and goes back to raw for the next. */
#define EOF_QUIET_US 100000
#define EOF_CHECK_MS 50
#define EOF_MAX_TYPED 2

static void set_nonblocking(int fd, const char *what) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die_sys("fcntl", errno, "O_NONBLOCK on %s", what);
}

static void set_window(unsigned columns, unsigned rows) {
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)columns};
  if (ioctl(t.master, TIOCSWINSZ, &ws) < 0) die_sys("ioctl", errno, "TIOCSWINSZ: the terminal's window size");
}

void tty_open_from_init(const struct plan *p) {
  if (!p->tty_ptmx) return;
  t.master = open(p->tty_ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (t.master < 0) die_sys("open", errno, "%s (the sandbox's own pty multiplexer)", p->tty_ptmx);
  int unlock = 0;
  if (ioctl(t.master, TIOCSPTLCK, &unlock) < 0) die_sys("ioctl", errno, "TIOCSPTLCK: unlocking the terminal");
  set_window(p->tty_columns, p->tty_rows);
  /* Terminals today speak UTF-8: let the line editor erase whole characters. */
  struct termios tio;
  if (tcgetattr(t.master, &tio) == 0) {
    tio.c_iflag |= IUTF8;
    tcsetattr(t.master, TCSANOW, &tio);
  }
  /* The slave from the master itself, not by a path. */
  int slave = ioctl(t.master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) die_sys("ioctl", errno, "TIOCGPTPEER: opening the terminal's slave (Linux 4.13 or newer)");
  /* The pipes to the supervisor move out of the way; 0-2 become the slave. The payload stage shares this fd
   * table until its execve, so the slave is its stdio without any dup2 of its own. */
  t.in = fcntl(0, F_DUPFD_CLOEXEC, 3);
  t.out = fcntl(1, F_DUPFD_CLOEXEC, 3);
  if (t.in < 0 || t.out < 0) die_sys("fcntl", errno, "F_DUPFD_CLOEXEC: keeping the stdio pipes for the relay");
  set_nonblocking(t.in, "the relay's stdin");
  set_nonblocking(t.out, "the relay's stdout");
  for (int fd = 0; fd < 3; fd++)
    if (dup2(slave, fd) < 0) die_sys("dup2", errno, "the terminal as fd %d", fd);
  close(slave);
  signal(SIGPIPE, SIG_IGN); /* a supervisor gone shows as EPIPE (the payload stage resets every signal) */
}

void tty_take_control_from_exec(const struct plan *p) {
  if (!p->tty_ptmx) return;
  /* After setsid: the payload leads a session whose controlling terminal is the pty, in its foreground group. */
  if (ioctl(0, TIOCSCTTY, 0) < 0) die_sys("ioctl", errno, "TIOCSCTTY: the terminal as the payload's controlling terminal");
}

void tty_resize_from_init(unsigned columns, unsigned rows) {
  if (t.master < 0) return;
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)columns};
  ioctl(t.master, TIOCSWINSZ, &ws); /* the kernel signals SIGWINCH to the foreground group */
}

/* Bytes typed and not yet read by the payload, through a slave of init's own for the moment of asking. */
static int typed_unread(void) {
  int slave = ioctl(t.master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) return -1;
  int n = 0;
  if (ioctl(slave, FIONREAD, &n) < 0) n = -1;
  close(slave);
  return n;
}

/* Stdin has ended: the terminal's end-of-file character is typed as someone pressing it would, once the payload
 * has read all that came before and the terminal has stayed in one mode for a moment. A canonical reader (cat)
 * takes it as the end of its input; a line editor (python3, bash) reads it in raw mode as "exit" — typed while it
 * is between lines (canonical) it is read as NUL, so it is typed again when the mode changes (at most twice). */
static void type_eof_when_quiet(void) {
  struct termios tio;
  if (!t.in_done || t.master_hup || t.in_len || t.eof_typed >= EOF_MAX_TYPED || tcgetattr(t.master, &tio) < 0) return;
  if (tio.c_cc[VEOF] == _POSIX_VDISABLE) {
    t.eof_typed = EOF_MAX_TYPED;
    return;
  }
  int mode = (tio.c_lflag & ICANON) != 0;
  long long now = monotonic_us();
  if (typed_unread() != 0) {
    t.quiet_mode = -1;
    return;
  }
  if (mode != t.quiet_mode) {
    t.quiet_mode = mode, t.quiet_since = now;
    return;
  }
  if (mode == t.eof_mode || now - t.quiet_since < EOF_QUIET_US) return;
  t.in_buf[0] = tio.c_cc[VEOF];
  t.in_len = 1, t.in_off = 0;
  t.eof_mode = mode, t.eof_typed++;
  t.quiet_mode = -1;
}

int tty_relay_timeout_ms(void) {
  return t.master >= 0 && t.in_done && !t.master_hup && t.eof_typed < EOF_MAX_TYPED ? EOF_CHECK_MS : -1;
}

void tty_relay_events(struct pollfd *pfd) {
  int typing = !t.master_hup && t.in_len > 0;
  int showing = !t.master_done && t.out_len == 0;
  pfd[0] = (struct pollfd){.fd = t.master >= 0 && !t.in_done && !t.master_hup && t.in_len == 0 ? t.in : -1, .events = POLLIN};
  pfd[1] = (struct pollfd){.fd = t.master >= 0 && (typing || showing) ? t.master : -1,
                           .events = (short)((showing ? POLLIN : 0) | (typing ? POLLOUT : 0))};
  pfd[2] = (struct pollfd){.fd = t.master >= 0 && t.out_len > 0 ? t.out : -1, .events = POLLOUT};
}

static void read_stdin(void) {
  ssize_t n = read(t.in, t.in_buf, sizeof t.in_buf);
  if (n > 0) {
    t.in_len = (size_t)n, t.in_off = 0;
  } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    t.in_done = 1;
  }
}

static void write_master(void) {
  ssize_t n = write(t.master, t.in_buf + t.in_off, t.in_len - t.in_off);
  if (n > 0) {
    t.in_off += (size_t)n;
    if (t.in_off == t.in_len) t.in_len = t.in_off = 0;
  } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
    t.master_hup = 1;
    t.in_len = t.in_off = 0;
  }
}

static void read_master(void) {
  ssize_t n = read(t.master, t.out_buf, sizeof t.out_buf);
  if (n > 0) {
    t.out_len = t.out_broken ? 0 : (size_t)n, t.out_off = 0;
  } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    t.master_done = 1; /* EIO: no slave is open and nothing is left to read */
  }
}

static void write_stdout(void) {
  ssize_t n = write(t.out, t.out_buf + t.out_off, t.out_len - t.out_off);
  if (n > 0) {
    t.out_off += (size_t)n;
    if (t.out_off == t.out_len) t.out_len = t.out_off = 0;
  } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
    t.out_broken = 1;
    t.out_len = t.out_off = 0;
  }
}

void tty_relay_handle(const struct pollfd *pfd) {
  if (pfd[0].fd >= 0 && pfd[0].revents) read_stdin();
  if (pfd[1].fd >= 0 && pfd[1].revents) {
    if ((pfd[1].revents & POLLOUT) && t.in_len > 0) write_master();
    if ((pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) && t.out_len == 0 && !t.master_done) read_master();
    if (pfd[1].revents & (POLLHUP | POLLERR)) { /* no slave open: whatever was typed has no reader */
      t.master_hup = 1;
      t.in_len = t.in_off = 0;
    }
  }
  if (pfd[2].fd >= 0 && pfd[2].revents && t.out_len > 0) write_stdout();
  if (t.master >= 0) type_eof_when_quiet();
}

int tty_relay_drained(void) { return t.master < 0 || (t.master_done && t.out_len == 0); }
