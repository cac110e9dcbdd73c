/* interproc C core: shared layouts and the interfaces between its layers.
 *
 * Layers (one C file each):
 *   segment.c  shared-memory segments: memfd / POSIX shm, header validation
 *   wait.c     deadlines, futex waits, robust process-shared mutexes
 *   ring.c     the byte ring with its region chain and redo journals
 *   buffer.c   the memory large messages are received into
 *   queue.c    the QueueCore Python type over one ring
 *   module.c   module state and functions
 *
 * Every structure that lives in shared memory has a fixed layout; any change
 * to one of them bumps IP_LAYOUT_VERSION.
 */
#ifndef INTERPROC_H
#define INTERPROC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <time.h>

#define IP_MAGIC 0x434f525052544e49ULL /* "INTRPROC" read little-endian */
#define IP_LAYOUT_VERSION 5u
#define IP_CACHELINE 64
#define IP_PAGE 4096u
#define IP_SHM_PREFIX "/interproc."
#define IP_NAME_MAX 200

enum ip_kind {
    IP_KIND_QUEUE = 1,
    IP_KIND_SIMPLE_QUEUE = 2,
    IP_KIND_JOINABLE_QUEUE = 3,
    IP_KIND_PIPE = 4,
    IP_KIND_LOCK = 5,
    IP_KIND_RLOCK = 6,
    IP_KIND_SEMAPHORE = 7,
    IP_KIND_BOUNDED_SEMAPHORE = 8,
    IP_KIND_EVENT = 9,
    IP_KIND_VALUE = 10, /* a Value: an RLock's words, then the data page(s) */
    IP_KIND_ARRAY = 11,
    IP_KIND_CONDITION = 12, /* an RLock's words, and the waiter slots (cond_*) */
    IP_KIND_BARRIER = 13,   /* `value` holds generation << 32 | broken << 31 | count */
    IP_KIND_HEAP = 14,      /* containers (heap.c) with no root: anonymous only */
    IP_KIND_DICT = 15,      /* a heap whose root is a SharedDict */
    IP_KIND_LIST = 16,      /* ... a SharedList */
    IP_KIND_NAMESPACE = 17, /* ... a Namespace */
    IP_KIND_SET = 18,       /* ... a SharedSet */
};

/* ------------------------------------------------------------------ */
/* Segment header: the first 128 bytes of every segment.              */

typedef struct {
    uint64_t magic;        /* stored last, with release order: a reader that sees it sees the rest */
    uint32_t version;
    uint32_t kind;
    uint64_t header_size;  /* bytes before the first data region */
    uint64_t initial_size; /* file size when created; the file only grows */
    uint64_t creator_pid;
    uint64_t file_end;     /* where the next overflow extent goes; guarded by grow_lock */
    uint64_t uid;          /* random: tells this segment from any other behind a reused fd */
    uint8_t reserved[8];
    _Alignas(IP_CACHELINE) pthread_mutex_t grow_lock;
} ip_seghdr_t;
_Static_assert(sizeof(ip_seghdr_t) == 128, "ip_seghdr_t changed size: bump IP_LAYOUT_VERSION and the docs");

/* ------------------------------------------------------------------ */
/* Waiting layer                                                       */

typedef struct {
    int infinite;
    struct timespec at; /* CLOCK_MONOTONIC, absolute */
} ip_deadline_t;

/* Parses multiprocessing's (block, timeout) pair.  Returns -1 with ValueError
 * set for a negative or non-numeric timeout. */
int ip_deadline_init(ip_deadline_t *d, int block, PyObject *timeout);
int ip_deadline_passed(const ip_deadline_t *d);
int64_t ip_now_ns(void); /* CLOCK_MONOTONIC: the same clock in every process */

/* A number naming the calling thread, unique for the life of the process:
 * unlike a thread ident, never reused by a later thread. */
uint64_t ip_thread_serial(void);

/* Liveness identities.  A process that needs to be known on a segment (a
 * lock holder, a waiter) holds an OFD lock on one byte of the segment's
 * file at IP_KEY_BASE + key, through a descriptor of its own; the key is
 * its name there.  The kernel drops the lock when the process dies, and
 * any process sharing the file asks whether a key is held in one fcntl,
 * whatever its PID namespace.  One identity per process and file, shared
 * by all handles of that file and refcounted by them; a forked child
 * starts without any.  Every function here is called with the GIL held. */
#define IP_KEY_BITS 48
#define IP_KEY_MASK ((1ull << IP_KEY_BITS) - 1)
#define IP_KEY_BASE (1ll << 62)

typedef struct {
    uint64_t key;   /* valid while epoch == ip_ident_epoch */
    uint64_t epoch;
    void *node;     /* the process-wide identity this handle holds */
} ip_ident_t;

extern uint64_t ip_ident_epoch; /* changes in a forked child */

/* The handle's key when it already holds one: no syscall. */
static inline uint64_t ip_ident_fast(const ip_ident_t *id)
{
    return id->epoch == ip_ident_epoch ? id->key : 0;
}
/* This process's key on the file behind fd.  With `create`, made when the
 * process has none (0 with an exception set on failure); without, 0 and
 * no exception when it has none. */
uint64_t ip_ident_get(ip_ident_t *id, int fd, int create);
/* Gives back the handle's hold; the last hold of the process drops the
 * identity, which then reads as dead. */
void ip_ident_release(ip_ident_t *id);
/* Whether a live process holds `key` on the file behind fd, which must not
 * be an identity's own descriptor (handles' descriptors never are).  When
 * the kernel cannot say, the answer is yes: a live holder must never be
 * taken for dead. */
int ip_key_alive(int fd, uint64_t key);
/* Tests only: the longest sleep of a wait (ns; 0 restores the default). */
void ip_wait_set_slice(int64_t ns);

/* An event count in shared memory: how a side that published a change wakes
 * whoever sleeps waiting for one.  Signalling costs a fence and a load unless
 * someone sleeps.
 *
 * Bells: an asyncio event loop cannot sleep on a futex, so a process whose
 * loop awaits the event rings it instead.  The loop binds an abstract Unix
 * datagram socket named after its pid and a nonce, and puts a bell word
 * (pid, nonce and a token of its own) in a free slot here; a signal that finds sleepers also
 * sends the bell's token to each such socket, and clears the slot of a
 * process that is gone (the socket vanished with it).  A registered bell
 * counts among the waiters, so that signals take the slow path.  Every word
 * here may be forged: a forged bell costs a datagram that wakes nobody, or a
 * spurious wake-up of another interproc loop. */
#define IP_BELLS 6

typedef struct {
    uint32_t seq;     /* futex word: bumped by a signal that finds sleepers */
    uint32_t waiters; /* sleepers; counted only while asleep, not while spinning */
    uint32_t bells;   /* slots in use (a hint: ringers scan when it is not 0) */
    uint32_t reserved;
    uint64_t bell[IP_BELLS]; /* 0 free, else pid << 32 | nonce << 20 | token */
} ip_event_t;
_Static_assert(sizeof(ip_event_t) == IP_CACHELINE, "ip_event_t: one cache line");

