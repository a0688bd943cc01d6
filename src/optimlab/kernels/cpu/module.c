/* Python bindings of optimlab's CPU kernels (the driver is optim.c): `step` hands a row
 * table to the driver; `bind` re-validates the table cheaply before each step (the data
 * pointers of params and of new grads, through torch.Tensor's own accessors; no torch
 * C++ ABI). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "optim.h"

static PyObject *s_data_ptr, *s_grad, *s_is_contiguous, *s_stride;

static int as_i64(PyObject *obj, int64_t *out)
{
    *out = PyLong_AsLongLong(obj);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* step(kernel, variant, nthreads, table, nrows, hyper, flags, grad_scale, found_inf) -> int
 *
 * Runs one optimizer step over the active rows of `table` (the address of an int64 tensor
 * of Row).  `hyper` is a tuple of HYPER_FIELDS floats; `grad_scale` and `found_inf` are
 * addresses of float32 scalars or 0.  Returns the number of rows stepped, or -1 when
 * *found_inf is nonzero (nothing was touched). */
static PyObject *py_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    int64_t kernel, variant, nthreads, table, nrows, call_flags, scale_addr, inf_addr;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "step() takes 9 arguments");
        return NULL;
    }
    if (as_i64(args[0], &kernel) || as_i64(args[1], &variant) || as_i64(args[2], &nthreads) ||
        as_i64(args[3], &table) || as_i64(args[4], &nrows) || as_i64(args[6], &call_flags) ||
        as_i64(args[7], &scale_addr) || as_i64(args[8], &inf_addr))
        return NULL;
    if (kernel < 0 || kernel >= optim_nkernels || variant < 0 || variant >= NV || nrows < 0 ||
        (nrows > 0 && table == 0)) {
        PyErr_SetString(PyExc_ValueError, "step(): bad kernel, variant or table");
        return NULL;
    }
    if (!PyTuple_Check(args[5]) || PyTuple_GET_SIZE(args[5]) != NH) {
        PyErr_Format(PyExc_TypeError, "step(): hyper must be a tuple of %d floats", NH);
        return NULL;
    }
    double h[NH];
    for (int j = 0; j < NH; j++) {
        h[j] = PyFloat_AsDouble(PyTuple_GET_ITEM(args[5], j));
        if (h[j] == -1.0 && PyErr_Occurred())
            return NULL;
    }
    Row *rows = (Row *)(intptr_t)table;
    for (int64_t r = 0; r < nrows; r++) {
        int dtype = (int)((rows[r].flags >> ROW_DTYPE_SHIFT) & 15);
        if (!optim_has_loop((int)kernel, (int)variant, dtype)) {
            PyErr_Format(PyExc_ValueError, "step(): %s has no loop for slots %d, dtype %d",
                         optim_kernel_name((int)kernel), (int)variant, dtype);
            return NULL;
        }
    }
    int64_t stepped;
    Py_BEGIN_ALLOW_THREADS
    stepped = optim_step((int)kernel, (int)variant, (int)nthreads, rows, nrows, h, call_flags,
                         (const float *)(intptr_t)scale_addr, (const float *)(intptr_t)inf_addr);
    Py_END_ALLOW_THREADS
    return PyLong_FromLongLong(stepped);
}

/* torch.Tensor's own accessors (configure()), called directly on tensors of the types they
 * were taken from: no attribute lookup per call (bind does 3 per tensor; ~25% of its time). */
static PyObject *fast_types, *d_data_ptr, *d_grad, *d_is_contiguous;

static int is_fast(PyObject *obj)
{
    if (fast_types == NULL)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fast_types); i++) {
        if ((PyObject *)Py_TYPE(obj) == PyTuple_GET_ITEM(fast_types, i))
            return 1;
    }
    return 0;
}

static PyObject *call_method(PyObject *obj, PyObject *descr, PyObject *name)
{
    return is_fast(obj) ? PyObject_Vectorcall(descr, &obj, 1, NULL)
                        : PyObject_CallMethodNoArgs(obj, name);
}

