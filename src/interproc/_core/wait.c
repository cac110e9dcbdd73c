/* Waiting layer: deadlines, futex waits and robust process-shared mutexes.
 *
 * Every blocking call follows the same shape as CPython's SemLock.acquire:
 * try once with the GIL held, then release the GIL and block in bounded
 * slices, re-taking the GIL between slices to run signal handlers.  Slices
 * also bound the cost of a wake-up lost because its sender was killed.
 */
#include "interproc.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

/* How long a waiter polls before it sleeps.  Long enough to cover the other
 * side's turnaround in a ping-pong, short enough to be invisible as CPU. */
#define IP_SPIN_NS 30000L
/* The longest single sleep; signals and lost wake-ups cost at most this. */
#define IP_SLICE_NS 50000000L
/* Only tests change it, to tell a wake-up from the end of a slice without
 * timing the machine. */
static int64_t slice_ns = IP_SLICE_NS;

void ip_wait_set_slice(int64_t ns)
{
    slice_ns = ns > 0 ? ns : IP_SLICE_NS;
}

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

int64_t ip_now_ns(void)
{
    return now_ns();
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

/* ------------------------------------------------------------------ */
/* Liveness identities (see interproc.h)                               */

typedef struct ident_node {
    struct ident_node *next;
    dev_t dev;
    ino_t ino;
    int fd;       /* our own open file description of the segment */
    uint64_t key;
    uint64_t refs; /* handles holding it */
} ident_node;

#define IDENT_BUCKETS 256u

static ident_node *ident_table[IDENT_BUCKETS];
/* Handles start at epoch 0, which is never current. */
uint64_t ip_ident_epoch = 1;

static unsigned ident_bucket(dev_t dev, ino_t ino)
{
    return (unsigned)(((uint64_t)ino * 0x9e3779b97f4a7c15ull) >> 56 ^ (uint64_t)dev) % IDENT_BUCKETS;
}

/* A forked child shares its parent's open file descriptions, so keeping
 * them would keep a dead parent's keys looking alive: the child lets go of
 * them and makes its own when it needs one.  Handles notice through the
 * epoch. */
static void ident_after_fork_child(void)
{
    for (unsigned b = 0; b < IDENT_BUCKETS; b++) {
        ident_node *n = ident_table[b];
        while (n) {
            ident_node *next = n->next;
            close(n->fd);
            free(n);
            n = next;
        }
        ident_table[b] = NULL;
    }
    ip_ident_epoch++;
}

static pthread_once_t ident_once = PTHREAD_ONCE_INIT;
static int ident_atfork_rc;

static void ident_register_atfork(void)
{
    ident_atfork_rc = pthread_atfork(NULL, NULL, ident_after_fork_child);
}

static uint64_t random_key(void)
{
    uint64_t k = 0;
    if (getrandom(&k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
        static uint64_t salt;
        k = ((uint64_t)getpid() << 24) ^ (uint64_t)now_ns() ^ (++salt * 0x9e3779b97f4a7c15ull);
    }
    return k & IP_KEY_MASK;
}

static int key_lock(int fd, short type, uint64_t key, int cmd)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = IP_KEY_BASE + (off_t)key,
                       .l_len = 1, .l_pid = 0};
    int rc = fcntl(fd, cmd, &fl);
    return rc != 0 ? -1 : cmd == F_OFD_GETLK ? fl.l_type != F_UNLCK : 0;
}