#define IP_BELL_NONCE_BITS 12
#define IP_BELL_TOKEN_BITS 20
/* The abstract socket name of a bell's loop: this prefix, the pid in
 * decimal, '/', the nonce in three hex digits. */
#define IP_BELL_NAME_PREFIX "interproc-bell/"

/* Puts `bell` in a free slot of ev and counts it among the waiters; returns
 * the slot, or -1 when every slot is taken (the caller then polls). */
int ip_bell_add(ip_event_t *ev, uint64_t bell);
/* Undoes ip_bell_add; nothing if the slot no longer holds `bell`. */
void ip_bell_remove(ip_event_t *ev, int slot, uint64_t bell);
/* The body of the types' _bell(which, ...) method, for the event `which`
 * names: () -> its seq; (bell) -> ip_bell_add's slot; (slot, bell) ->
 * ip_bell_remove. */
PyObject *ip_bell_py(ip_event_t *ev, PyObject *const *args, Py_ssize_t nargs);
/* The event number, 0 to last, that a _bell() call names first; -1 with an
 * exception. */
long ip_bell_which(PyObject *const *args, Py_ssize_t nargs, long last);

/* The running asyncio task's owner number (its top bit set, so that no
 * thread's ip_thread_serial() is one), 0 when no task runs or it has none
 * yet: what a lock held by a task (acquire_async) asks when code that
 * names no owner (release(), a container operation) runs.  The Python
 * layer gives the answer through _set_task_owner_hook. */
uint64_t ip_running_task_owner(void);
PyObject *ip_set_task_owner_hook(PyObject *cls, PyObject *hook);

/* Call after publishing: wakes up to n sleepers of ev, if there are any. */
void ip_event_signal(ip_event_t *ev, int n);
/* The same, right after a sequentially consistent read-modify-write that
 * published the change (which already orders it before the look). */
void ip_event_wake(ip_event_t *ev, int n);

/* One try at whatever the caller waits for.  Returns 1 when done, -1 with a
 * Python exception set, 0 when it must wait; then *watch (if set) points at a
 * word that changes when trying again is worth it, and *watch_val is its
 * current value. */
typedef int (*ip_attempt_fn)(void *ctx, int before_sleep, const uint64_t **watch,
                             uint64_t *watch_val);

enum ip_wait_result { IP_WAIT_ERROR = -1, IP_WAIT_TIMEOUT = 0, IP_WAIT_DONE = 1 };

/* Calls attempt() until it is done, fails or the deadline passes.  Called and
 * returns with the GIL held.  Between tries it spins briefly on the watched
 * word (with the GIL released after a few rounds), then sleeps on ev in
 * bounded slices, re-taking the GIL between slices to run signal handlers.
 * Slices also bound what a lost wake-up costs (a signaller killed between
 * publishing and waking).  Whoever publishes what attempt() waits for must
 * call ip_event_signal(ev) afterwards. */
int ip_wait_for(ip_event_t *ev, const ip_deadline_t *d, ip_attempt_fn attempt, void *ctx);
/* The same, for a wait whose watched word moves before the wait is over (a
 * Barrier's count as parties arrive): a spin that saw the word change earns
 * another, up to `spins` in all, before the waiter sleeps.  Where others
 * compete for what changed (producers for room, acquirers for a lock), one
 * spin is better: a loser that spins on takes a CPU from the winner. */
int ip_wait_for_spins(ip_event_t *ev, const ip_deadline_t *d, ip_attempt_fn attempt, void *ctx,
                      int spins);

/* Robust, process-shared mutexes.  A holder that dies hands the mutex to the
 * next locker with IP_LOCK_OWNER_DIED; that locker repairs the protected
 * state and calls ip_mutex_consistent() before unlocking. */
enum ip_lock_result {
    IP_LOCK_ERROR = -1,
    IP_LOCK_OK = 0,
    IP_LOCK_OWNER_DIED = 1,
    IP_LOCK_TIMEOUT = 2,
};
int ip_mutex_init(pthread_mutex_t *m);
int ip_mutex_lock(pthread_mutex_t *m, const ip_deadline_t *d);
void ip_mutex_consistent(pthread_mutex_t *m);
void ip_mutex_unlock(pthread_mutex_t *m);

/* ------------------------------------------------------------------ */
/* Segments                                                            */

int ip_name_check(PyObject *name, char *out, size_t outlen); /* -> "/interproc.<name>" */
/* Maps the first `len` bytes of fd.  Returns NULL with OSError set. */
void *ip_map(int fd, size_t len, off_t offset);
/* Validates the header of a mapped segment of file size `file_size`.
 * Returns 0, or -1 with SegmentError / TypeError set. */
int ip_seghdr_check(const ip_seghdr_t *h, uint64_t file_size, int want_kind);
extern PyObject *ip_SegmentError;
/* A closed Queue handle was used: a ValueError, as multiprocessing's put()
 * and get() raise, and an OSError, as its empty() raises once closed. */
extern PyObject *ip_QueueClosedError;

/* Lays out a new segment in the empty file fd: sizes it, maps it whole and
 * fills in the header but the magic.  Returns the mapping, or NULL with an
 * exception set.  The caller initializes its own part, then publishes. */
void *ip_segment_create(int fd, uint32_t kind, uint64_t header_size, uint64_t size);
/* Makes a created segment visible to openers: the magic, stored last. */
void ip_segment_publish(ip_seghdr_t *h);
/* Validates the header of an existing segment of `kind` whose header part
 * is `header_size` bytes, and maps its initial size.  Returns the mapping
 * (*size_out: its length, *file_size: the file's, *validated: the header
 * as it was checked) or NULL with an exception set.  Another process can
 * change the mapped header at any time: use *validated, never the live
 * copy, for anything that sizes or places memory. */
void *ip_segment_attach(int fd, uint32_t kind, uint64_t header_size, size_t *size_out,
                        uint64_t *file_size, ip_seghdr_t *validated);

/* Appends an extent of `size` bytes to the file, under the segment's grow
 * lock, and returns its offset. */
int ip_segment_alloc(ip_seghdr_t *h, int fd, uint64_t size, uint64_t *offset);

/* ------------------------------------------------------------------ */
/* Ring                                                                */

#define IP_MAX_REGIONS 32
#define IP_PIN_SLOTS 4
/* Regions that views may pin at once, of the IP_MAX_REGIONS. */
#define IP_MAX_PINNED_REGIONS 8
#define IP_NO_REGION 0xffffffffu
#define IP_REC_HDR 16u
/* Payloads at least this large are copied without the GIL. */
#define IP_NOGIL_COPY 262144u
#define IP_STREAM_COPY (16u << 20)
#define IP_REC_ALIGN 16u

enum ip_rec_type {
    IP_REC_PICKLE = 1, /* payload is a pickle */
    IP_REC_BYTES = 2,  /* payload is the content of a bytes object */
    IP_REC_PAD = 3,    /* skip to the end of the region's buffer */
    IP_REC_FWD = 4,    /* the stream continues in region `len` */
    IP_REC_PLAIN = 5,  /* payload is in the plain codec (plain.c) */
    IP_REC_RAW = 6,    /* payload is what Connection.send_bytes() was given */
    IP_REC_OOB = 7,    /* payload is a pickle and its out-of-band buffers (ip_payload_t) */
};