static PyObject *get_grad(PyObject *param)
{
    if (is_fast(param))
        return Py_TYPE(d_grad)->tp_descr_get(d_grad, param, (PyObject *)Py_TYPE(param));
    return PyObject_GetAttr(param, s_grad);
}

static int64_t call_data_ptr(PyObject *tensor)
{
    PyObject *res = call_method(tensor, d_data_ptr, s_data_ptr);
    if (res == NULL)
        return -1;
    int64_t ptr = PyLong_AsLongLong(res);
    Py_DECREF(res);
    return ptr;
}

/* Whether a fresh grad `g` can be read with the layout of `param`'s row. */
static int grad_layout_ok(PyObject *param, PyObject *g, int strided)
{
    PyObject *a, *b;
    if (!strided) {
        a = call_method(g, d_is_contiguous, s_is_contiguous);
        int ok = a == Py_True;
        Py_XDECREF(a);
        return ok;
    }
    a = PyObject_CallMethodNoArgs(g, s_stride);
    b = a ? PyObject_CallMethodNoArgs(param, s_stride) : NULL;
    int ok = a && b && PyObject_RichCompareBool(a, b, Py_EQ) == 1;
    Py_XDECREF(a);
    Py_XDECREF(b);
    return ok;
}

/* bind(group_params, snapshot, params, grads, table) -> int
 *
 * Re-validates a cached table before a step, at a few C calls per tensor: the group's
 * param list must still be `snapshot` (else -2); row i's param must still have the data
 * pointer in the table, and its grad, if new, the row's layout (else i: re-plan).  Grads
 * are re-read every step (zero_grad(set_to_none=True) makes new ones); `grads` caches the
 * grad objects so an unchanged grad skips the layout check.  Rows without a grad are
 * marked inactive.  Returns -1 when the table is ready. */
#define BIND_AHEAD 4

static PyObject *py_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5 || !PyList_Check(args[0]) || !PyTuple_Check(args[1]) ||
        !PyTuple_Check(args[2]) || !PyList_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "bind(list, tuple, tuple, list, int)");
        return NULL;
    }
    PyObject *group = args[0], *snapshot = args[1], *params = args[2], *grads = args[3];
    int64_t table;
    if (as_i64(args[4], &table))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(group);
    if (n != PyTuple_GET_SIZE(snapshot))
        return PyLong_FromLong(-2);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_ITEM(group, i) != PyTuple_GET_ITEM(snapshot, i))
            return PyLong_FromLong(-2);
    }
    Py_ssize_t nrows = PyTuple_GET_SIZE(params);
    if (PyList_GET_SIZE(grads) != nrows) {
        PyErr_SetString(PyExc_ValueError, "bind(): grads and params differ in length");
        return NULL;
    }
    Row *rows = (Row *)(intptr_t)table;
    for (Py_ssize_t i = 0; i < nrows; i++) {
        Row *row = &rows[i];
        PyObject *param = PyTuple_GET_ITEM(params, i);
        if (i + BIND_AHEAD < nrows) { /* the objects of a later row: their misses overlap ours */
            PyObject *later = PyTuple_GET_ITEM(params, i + BIND_AHEAD);
            __builtin_prefetch(later, 0, 3);
            __builtin_prefetch((const char *)later + 64, 0, 3);
            __builtin_prefetch(PyList_GET_ITEM(grads, i + BIND_AHEAD), 0, 3);
        }
        int64_t ptr = call_data_ptr(param);
        if (ptr == -1 && PyErr_Occurred())
            goto replan;
        if ((void *)(intptr_t)ptr != row->p)
            return PyLong_FromSsize_t(i);
        PyObject *g = get_grad(param);
        if (g == NULL)
            goto replan;
        if (g == Py_None) {
            row->flags &= ~(int64_t)ROW_ACTIVE;
            Py_INCREF(Py_None);
            PyList_SetItem(grads, i, Py_None);
            Py_DECREF(g);
            continue;
        }
        /* a new grad of another type (a tensor subclass) goes back to Python to be judged */
        if ((row->flags & ROW_NOSTATE) ||
            (g != PyList_GET_ITEM(grads, i) &&
             (!is_fast(g) || !grad_layout_ok(param, g, (row->flags & ROW_STRIDED) != 0)))) {
            Py_DECREF(g);
            PyErr_Clear();
            return PyLong_FromSsize_t(i);
        }
        int64_t gptr = call_data_ptr(g);
        PyList_SetItem(grads, i, g); /* steals the reference */
        if (gptr == -1 && PyErr_Occurred())
            goto replan;
        row->g = (void *)(intptr_t)gptr;
        row->flags |= ROW_ACTIVE;
        continue;
    replan: /* a call raised (e.g. a sparse grad has no data_ptr): let Python decide */
        PyErr_Clear();
        return PyLong_FromSsize_t(i);
    }
    return PyLong_FromLong(-1);
}

