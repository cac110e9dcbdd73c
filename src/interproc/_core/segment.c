/* Segment layer: where shared memory comes from.
 *
 * Anonymous segments are memfds: the kernel frees them when the last
 * descriptor and mapping are gone, so a SIGKILL of every user leaks nothing.
 * Named segments are POSIX shared memory under IP_SHM_PREFIX and live until
 * unlinked.  Every segment starts with an ip_seghdr_t that is validated before
 * anything else in it is trusted.
 */
#include "interproc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

PyObject *ip_SegmentError;

int ip_name_check(PyObject *name, char *out, size_t outlen)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %.100s", Py_TYPE(name)->tp_name);
        return -1;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(name, &n);
    if (s == NULL)
        return -1;
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "name must not be empty");
        return -1;
    }
    if (n > IP_NAME_MAX) {
        PyErr_Format(PyExc_ValueError, "name is %zd bytes long; the limit is %d", n, IP_NAME_MAX);
        return -1;
    }
    if (memchr(s, '/', (size_t)n) || memchr(s, '\0', (size_t)n)) {
        PyErr_Format(PyExc_ValueError, "name %R must not contain '/' or NUL", name);
        return -1;
    }
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        PyErr_Format(PyExc_ValueError, "name %R is reserved", name);
        return -1;
    }
    snprintf(out, outlen, "%s%s", IP_SHM_PREFIX, s);
    return 0;
}

void *ip_map(int fd, size_t len, off_t offset)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
    if (p == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    return p;
}

static const char *kind_name(uint32_t kind)
{
    switch (kind) {
    case IP_KIND_QUEUE:
        return "Queue";
    case IP_KIND_SIMPLE_QUEUE:
        return "SimpleQueue";
    case IP_KIND_JOINABLE_QUEUE:
        return "JoinableQueue";
    case IP_KIND_PIPE:
        return "Pipe";
    case IP_KIND_LOCK:
        return "Lock";
    case IP_KIND_RLOCK:
        return "RLock";
    case IP_KIND_SEMAPHORE:
        return "Semaphore";
    case IP_KIND_BOUNDED_SEMAPHORE:
        return "BoundedSemaphore";
    case IP_KIND_EVENT:
        return "Event";
    case IP_KIND_VALUE:
        return "Value";
    case IP_KIND_ARRAY:
        return "Array";
    case IP_KIND_CONDITION:
        return "Condition";
    case IP_KIND_BARRIER:
        return "Barrier";
    case IP_KIND_HEAP:
        return "heap";
    case IP_KIND_DICT:
        return "SharedDict";
    case IP_KIND_LIST:
        return "SharedList";
    case IP_KIND_NAMESPACE:
        return "Namespace";
    default:
        return NULL;
    }
}

int ip_seghdr_check(const ip_seghdr_t *h, uint64_t file_size, int want_kind)
{
    if (file_size < sizeof(ip_seghdr_t)) {
        PyErr_Format(ip_SegmentError, "segment is truncated: %llu bytes, smaller than any header",
                     (unsigned long long)file_size);
        return -1;
    }
    uint64_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
    if (magic != IP_MAGIC) {
        PyErr_SetString(ip_SegmentError,
                        magic == 0 ? "segment is not initialized (its creator may have died while "
                                     "creating it)"
                                   : "not an interproc segment (bad magic number)");
        return -1;
    }
    if (h->version != IP_LAYOUT_VERSION) {
        PyErr_Format(ip_SegmentError, "segment has layout version %u; this interproc reads version %u",
                     h->version, IP_LAYOUT_VERSION);
        return -1;
    }
    if (kind_name(h->kind) == NULL) {
        PyErr_Format(ip_SegmentError, "segment has unknown kind %u", h->kind);
        return -1;
    }
    if (h->header_size < sizeof(ip_seghdr_t) || h->header_size > h->initial_size
        || h->header_size % IP_PAGE) {
        PyErr_SetString(ip_SegmentError, "segment header is corrupt (bad header size)");
        return -1;
    }
    if (h->initial_size > file_size) {
        PyErr_Format(ip_SegmentError, "segment is truncated: %llu bytes, expected at least %llu",
                     (unsigned long long)file_size, (unsigned long long)h->initial_size);
        return -1;
    }
    if (h->file_end < h->initial_size) {
        PyErr_SetString(ip_SegmentError, "segment header is corrupt (bad file end)");
        return -1;
    }
    if (want_kind && (int)h->kind != want_kind) {
        PyErr_Format(PyExc_TypeError, "the segment holds a %s; asked for: %s", kind_name(h->kind),
                     kind_name((uint32_t)want_kind));
        return -1;
    }
    return 0;
}