typedef struct {
    uint32_t type;
    uint32_t reserved;
    uint64_t len;
} ip_rec_t;

/* A region is one ring buffer in the chain.  Its extent (offset, cap) never
 * changes once assigned, so each process maps it once. */
typedef struct {
    uint64_t offset; /* file offset of the buffer; 0 = extent not assigned */
    uint64_t cap;    /* power of two */
    uint64_t tail;   /* written by the producer side */
    uint64_t state;  /* generation << 1 | active */
    /* A big region released with its memory kept: when (CLOCK_MONOTONIC
     * ns); 0 when it holds no memory worth giving back (ip_ring_give_back). */
    uint64_t idle_since;
    /* Processes reading a message in place here (Queue.get_view): their
     * liveness keys, 0 for a free slot.  A pinned region is never written
     * by a producer, nor freed: the consumer that leaves it stores its
     * state in pinned_release instead, and the last unpin frees it. */
    uint64_t pins[IP_PIN_SLOTS];
    uint64_t pinned_release;
} ip_region_t;

/* Redo journal of one side.  A side's critical section prepares every new
 * value here, sets `valid`, applies them, and clears `valid`.  Whoever takes
 * the side's lock after its holder died re-applies a valid journal; every
 * step is idempotent, so dying anywhere leaves either the old state or the
 * new one. */
typedef struct {
    uint64_t valid;
    uint64_t count;    /* new msg_in / msg_out */
    uint64_t pos;      /* new tail / head of `region` */
    uint32_t region;
    uint32_t cur;      /* new current region of the side */
    uint32_t other;    /* producer: region to activate; consumer: region to release */
    uint32_t pad;
    uint64_t other_state; /* the state word `other` must have (activate: target; release: expected) */
    uint64_t other_tail;  /* producer: tail of the activated region */
} ip_journal_t;

typedef struct {
    _Alignas(IP_CACHELINE) pthread_mutex_t lock;
    uint32_t cur;   /* current region */
    uint32_t hint_region; /* the region hint_pos speaks of, or IP_NO_REGION */
    uint64_t count; /* messages committed by this side so far */
    /* Hints: the other side's last known position in hint_region (producer:
     * the head; consumer: the tail) and count.  Both only grow, so a stale
     * hint only understates, and reading the other side's cache line can
     * wait until the hint runs out. */
    uint64_t hint_pos;
    uint64_t hint_count;
    _Alignas(IP_CACHELINE) ip_journal_t journal;
} ip_side_t;

typedef struct {
    ip_side_t prod;
    ip_side_t cons;
    _Alignas(IP_CACHELINE) ip_event_t put_ev; /* producers published messages */
    _Alignas(IP_CACHELINE) ip_event_t get_ev; /* consumers made room (maxsize > 0) */
    _Alignas(IP_CACHELINE) ip_region_t regions[IP_MAX_REGIONS];
    _Alignas(IP_CACHELINE) uint64_t heads[IP_MAX_REGIONS]; /* written by the consumer side */
} ip_ring_t;

/* The largest region, and so the largest record, a ring ever holds. */
#define IP_MAX_REGION_CAP (1ull << 44)
#define IP_MAX_RECORD (IP_MAX_REGION_CAP - 4 * IP_REC_HDR)
/* More messages than this between the counts cannot fit in the regions:
 * counts that say so are corrupt. */
#define IP_MAX_MESSAGES ((uint64_t)IP_MAX_REGIONS * (IP_MAX_REGION_CAP / IP_REC_HDR))

/* Process-local view of a ring: how to reach its regions.  Everything
 * that places or sizes memory is kept here as it was checked and mapped,
 * never re-read from the shared header, which another process may change
 * at any time. */
typedef struct {
    ip_ring_t *ring;
    ip_seghdr_t *seg;
    int fd;
    uint64_t data_start;           /* overflow regions lie at or after it: the checked initial size */
    uint8_t *maps[IP_MAX_REGIONS]; /* region 0: inside the main mapping; others: mapped on first use */
    uint64_t caps[IP_MAX_REGIONS]; /* each mapped region's capacity, as mapped */
    uint64_t offs[IP_MAX_REGIONS]; /* ... and its file offset */
} ip_ringview_t;

/* A message read in place (Queue.get_view): its payload inside this
 * process's mapping of its region, which stays pinned (ip_ring_pin) by
 * `key`, this process's liveness key, until given back. */
/* A handle's pins: one slot per region however many of its views lie
 * there, counted here.  Emptied in a forked child, whose key differs. */
typedef struct {
    pid_t pid;
    uint32_t refs[IP_MAX_REGIONS];
    int8_t slot[IP_MAX_REGIONS];
} ip_pins_t;

typedef struct {
    uint64_t key;         /* in: who pins; 0: nothing is read in place */
    ip_pins_t *pins;      /* in: the handle's pins */
    const uint8_t *data;  /* out, for the record whose payload is NULL: */
    uint64_t len;
    uint32_t region;
} ip_view_t;

/* An open transaction on one side of the ring, between lock and commit. */
typedef struct {
    uint32_t region; /* IP_NO_REGION: the side's current region was corrupt */
    uint64_t pos;
    uint64_t count;
    uint32_t other;
    uint64_t other_state;
    uint64_t other_tail;
    uint32_t nrec;  /* messages in this transaction */
} ip_txn_t;

int ip_ring_init(ip_ring_t *r, uint64_t base_offset, uint64_t base_cap);
/* Validates a ring read from a segment of `file_size` bytes; -1 with SegmentError. */
int ip_ring_check(const ip_ring_t *r, uint64_t file_size);
/* Sets up a view whose base region (checked by the caller) is mapped at
 * `base`, `base_offset` bytes into the file, `base_cap` bytes long. */
void ip_ringview_init(ip_ringview_t *v, ip_ring_t *ring, ip_seghdr_t *seg, int fd, uint8_t *base,
                      uint64_t base_offset, uint64_t base_cap, uint64_t data_start);

/* Called by whoever took a side's lock from a dead holder, before anything
 * else: re-applies the holder's journal.  -1 with SegmentError when the
 * journal is not one a producer (consumer) could have written: it is then
 * dropped, and the ring stays as it was before that commit. */
int ip_ring_recover_producer(ip_ringview_t *v);
int ip_ring_recover_consumer(ip_ringview_t *v);

/* Producer side; called with prod.lock held. */
void ip_ring_produce_begin(ip_ringview_t *v, ip_txn_t *t);
/* Reserves room for a record of `len` payload bytes and returns where the
 * payload goes (NULL with a Python exception set on failure).  May chain a new
 * region; at most one region switch per transaction (returns NULL with no
 * exception set when a second would be needed: commit and begin again). */
