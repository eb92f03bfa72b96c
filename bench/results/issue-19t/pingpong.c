// UDP ping-pong on loopback: a paced client and a server that answers each datagram.
// server modes: "block" (blocking recvfrom), "epoll" (epoll_wait + nonblocking recvfrom),
// "epolltfd" (epoll_wait on socket+timerfd, like siplb's core). Prints the server's
// CPU per message from getrusage. SRV_CPU / CLI_CPU pin the server / the client to a CPU.
// Issue 19, twentieth round (docs/BENCHMARKS-HISTORY.md): what one wake-up costs on the
// benchmark's virtual machine when the two ends share a CPU and when they do not.
//
//   gcc -O2 -o pingpong pingpong.c
//   ./pingpong block 1000 5000                       # free placement
//   SRV_CPU=0 CLI_CPU=0 ./pingpong block 1000 5000   # both on CPU 0
//   SRV_CPU=1 CLI_CPU=0 ./pingpong block 1000 5000   # one on each CPU
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <sched.h>
static void pin(const char*v){ if(!v) return; cpu_set_t c; CPU_ZERO(&c); CPU_SET(atoi(v),&c); sched_setaffinity(0,sizeof c,&c);}

static double cpu_self(void) {
  struct rusage r; getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "block";
  int rate = argc > 2 ? atoi(argv[2]) : 1000;
  int n = argc > 3 ? atoi(argv[3]) : 10000;
  int port = 25060;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  pid_t child = fork();
  if (child == 0) {
    pin(getenv("SRV_CPU"));
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    bind(s, (void *)&sa, sizeof sa);
    char buf[2048]; struct sockaddr_in from; socklen_t fl;
    double t0 = cpu_self();
    int ep = -1, tfd = -1;
    if (strcmp(mode, "block")) {
      fcntl(s, F_SETFL, O_NONBLOCK);
      ep = epoll_create1(0);
      struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = s};
      epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
      if (!strcmp(mode, "epolltfd")) {
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
        struct epoll_event ev2 = {.events = EPOLLIN | EPOLLET, .data.fd = tfd};
        epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev2);
      }
    }
    for (int i = 0; i < n; i++) {
      ssize_t k;
      if (ep < 0) {
        fl = sizeof from; k = recvfrom(s, buf, sizeof buf, 0, (void *)&from, &fl);
      } else {
        for (;;) {
          fl = sizeof from; k = recvfrom(s, buf, sizeof buf, 0, (void *)&from, &fl);
          if (k >= 0) break;
          struct epoll_event evs[4]; epoll_wait(ep, evs, 4, -1);
        }
      }
      if (k == 1 && buf[0] == 'q') break;
      sendto(s, buf, k, 0, (void *)&from, fl);
    }
    double t1 = cpu_self();
    printf("%s rate %d: server CPU per message %.2f us\n", mode, rate, (t1 - t0) * 1e6 / n);
    fflush(stdout); _exit(0);
  }
  pin(getenv("CLI_CPU"));
  usleep(200000);
  int c = socket(AF_INET, SOCK_DGRAM, 0);
  char msg[600]; memset(msg, 'x', sizeof msg);
  struct timespec next; clock_gettime(CLOCK_MONOTONIC, &next);
  long step = 1000000000L / rate;
  for (int i = 0; i < n; i++) {
    sendto(c, msg, sizeof msg, 0, (void *)&sa, sizeof sa);
    char b[2048]; recv(c, b, sizeof b, 0);
    next.tv_nsec += step; while (next.tv_nsec >= 1000000000L) { next.tv_nsec -= 1000000000L; next.tv_sec++; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
  }
  waitpid(child, NULL, 0);
  return 0;
}
