/* Waiting layer: deadlines, futex waits and robust process-shared mutexes.
 *
 * Every blocking call follows the same shape as CPython's SemLock.acquire:
 * try once with the GIL held, then release the GIL and block in bounded
 * slices, re-taking the GIL between slices to run signal handlers.  Slices
 * also bound the cost of a wake-up lost because its sender was killed.
 */
#include "interproc.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

/* How long a waiter polls before it sleeps.  Long enough to cover the other
 * side's turnaround in a ping-pong, short enough to be invisible as CPU. */
#define IP_SPIN_NS 30000L
/* The longest single sleep; signals and lost wake-ups cost at most this. */
#define IP_SLICE_NS 50000000L

static inline void ip_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static inline int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return ts_ns(&t);
}

static inline struct timespec ns_ts(int64_t ns)
{
    struct timespec t = {.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
    return t;
}

int ip_deadline_init(ip_deadline_t *d, int block, PyObject *timeout)
{
    d->infinite = 0;
    if (!block) {
        d->at = ns_ts(now_ns());
        return 0;
    }
    if (timeout == NULL || timeout == Py_None) {
        d->infinite = 1;
        return 0;
    }
    double secs = PyFloat_AsDouble(timeout);
    if (secs == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "'timeout' must be a number or None, not %.100s",
                     Py_TYPE(timeout)->tp_name);
        return -1;
    }
    if (!(secs >= 0)) { /* also rejects NaN */
        PyErr_SetString(PyExc_ValueError, "'timeout' must be a non-negative number");
        return -1;
    }
    if (secs > 1e9) { /* ~31 years: as good as forever, and no overflow */
        d->infinite = 1;
        return 0;
    }
    d->at = ns_ts(now_ns() + (int64_t)(secs * 1e9));
    return 0;
}

int ip_deadline_passed(const ip_deadline_t *d)
{
    return !d->infinite && now_ns() >= ts_ns(&d->at);
}

uint64_t ip_thread_serial(void)
{
    /* Thread-local storage starts at zero in every new thread, so a thread
     * that reuses a dead one's ident (or its TLS block) still gets a number
     * of its own.  A forked child keeps the forking thread's number, which
     * is unique in the child too. */
    static uint64_t last;
    static _Thread_local uint64_t mine;
    if (mine == 0)
        mine = __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED);
    return mine;
}

/* The end of the next sleep slice: the deadline or one slice from now. */
static struct timespec slice_end(const ip_deadline_t *d)
{
    int64_t end = now_ns() + IP_SLICE_NS;
    if (!d->infinite && ts_ns(&d->at) < end)
        end = ts_ns(&d->at);
    return ns_ts(end);
}

static long futex(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts, uint32_t val3)
{
    return syscall(SYS_futex, uaddr, op, val, ts, NULL, val3);
}

void ip_event_wake(ip_event_t *ev, int n)
{
    if (__atomic_load_n(&ev->waiters, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&ev->seq, 1, __ATOMIC_SEQ_CST);
        futex(&ev->seq, FUTEX_WAKE, (uint32_t)n, NULL, 0);
    }
}

void ip_event_signal(ip_event_t *ev, int n)
{
    /* Orders the caller's publication before the look at `waiters`; the
     * sleeper orders its count before its last try the same way, so one of
     * the two always sees the other. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ev->waiters, __ATOMIC_RELAXED)) {
        __atomic_add_fetch(&ev->seq, 1, __ATOMIC_SEQ_CST);
        futex(&ev->seq, FUTEX_WAKE, (uint32_t)n, NULL, 0);
    }
}

/* Spins while *word == expected: a few rounds with the GIL, then up to
 * IP_SPIN_NS without it.  Returns 1 if it changed. */
static int spin_while(const uint64_t *word, uint64_t expected)
{
    for (int i = 0; i < 64; i++) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected)
            return 1;
        ip_cpu_relax();
    }
    int changed = 0;
    Py_BEGIN_ALLOW_THREADS
    int64_t spin_end = now_ns() + IP_SPIN_NS;
    while (!changed && now_ns() < spin_end) {
        for (int i = 0; i < 64; i++) {
            if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected) {
                changed = 1;
                break;
            }
            ip_cpu_relax();
        }
        /* When the partner shares our CPU, spinning only delays it: let it
         * run.  With a CPU to itself this returns at once. */
        if (!changed)
            sched_yield();
    }
    Py_END_ALLOW_THREADS
    return changed;
}