uint8_t *ip_ring_reserve(ip_ringview_t *v, ip_txn_t *t, uint32_t type, uint64_t len);
/* Publishes the transaction, begins the next one, returns the messages published. */
uint32_t ip_ring_produce_commit(ip_ringview_t *v, ip_txn_t *t);

/* Consumer side; called with cons.lock held. */
void ip_ring_consume_begin(ip_ringview_t *v, ip_txn_t *t);
/* Returns 1 and the next record (payload pointer, type, len), 0 when the
 * ring is empty (then t->pos is the position whose tail to watch),
 * IP_PEEK_AGAIN when the transaction must be committed before going on, -1
 * with a Python exception set.  The record lies inside this process's
 * mapping of its region and before the published tail. */
#define IP_PEEK_AGAIN 2
int ip_ring_peek(ip_ringview_t *v, ip_txn_t *t, uint32_t *type, const uint8_t **data, uint64_t *len);
void ip_ring_advance(ip_txn_t *t, uint64_t len);
uint32_t ip_ring_consume_commit(ip_ringview_t *v, ip_txn_t *t);

uint64_t ip_ring_bytes_used(const ip_ringview_t *v);
/* Whether a big region that holds nothing (free, or emptied) has kept its
 * memory for IP_WARM_IDLE_NS by `now`: a hint, read without a lock. */
int ip_ring_idle_memory(const ip_ringview_t *v, int64_t now);
/* Gives back to the kernel the memory of those regions; called with
 * prod.lock held, so that no producer picks or fills one meanwhile. */
void ip_ring_give_back(ip_ringview_t *v, int64_t now);
void ip_ringview_unmap(ip_ringview_t *v);
/* The word that changes when the consumer's current region gets data. */
const uint64_t *ip_ring_tail_word(const ip_ringview_t *v, const ip_txn_t *t);
/* Pins region i for one more view of the handle whose pins are `p`, as
 * the process whose liveness key is `key`: 0, or -1 when every slot is
 * taken by live processes, or IP_MAX_PINNED_REGIONS regions are pinned.  Called with cons.lock held, before the commit
 * that takes the message. */
int ip_ring_pin(ip_ringview_t *v, ip_pins_t *p, uint32_t i, uint64_t key);
/* One view of region i fewer (any thread, no lock); the handle's last one
 * gives its slot back, and the last pin of all frees the region if the
 * consumers left it meanwhile. */
void ip_ring_unpin(ip_ringview_t *v, ip_pins_t *p, uint32_t i, uint64_t key);
/* Producer: is a transaction at message count `in` up against maxsize?
 * 1 yes, 0 no, -1 with SegmentError when the counts are impossible. */
int ip_ring_full(ip_ringview_t *v, uint64_t in, uint64_t maxsize);

/* ------------------------------------------------------------------ */
/* Queue segment                                                       */

#define IP_MAX_PIDS 64

/* A queue's shutdown() as its shared header keeps it.  `state` only rises
 * (OPEN -> DRAIN -> NOW) and is stored under the producer lock: a put that
 * takes that lock afterwards sees it, so once it is set the producer count
 * is final and nothing can land behind a drain.  An immediate shutdown
 * records how many records it discards before it discards them, once, so
 * that whoever finishes a drain a dead process began neither counts nor
 * loses them twice.  Segments laid out before shutdown existed hold zeros
 * here, which read as an open queue. */
enum ip_shut_state { IP_SHUT_OPEN = 0, IP_SHUT_DRAIN = 1, IP_SHUT_NOW = 2 };

typedef struct {
    uint64_t state;
    uint64_t discarded; /* 0, or 1 + the records the immediate shutdown discarded */
} ip_shutdown_t;

typedef struct {
    ip_seghdr_t seg;
    _Alignas(IP_CACHELINE) uint64_t maxsize; /* 0 = unbounded */
    uint64_t base_cap;
    ip_shutdown_t shut; /* in what was padding: the layout of every other field is unchanged */
    _Alignas(IP_CACHELINE) uint64_t tasks_done; /* JoinableQueue: unfinished = prod.count - tasks_done */
    ip_event_t done_ev;
    _Alignas(IP_CACHELINE) uint32_t pids[IP_MAX_PIDS];
    _Alignas(IP_CACHELINE) ip_ring_t ring;
} ip_queue_hdr_t;

#define IP_QUEUE_HDR_SIZE (((sizeof(ip_queue_hdr_t) + IP_PAGE - 1) / IP_PAGE) * IP_PAGE)

extern PyTypeObject ip_QueueCore_Type;

/* ------------------------------------------------------------------ */
/* Pipe segment                                                        */

/* What one receiving end shares with its senders: the notification pipe's
 * state, for fileno() users. */
typedef struct {
    _Alignas(IP_CACHELINE) pthread_mutex_t lock; /* guards `notified` and the pipe's content */
    uint32_t armed;    /* fileno() was asked for: keep the pipe in step with the ring */
    uint32_t notified; /* the notification pipe holds a byte */
    uint32_t closes;   /* bumped by every close() of this end */
} ip_pipe_end_t;

typedef struct {
    ip_seghdr_t seg;
    _Alignas(IP_CACHELINE) uint64_t base_cap;
    ip_pipe_end_t ends[2];
    _Alignas(IP_CACHELINE) ip_ring_t rings[2]; /* ring k carries messages to end k */
} ip_pipe_hdr_t;

#define IP_PIPE_HDR_SIZE (((sizeof(ip_pipe_hdr_t) + IP_PAGE - 1) / IP_PAGE) * IP_PAGE)

extern PyTypeObject ip_ConnectionCore_Type;

/* ------------------------------------------------------------------ */
/* Lock, RLock, Semaphore, BoundedSemaphore, Event segment (sync.c)    */

#define IP_SYNC_WAITER_SLOTS 64
#define IP_SYNC_META_MAX 2048
#define IP_COND_SLOTS 128

/* One registered Condition waiter. */
typedef struct {
    uint64_t state;  /* 0 free, else (claimed|waiting|notified) << 48 | the waiter's key */
    uint64_t ticket; /* registration order: notify wakes the oldest first */
    ip_event_t ev;   /* only this waiter sleeps here */
    uint64_t reserved;
} ip_cond_slot_t;

