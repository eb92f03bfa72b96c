// ping-pong: echo server with epoll_wait(timeout) vs epoll_wait(-1) [or timerfd], CPU per round trip
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/wait.h>
static double cpu(void){struct rusage r; getrusage(RUSAGE_SELF,&r); return r.ru_utime.tv_sec+r.ru_utime.tv_usec/1e6+r.ru_stime.tv_sec+r.ru_stime.tv_usec/1e6;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int n=atoi(argv[2]); int gap_us=atoi(argv[3]);
  struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(47001)}, b={.sin_family=AF_INET,.sin_port=htons(47002)};
  inet_pton(AF_INET,"127.0.0.1",&a.sin_addr); inet_pton(AF_INET,"127.0.0.1",&b.sin_addr);
  pid_t child=fork();
  if(child==0){ // server
    int s=socket(AF_INET,SOCK_DGRAM|SOCK_NONBLOCK,0); bind(s,(void*)&b,sizeof b);
    int ep=epoll_create1(0); struct epoll_event ev={.events=EPOLLIN|EPOLLET,.data.u32=1}; epoll_ctl(ep,EPOLL_CTL_ADD,s,&ev);
    int tfd=-1;
    if(mode>=2){ tfd=timerfd_create(CLOCK_MONOTONIC,TFD_NONBLOCK); struct epoll_event e2={.events=EPOLLIN,.data.u32=2}; epoll_ctl(ep,EPOLL_CTL_ADD,tfd,&e2);
      struct itimerspec it={.it_value={.tv_sec=3600}}; timerfd_settime(tfd,0,&it,0);}
    char buf[2048]; struct epoll_event out[16]; int got=0; double c0=cpu();
    while(got<n){
      if(mode==3){struct itimerspec it={.it_value={.tv_sec=0,.tv_nsec=50000000}}; timerfd_settime(tfd,0,&it,0);} int k=epoll_wait(ep,out,16, mode==1?50:-1);
      for(int i=0;i<k;i++) if(out[i].data.u32==1){
        for(;;){ ssize_t m=recvfrom(s,buf,sizeof buf,0,0,0); if(m<0) break; sendto(s,buf,m,0,(void*)&a,sizeof a); got++; }
      }
    }
    printf("mode %d: server CPU per round trip %.2f us\n",mode,(cpu()-c0)/n*1e6);
    exit(0);
  }
  int s=socket(AF_INET,SOCK_DGRAM,0); bind(s,(void*)&a,sizeof a); usleep(100000);
  char buf[300]; memset(buf,'x',sizeof buf);
  for(int i=0;i<n;i++){ sendto(s,buf,sizeof buf,0,(void*)&b,sizeof b); recv(s,buf,sizeof buf,0); usleep(gap_us); }
  waitpid(child,0,0); return 0;
}