static ident_node *ident_create(int fd, const struct stat *st)
{
    pthread_once(&ident_once, ident_register_atfork);
    if (ident_atfork_rc != 0) {
        errno = ident_atfork_rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    /* A new open file description of the same file: reopening through
     * /proc gives one, where dup() would share the handle's. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    static const int modes[] = {O_RDWR, O_WRONLY, O_RDONLY};
    int lfd = -1, mode = O_RDWR;
    for (size_t i = 0; i < sizeof modes / sizeof *modes && lfd < 0; i++) {
        mode = modes[i];
        lfd = open(path, mode | O_CLOEXEC | O_NOCTTY);
        if (lfd < 0 && errno != EACCES)
            break;
    }
    if (lfd < 0) {
        PyErr_Format(PyExc_OSError,
                     "cannot open a descriptor of its own on the segment through %s (%s): this "
                     "process needs one to be known as a lock holder or waiter",
                     path, strerror(errno));
        return NULL;
    }
    struct stat lst;
    if (fstat(lfd, &lst) != 0 || lst.st_dev != st->st_dev || lst.st_ino != st->st_ino) {
        close(lfd);
        PyErr_SetString(PyExc_OSError, "/proc/self/fd does not show this process's descriptors");
        return NULL;
    }
    /* A read lock is all a read-only descriptor can take; read locks do not
     * exclude each other, so a taken key is looked for first. */
    short type = mode == O_RDONLY ? F_RDLCK : F_WRLCK;
    for (int attempt = 0; attempt < 64; attempt++) {
        uint64_t key = random_key();
        if (key == 0)
            continue;
        if (type == F_RDLCK && key_lock(lfd, F_WRLCK, key, F_OFD_GETLK) != 0)
            continue;
        if (key_lock(lfd, type, key, F_OFD_SETLK) == 0) {
            ident_node *n = malloc(sizeof *n);
            if (n == NULL) {
                close(lfd);
                PyErr_NoMemory();
                return NULL;
            }
            *n = (ident_node){NULL, st->st_dev, st->st_ino, lfd, key, 0};
            unsigned b = ident_bucket(st->st_dev, st->st_ino);
            n->next = ident_table[b];
            ident_table[b] = n;
            return n;
        }
        if (errno != EAGAIN && errno != EACCES)
            break;
    }
    int saved = errno;
    close(lfd);
    errno = saved;
    PyErr_SetFromErrno(PyExc_OSError);
    return NULL;
}

uint64_t ip_ident_get(ip_ident_t *id, int fd, int create)
{
    if (id->epoch == ip_ident_epoch && id->key)
        return id->key;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        if (create)
            PyErr_SetFromErrno(PyExc_OSError);
        return 0;
    }
    ident_node *n = ident_table[ident_bucket(st.st_dev, st.st_ino)];
    while (n && !(n->dev == st.st_dev && n->ino == st.st_ino))
        n = n->next;
    if (n == NULL) {
        if (!create)
            return 0;
        n = ident_create(fd, &st);
        if (n == NULL)
            return 0;
    }
    n->refs++;
    id->key = n->key;
    id->node = n;
    id->epoch = ip_ident_epoch;
    return n->key;
}

void ip_ident_release(ip_ident_t *id)
{
    ident_node *n = id->node;
    int current = id->epoch == ip_ident_epoch && id->key && n;
    id->key = 0;
    id->node = NULL;
    if (!current || --n->refs > 0)
        return;
    ident_node **link = &ident_table[ident_bucket(n->dev, n->ino)];
    while (*link && *link != n)
        link = &(*link)->next;
    if (*link)
        *link = n->next;
    close(n->fd); /* the kernel drops the lock: the key now reads as dead */
    free(n);
}

int ip_key_alive(int fd, uint64_t key)
{
    if (key == 0 || key > IP_KEY_MASK)
        return 0; /* no process can hold it */
    int held = key_lock(fd, F_WRLCK, key, F_OFD_GETLK);
    return held != 0; /* -1 (cannot tell) counts as alive */
}

/* The end of the next sleep slice: the deadline or one slice from now. */
static struct timespec slice_end(const ip_deadline_t *d)
{
    int64_t end = now_ns() + slice_ns;
    if (!d->infinite && ts_ns(&d->at) < end)
        end = ts_ns(&d->at);
    return ns_ts(end);
}

static long futex(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts, uint32_t val3)
{
    return syscall(SYS_futex, uaddr, op, val, ts, NULL, val3);
}

/* ------------------------------------------------------------------ */
/* Bells (see ip_event_t)                                              */

/* One unbound datagram socket per process sends every ring. */
static int ring_fd = -1;