typedef struct {
    ip_seghdr_t seg;
    _Alignas(IP_CACHELINE) uint64_t owner; /* locks: the holder's liveness key, 0 when free */
    uint64_t thread;     /* Lock, RLock: the holding thread's ip_thread_serial() */
    uint64_t count;      /* RLock: recursion depth; Barrier: the generation a reset ended + 1 */
    uint64_t value;      /* semaphores: the counter; Event: the flag; Barrier: its state */
    uint64_t maxvalue;   /* BoundedSemaphore: the ceiling; Barrier: the parties */
    uint64_t recoveries; /* how often a dead holder's lock was taken over */
    uint64_t owner_pid;  /* the holder's pid in its own namespace: shown, never trusted */
    _Alignas(IP_CACHELINE) ip_event_t ev; /* lock acquirers, semaphore, event and barrier waiters */
    /* Keys of the processes with a thread waiting here, one slot per
     * waiting thread: for statistics(), and a Barrier's dead-party check. */
    _Alignas(IP_CACHELINE) uint64_t waiting[IP_SYNC_WAITER_SLOTS];
    /* Value and Array: how many data bytes follow the header pages, and a
     * description of their type that the Python layer writes and checks. */
    uint64_t data_size;
    uint32_t meta_len;
    uint8_t meta[IP_SYNC_META_MAX];
    /* Condition: waiters in slots, and those that found every slot taken. */
    _Alignas(IP_CACHELINE) uint64_t cond_tickets; /* the next registration's ticket */
    uint64_t cond_waiting;  /* slots in use, counted before taken and after freed */
    uint64_t cond_overflow; /* waiters without a slot */
    uint64_t cond_gen;      /* bumped by a notify that reaches those */
    ip_event_t cond_ev;     /* where those sleep */
    _Alignas(IP_CACHELINE) ip_cond_slot_t cond[IP_COND_SLOTS];
} ip_sync_hdr_t;

#define IP_SYNC_HDR_SIZE (((sizeof(ip_sync_hdr_t) + IP_PAGE - 1) / IP_PAGE) * IP_PAGE)

extern PyTypeObject ip_SyncCore_Type;
extern PyTypeObject ip_AtomicCell_Type;
int ip_sync_init_module(PyObject *m);
/* The data area of a Value's or Array's SyncCore and its size as validated
 * on attach, or NULL with an exception set once it is closed. */
uint8_t *ip_sync_data(PyObject *obj, uint64_t *size);

/* ------------------------------------------------------------------ */
/* Module state: the serializers the Python layer installs.            */

typedef struct {
    PyObject *dumps;      /* pickle.dumps */
    PyObject *loads;      /* pickle.loads */
    PyObject *slow_dumps; /* ForkingPickler-based dumps for non-plain objects */
    PyObject *message_dumps; /* the same, with out-of-band buffers: bytes or (bytes, tuple) */
    PyObject *protocol;   /* int */
    PyObject *Full;
    PyObject *Empty;
    PyObject *ShutDown; /* interproc.ShutDown, installed by queues.py */
    PyObject *BufferTooShort;
} ip_state_t;

extern ip_state_t ip_state;

/* A message on its way into a ring: a snapshot of what to write, taken
 * when the message was given, so that nothing that runs afterwards (another
 * thread while a put waits, code run by pickling other items) can change
 * it or its length. */
#define IP_PAYLOAD_INLINE 100
typedef struct {
    PyObject *obj;    /* owned: keeps `data` alive (a bytes object, or NULL) */
    const char *data; /* the len bytes to copy; NULL: they are in `inline_buf` */
    uint64_t len;
    uint32_t type;
    uint8_t inline_buf[IP_PAYLOAD_INLINE]; /* a small plain encoding, without a malloc */
    /* IP_REC_OOB: `data` is the pickle, `pickle_len` bytes, and `bufs` a
     * tuple of contiguous memoryviews, its out-of-band buffers, copied
     * straight into the ring.  `len` is the whole record's length:
     *   u64 pickle_len, u64 nbufs, u64 buffer_len[nbufs],
     *   the pickle, then each buffer at the next IP_OOB_ALIGN boundary. */
    PyObject *bufs;
    uint64_t pickle_len;
} ip_payload_t;

#define IP_OOB_ALIGN 64u

/* Serializes obj in the caller, so that an unpicklable object fails here;
 * -1 with an exception set, and nothing left to release.
 * ip_payload_clear() releases it either way.  The value stays in band:
 * for stores that are read back as bytes (the shared heap). */
int ip_payload_init(ip_payload_t *p, PyObject *obj);
/* The same for a message through a channel (Queue, Connection): large
 * contiguous buffers (NumPy arrays, bytearray, PickleBuffer...) travel
 * out of band, copied once into the ring when it is written. */
int ip_payload_init_message(ip_payload_t *p, PyObject *obj);
/* Copies the payload's len bytes to dst.  Runs no Python code, allocates
 * nothing and cannot fail; releases the GIL around a large copy. */
void ip_payload_write(const ip_payload_t *p, uint8_t *dst);
void ip_payload_clear(ip_payload_t *p);
/* Turns a record's payload, copied out of the ring, back into an object. */
PyObject *ip_deserialize(uint32_t type, PyObject *payload);

/* buffer.c: where an IP_REC_OOB message is copied out of the ring.  A new
 * writable buffer object of `len` bytes (its memory at *data, not
 * initialized), made without running Python code; NULL with an exception. */
extern PyTypeObject ip_RecvBuffer_Type;
PyObject *ip_recv_buffer_new(uint64_t len, uint8_t **data);
/* Gives back the receive memory kept for the next message once it has been
 * idle a while: for a receiver about to sleep. */
void ip_recv_buffers_trim(void);
/* Copies len bytes: into the ring, or out of it.  Releases the GIL from
 * IP_NOGIL_COPY up.  From IP_STREAM_COPY up it writes past the cache, as
 * memcpy does only from a size it derives from the cache the CPU reports
 * (often the whole socket's, or a virtual machine's invention): at that
 * size the sender's data, the ring's bytes and the receiver's copy no
 * longer fit in a core's share of cache together, and filling it with the
 * destination only evicts the data still to be read, and reads each
 * destination line before overwriting it. */
void ip_bulk_copy(uint8_t *dst, const void *src, uint64_t len);
/* Rebuilds a message read in place (ip_channel_take_view) over its pinned
 * payload.  Takes over one use of `owner`, the handle whose mapping holds
 * it: done(owner) is called once the payload is no longer referenced (at
 * once if this fails), after the pin was given back. */
extern PyTypeObject ip_SharedBuffer_Type;
PyObject *ip_view_decode(PyObject *owner, ip_ringview_t *ring, const ip_view_t *view,
                         void (*done)(PyObject *owner));

/* plain.c */
Py_ssize_t ip_plain_size(PyObject *obj); /* -1: not plain */
/* Encodes obj, whose ip_plain_size() was cap, into dst: cap, or -1 with
 * RuntimeError if it no longer fits (it changed since it was sized). */
Py_ssize_t ip_plain_encode(PyObject *obj, uint8_t *dst, size_t cap);
/* Encodes obj in one pass if it is a plain atom (None, bool, a 64-bit int,
 * float, str or bytes) whose encoding fits in cap bytes: its size.  0, with
 * no exception, for anything else. */
Py_ssize_t ip_plain_encode_atom(PyObject *obj, uint8_t *dst, size_t cap);
PyObject *ip_plain_read(const uint8_t *data, uint64_t len);

/* Parses vectorcall arguments against `names`; vals[] holds the defaults on
 * entry.  The first `required` names must be given. */
int ip_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, int nnames, int required, PyObject **vals);
/* The descriptor passed as positional argument `pos` or keyword `name` of a
 * tp_new call, or -1: so that a constructor that owns its descriptors can
 * close them when the rest of its arguments do not parse. */
int ip_arg_fd(PyObject *args, PyObject *kwds, Py_ssize_t pos, const char *name);

