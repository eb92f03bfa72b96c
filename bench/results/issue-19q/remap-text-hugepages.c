/* Tried in issue 19 seventeenth round and not kept (docs/BENCHMARKS-HISTORY.md):
 * siplb's code moved onto 2 MB pages at start, loaded with LD_PRELOAD.
 * gcc -O2 -shared -fPIC -o remap.so remap-text-hugepages.c */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdlib.h>
#define HP (2UL<<20)
__attribute__((constructor)) static void remap_text(void) {
  FILE *f = fopen("/proc/self/maps", "r"); if (!f) return;
  char line[512]; uintptr_t s=0,e=0;
  while (fgets(line, sizeof line, f)) {
    unsigned long a,b; char perm[8];
    if (sscanf(line, "%lx-%lx %7s", &a, &b, perm) == 3 && strcmp(perm, "r-xp") == 0 && strstr(line, "/siplb")) { s=a; e=b; break; }
  }
  fclose(f);
  if (!s) return;
  uintptr_t start = (s + HP - 1) & ~(HP-1), end = e & ~(HP-1);
  if (end <= start) { fprintf(stderr, "remap: text too small\n"); return; }
  size_t len = end - start;
  char *mem = mmap(NULL, len + HP, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return;
  char *al = (char*)(((uintptr_t)mem + HP - 1) & ~(HP-1));
  madvise(al, len, MADV_HUGEPAGE);
  memcpy(al, (void*)start, len);
  mprotect(al, len, PROT_READ|PROT_EXEC);
  void *r = mremap(al, len, len, MREMAP_MAYMOVE|MREMAP_FIXED, (void*)start);
  if (r == MAP_FAILED) { perror("remap"); exit(1); }
  if (al > mem) munmap(mem, al - mem);
  if ((char*)mem + len + HP > al + len) munmap(al + len, (mem + len + HP) - (al + len));
  fprintf(stderr, "remap: %zu MB of text at %lx on huge pages\n", len >> 20, start);
}
