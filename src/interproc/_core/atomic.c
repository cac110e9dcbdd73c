/* AtomicCell: lock-free operations on an integer in a shared Value.
 *
 * Every operation is sequentially consistent (__ATOMIC_SEQ_CST): the
 * strongest ordering, the one a Python user expects without having to
 * think about it, and on x86 no dearer than acquire/release for a
 * read-modify-write.
 */
#include "interproc.h"

typedef struct {
    PyObject_HEAD
    PyObject *owner; /* the SyncCore whose mapping holds the integer */
    uint64_t offset; /* from the start of the data area */
    int size;        /* 1, 2, 4 or 8 bytes */
    int is_signed;
} AtomicCell;

/* Whether `size` bytes at `offset` lie inside `data_size`, without
 * overflowing on a huge offset. */
static int cell_fits(uint64_t offset, int size, uint64_t data_size)
{
    return offset <= data_size && (uint64_t)size <= data_size - offset;
}

static uint8_t *cell_ptr(AtomicCell *self)
{
    uint64_t size;
    uint8_t *data = ip_sync_data(self->owner, &size);
    if (data == NULL)
        return NULL;
    if (!cell_fits(self->offset, self->size, size)) {
        PyErr_SetString(PyExc_ValueError, "the integer lies outside the shared data");
        return NULL;
    }
    return data + self->offset;
}

/* Converts between Python ints and the cell's width, wrapping as C does:
 * a Value('i') that overflows wraps, as its ctypes view would. */
static int to_bits(PyObject *v, uint64_t *out)
{
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "an int is required, not %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    uint64_t bits = PyLong_AsUnsignedLongLongMask(v);
    if (bits == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    *out = bits;
    return 0;
}

static PyObject *from_bits(AtomicCell *self, uint64_t bits)
{
    int shift = 64 - 8 * self->size;
    if (self->is_signed)
        return PyLong_FromLongLong((int64_t)(bits << shift) >> shift);
    return PyLong_FromUnsignedLongLong(shift ? bits & ((1ull << (64 - shift)) - 1) : bits);
}

enum op { OP_LOAD, OP_STORE, OP_ADD, OP_SUB, OP_XCHG };

static uint64_t apply(uint8_t *p, int size, enum op op, uint64_t v)
{
#define CASE(T)                                                                                    \
    switch (op) {                                                                                  \
    case OP_LOAD:                                                                                  \
        return __atomic_load_n((T *)p, __ATOMIC_SEQ_CST);                                          \
    case OP_STORE:                                                                                 \
        __atomic_store_n((T *)p, (T)v, __ATOMIC_SEQ_CST);                                          \
        return 0;                                                                                  \
    case OP_ADD:                                                                                   \
        return __atomic_fetch_add((T *)p, (T)v, __ATOMIC_SEQ_CST);                                 \
    case OP_SUB:                                                                                   \
        return __atomic_fetch_sub((T *)p, (T)v, __ATOMIC_SEQ_CST);                                 \
    case OP_XCHG:                                                                                  \
        return __atomic_exchange_n((T *)p, (T)v, __ATOMIC_SEQ_CST);                                \
    }                                                                                              \
    return 0;
    switch (size) {
    case 1: { CASE(uint8_t) }
    case 2: { CASE(uint16_t) }
    case 4: { CASE(uint32_t) }
    default: { CASE(uint64_t) }
    }
#undef CASE
}

static PyObject *run(AtomicCell *self, enum op op, PyObject *arg)
{
    uint64_t v = 0;
    if (arg && to_bits(arg, &v) < 0)
        return NULL;
    uint8_t *p = cell_ptr(self);
    if (p == NULL)
        return NULL;
    uint64_t old = apply(p, self->size, op, v);
    if (op == OP_STORE)
        Py_RETURN_NONE;
    return from_bits(self, old);
}

static PyObject *AtomicCell_load(AtomicCell *self, PyObject *Py_UNUSED(ignored))
{
    return run(self, OP_LOAD, NULL);
}

static PyObject *AtomicCell_store(AtomicCell *self, PyObject *v)
{
    return run(self, OP_STORE, v);
}

static PyObject *one_or(PyObject *const *args, Py_ssize_t nargs, const char *name)
{
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (%zd given)", name, nargs);
        return NULL;
    }
    return nargs ? args[0] : NULL;
}

static PyObject *AtomicCell_fetch_add(AtomicCell *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *v = one_or(args, nargs, "fetch_add");
    if (v == NULL && PyErr_Occurred())
        return NULL;
    if (v == NULL) {
        uint8_t *p = cell_ptr(self);
        return p ? from_bits(self, apply(p, self->size, OP_ADD, 1)) : NULL;
    }
    return run(self, OP_ADD, v);
}