/* configure(types, data_ptr, grad, is_contiguous): torch.Tensor's accessors and the exact
 * types (torch.Tensor, nn.Parameter) that use them unchanged. */
static PyObject *py_configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 || !PyTuple_Check(args[0]) || !PyObject_TypeCheck(args[2], &PyGetSetDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure(types, data_ptr, grad, is_contiguous)");
        return NULL;
    }
    PyObject **slots[] = {&fast_types, &d_data_ptr, &d_grad, &d_is_contiguous};
    for (int i = 0; i < 4; i++) {
        Py_INCREF(args[i]);
        Py_XSETREF(*slots[i], args[i]);
    }
    Py_RETURN_NONE;
}

/* isa() -> str: the clone the loader picked on this CPU. */
static PyObject *py_isa(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
    return PyUnicode_FromString(optim_isa());
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))py_configure, METH_FASTCALL,
     "configure(types, data_ptr, grad, is_contiguous): fast accessors for bind"},
    {"isa", py_isa, METH_NOARGS, "isa() -> the instruction set of the loops in use"},
    {"step", (PyCFunction)(void (*)(void))py_step, METH_FASTCALL,
     "step(kernel, variant, nthreads, table, nrows, hyper, flags, grad_scale, found_inf)"},
    {"bind", (PyCFunction)(void (*)(void))py_bind, METH_FASTCALL,
     "bind(group_params, snapshot, params, grads, table) -> -1 | -2 | row to re-plan"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_optim", "optimlab's fused CPU optimizer kernels (see optim.c).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__optim(void)
{
    s_data_ptr = PyUnicode_InternFromString("data_ptr");
    s_grad = PyUnicode_InternFromString("grad");
    s_is_contiguous = PyUnicode_InternFromString("is_contiguous");
    s_stride = PyUnicode_InternFromString("stride");
    optim_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *names = PyTuple_New(optim_nkernels), *fields = PyTuple_New(NH), *flags = PyDict_New();
    for (int i = 0; i < optim_nkernels; i++)
        PyTuple_SET_ITEM(names, i, PyUnicode_FromString(optim_kernel_name(i)));
    for (int j = 0; j < NH; j++)
        PyTuple_SET_ITEM(fields, j, PyUnicode_FromString(optim_hyper_fields[j]));
    for (int b = 0; b < NFLAG_NAMES; b++) {
        if (optim_flag_names[b]) {
            PyObject *v = PyLong_FromLong(1L << b);
            PyDict_SetItemString(flags, optim_flag_names[b], v);
            Py_DECREF(v);
        }
    }
    PyModule_AddObject(m, "KERNELS", names);
    PyModule_AddObject(m, "HYPER_FIELDS", fields);
    PyModule_AddObject(m, "FLAGS", flags);
    PyModule_AddIntConstant(m, "ROW_WIDTH", sizeof(Row) / sizeof(int64_t));
    PyModule_AddIntConstant(m, "DTYPE_SHIFT", ROW_DTYPE_SHIFT);
    PyModule_AddIntConstant(m, "OPENMP", optim_openmp);
    PyModule_AddStringConstant(m, "CLONES", optim_clones);
    return m;
}
