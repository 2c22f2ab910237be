// Records which functions of a program run, in the order of their first call: the input of
// scripts/agent-order/record.py, which turns it into the agent's symbol ordering file.
//
// Loaded with LD_PRELOAD into a release binary. Before the program's own initialisers run, it
// writes a breakpoint (int3) over the first byte of every function listed in FUNTRACE_FUNCS (link
// addresses, 8 bytes each, from the binary's ELF symbol table). The first call of each function
// traps; the handler writes the function's link address to FUNTRACE_OUT, puts the original byte
// back and resumes at the function's start, so every function traps at most once and the
// program runs at full speed afterwards. FUNTRACE_SEGMENT is the link address (hex) at which the
// executable segment's mapping begins, to turn run-time addresses into link addresses.
//
// Why not page faults (mprotect) or perf: both see pages, and a page of Swift code holds some 30
// small functions of which a few run; ordering whole pages packed 4.7 MB of code for the agent's
// idle path, ordering the functions that ran packs about 1 MB. A development tool only: it makes
// the program's code writable, and is never part of what is built or deployed.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ucontext.h>
#include <unistd.h>

static uintptr_t base;
static int out = -1;
static uint64_t *functions;
static unsigned char *original;
static size_t count;

static void trapped(int signal_number, siginfo_t *info, void *context) {
  (void)signal_number;
  (void)info;
  ucontext_t *state = context;
  uintptr_t pc = (uintptr_t)state->uc_mcontext.gregs[REG_RIP] - 1;
  uint64_t link = pc - base;
  size_t low = 0, high = count;
  while (low < high) {
    size_t middle = low + (high - low) / 2;
    if (functions[middle] < link) low = middle + 1; else high = middle;
  }
  if (low < count && functions[low] == link) {
    // Two threads may trap on the same function: the second finds the byte restored.
    if (*(volatile unsigned char *)pc == 0xCC) {
      *(volatile unsigned char *)pc = original[low];
      ssize_t written = write(out, &link, sizeof link);
      (void)written;
    }
    state->uc_mcontext.gregs[REG_RIP] = (greg_t)pc;
    return;
  }
  // A breakpoint that is not ours: let it do what it would have done.
  signal(SIGTRAP, SIG_DFL);
}

static int ascending(const void *left, const void *right) {
  uint64_t a = *(const uint64_t *)left, b = *(const uint64_t *)right;
  return a < b ? -1 : a > b;
}

__attribute__((constructor)) static void install(void) {
  const char *output = getenv("FUNTRACE_OUT"), *list = getenv("FUNTRACE_FUNCS"), *segment = getenv("FUNTRACE_SEGMENT");
  if (!output || !list || !segment) return;
  unsetenv("LD_PRELOAD");  // not into the programs this one starts
  char executable[4096];
  ssize_t length = readlink("/proc/self/exe", executable, sizeof executable - 1);
  if (length <= 0) return;
  executable[length] = 0;
  uintptr_t low = 0, high = 0;
  FILE *maps = fopen("/proc/self/maps", "r");
  if (!maps) return;
  char line[8192];
  while (fgets(line, sizeof line, maps)) {
    unsigned long start, end, offset;
    char permissions[8], name[4096] = "";
    if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095s", &start, &end, permissions, &offset, name) >= 4
        && strcmp(name, executable) == 0 && permissions[2] == 'x') {
      low = start;
      high = end;
      break;
    }
  }
  fclose(maps);
  if (!low) { fprintf(stderr, "funtrace: no executable mapping of %s\n", executable); return; }
  base = low - (uintptr_t)strtoull(segment, NULL, 16);
  int input = open(list, O_RDONLY);
  struct stat status;
  if (input < 0 || fstat(input, &status) != 0) { fprintf(stderr, "funtrace: cannot read %s\n", list); return; }
  count = (size_t)status.st_size / 8;
  functions = malloc(count * 8);
  original = malloc(count);
  if (!functions || !original || read(input, functions, count * 8) != (ssize_t)(count * 8)) { fprintf(stderr, "funtrace: cannot read %s\n", list); return; }
  close(input);
  qsort(functions, count, 8, ascending);
  out = open(output, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (out < 0) { fprintf(stderr, "funtrace: cannot write %s\n", output); return; }
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = trapped;
  action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
  sigaction(SIGTRAP, &action, NULL);
  if (mprotect((void *)low, high - low, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) { perror("funtrace: mprotect"); return; }
  for (size_t i = 0; i < count; i++) {
    unsigned char *entry = (unsigned char *)(base + functions[i]);
    if ((uintptr_t)entry < low || (uintptr_t)entry >= high) { original[i] = 0xCC; continue; }
    original[i] = *entry;
    *entry = 0xCC;
  }
}
