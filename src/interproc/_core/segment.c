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
#include <grp.h>
#include <pwd.h>
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
    case IP_KIND_SET:
        return "SharedSet";
    default:
        return NULL;
    }
}

/* `h` must be a private copy (pread, or a struct copy): another process can
 * rewrite the mapped header between any two of these checks. */
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
    /* The file is grown before file_end records it, so a shorter file was
     * cut by someone: reading the missing part would be a SIGBUS. */
    if (h->file_end > file_size) {
        PyErr_Format(ip_SegmentError, "segment is truncated: %llu bytes, its header says %llu",
                     (unsigned long long)file_size, (unsigned long long)h->file_end);
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
    /* The size that file_end is checked against is read after the header:
     * a file grows before file_end records it, so a size read first could
     * miss a growth the header then names. */
    if (fstat(fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    size = (uint64_t)st.st_size;
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
/* Whom a named segment may come from                                  */

/* /dev/shm is writable by every user, so a name may have been taken by
 * someone else before us, with whatever in it.  The `mode` a caller passes
 * says whom it shares the object with, and so also whom it trusts: a file is
 * accepted when the group and other write bits it grants are among the
 * caller's (nobody else can change it under us beyond what we asked for), and
 * it is ours, or the caller's mode lets others write (anyone's is accepted),
 * or lets the group write and the file's group is one of ours.  Root is not
 * special: root refusing a planted file is the point.  Everything is decided
 * on fstat of the descriptor actually opened, so nothing can be swapped in
 * between the check and the use. */

#define IP_SHM_DIR "/dev/shm"
#define SHARE_BITS (S_IWGRP | S_IWOTH)

/* Each kind of file system entry: as segment_stat names it, and in words. */
static const struct {
    mode_t type;
    const char *word, *words;
} file_types[] = {
    {S_IFREG, "file", "a regular file"},   {S_IFDIR, "directory", "a directory"},
    {S_IFLNK, "symlink", "a symbolic link"}, {S_IFIFO, "fifo", "a FIFO"},
    {S_IFSOCK, "socket", "a socket"},      {S_IFCHR, "device", "a character device"},
    {S_IFBLK, "device", "a block device"},
};

static const char *file_type(mode_t m, int in_words)
{
    for (size_t i = 0; i < sizeof file_types / sizeof file_types[0]; i++)
        if ((m & S_IFMT) == file_types[i].type)
            return in_words ? file_types[i].words : file_types[i].word;
    return in_words ? "a file of unknown type" : "unknown";
}

static void owner_text(uid_t uid, char *out, size_t n)
{
    struct passwd pw, *found = NULL;
    char buf[1024];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != NULL)
        snprintf(out, n, "uid %u (%s)", (unsigned)uid, pw.pw_name);
    else
        snprintf(out, n, "uid %u", (unsigned)uid);
}

static int in_my_groups(gid_t gid)
{
    if (gid == getegid())
        return 1;
    int n = getgroups(0, NULL);
    if (n <= 0)
        return 0;
    gid_t *groups = PyMem_RawMalloc((size_t)n * sizeof *groups);
    if (groups == NULL)
        return 0; /* not trusting is the safe answer */
    n = getgroups(n, groups);
    int found = 0;
    for (int i = 0; i < n && !found; i++)
        found = groups[i] == gid;
    PyMem_RawFree(groups);
    return found;
}

static int owner_trusted(const struct stat *st, int mode)
{
    return st->st_uid == geteuid() || (mode & S_IWOTH)
           || ((mode & S_IWGRP) && in_my_groups(st->st_gid));
}

static const char *writers_text(int bits)
{
    switch (bits & SHARE_BITS) {
    case S_IWGRP:
        return "its group";
    case S_IWOTH:
        return "other users";
    case SHARE_BITS:
        return "its group and other users";
    default:
        return "no one";
    }
}

/* What a caller's mode accepts, in words, for the end of a refusal. */
static void accepts_text(int mode, int opening, char *out, size_t n)
{
    const char *whose = (mode & S_IWOTH)   ? "segments of any owner"
                        : (mode & S_IWGRP) ? "your own segments and your groups'"
                                           : "only your own segments";
    if (!opening)
        snprintf(out, n, "mode=0o%03o lets you remove %s", mode, whose);
    else if (mode & SHARE_BITS)
        snprintf(out, n, "mode=0o%03o accepts %s that at most their owner and %s can write", mode,
                 whose, writers_text(mode));
    else
        snprintf(out, n, "mode=0o%03o accepts %s that no one else can write", mode, whose);
}

/* Why a caller who passed `mode` must not open (opening) or remove
 * (!opening) the file `st` describes: returns 1 with the reason in `why`
 * and, when a wider mode would accept it, that mode in *suggest (else -1);
 * 0 when it may. */
static int refusal(const struct stat *st, int mode, int opening, char *why, size_t n, int *suggest)
{
    char owner[300];
    *suggest = -1;
    if (opening && !S_ISREG(st->st_mode)) {
        owner_text(st->st_uid, owner, sizeof owner);
        snprintf(why, n,
                 "it is %s owned by %s, not a regular file; an interproc segment is always a "
                 "regular file, so someone may have planted it",
                 file_type(st->st_mode, 1), owner);
        return 1;
    }
    if (opening && st->st_nlink > 1) {
        snprintf(why, n,
                 "it has %lu names (hard links) and an interproc segment has exactly one: "
                 "another name may lead to the same memory",
                 (unsigned long)st->st_nlink);
        return 1;
    }
    int foreign = !owner_trusted(st, mode);
    int extra = opening ? (int)(st->st_mode & SHARE_BITS) & ~mode : 0;
    if (!foreign && !extra)
        return 0;
    int wider = mode;
    if (extra & S_IWGRP)
        wider |= S_IRGRP | S_IWGRP;
    if (extra & S_IWOTH)
        wider |= S_IROTH | S_IWOTH;
    if (foreign)
        wider |= in_my_groups(st->st_gid) ? (S_IRGRP | S_IWGRP) : (S_IROTH | S_IWOTH);
    *suggest = wider;
    char accepts[200];
    accepts_text(mode, opening, accepts, sizeof accepts);
    size_t used = 0;
    if (foreign) {
        owner_text(st->st_uid, owner, sizeof owner);
        used += (size_t)snprintf(why, n, "it belongs to %s, not to you (uid %u)", owner,
                                 (unsigned)geteuid());
    }
    if (extra && used < n)
        used += (size_t)snprintf(why + used, n - used, "%s%s can write to it (mode %04o)",
                                 foreign ? ", and " : "", writers_text(extra),
                                 (unsigned)(st->st_mode & 07777));
    if (used < n)
        snprintf(why + used, n - used, "; %s", accepts);
    return 1;
}

/* Checks a name and gives both its shm_open path and its file system path. */
static int name_paths(PyObject *name, char *path, size_t pathlen, char *full, size_t fulllen)
{
    if (ip_name_check(name, path, pathlen) < 0)
        return -1;
    snprintf(full, fulllen, "%s%s", IP_SHM_DIR, path);
    return 0;
}

/* The file name as a Python str, for messages (%R escapes what a terminal
 * must not see). */
static PyObject *shm_file(const char *path)
{
    return PyUnicode_FromFormat("%s%s", IP_SHM_DIR, path);
}

static void raise_refusal(const char *verb, const char *path, const char *why, int suggest,
                          int opening)
{
    PyObject *file = shm_file(path);
    if (file == NULL)
        return;
    /* PyErr_Format has no %o. */
    char advice[200] = "";
    if (suggest >= 0 && opening)
        snprintf(advice, sizeof advice,
                 ". Another user may have planted it or may change it under you; to share it "
                 "deliberately, pass mode=0o%03o",
                 suggest);
    else if (suggest >= 0)
        snprintf(advice, sizeof advice,
                 "; pass mode=0o%03o to remove it (interproc rm --mode %03o)", suggest, suggest);
    PyErr_Format(PyExc_PermissionError, "refusing to %s %R: %s%s", verb, file, why, advice);
    Py_DECREF(file);
}

/* Checks an opened existing segment; -1 with PermissionError set (fd left
 * open for the caller to close). */
static int check_opened(int fd, const char *path, int mode)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    char why[1024];
    int suggest;
    if (refusal(&st, mode, 1, why, sizeof why, &suggest)) {
        raise_refusal("open", path, why, suggest, 1);
        return -1;
    }
    return 0;
}

/* open() failed with `err` on an existing name: say what is there instead of
 * a bare errno when we can tell. */
static PyObject *open_failed(PyObject *name, const char *path, const char *full, int err)
{
    struct stat st;
    if (err != ENOENT && lstat(full, &st) == 0) {
        char owner[300], why[1024];
        owner_text(st.st_uid, owner, sizeof owner);
        if (!S_ISREG(st.st_mode)) {
            int suggest;
            refusal(&st, 0, 1, why, sizeof why, &suggest);
            raise_refusal("open", path, why, -1, 1);
            return NULL;
        }
        if (err == EACCES || err == EPERM) {
            char perms[8]; /* PyErr_Format has no %o */
            snprintf(perms, sizeof perms, "%04o", (unsigned)(st.st_mode & 07777));
            PyObject *file = shm_file(path);
            if (file != NULL) {
                PyErr_Format(PyExc_PermissionError,
                             "cannot open %R: it belongs to %s and its mode %s does not let you "
                             "read and write it",
                             file, owner, perms);
                Py_DECREF(file);
            }
            return NULL;
        }
    }
    errno = err;
    return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
}

/* ------------------------------------------------------------------ */
/* Python functions                                                    */

static PyObject *fd_result(int fd, int created)
{
    PyObject *r = Py_BuildValue("(iO)", fd, created ? Py_True : Py_False);
    if (r == NULL)
        close(fd);
    return r;
}

static int check_mode(int mode)
{
    if (mode < 0 || mode > 0777) {
        PyErr_Format(PyExc_ValueError, "mode must be a permission mask between 0 and 0o777, not %d",
                     mode);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(open_segment_doc,
"open_segment(name, create, mode)\n--\n\n"
"Open or create the file behind a segment and return (fd, created).\n\n"
"name None makes an anonymous memfd, sealed against shrinking.  create=None\n"
"opens an existing name or creates it; True demands a new one\n"
"(FileExistsError); False demands an existing one (FileNotFoundError).  A new\n"
"file is empty: the caller lays out its header.  An existing file must be a\n"
"regular file with one name that `mode` trusts (see docs/design.md), else\n"
"PermissionError says whose it is and why it was refused.  Never follows a\n"
"symbolic link and never blocks.");

static PyObject *open_segment(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *name, *create;
    int mode;
    if (!PyArg_ParseTuple(args, "OOi:open_segment", &name, &create, &mode))
        return NULL;
    if (check_mode(mode) < 0)
        return NULL;
    int fd;
    if (name == Py_None) {
        /* Sealed so that no process (a same-user one reaching it through
         * /proc/<pid>/fd included) can shrink it under our mappings, which
         * would make every user's next touch of the lost pages a SIGBUS.
         * Growing and punching holes stay possible: queues and heaps do. */
        fd = memfd_create("interproc", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            close(fd);
            return NULL;
        }
        return fd_result(fd, 1);
    }
    char path[IP_NAME_MAX + 32], full[IP_NAME_MAX + 64];
    if (name_paths(name, path, sizeof path, full, sizeof full) < 0)
        return NULL;
    int want_create = create == Py_None ? -1 : PyObject_IsTrue(create);
    if (want_create == -1 && PyErr_Occurred())
        return NULL;
    for (int attempt = 0; attempt < 100; attempt++) {
        if (want_create != 0) {
            /* O_EXCL never follows a link: a planted one is EEXIST. */
            fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
            if (fd >= 0) {
                /* shm_open honours the umask; the caller's mode is what they asked for. */
                if (fchmod(fd, (mode_t)mode) != 0) {
                    int saved = errno;
                    close(fd);
                    shm_unlink(path);
                    errno = saved;
                    return PyErr_SetFromErrno(PyExc_OSError);
                }
                return fd_result(fd, 1);
            }
            if (errno != EEXIST || want_create == 1)
                return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
        }
        /* O_NONBLOCK: a planted FIFO must not hang us (it has no effect on
         * a regular file); O_NOCTTY: nor a planted terminal adopt us. */
        fd = shm_open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0);
        if (fd >= 0) {
            if (check_opened(fd, path, mode) < 0) {
                close(fd);
                return NULL;
            }
            return fd_result(fd, 0);
        }
        if (errno != ENOENT || want_create == 0)
            return open_failed(name, path, full, errno);
        /* unlinked between our two calls: try creating again */
    }
    PyErr_Format(PyExc_OSError, "could not open or create %R: it keeps appearing and vanishing", name);
    return NULL;
}

PyDoc_STRVAR(unlink_segment_doc,
"unlink_segment(name, mode=0o600)\n--\n\n"
"Remove a named segment.  Processes that have it open keep using it; the\n"
"memory is freed when the last of them closes it.  A name owned by a user\n"
"`mode` does not trust (see open_segment) is refused with PermissionError.");

/* What the functions that look at a name without opening it share: their
 * arguments (name, mode=0o600) and what lstat says is there. */
typedef struct {
    PyObject *name;
    int mode;
    char path[IP_NAME_MAX + 32];
    char full[IP_NAME_MAX + 64];
    struct stat st;
} entry_t;

static int look_up(PyObject *args, const char *format, entry_t *e)
{
    e->mode = 0600;
    if (!PyArg_ParseTuple(args, format, &e->name, &e->mode) || check_mode(e->mode) < 0
        || name_paths(e->name, e->path, sizeof e->path, e->full, sizeof e->full) < 0)
        return -1;
    if (lstat(e->full, &e->st) != 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, e->name);
        return -1;
    }
    return 0;
}

static PyObject *unlink_segment(PyObject *Py_UNUSED(m), PyObject *args)
{
    /* Checked by path, then removed by path: in the sticky /dev/shm only
     * the owner (or root) can replace an entry in between, and what root
     * could swap in is at worst a planted file we then remove. */
    entry_t e;
    if (look_up(args, "O|i:unlink_segment", &e) < 0)
        return NULL;
    char why[1024];
    int suggest;
    if (refusal(&e.st, e.mode, 0, why, sizeof why, &suggest)) {
        raise_refusal("remove", e.path, why, suggest, 0);
        return NULL;
    }
    if (S_ISDIR(e.st.st_mode)) {
        PyObject *file = shm_file(e.path);
        if (file != NULL) {
            PyErr_Format(PyExc_IsADirectoryError,
                         "cannot remove %R: it is a directory, not an interproc segment", file);
            Py_DECREF(file);
        }
        return NULL;
    }
    if (shm_unlink(e.path) != 0) {
        int err = errno;
        if (err == EPERM || err == EACCES) {
            char owner[300];
            owner_text(e.st.st_uid, owner, sizeof owner);
            PyObject *file = shm_file(e.path);
            if (file != NULL) {
                PyErr_Format(PyExc_PermissionError,
                             "cannot remove %R: it belongs to %s, and in /dev/shm only a file's "
                             "owner (or root) may remove it",
                             file, owner);
                Py_DECREF(file);
            }
            return NULL;
        }
        errno = err;
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, e.name);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(segment_stat_doc,
"segment_stat(name, mode=0o600)\n--\n\n"
"What is under a name, without opening it: a dict with 'uid', 'owner' (a\n"
"user name, or None), 'gid', 'mode' (permission bits), 'type', 'size',\n"
"'nlink' and 'refused': None when open_segment(name, ..., mode) would accept\n"
"it, else why not.  FileNotFoundError if there is nothing.");

static PyObject *segment_stat(PyObject *Py_UNUSED(m), PyObject *args)
{
    entry_t e;
    if (look_up(args, "O|i:segment_stat", &e) < 0)
        return NULL;
    const struct stat st = e.st;
    char why[1024];
    int suggest;
    int refused = refusal(&st, e.mode, 1, why, sizeof why, &suggest);
    struct passwd pw, *found = NULL;
    char buf[1024];
    int known = getpwuid_r(st.st_uid, &pw, buf, sizeof buf, &found) == 0 && found != NULL;
    return Py_BuildValue("{s:I,s:s,s:I,s:I,s:s,s:L,s:k,s:s}", "uid", (unsigned)st.st_uid, "owner",
                         known ? pw.pw_name : NULL, "gid", (unsigned)st.st_gid, "mode",
                         (unsigned)(st.st_mode & 07777), "type", file_type(st.st_mode, 0), "size",
                         (long long)st.st_size, "nlink", (unsigned long)st.st_nlink, "refused",
                         refused ? why : NULL);
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
            if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || fstat(fd, &st) != 0)
                return PyErr_SetFromErrno(PyExc_OSError); /* the size after the header: as above */
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
    {"unlink_segment", unlink_segment, METH_VARARGS, unlink_segment_doc},
    {"segment_stat", segment_stat, METH_VARARGS, segment_stat_doc},
    {"segment_kind", segment_kind, METH_O, segment_kind_doc},
    {NULL, NULL, 0, NULL},
};