static int ring_socket(void)
{
    int fd = __atomic_load_n(&ring_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0)
        return fd;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int expected = -1;
    if (!__atomic_compare_exchange_n(&ring_fd, &expected, fd, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        close(fd); /* another thread made one first */
        return expected;
    }
    return fd;
}

/* Sends the bell's token to its loop.  Returns 0 when the loop is gone (no
 * socket of that name: its process died), 1 otherwise, full buffers and
 * other failures included: those cost the loop at most its safety sweep. */
static int ring(uint64_t bell)
{
    uint32_t pid = (uint32_t)(bell >> 32);
    uint32_t nonce = (uint32_t)(bell >> IP_BELL_TOKEN_BITS) & ((1u << IP_BELL_NONCE_BITS) - 1);
    uint32_t token = (uint32_t)bell & ((1u << IP_BELL_TOKEN_BITS) - 1);
    if (pid == 0 || pid > INT32_MAX)
        return 1; /* forged: never a process */
    int fd = ring_socket();
    if (fd < 0)
        return 1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    /* sun_path[0] stays 0: the abstract namespace, where a name goes with
     * the socket that bound it. */
    int len = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, IP_BELL_NAME_PREFIX "%u/%03x",
                       pid, nonce);
    unsigned char msg[4] = {token & 0xff, (token >> 8) & 0xff, (token >> 16) & 0xff, 0};
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
    if (sendto(fd, msg, sizeof msg, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&addr, alen) < 0
        && errno == ECONNREFUSED)
        return 0;
    return 1;
}

/* Called by a signal that found waiters, after its bump of seq. */
static void ring_bells(ip_event_t *ev)
{
    if (__atomic_load_n(&ev->bells, __ATOMIC_SEQ_CST) == 0)
        return;
    int saved = errno;
    for (int i = 0; i < IP_BELLS; i++) {
        uint64_t bell = __atomic_load_n(&ev->bell[i], __ATOMIC_ACQUIRE);
        if (bell != 0 && !ring(bell))
            ip_bell_remove(ev, i, bell); /* its loop is gone: free the slot, once */
    }
    errno = saved;
}

int ip_bell_add(ip_event_t *ev, uint64_t bell)
{
    for (int i = 0; i < IP_BELLS; i++) {
        uint64_t free_slot = 0;
        if (__atomic_compare_exchange_n(&ev->bell[i], &free_slot, bell, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED)) {
            /* Both counted before the caller's next try: a publication that
             * try misses comes after them, and its signal rings the bell. */
            __atomic_add_fetch(&ev->bells, 1, __ATOMIC_SEQ_CST);
            __atomic_add_fetch(&ev->waiters, 1, __ATOMIC_SEQ_CST);
            return i;
        }
    }
    return -1;
}

void ip_bell_remove(ip_event_t *ev, int slot, uint64_t bell)
{
    if (slot < 0 || slot >= IP_BELLS)
        return;
    /* Only the caller whose compare-and-swap frees the slot uncounts it. */
    if (__atomic_compare_exchange_n(&ev->bell[slot], &bell, 0, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED)) {
        __atomic_sub_fetch(&ev->bells, 1, __ATOMIC_SEQ_CST);
        __atomic_sub_fetch(&ev->waiters, 1, __ATOMIC_SEQ_CST);
    }
}

long ip_bell_which(PyObject *const *args, Py_ssize_t nargs, long last)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "_bell() needs the event's number");
        return -1;
    }
    long which = PyLong_AsLong(args[0]);
    if ((which < 0 || which > last) && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "no event %ld", which);
    return PyErr_Occurred() ? -1 : which;
}