void *ip_segment_create(int fd, uint32_t kind, uint64_t header_size, uint64_t size)
{
    if (ftruncate(fd, (off_t)size) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    ip_seghdr_t *h = ip_map(fd, (size_t)size, 0);
    if (h == NULL)
        return NULL;
    if (ip_mutex_init(&h->grow_lock) != 0) {
        munmap(h, (size_t)size);
        PyErr_SetString(PyExc_OSError, "cannot initialize a process-shared mutex");
        return NULL;
    }
    h->version = IP_LAYOUT_VERSION;
    h->kind = kind;
    h->header_size = header_size;
    h->initial_size = size;
    h->file_end = size;
    h->creator_pid = (uint64_t)getpid();
    if (getrandom(&h->uid, sizeof h->uid, 0) != (ssize_t)sizeof h->uid)
        h->uid = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)h;
    return h;
}

void ip_segment_publish(ip_seghdr_t *h)
{
    __atomic_store_n(&h->magic, IP_MAGIC, __ATOMIC_RELEASE);
}

void *ip_segment_attach(int fd, uint32_t kind, uint64_t header_size, size_t *size_out,
                        uint64_t *file_size, ip_seghdr_t *validated)
{
    struct stat st;
    ip_seghdr_t probe;
    if (fstat(fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < sizeof probe) {
        PyErr_Format(ip_SegmentError, "segment is truncated: %llu bytes, smaller than any header",
                     (unsigned long long)size);
        return NULL;
    }
    if (pread(fd, &probe, sizeof probe, 0) != (ssize_t)sizeof probe) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    if (ip_seghdr_check(&probe, size, (int)kind) < 0)
        return NULL;
    if (probe.header_size != header_size || probe.initial_size < probe.header_size) {
        PyErr_Format(ip_SegmentError, "%s header is corrupt (bad sizes)", kind_name(kind));
        return NULL;
    }
    void *p = ip_map(fd, (size_t)probe.initial_size, 0);
    if (p == NULL)
        return NULL;
    *size_out = (size_t)probe.initial_size;
    *file_size = size;
    if (validated)
        *validated = probe;
    return p;
}

int ip_segment_alloc(ip_seghdr_t *h, int fd, uint64_t size, uint64_t *offset)
{
    /* Serialized so that two growers can never shrink the file under each
     * other.  A dead holder at worst grew the file without recording it in
     * file_end: the next caller hands out the same offset again, harmless
     * because nothing points at it yet.  A holder frozen by SIGSTOP is
     * waited for without the GIL and with signal handlers run. */
    static const ip_deadline_t forever = {.infinite = 1};
    int lr = ip_mutex_lock(&h->grow_lock, &forever);
    if (lr == IP_LOCK_ERROR)
        return -1;
    if (lr == IP_LOCK_OWNER_DIED)
        ip_mutex_consistent(&h->grow_lock);
    else if (lr != IP_LOCK_OK) {
        PyErr_SetString(PyExc_OSError, "cannot lock the segment to grow it");
        return -1;
    }
    /* file_end is shared: read once and checked, so that a damaged value
     * neither wraps the new end nor asks for an absurd file. */
    uint64_t off = __atomic_load_n(&h->file_end, __ATOMIC_RELAXED);
    uint64_t end = off + size;
    if (off % IP_PAGE || size % IP_PAGE || end < off || end > (uint64_t)INT64_MAX) {
        ip_mutex_unlock(&h->grow_lock);
        PyErr_SetString(ip_SegmentError, "segment header is corrupt (bad file end)");
        return -1;
    }
    struct stat st;
    int rc = fstat(fd, &st);
    if (rc == 0 && (uint64_t)st.st_size < end)
        rc = ftruncate(fd, (off_t)end);
    int saved = errno;
    if (rc == 0) {
        __atomic_store_n(&h->file_end, end, __ATOMIC_RELAXED);
        *offset = off;
    }
    ip_mutex_unlock(&h->grow_lock);
    if (rc != 0) {
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

int ip_pids_register(uint32_t *pids, int n)
{
    /* One slot per handle, not per process: closing one of a process's
     * handles must not unlist it while another is open. */
    uint32_t me = (uint32_t)getpid();
    for (int i = 0; i < n; i++) {
        uint32_t p = __atomic_load_n(&pids[i], __ATOMIC_ACQUIRE);
        if (p != 0 && !(kill((pid_t)p, 0) == -1 && errno == ESRCH))
            continue;
        if (__atomic_compare_exchange_n(&pids[i], &p, me, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return i;
    }
    return -1; /* table full: the pid is simply not listed */
}

void ip_pids_unregister(uint32_t *pids, int n, int slot)
{
    if (slot < 0 || slot >= n)
        return;
    uint32_t me = (uint32_t)getpid();
    __atomic_compare_exchange_n(&pids[slot], &me, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------------------ */
/* Python functions                                                    */

PyDoc_STRVAR(open_segment_doc,
"open_segment(name, create, mode)\n--\n\n"
"Open or create the file behind a segment and return (fd, created).\n\n"
"name None makes an anonymous memfd.  create=None opens an existing name or\n"
"creates it; True demands a new one (FileExistsError); False demands an\n"
"existing one (FileNotFoundError).  A new file is empty: the caller lays out\n"
"its header.");

static PyObject *open_segment(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *name, *create;
    int mode;
    if (!PyArg_ParseTuple(args, "OOi:open_segment", &name, &create, &mode))
        return NULL;
    if (mode < 0 || mode > 0777) {
        PyErr_Format(PyExc_ValueError, "mode must be a permission mask between 0 and 0o777, not %d",
                     mode);
        return NULL;
    }
    int fd;
    if (name == Py_None) {
        fd = memfd_create("interproc", MFD_CLOEXEC);
        if (fd < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(iO)", fd, Py_True);
    }
    char path[IP_NAME_MAX + 32];
    if (ip_name_check(name, path, sizeof path) < 0)
        return NULL;
    int want_create = create == Py_None ? -1 : PyObject_IsTrue(create);
    if (want_create == -1 && PyErr_Occurred())
        return NULL;
    for (int attempt = 0; attempt < 100; attempt++) {
        if (want_create != 0) {
            fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
            if (fd >= 0) {
                /* shm_open honours the umask; the caller's mode is what they asked for. */
                if (fchmod(fd, (mode_t)mode) != 0) {
                    int saved = errno;
                    close(fd);
                    shm_unlink(path);
                    errno = saved;
                    return PyErr_SetFromErrno(PyExc_OSError);
                }
                return Py_BuildValue("(iO)", fd, Py_True);
            }
            if (errno != EEXIST || want_create == 1)
                return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
        }
        fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
        if (fd >= 0)
            return Py_BuildValue("(iO)", fd, Py_False);
        if (errno != ENOENT || want_create == 0)
            return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
        /* unlinked between our two calls: try creating again */
    }
    PyErr_Format(PyExc_OSError, "could not open or create %R: it keeps appearing and vanishing", name);
    return NULL;
}

PyDoc_STRVAR(unlink_segment_doc,
"unlink_segment(name)\n--\n\n"
"Remove a named segment.  Processes that have it open keep using it; the\n"
"memory is freed when the last of them closes it.");

static PyObject *unlink_segment(PyObject *Py_UNUSED(m), PyObject *name)
{
    char path[IP_NAME_MAX + 32];
    if (ip_name_check(name, path, sizeof path) < 0)
        return NULL;
    if (shm_unlink(path) != 0)
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(segment_kind_doc,
"segment_kind(fd)\n--\n\n"
"Validate the header of the segment behind fd and return its kind number.\n"
"Raises SegmentError naming the problem for a truncated, foreign or corrupt\n"
"segment.  Waits up to about a second for a segment still being created.");

static PyObject *segment_kind(PyObject *Py_UNUSED(m), PyObject *arg)
{
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    for (int waited = 0;; waited++) {
        struct stat st;
        if (fstat(fd, &st) != 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        if ((uint64_t)st.st_size >= sizeof(ip_seghdr_t)) {
            ip_seghdr_t h;
            if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
                return PyErr_SetFromErrno(PyExc_OSError);
            if (h.magic == IP_MAGIC || h.magic != 0 || waited >= 100) {
                if (ip_seghdr_check(&h, (uint64_t)st.st_size, 0) < 0)
                    return NULL;
                return PyLong_FromUnsignedLong(h.kind);
            }
        } else if (waited >= 100) {
            PyErr_Format(ip_SegmentError,
                         "segment is truncated: %lld bytes, smaller than any header "
                         "(its creator may have died while creating it)",
                         (long long)st.st_size);
            return NULL;
        }
        /* A creator is between O_EXCL and its last header store. */
        Py_BEGIN_ALLOW_THREADS
        usleep(10000);
        Py_END_ALLOW_THREADS
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

PyMethodDef ip_segment_methods[] = {
    {"open_segment", open_segment, METH_VARARGS, open_segment_doc},
    {"unlink_segment", unlink_segment, METH_O, unlink_segment_doc},
    {"segment_kind", segment_kind, METH_O, segment_kind_doc},
    {NULL, NULL, 0, NULL},
};
