/*
 * loadgen — an open-loop, fixed-rate HTTP/1.1 load generator for the benchmarks (keep-alive, loopback).
 *
 *   loadgen HOST PORT PATH RATE CONNECTIONS SECONDS LOGFILE [HEADER ...]
 *
 * Each connection has an absolute schedule: its k-th request is due at t0 + offset + k·period, where
 * period = CONNECTIONS / RATE and the offsets spread the connections evenly over one period. A request
 * goes when it is due and its connection is free (no pipelining); one that is late goes as soon as the
 * connection is free, and the schedule never moves. That is the difference from a generator whose timers
 * restart from "now" when they fire late (libev's repeat timers, which h2load's --rps uses): there, one
 * stall of the load generator's CPU leaves every client's timer at the same instant, and from then on the
 * "fixed rate" arrives as one burst per period.
 *
 * The log has a line per request: send time (µs since the epoch), status (0 for a failed request),
 * latency from the send to the end of the response (µs), and latency from the time the request was due
 * (µs; wrk2's coordinated-omission-corrected figure). stdout gets one summary line.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384

enum { HEAD, BODY_LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, UNTIL_CLOSE };

typedef struct {
  int fd;
  int connected;
  int busy;           /* a request is in flight */
  size_t written;     /* bytes of the request written */
  int64_t due;        /* ns (monotonic) of the next request */
  int64_t sent;       /* ns (monotonic) of the request in flight */
  int64_t intended;   /* ns (monotonic) it was due */
  int64_t sent_wall;  /* µs since the epoch */
  char head[BUF];
  size_t head_len;
  int state;
  int status;
  int close_after;
  int64_t left;       /* body or chunk bytes still to read */
  int64_t retry_at;   /* ns (monotonic) when a connection that could not connect tries again; 0: none */
  char line[64];
  size_t line_len;
} conn_t;

typedef struct {
  int64_t sent_wall;
  int32_t status;
  int32_t service_us;
  int32_t corrected_us;
} entry_t;

static struct sockaddr_in addr;
static char *request;
static size_t request_len;
static int64_t period_ns;
static int epfd;
static entry_t *entries;
static size_t n_entries, cap_entries;
static long long succeeded, failed, errored, reconnects;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static int64_t wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static entry_t *next_entry(void) {
  if (n_entries == cap_entries) {
    cap_entries = cap_entries ? cap_entries * 2 : 65536;
    entries = realloc(entries, cap_entries * sizeof *entries);
    if (!entries) {
      perror("realloc");
      exit(2);
    }
  }
  return &entries[n_entries++];
}

static void record(conn_t *c, int status) {
  int64_t t = now_ns();
  entry_t *e = next_entry();
  e->sent_wall = c->sent_wall;
  e->status = status;
  e->service_us = (int32_t)((t - c->sent) / 1000);
  e->corrected_us = (int32_t)((t - c->intended) / 1000);
  if (status >= 200 && status < 400) succeeded++;
  else if (status > 0) failed++;
  else errored++;
}