/* pid table helpers */
int ip_pids_register(uint32_t *pids, int n);
void ip_pids_unregister(uint32_t *pids, int n, int slot);

/* ------------------------------------------------------------------ */
/* Channel: one ring as its users see it (channel.c)                   */

typedef struct {
    ip_ringview_t view;
    uint64_t maxsize; /* 0: put never waits */
    ip_shutdown_t *shut; /* a queue's shutdown state; NULL: the channel has none (pipes) */
    void *owner;      /* passed to the hooks below, any of which may be NULL */
    /* Before every try: -1 with an exception stops (a closed handle). */
    int (*check)(void *owner);
    /* The ring was found empty just before a sleep: -1 with an exception
     * (EOFError) when nothing can ever arrive. */
    int (*eof)(void *owner);
    /* A take left the ring empty / a put published messages: -1 with an
     * exception (a signal while waiting for a lock) after the records were
     * taken or published all the same. */
    int (*emptied)(void *owner);
    int (*published)(void *owner);
} ip_channel_t;

/* Messages in the ring, from the two counts; 0 when they are impossible. */
uint64_t ip_channel_size(const ip_channel_t *ch);
/* The same, or -1 with SegmentError when the counts are impossible. */
int ip_channel_count(const ip_channel_t *ch, uint64_t *n);
/* Puts payloads[0..n) in order, waiting on maxsize until the deadline.
 * Returns how many went in; fewer than n means an exception is set, or
 * *timed_out (then no exception is set).  All n with an exception set: the
 * published hook failed after they went in. */
Py_ssize_t ip_channel_put(ip_channel_t *ch, const ip_payload_t *payloads, Py_ssize_t n,
                          const ip_deadline_t *d, int *timed_out);
/* Waits for at least one record, then takes up to max of them as bytes
 * objects.  Returns how many, 0 when the deadline passed (no exception),
 * -1 with an exception.  A record longer than max_len is left in the ring
 * and OSError("bad message length") is raised.  A count > 0 with an
 * exception set: the emptied hook failed after the take, and the records
 * are the caller's all the same. */
Py_ssize_t ip_channel_take(ip_channel_t *ch, Py_ssize_t max, uint64_t max_len, PyObject **payloads,
                           uint32_t *types, const ip_deadline_t *d);
/* ip_channel_take, except that an out-of-band message is not copied but
 * pinned where it is, described in *view, with a NULL payload (max 1). */
Py_ssize_t ip_channel_take_view(ip_channel_t *ch, Py_ssize_t max, uint64_t max_len,
                                PyObject **payloads, uint32_t *types, ip_view_t *view,
                                const ip_deadline_t *d);
/* Waits until a take would not block (data, or end of stream). */
int ip_channel_wait_ready(ip_channel_t *ch, const ip_deadline_t *d);
/* The channel's shutdown state (enum ip_shut_state), or -1 with
 * SegmentError when the shared word holds no such state. */
int ip_channel_shut_state(const ip_channel_t *ch);
/* Shuts the channel down (immediate: and discards what is left), waking
 * every waiting put and take.  0, or -1 with an exception set. */
int ip_channel_shutdown(ip_channel_t *ch, int immediate);
/* In an immediately shut-down channel: records the discarded count if no
 * process did, and discards any record still there (a drain whose process
 * died).  0, or -1 with an exception set. */
int ip_channel_finish_discard(ip_channel_t *ch);
/* How many records the immediate shutdown discarded (0 before it recorded
 * them); never more than `limit`, whatever the shared word says. */
uint64_t ip_channel_discarded(const ip_channel_t *ch, uint64_t limit);

/* ------------------------------------------------------------------ */
/* Heap of containers (heap.c, dict.c, list.c)                         */

/* Size classes: 16..256 bytes in steps of 16, then four per doubling. */
#define IP_HEAP_NCLASSES 176
/* Undo entries: enough for a few thousand keys in one update(); the log
 * lives in sparse file space, so unused entries cost no memory. */
#define IP_HEAP_LOG_CAP (1u << 20)
/* The most a heap may grow to, and the largest block it hands out. */
#define IP_HEAP_SIZE_MAX (1ull << 46)
#define IP_HEAP_ALLOC_MAX (1ull << 45)

typedef struct {
    uint64_t off; /* heap offset of the word */
    uint64_t old; /* its value before the transaction */
} ip_undo_t;

typedef struct {
    ip_seghdr_t seg;
    _Alignas(IP_CACHELINE) pthread_mutex_t lock; /* guards everything below and every object */
    uint64_t size;       /* bytes of the file the heap may use; only grows */
    uint64_t top;        /* first never-allocated byte */
    uint64_t root;       /* offset of the root object of a named container, else 0 */
    uint64_t log_count;  /* undo entries of the open transaction; 0 between transactions */
    uint64_t recoveries; /* transactions rolled back after their process died */
    uint64_t live_bytes; /* bytes in allocated blocks */
    uint64_t objects;    /* live containers */
    uint64_t free_heads[IP_HEAP_NCLASSES];
    /* Signalled when the lock is let go, for the event loops awaiting it
     * (acquire_async): a mutex sleeper needs no such thing. */
    _Alignas(IP_CACHELINE) ip_event_t ev;
} ip_heap_hdr_t;

#define IP_HEAP_HDR_SIZE (((sizeof(ip_heap_hdr_t) + IP_PAGE - 1) / IP_PAGE) * IP_PAGE)
#define IP_HEAP_LOG_OFFSET IP_HEAP_HDR_SIZE
#define IP_HEAP_START (IP_HEAP_LOG_OFFSET + (uint64_t)IP_HEAP_LOG_CAP * sizeof(ip_undo_t))

/* A set is a dict table whose values are all None: it shares the dict's
 * layout and code, and has a type of its own only so that a stored set
 * reads back as a set. */
enum ip_obj_type { IP_OBJ_DICT = 1, IP_OBJ_LIST = 2, IP_OBJ_NAMESPACE = 3, IP_OBJ_SET = 4 };
#define IP_OBJ_FIRST IP_OBJ_DICT
#define IP_OBJ_LAST IP_OBJ_SET

/* A container inside a heap.  Dicts keep CPython's split layout: `index`
 * is a table of `mask + 1` u32 slots (0 empty, UINT32_MAX deleted, else
 * entry number + 1) and `items` an array of ip_dentry_t in insertion order.
 * Lists keep `items` as an array of item offsets. */
typedef struct {
    uint32_t type;
    uint32_t pad;
    uint64_t oid;     /* random, zeroed when freed: tells a live object from a stale reference */
    uint64_t handles; /* process-local handles that counted themselves in */
    uint64_t refs;    /* values in this heap that hold the object, +1 for a root */
    uint64_t used;    /* dict: keys; list: length */
    uint64_t version; /* dict: bumped by every key insertion or removal */
    uint64_t index;   /* dict: offset of the slot table */
    uint64_t mask;    /* dict: slots - 1 */
    uint64_t items;   /* offset of the entry / item array */
    uint64_t nitems;  /* dict: entries in use, holes included */
    uint64_t cap;     /* capacity of the array, in entries */
} ip_obj_t;