int ip_wait_for(ip_event_t *ev, const ip_deadline_t *d, ip_attempt_fn attempt, void *ctx)
{
    int spun = 0;
    for (;;) {
        const uint64_t *watch = NULL;
        uint64_t watch_val = 0;
        int rc = attempt(ctx, 0, &watch, &watch_val);
        if (rc != 0)
            return rc;
        if (ip_deadline_passed(d))
            return IP_WAIT_TIMEOUT;
        if (!spun && watch) {
            spun = 1; /* once per call: a long wait should sleep, not burn a core */
            if (spin_while(watch, watch_val))
                continue;
        }
        /* Counted before the last try: a publication that try misses must
         * come after the count, and its signaller then sees us. */
        __atomic_add_fetch(&ev->waiters, 1, __ATOMIC_SEQ_CST);
        uint32_t seq = __atomic_load_n(&ev->seq, __ATOMIC_SEQ_CST);
        rc = attempt(ctx, 1, &watch, &watch_val);
        if (rc == 0) {
            struct timespec end = slice_end(d);
            Py_BEGIN_ALLOW_THREADS
            /* EINTR, EAGAIN and ETIMEDOUT all mean: look again. */
            futex(&ev->seq, FUTEX_WAIT_BITSET, seq, &end, FUTEX_BITSET_MATCH_ANY);
            Py_END_ALLOW_THREADS
        }
        /* A sleeper killed before this line leaves the count high: signallers
         * then make a needless syscall, nothing worse. */
        __atomic_sub_fetch(&ev->waiters, 1, __ATOMIC_SEQ_CST);
        if (rc != 0)
            return rc;
        if (PyErr_CheckSignals() < 0)
            return IP_WAIT_ERROR;
    }
}

/* ------------------------------------------------------------------ */

int ip_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (!rc)
        rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!rc)
        rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

static int lock_result(int rc)
{
    switch (rc) {
    case 0:
        return IP_LOCK_OK;
    case EOWNERDEAD:
        return IP_LOCK_OWNER_DIED;
    case ETIMEDOUT:
    case EBUSY:
        return IP_LOCK_TIMEOUT;
    default:
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return IP_LOCK_ERROR;
    }
}

int ip_mutex_lock(pthread_mutex_t *m, const ip_deadline_t *d)
{
    /* Sections under these mutexes are a few hundred nanoseconds long, so a
     * short spin almost always wins; it also keeps block=False from failing
     * on mere contention. */
    int rc = EBUSY;
    for (int i = 0; i < 256 && rc == EBUSY; i++) {
        rc = pthread_mutex_trylock(m);
        if (rc == EBUSY)
            ip_cpu_relax();
    }
    if (rc != EBUSY)
        return lock_result(rc);
    ip_deadline_t grace = *d;
    if (!d->infinite && ip_deadline_passed(d))
        grace.at = ns_ts(now_ns() + 2000000); /* a non-blocking call waits out a running holder */
    d = &grace;
    for (;;) {
        struct timespec end = slice_end(d);
        Py_BEGIN_ALLOW_THREADS
        rc = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &end);
        Py_END_ALLOW_THREADS
        if (rc != ETIMEDOUT)
            return lock_result(rc);
        if (PyErr_CheckSignals() < 0)
            return IP_LOCK_ERROR;
        if (ip_deadline_passed(d))
            return IP_LOCK_TIMEOUT;
    }
}

int ip_mutex_lock_nogil(pthread_mutex_t *m)
{
    int rc = pthread_mutex_lock(m);
    return rc == EOWNERDEAD ? IP_LOCK_OWNER_DIED : rc == 0 ? IP_LOCK_OK : IP_LOCK_ERROR;
}

void ip_mutex_consistent(pthread_mutex_t *m)
{
    pthread_mutex_consistent(m);
}

void ip_mutex_unlock(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
}
