/* covenant chaos: a preload library that lets the chaos harness shift one node's
 * wall clock and make its fsync/fdatasync fail, without privileges.
 * Controlled by the file named in COVENANT_CHAOS_CTL: "<clock offset seconds> <fail fsync 0|1>",
 * reread at most every 100 ms (clock) and at every fsync. Monotonic clocks are untouched,
 * as with an NTP step. Built by `covenant chaos` with the system C compiler. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long offset_s;
static int fail_sync;
static long long checked_ms = -1000;

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void load(int force) {
    if (!real_clock_gettime)
        real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    struct timespec m;
    real_clock_gettime(CLOCK_MONOTONIC_COARSE, &m);
    long long now = (long long)m.tv_sec * 1000 + m.tv_nsec / 1000000;
    if (!force && now - __atomic_load_n(&checked_ms, __ATOMIC_RELAXED) < 100)
        return;
    __atomic_store_n(&checked_ms, now, __ATOMIC_RELAXED);
    const char *path = getenv("COVENANT_CHAOS_CTL");
    if (!path)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    char *end;
    long long off = strtoll(buf, &end, 10);
    long fail = strtol(end, NULL, 10);
    __atomic_store_n(&offset_s, off, __ATOMIC_RELAXED);
    __atomic_store_n(&fail_sync, (int)fail, __ATOMIC_RELAXED);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    load(0);
    int r = real_clock_gettime(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += __atomic_load_n(&offset_s, __ATOMIC_RELAXED);
    return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    (void)tz;
    int r = clock_gettime(CLOCK_REALTIME, &ts);
    if (r == 0 && tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return r;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}

int fsync(int fd) {
    load(1);
    if (__atomic_load_n(&fail_sync, __ATOMIC_RELAXED)) {
        errno = EIO;
        return -1;
    }
    if (!real_fsync)
        real_fsync = dlsym(RTLD_NEXT, "fsync");
    return real_fsync(fd);
}

int fdatasync(int fd) {
    load(1);
    if (__atomic_load_n(&fail_sync, __ATOMIC_RELAXED)) {
        errno = EIO;
        return -1;
    }
    if (!real_fdatasync)
        real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    return real_fdatasync(fd);
}