typedef struct {
    uint64_t hash;
    uint64_t item; /* offset of the ip_ditem_t, 0 for a hole */
} ip_dentry_t;

/* Item types beyond the ring's record types: a container of the same heap. */
#define IP_VAL_REF 16

/* A stored dict entry: the key in canonical form (what equality compares),
 * the key as given when that loses its type (True, 1.0, tuples of them),
 * then the value.  Immutable once written: a new value is a new item.
 * Keys whose encoding or original form exceeds UINT32_MAX bytes are refused
 * before they get here. */
typedef struct {
    uint64_t hash;
    uint64_t vlen;
    uint32_t klen;
    uint32_t olen;
    uint8_t otype;
    uint8_t vtype;
    uint8_t pad[6]; /* pad[0]: decoding the key unpickles */
} ip_ditem_t;

/* A stored list element. */
typedef struct {
    uint64_t vlen;
    uint8_t vtype;
    uint8_t pad[7];
} ip_litem_t;

/* One process's view of a heap. */
typedef struct ip_heap_s {
    PyObject_HEAD
    /* The header page mapped on its own, never moved: the robust mutex
     * must stay at the address it had when locked, because the kernel finds
     * a dead holder's mutexes through a list of their addresses. */
    ip_heap_hdr_t *fixed;
    uint8_t *base; /* the whole file; mremap may move it */
    uint64_t mapped;
    int fd;
    uint32_t kind;
    uint64_t uid;
    /* The re-entrant hold of `lock` by one thread of this process.  Holds
     * are of three kinds: acquire()s, operations, and guards (the Python
     * layer's compound operations); release() may only drop an acquire()
     * that is not older than the operation or guard in progress. */
    uint64_t owner_thread; /* ip_thread_serial() of the holder, or a task's owner number */
    uint64_t task_thread;  /* with a task's owner number: the thread its loop runs in */
    long owner_pid;
    long depth;    /* holds of every kind */
    long acquires; /* holds taken by acquire() */
    long ops;      /* operations in progress: only one moves memory, nested ones only count handles */
    long guards;   /* compound operations of the Python layer in progress */
    long floor;    /* acquires when the outermost operation or guard began */
    /* blocks to free once the open transaction commits */
    uint64_t *deferred;
    size_t ndeferred, cap_deferred;
    PyObject *factory; /* factory(type) -> the class of a handle on a stored container */
    PyObject *weakrefs;
} ip_heap_t;

#define IP_HOFF(hp, off) ((void *)((hp)->base + (off)))
#define IP_HHDR(hp) ((ip_heap_hdr_t *)(hp)->base)
/* One read of a word another process may change at any time. */
#define IP_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

extern PyTypeObject ip_HeapCore_Type;
extern PyTypeObject ip_DictCore_Type;
extern PyTypeObject ip_ListCore_Type;

/* Takes the heap's lock for an operation (re-entrant for a thread that
 * holds it through acquire() or a guard): 0, or -1 with an exception set,
 * or 1 when the deadline passed.  A dead holder's open transaction is
 * rolled back first.  An operation begun while another one of the same
 * heap is in progress in this thread (a finalizer run in the middle of it)
 * is refused with RuntimeError: it could move the heap under the outer one. */
int ip_heap_enter(ip_heap_t *hp, const ip_deadline_t *d);
/* The same for an operation that only counts handles in or out and frees
 * what that releases: it never allocates, so it never moves the heap, and
 * it is allowed in the middle of another operation. */
int ip_heap_enter_count(ip_heap_t *hp);
/* Commits the open transaction, frees what it released, drops one hold. */
void ip_heap_leave(ip_heap_t *hp);
/* Rolls the open transaction back (after an error), then drops one hold. */
void ip_heap_abort(ip_heap_t *hp);
/* Sets SegmentError "shared heap is corrupt (<what>)" and returns -1. */
int ip_heap_corrupt(const char *what);
/* The payload size of the allocated block whose payload starts at `off`,
 * after checking that the whole block lies in the allocated part of the
 * heap as mapped here; 0 with SegmentError if it does not. */
uint64_t ip_heap_block(ip_heap_t *hp, uint64_t off);
/* A stored item as read once from the heap and checked: its parts lie in
 * its block, and the lengths and types are this process's copies. */
typedef struct {
    const uint8_t *key, *orig, *val; /* dict: key, original key; both: value */
    uint64_t hash, klen, olen, vlen;
    uint32_t otype, vtype;
    int key_pickled; /* dict: decoding the key unpickles */
    uint64_t off;    /* where it was read */
} ip_item_t;
/* -1 with SegmentError for an item that is not a valid block of its kind. */
int ip_ditem_read(ip_heap_t *hp, uint64_t off, ip_item_t *it);
/* Points a dict item read before an allocation at the heap as mapped now.
 * Its lengths were checked against its block when it was read; the block
 * cannot move within the heap, and the mapping only grows. */
static inline void ip_ditem_rebase(ip_heap_t *hp, ip_item_t *it)
{
    it->key = (const uint8_t *)IP_HOFF(hp, it->off + sizeof(ip_ditem_t));
    it->orig = it->key + it->klen;
    it->val = it->orig + it->olen;
}
int ip_litem_read(ip_heap_t *hp, uint64_t off, ip_item_t *it);
/* Stores v at heap offset `off`, remembering the old word for a rollback.
 * -1 with SegmentError for a word outside the heap, MemoryError if the undo
 * log is full. */
int ip_heap_set(ip_heap_t *hp, uint64_t off, uint64_t v);
/* Allocates a block with room for `size` bytes: its payload's offset, or
 * 0 with an exception set.  May move hp->base: re-derive pointers after. */
uint64_t ip_heap_alloc(ip_heap_t *hp, uint64_t size);
/* Frees a block once the transaction commits. */
int ip_heap_free_later(ip_heap_t *hp, uint64_t off);
/* Commits the open transaction early, between whole operations, when the
 * undo log is nearly full.  Returns 1 if it did. */
int ip_heap_checkpoint(ip_heap_t *hp);
/* A container that lost a reference: freed once nothing holds it. */
int ip_heap_obj_release(ip_heap_t *hp, uint64_t obj);
/* The object at off, if it is a live container of `type` (0: any) with
 * `oid` (0: any) in a valid block; else NULL, no exception set. */
ip_obj_t *ip_heap_obj(ip_heap_t *hp, uint64_t off, uint32_t type, uint64_t oid);
/* Allocates an empty container.  Its offset, or 0 with an exception set. */
uint64_t ip_heap_obj_new(ip_heap_t *hp, uint32_t type);

/* The blocks a container's header named when this process last checked
 * them (dict: slots, entries, mask, capacity; list: array, capacity).
 * While the header names the same ones, they need no new check: an honest
 * writer only ever names blocks it allocated for that layout, and a forged
 * header that repeats old values still names memory inside the mapping,
 * which never shrinks. */
typedef struct {
    uint64_t w[4];
} ip_layout_t;