static PyObject *AtomicCell_fetch_sub(AtomicCell *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *v = one_or(args, nargs, "fetch_sub");
    if (v == NULL && PyErr_Occurred())
        return NULL;
    if (v == NULL) {
        uint8_t *p = cell_ptr(self);
        return p ? from_bits(self, apply(p, self->size, OP_SUB, 1)) : NULL;
    }
    return run(self, OP_SUB, v);
}

static PyObject *AtomicCell_exchange(AtomicCell *self, PyObject *v)
{
    return run(self, OP_XCHG, v);
}

static PyObject *AtomicCell_compare_exchange(AtomicCell *self, PyObject *const *args,
                                             Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "compare_exchange() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    uint64_t expected, desired;
    if (to_bits(args[0], &expected) < 0 || to_bits(args[1], &desired) < 0)
        return NULL;
    uint8_t *p = cell_ptr(self);
    if (p == NULL)
        return NULL;
    int ok;
    uint64_t seen;
#define CAS(T)                                                                                     \
    {                                                                                              \
        T e = (T)expected;                                                                         \
        ok = __atomic_compare_exchange_n((T *)p, &e, (T)desired, 0, __ATOMIC_SEQ_CST,              \
                                         __ATOMIC_SEQ_CST);                                        \
        seen = (uint64_t)e;                                                                        \
    }
    switch (self->size) {
    case 1: CAS(uint8_t) break;
    case 2: CAS(uint16_t) break;
    case 4: CAS(uint32_t) break;
    default: CAS(uint64_t) break;
    }
#undef CAS
    PyObject *value = from_bits(self, seen);
    if (value == NULL)
        return NULL;
    return Py_BuildValue("(ON)", ok ? Py_True : Py_False, value);
}

static PyObject *AtomicCell_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"owner", "offset", "size", "signed", NULL};
    PyObject *owner;
    unsigned long long offset;
    int size, is_signed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!Kip:AtomicCell", kwlist, &ip_SyncCore_Type,
                                     &owner, &offset, &size, &is_signed))
        return NULL;
    if (size != 1 && size != 2 && size != 4 && size != 8) {
        PyErr_Format(PyExc_TypeError, "atomic operations need a 1, 2, 4 or 8-byte integer, not %d bytes",
                     size);
        return NULL;
    }
    uint64_t data_size;
    if (ip_sync_data(owner, &data_size) == NULL)
        return NULL;
    if (offset % (unsigned)size || !cell_fits(offset, size, data_size)) {
        PyErr_SetString(PyExc_ValueError, "the integer is not aligned inside the shared data");
        return NULL;
    }
    AtomicCell *self = (AtomicCell *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->owner = Py_NewRef(owner);
    self->offset = offset;
    self->size = size;
    self->is_signed = is_signed;
    return (PyObject *)self;
}

static void AtomicCell_dealloc(AtomicCell *self)
{
    Py_CLEAR(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *AtomicCell_get_value(AtomicCell *self, void *Py_UNUSED(c))
{
    return run(self, OP_LOAD, NULL);
}

static int AtomicCell_set_value(AtomicCell *self, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete a shared value");
        return -1;
    }
    PyObject *r = run(self, OP_STORE, v);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PyGetSetDef AtomicCell_getset[] = {
    {"value", (getter)AtomicCell_get_value, (setter)AtomicCell_set_value,
     "The integer, read or written in one atomic step.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef AtomicCell_methods[] = {
    {"load", (PyCFunction)AtomicCell_load, METH_NOARGS,
     "load($self, /)\n--\n\nThe current value (sequentially consistent)."},
    {"store", (PyCFunction)AtomicCell_store, METH_O,
     "store($self, value, /)\n--\n\nSet the value (sequentially consistent)."},
    {"fetch_add", (PyCFunction)(void (*)(void))AtomicCell_fetch_add, METH_FASTCALL,
     "fetch_add($self, delta=1, /)\n--\n\nAdd delta and return the value before, in one atomic "
     "step.  Wraps around like the C integer."},
    {"fetch_sub", (PyCFunction)(void (*)(void))AtomicCell_fetch_sub, METH_FASTCALL,
     "fetch_sub($self, delta=1, /)\n--\n\nSubtract delta and return the value before."},
    {"exchange", (PyCFunction)AtomicCell_exchange, METH_O,
     "exchange($self, value, /)\n--\n\nSet value and return the value before."},
    {"compare_exchange", (PyCFunction)(void (*)(void))AtomicCell_compare_exchange, METH_FASTCALL,
     "compare_exchange($self, expected, desired, /)\n--\n\nIf the value is expected, set it to "
     "desired.  Returns (succeeded, value seen)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ip_AtomicCell_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "interproc._core.AtomicCell",
    .tp_basicsize = sizeof(AtomicCell),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "AtomicCell(owner, offset, size, signed)\n--\n\n"
              "Atomic operations on an integer in a shared Value's data.",
    .tp_new = AtomicCell_new,
    .tp_dealloc = (destructor)AtomicCell_dealloc,
    .tp_methods = AtomicCell_methods,
    .tp_getset = AtomicCell_getset,
};