static void open_conn(conn_t *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    perror("socket");
    exit(2);
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->connected = 0;
  c->busy = 0;
  int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
  if (r < 0 && errno != EINPROGRESS) {
    perror("connect");
    exit(2);
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void close_conn(conn_t *c) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
}

/* The connection failed or was closed: a request in flight failed; a new connection takes its place. */
static void reset_conn(conn_t *c, int in_flight_ok) {
  if (c->busy && !in_flight_ok) record(c, 0);
  close_conn(c);
  reconnects++;
  open_conn(c);
}

/* A connection that could not be made: tried again in 10 ms (its due requests wait, then go late). */
static void connect_failed(conn_t *c) {
  close_conn(c);
  c->connected = 0;
  c->retry_at = now_ns() + 10000000LL;
}

static void want_write(conn_t *c, int on) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void flush_request(conn_t *c) {
  while (c->written < request_len) {
    ssize_t n = write(c->fd, request + c->written, request_len - c->written);
    if (n < 0) {
      if (errno == EAGAIN) {
        want_write(c, 1);
        return;
      }
      reset_conn(c, 0);
      return;
    }
    c->written += (size_t)n;
  }
  want_write(c, 0);
}

static void send_request(conn_t *c, int64_t t) {
  c->busy = 1;
  c->sent = t;
  c->intended = c->due;
  c->sent_wall = wall_us();
  c->due += period_ns;
  c->written = 0;
  c->head_len = 0;
  c->state = HEAD;
  c->status = 0;
  c->close_after = 0;
  c->line_len = 0;
  flush_request(c);
}

/* The head is complete (head[0..len) ends with CRLFCRLF): status, framing, Connection: close. */
static void parse_head(conn_t *c) {
  c->head[c->head_len] = 0;
  c->status = 0;
  if (strncmp(c->head, "HTTP/1.", 7) == 0 && c->head_len > 12) c->status = atoi(c->head + 9);
  int64_t length = -1;
  int chunked = 0;
  for (char *p = strstr(c->head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
    char *h = p + 2;
    if (strncasecmp(h, "content-length:", 15) == 0) length = atoll(h + 15);
    else if (strncasecmp(h, "transfer-encoding:", 18) == 0 && strcasestr(h, "chunked")) chunked = 1;
    else if (strncasecmp(h, "connection:", 11) == 0 && strcasestr(h, "close")) c->close_after = 1;
  }
  if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) c->state = -1;
  else if (chunked) c->state = CHUNK_SIZE;
  else if (length >= 0) {
    c->state = BODY_LENGTH;
    c->left = length;
  } else c->state = UNTIL_CLOSE;
}

/* Consumes bytes of a response; returns 1 when the response is complete. */
static int consume(conn_t *c, const char *p, size_t n) {
  size_t i = 0;
  while (i < n || (c->state == BODY_LENGTH && c->left == 0) || c->state == -1) {
    switch (c->state) {
    case -1:
      return 1;
    case HEAD: {
      char ch = p[i++];
      if (c->head_len >= BUF - 1) return -1;
      c->head[c->head_len++] = ch;
      if (c->head_len >= 4 && memcmp(c->head + c->head_len - 4, "\r\n\r\n", 4) == 0) parse_head(c);
      break;
    }
    case BODY_LENGTH: {
      if (c->left == 0) return 1;
      size_t take = n - i < (size_t)c->left ? n - i : (size_t)c->left;
      c->left -= (int64_t)take;
      i += take;
      if (c->left == 0) return 1;
      break;
    }
    case CHUNK_SIZE: {
      char ch = p[i++];
      if (ch == '\n') {
        c->line[c->line_len] = 0;
        c->left = strtoll(c->line, NULL, 16);
        c->line_len = 0;
        c->state = c->left == 0 ? TRAILER : CHUNK_DATA;
      } else if (c->line_len < sizeof c->line - 1) c->line[c->line_len++] = ch;
      break;
    }
    case CHUNK_DATA: {
      size_t take = n - i < (size_t)c->left ? n - i : (size_t)c->left;
      c->left -= (int64_t)take;
      i += take;
      if (c->left == 0) {
        c->state = CHUNK_CRLF;
        c->left = 2;
      }
      break;
    }
    case CHUNK_CRLF:
      i++;
      if (--c->left == 0) c->state = CHUNK_SIZE;
      break;
    case TRAILER: {
      char ch = p[i++];
      if (ch == '\n') {
        if (c->line_len == 0 || (c->line_len == 1 && c->line[0] == '\r')) return 1;
        c->line_len = 0;
      } else if (c->line_len < sizeof c->line - 1) c->line[c->line_len++] = ch;
      break;
    }
    case UNTIL_CLOSE:
      i = n;
      break;
    }
  }
  return 0;
}

static void on_readable(conn_t *c) {
  char buf[BUF];
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n == 0) {
      if (c->busy && c->state == UNTIL_CLOSE) {
        record(c, c->status);
        c->busy = 0;
        reset_conn(c, 1);
      } else reset_conn(c, 0);
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN) return;
      reset_conn(c, 0);
      return;
    }
    if (!c->busy) {
      reset_conn(c, 0); /* bytes nobody asked for */
      return;
    }
    int done = consume(c, buf, (size_t)n);
    if (done < 0) {
      reset_conn(c, 0);
      return;
    }
    if (done) {
      record(c, c->status);
      c->busy = 0;
      if (c->close_after) {
        reset_conn(c, 1);
        return;
      }
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: loadgen HOST PORT PATH RATE CONNECTIONS SECONDS LOGFILE [HEADER ...]\n");
    return 2;
  }
  const char *host = argv[1], *path = argv[3], *logfile = argv[7];
  int port = atoi(argv[2]);
  double rate = atof(argv[4]);
  int nconn = atoi(argv[5]);
  double seconds = atof(argv[6]);
  if (rate <= 0 || nconn <= 0 || seconds <= 0 || port <= 0) {
    fprintf(stderr, "loadgen: RATE, CONNECTIONS, SECONDS and PORT must be positive\n");
    return 2;
  }
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "loadgen: HOST must be an IPv4 address, got %s\n", host);
    return 2;
  }
  size_t cap = 256 + strlen(path) + strlen(host);
  for (int i = 8; i < argc; i++) cap += strlen(argv[i]) + 2;
  request = malloc(cap);
  int len = snprintf(request, cap, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: meshgate-loadgen\r\n", path, host, port);
  for (int i = 8; i < argc; i++) len += snprintf(request + len, cap - (size_t)len, "%s\r\n", argv[i]);
  len += snprintf(request + len, cap - (size_t)len, "\r\n");
  request_len = (size_t)len;

  period_ns = (int64_t)(1e9 * nconn / rate);
  /* Wake at the due time, not up to 50 µs after it (the default timer slack of a normal process). */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);

  conn_t *conns = calloc((size_t)nconn, sizeof *conns);
  for (int i = 0; i < nconn; i++) open_conn(&conns[i]);

  /* Connect every connection before the schedule starts. */
  int64_t deadline = now_ns() + 5000000000LL;
  int up = 0;
  struct epoll_event evs[256];
  while (up < nconn) {
    if (now_ns() > deadline) {
      fprintf(stderr, "loadgen: only %d of %d connections were established\n", up, nconn);
      return 1;
    }
    int n = epoll_wait(epfd, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (!c || c->connected) continue;
      int err = 0;
      socklen_t el = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
      if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
        fprintf(stderr, "loadgen: connect to %s:%d: %s\n", host, port, strerror(err ? err : ECONNREFUSED));
        return 1;
      }
      c->connected = 1;
      up++;
      want_write(c, 0);
    }
  }

  int64_t t0 = now_ns() + 10000000LL;
  for (int i = 0; i < nconn; i++) conns[i].due = t0 + period_ns * i / nconn;
  int64_t end = t0 + (int64_t)(seconds * 1e9);
  int64_t drain_until = end + 5000000000LL;

  for (;;) {
    int64_t t = now_ns();
    /* Send what is due on free connections; find the next due time. */
    int64_t next = INT64_MAX;
    int in_flight = 0, owed = 0;
    for (int i = 0; i < nconn; i++) {
      conn_t *c = &conns[i];
      if (c->fd < 0 && c->retry_at <= t) {
        c->retry_at = 0;
        reconnects++;
        open_conn(c);
      }
      if (c->fd >= 0 && c->connected && !c->busy && c->due < end && c->due <= t) send_request(c, t);
      if (c->busy) in_flight++;
      if (c->due < end) owed++;
      if (c->fd < 0 && c->retry_at < next) next = c->retry_at;
      else if (c->connected && !c->busy && c->due < end && c->due < next) next = c->due;
    }
    if (t >= end && in_flight == 0 && owed == 0) break;
    if (t >= drain_until) break;
    if (next != INT64_MAX) {
      struct itimerspec its = {0};
      its.it_value.tv_sec = next / 1000000000LL;
      its.it_value.tv_nsec = next % 1000000000LL;
      timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    }
    int n = epoll_wait(epfd, evs, 256, next == INT64_MAX ? 100 : -1);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (!c) {
        uint64_t x;
        ssize_t r = read(tfd, &x, sizeof x);
        (void)r;
        continue;
      }
      if (c->fd < 0) continue;
      if (!c->connected) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
          connect_failed(c);
          continue;
        }
        if (evs[i].events & EPOLLOUT) {
          c->connected = 1;
          want_write(c, 0);
        }
        continue;
      }
      if (evs[i].events & EPOLLOUT && c->busy && c->written < request_len) flush_request(c);
      if (c->fd >= 0 && evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) on_readable(c);
    }
  }
  /* What did not finish in the drain time: requests in flight, and requests due that were never sent. */
  long long timeouts = 0, unsent = 0;
  int64_t t_end = now_ns(), wall_end = wall_us();
  for (int i = 0; i < nconn; i++) {
    conn_t *c = &conns[i];
    if (c->busy) {
      timeouts++;
      record(c, 0);
    }
    for (; c->due < end; c->due += period_ns) {
      unsent++;
      entry_t *e = next_entry();
      e->sent_wall = wall_end - (t_end - c->due) / 1000;
      e->status = 0;
      e->service_us = e->corrected_us = (int32_t)((t_end - c->due) / 1000);
      errored++;
    }
  }

  FILE *f = fopen(logfile, "w");
  if (!f) {
    perror(logfile);
    return 2;
  }
  for (size_t i = 0; i < n_entries; i++)
    fprintf(f, "%lld\t%d\t%d\t%d\n", (long long)entries[i].sent_wall, entries[i].status, entries[i].service_us,
            entries[i].corrected_us);
  fclose(f);
  printf("requests: %zu total, %lld succeeded, %lld failed, %lld errored, %lld timeout, %lld never sent, "
         "%lld reconnects\n",
         n_entries, succeeded, failed, errored - timeouts - unsent, timeouts, unsent, reconnects);
  return 0;
}