/* A handle on one container: the base of DictCore and ListCore. */
typedef struct {
    PyObject_HEAD
    ip_heap_t *heap;
    uint64_t off;
    uint64_t oid;
    uint32_t type;
    ip_layout_t seen;
    long pid; /* the process whose count this handle holds */
    PyObject *dict;
    PyObject *weakrefs;
} ip_handle_t;

/* An operation of a handle, from ip_op_begin() to ip_op_done().  What it
 * needs of the handle is taken at the start, and a reference to the heap is
 * held: code run in the middle (a finalizer) may close the handle. */
typedef struct {
    ip_heap_t *hp;
    uint64_t off, oid;
    ip_layout_t *seen; /* the handle's: it outlives every call on it */
} ip_op_t;
/* Takes the lock for an operation on h: 0, or -1 with an exception set. */
int ip_op_begin(ip_handle_t *h, ip_op_t *op);
/* Under the lock: the operation's container, or NULL (no exception set)
 * if its header no longer says it is this container. */
static inline ip_obj_t *ip_op_obj(const ip_op_t *op)
{
    /* The handle checked the block when it was made, and holds a count that
     * keeps it allocated; mappings only grow.  What is left to check is
     * that the header is still this container's. */
    ip_obj_t *o = IP_HOFF(op->hp, op->off);
    uint32_t t = IP_LOAD(o->type);
    if (IP_LOAD(o->oid) != op->oid || t < IP_OBJ_FIRST || t > IP_OBJ_LAST)
        return NULL;
    return o;
}
/* Whether `seen` holds these words; if not, the caller checks the blocks
 * they name and records them with ip_layout_set(). */
static inline int ip_layout_is(const ip_layout_t *seen, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    return seen->w[0] == a && seen->w[1] == b && seen->w[2] == c && seen->w[3] == d;
}
static inline void ip_layout_set(ip_layout_t *seen, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    seen->w[0] = a;
    seen->w[1] = b;
    seen->w[2] = c;
    seen->w[3] = d;
}
/* Commits (ok) or rolls back the operation and leaves the lock. */
void ip_op_end(ip_op_t *op, int ok);
/* After the lock, once what was copied is decoded: lets go of the heap. */
void ip_op_done(ip_op_t *op);

/* Values as stored items: serializes v (a container of the same heap
 * becomes a reference). */
typedef struct {
    ip_payload_t p;
    uint64_t ref, ref_oid; /* IP_VAL_REF: the object */
} ip_value_t;
int ip_value_init(ip_heap_t *hp, ip_value_t *v, PyObject *obj);
void ip_value_clear(ip_value_t *v);
/* Writes it at dst (len bytes). */
void ip_value_write(const ip_value_t *v, uint8_t *dst);
/* Under the lock, before the item is published: a reference's count. */
int ip_value_hold(ip_heap_t *hp, const ip_value_t *v);
/* A stored value of `len` bytes is being dropped: a reference loses its count. */
int ip_value_drop(ip_heap_t *hp, uint32_t vtype, const uint8_t *data, uint64_t len);

/* A stored value (or key) copied out under the lock, to be decoded after
 * it.  Under the lock nothing runs Python code or makes an object the
 * garbage collector tracks (which could run finalizers there): a copy is a
 * bytes, str, int or float object, or a reference's (offset, type, oid). */
enum {
    IP_COPY_DONE = 0,   /* obj is the value */
    IP_COPY_PLAIN = 1,  /* obj: bytes in the plain codec, for a tuple, list or dict */
    IP_COPY_PICKLE = 2, /* obj: a pickle */
    IP_COPY_KEY = 3,    /* obj: a key's canonical encoding */
    IP_COPY_REF = 4,    /* a container of the heap */
};
typedef struct {
    int kind;
    int counted; /* REF: a handle count was taken for it */
    PyObject *obj;
    uint64_t off, oid;
    uint32_t otype;
} ip_copy_t;
/* Under the lock: copies the value of `vtype` at data[0..len), which the
 * caller checked lies inside its block.  -1 with an exception set. */
int ip_copy_value(ip_heap_t *hp, uint32_t vtype, const uint8_t *data, uint64_t len, ip_copy_t *c);
/* Under the lock: ip_litem_read() and ip_copy_value() of the list item at
 * off, in one call. */
int ip_litem_copy(ip_heap_t *hp, uint64_t off, ip_copy_t *c);
/* Under the lock: copies data[0..len) privately, then decodes the copy
 * when now() says decoding it runs no code and makes no tracked object,
 * else keeps it as bytes, a copy of kind `later`, to decode after the lock. */
int ip_copy_split(const uint8_t *data, uint64_t len, int (*now)(const uint8_t *p, uint64_t len),
                  PyObject *(*decode)(const uint8_t *p, uint64_t len), int later, ip_copy_t *c);
/* Under the lock, once nothing else can fail: counts a handle in for each
 * reference among c[0..n), so that the container outlives the lock until its
 * handle is made.  On failure nothing stays counted. */
int ip_copy_count_refs(ip_heap_t *hp, ip_copy_t *c, Py_ssize_t n);
static inline int ip_copy_count(ip_heap_t *hp, ip_copy_t *c, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (c[i].kind == IP_COPY_REF)
            return ip_copy_count_refs(hp, c, n);
    return 0;
}
/* After the lock: the value.  Consumes c, its count included, even on failure. */
PyObject *ip_copy_decode(ip_heap_t *hp, ip_copy_t *c);
static inline PyObject *ip_copy_finish(ip_heap_t *hp, ip_copy_t *c)
{
    if (c->kind != IP_COPY_DONE)
        return ip_copy_decode(hp, c);
    PyObject *obj = c->obj;
    c->obj = NULL;
    return obj;
}
/* After the lock: a list of n values decoded from c[0..n) (per = 1), or of
 * n (key, value) tuples from pairs of copies (per = 2).  Consumes them all. */
PyObject *ip_copy_finish_all(ip_heap_t *hp, ip_copy_t *c, Py_ssize_t n, int per);
/* Drops copies that will not be finished, giving their counts back.
 * Keeps the exception that is set, if any. */
void ip_copy_discard(ip_heap_t *hp, ip_copy_t *c, Py_ssize_t n);
/* dict.c: decodes a key's canonical encoding (IP_COPY_KEY). */
PyObject *ip_key_decode(const uint8_t *data, uint64_t len);

int ip_handle_check(ip_handle_t *h);
/* len() of a container, read without the lock; SegmentError past PY_SSIZE_T_MAX. */
Py_ssize_t ip_handle_len(ip_handle_t *h);
PyObject *ip_handle_new(PyTypeObject *type, PyObject *args, PyObject *kwds, uint32_t want);
void ip_handle_dealloc(ip_handle_t *h);
int ip_handle_traverse(ip_handle_t *h, visitproc visit, void *arg);
int ip_handle_clear(ip_handle_t *h);
/* The base type of DictCore and ListCore: close(), closed. */
extern PyTypeObject ip_HandleCore_Type;
int ip_heap_init_module(PyObject *m);

#endif