PyObject *ip_bell_py(ip_event_t *ev, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs == 0) /* how often it was signalled with waiters: what a sweep compares */
        return PyLong_FromUnsignedLong(__atomic_load_n(&ev->seq, __ATOMIC_SEQ_CST));
    if (nargs != 1 && nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "expected (), (bell) or (slot, bell)");
        return NULL;
    }
    uint64_t bell = PyLong_AsUnsignedLongLong(args[nargs - 1]);
    if (bell == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    if (bell >> 32 == 0) {
        PyErr_SetString(PyExc_ValueError, "not a bell");
        return NULL;
    }
    if (nargs == 1)
        return PyLong_FromLong(ip_bell_add(ev, bell));
    int overflow = 0;
    long slot = PyLong_AsLongAndOverflow(args[0], &overflow);
    if (slot == -1 && PyErr_Occurred())
        return NULL;
    if (!overflow && slot >= 0 && slot < IP_BELLS)
        ip_bell_remove(ev, (int)slot, bell);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */

static PyObject *task_owner_hook;

uint64_t ip_running_task_owner(void)
{
    if (task_owner_hook == NULL)
        return 0;
    /* Asked on paths that may run with an exception set (an operation
     * being undone): the caller's exception stays as it was. */
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyObject *r = PyObject_CallNoArgs(task_owner_hook);
    uint64_t owner = r ? PyLong_AsUnsignedLongLong(r) : 0;
    Py_XDECREF(r);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        owner = 0;
    }
    PyErr_Restore(t, v, tb);
    return owner >> 63 ? owner : 0;
}

PyObject *ip_set_task_owner_hook(PyObject *Py_UNUSED(cls), PyObject *hook)
{
    Py_XSETREF(task_owner_hook, hook == Py_None ? NULL : Py_NewRef(hook));
    Py_RETURN_NONE;
}

/* Wakes the sleepers a signal that found waiters is for.  A loop's bell and
 * a futex sleeper woken by the same signal race for what it announces, and
 * whichever runs first wins: the sleeper, woken by the kernel, almost
 * always, so a coroutine waiting beside a thread or another process would
 * hardly ever be served (and the other way round on a machine too loaded
 * to run the sleeper soon).  So a signal for one waiter goes to one kind:
 * the loops get turns in proportion to their registrations among the
 * waiters, and on a loop's turn only the bells ring; on the sleepers' turn
 * the bells ring only if no sleeper was there to wake (a count left by a
 * sleeper that died, or one about to sleep, whose FUTEX_WAIT then fails
 * and which tries again).  A turn whose waiter does not take what it was
 * woken for (a slow loop, a cancelled coroutine, a sleeper interrupted)
 * leaves it to the next signal or to the sleepers' next slice. */
static void wake_waiters(ip_event_t *ev, int n)
{
    uint32_t seq = __atomic_add_fetch(&ev->seq, 1, __ATOMIC_SEQ_CST);
    uint32_t waiters = __atomic_load_n(&ev->waiters, __ATOMIC_SEQ_CST);
    uint32_t bells = __atomic_load_n(&ev->bells, __ATOMIC_SEQ_CST);
    if (n == 1 && bells != 0 && waiters > bells && seq % waiters < bells) {
        ring_bells(ev);
        return;
    }
    if (futex(&ev->seq, FUTEX_WAKE, (uint32_t)n, NULL, 0) < n)
        ring_bells(ev);
}

void ip_event_wake(ip_event_t *ev, int n)
{
    if (__atomic_load_n(&ev->waiters, __ATOMIC_SEQ_CST))
        wake_waiters(ev, n);
}

void ip_event_signal(ip_event_t *ev, int n)
{
    /* Orders the caller's publication before the look at `waiters`; the
     * sleeper orders its count before its last try the same way, so one of
     * the two always sees the other. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ev->waiters, __ATOMIC_RELAXED))
        wake_waiters(ev, n);
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
    return ip_wait_for_spins(ev, d, attempt, ctx, 1);
}

int ip_wait_for_spins(ip_event_t *ev, const ip_deadline_t *d, ip_attempt_fn attempt, void *ctx,
                      int spins)
{
    for (;;) {
        const uint64_t *watch = NULL;
        uint64_t watch_val = 0;
        int rc = attempt(ctx, 0, &watch, &watch_val);
        if (rc != 0)
            return rc;
        if (ip_deadline_passed(d))
            return IP_WAIT_TIMEOUT;
        if (spins > 0 && watch) {
            spins--;
            if (spin_while(watch, watch_val))
                continue;
            spins = 0; /* the other side is slow: a long wait should sleep, not burn a core */
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

void ip_mutex_consistent(pthread_mutex_t *m)
{
    pthread_mutex_consistent(m);
}

void ip_mutex_unlock(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
}
