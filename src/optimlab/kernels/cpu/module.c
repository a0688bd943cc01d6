/* Python bindings of optimlab's CPU kernels (the driver is optim.c): `step` hands a row
 * table to the driver; `bind` re-validates the table cheaply before each step (the data
 * pointers of params and of new grads, through torch's C shim or torch.Tensor's own
 * accessors; no torch headers, no C++ ABI). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "optim.h"

static PyObject *s_data_ptr, *s_grad, *s_is_contiguous, *s_stride, *s_dtype, *s_shape;

static int as_i64(PyObject *obj, int64_t *out)
{
    *out = PyLong_AsLongLong(obj);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* step(kernel, variant, nthreads, table, nrows, hyper, flags, grad_scale, found_inf, seed,
 *      rounding_step, scratch) -> (rows, runs)
 *
 * Runs one optimizer step over the active rows of `table` (the address of an int64 tensor
 * of Row).  `hyper` is a tuple of HYPER_FIELDS floats; `grad_scale` and `found_inf` are
 * addresses of float32 scalars or 0; `seed` and `rounding_step` key stochastic rounding;
 * `scratch` is the address of room for nrows more rows (0: rows are not joined).
 * Returns the number of rows stepped (-1 when *found_inf is nonzero: nothing was touched)
 * and of the runs they made (rows that continue each other in memory run as one). */
static PyObject *py_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    int64_t kernel, variant, nthreads, table, nrows, call_flags, scale_addr, inf_addr, scratch;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "step() takes 12 arguments");
        return NULL;
    }
    if (as_i64(args[0], &kernel) || as_i64(args[1], &variant) || as_i64(args[2], &nthreads) ||
        as_i64(args[3], &table) || as_i64(args[4], &nrows) || as_i64(args[6], &call_flags) ||
        as_i64(args[7], &scale_addr) || as_i64(args[8], &inf_addr) || as_i64(args[11], &scratch))
        return NULL;
    uint64_t seed = PyLong_AsUnsignedLongLongMask(args[9]);
    uint64_t rounding_step = PyLong_AsUnsignedLongLongMask(args[10]);
    if (PyErr_Occurred())
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
    int64_t stepped, runs = 0;
    Py_BEGIN_ALLOW_THREADS
    stepped = optim_step((int)kernel, (int)variant, (int)nthreads, rows, nrows, h, call_flags,
                         (const float *)(intptr_t)scale_addr, (const float *)(intptr_t)inf_addr,
                         seed, rounding_step, (Row *)(intptr_t)scratch, &runs);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(LL)", (long long)stepped, (long long)runs);
}

/* torch.Tensor's own accessors (configure()), called through their C entry points on tensors
 * of exactly the types they were taken from (torch.Tensor, nn.Parameter): no attribute
 * lookup or descriptor dispatch per call.  Any other type takes the generic route. */
static PyTypeObject *fast_type[2];
static PyMethodDef *m_data_ptr, *m_is_contiguous;
static getter g_grad, g_dtype, g_shape;
static PyObject *no_args; /* () */

static int is_fast(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    return type == fast_type[0] || type == fast_type[1];
}

/* Call a method with no arguments through its C function, by its calling convention. */
static PyObject *call_method(PyObject *obj, PyMethodDef *def, PyObject *name)
{
    if (!is_fast(obj))
        return PyObject_CallMethodNoArgs(obj, name);
    int flags = def->ml_flags & ~(METH_CLASS | METH_STATIC | METH_COEXIST);
    if (flags == METH_NOARGS)
        return def->ml_meth(obj, NULL);
    if (flags == (METH_VARARGS | METH_KEYWORDS))
        return ((PyCFunctionWithKeywords)(void (*)(void))def->ml_meth)(obj, no_args, NULL);
    return PyObject_CallMethodNoArgs(obj, name);
}

static PyObject *get_attr(PyObject *obj, getter get, PyObject *name)
{
    return is_fast(obj) ? get(obj, NULL) : PyObject_GetAttr(obj, name);
}

/* data_ptr() of a tensor; 0 with an exception set on failure (no tensor has address 0
 * and elements: an empty one may, and its row moves no bytes). */
static int64_t data_ptr(PyObject *tensor)
{
    PyObject *res = call_method(tensor, m_data_ptr, s_data_ptr);
    if (res == NULL)
        return 0;
    int64_t ptr = PyLong_AsLongLong(res);
    Py_DECREF(res);
    return ptr;
}

/* Whether `grad` can be read with the layout of its param's row: exactly a torch.Tensor (or
 * Parameter), of the param's dtype and shape, contiguous (or with the param's strides). */
static int grad_fits(PyObject *grad, PyObject *shape, PyObject *dtype, PyObject *strides)
{
    if (!is_fast(grad))
        return 0;
    PyObject *a = get_attr(grad, g_dtype, s_dtype);
    int ok = a == dtype;
    Py_XDECREF(a);
    if (!ok)
        return 0;
    a = get_attr(grad, g_shape, s_shape);
    ok = a != NULL && PyObject_RichCompareBool(a, shape, Py_EQ) == 1;
    Py_XDECREF(a);
    if (!ok)
        return 0;
    if (strides == Py_None) {
        a = call_method(grad, m_is_contiguous, s_is_contiguous);
        ok = a == Py_True;
    } else {
        a = PyObject_CallMethodNoArgs(grad, s_stride);
        ok = a != NULL && PyObject_RichCompareBool(a, strides, Py_EQ) == 1;
    }
    Py_XDECREF(a);
    return ok;
}

/* torch's C shim (the aoti_torch_* functions libtorch exports with C linkage for extensions
 * built without its headers), reached through addresses Python looks up (use_shim).  A
 * torch.Tensor's Python object holds its at::Tensor right after PyObject_HEAD, and the
 * shim takes an at::Tensor*: use_shim checks that layout on probe tensors (against
 * Tensor._cdata) before it calls the shim once, then checks the shim's answers against
 * the Python accessors'.  With the shim a grad's checks cost a few nanoseconds instead of
 * five calls through torch's Python bindings (~0.3 us per tensor); without it (a torch
 * that lays its objects out otherwise, no libtorch found) bind uses the accessors. */
typedef int32_t (*shim_ptr)(void *, void **);
typedef int32_t (*shim_i64)(void *, int64_t *);
typedef int32_t (*shim_i64s)(void *, int64_t **);
typedef int32_t (*shim_i32)(void *, int32_t *);
typedef int32_t (*shim_bool)(void *, _Bool *);
static struct {
    int on;
    shim_ptr data_ptr;
    shim_i64 dim;
    shim_i64s sizes;
    shim_i32 dtype, device_type;
    shim_bool is_contiguous;
    int32_t dtypes[4], cpu; /* the shim's codes of DTYPES (plan.py) and of the CPU */
} shim;

static void *at_tensor(PyObject *tensor) { return (char *)tensor + sizeof(PyObject); }

/* What bind needs of a tensor, as the shim reads it; 0 on success. */
typedef struct {
    void *ptr;
    int32_t dtype, device;
    int64_t dim, *sizes;
    _Bool contiguous;
} ShimView;

static int shim_read(PyObject *tensor, ShimView *v)
{
    void *t = at_tensor(tensor);
    return shim.data_ptr(t, &v->ptr) || shim.dtype(t, &v->dtype) ||
           shim.device_type(t, &v->device) || shim.dim(t, &v->dim) ||
           shim.sizes(t, &v->sizes) || shim.is_contiguous(t, &v->contiguous);
}

/* Whether `sizes` (of `dim` elements) equals the tuple of ints `shape`. */
static int same_sizes(const int64_t *sizes, int64_t dim, PyObject *shape)
{
    if (!PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) != dim)
        return 0;
    for (int64_t d = 0; d < dim; d++) {
        if (PyLong_AsLongLong(PyTuple_GET_ITEM(shape, d)) != sizes[d])
            return 0; /* (a non-int sets an error; bind clears it and re-plans) */
    }
    return 1;
}

/* Whether the grad can be read with the layout of a contiguous row (the row's dtype, on
 * the CPU, of `shape`, contiguous); its data pointer into *ptr (NULL when it is empty). */
static int shim_grad(PyObject *grad, const Row *row, PyObject *shape, void **ptr)
{
    ShimView v;
    int64_t code = (row->flags >> ROW_DTYPE_SHIFT) & 15;
    if (code > 3 || shim_read(grad, &v) || v.dtype != shim.dtypes[code] || v.device != shim.cpu ||
        !v.contiguous || !same_sizes(v.sizes, v.dim, shape))
        return 0;
    *ptr = v.ptr;
    return 1;
}

/* Whether each (key, value, ...) of `checks` still holds: state[key] is value.  (A state
 * tensor re-pointed in place, with `.data =`, keeps the pointer its row has until the next
 * plan; the plan holds the old storage, so nothing is written through a dangling pointer.
 * Reading every state tensor's pointer here would double the cost of bind.) */
static int state_fits(PyObject *state, PyObject *checks)
{
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(checks); j++) {
        PyObject *check = PyTuple_GET_ITEM(checks, j);
        if (PyDict_GetItemWithError(state, PyTuple_GET_ITEM(check, 0)) !=
            PyTuple_GET_ITEM(check, 1))
            return 0;
    }
    return 1;
}

/* bind(group_params, snapshot, meta, table) -> int
 *
 * Re-validates a plan's table before a step (kernels/plan.py says what and why): the
 * group's param list must still be `snapshot` (else -2); for row i, meta[i] is (owner,
 * param, shape, dtype, strides or None, state dict or None, ((key, value, tensor, column),
 * ...)):
 * the param must still be at its data pointer, each state slot and counter the same tensor
 * at the same pointer, and the grad, re-read every step, of the param's layout; its pointer
 * goes into the row.  Rows without a grad are marked inactive.  Returns -1 when the table is
 * ready, else the first row that changed.  Nothing is held after it returns. */
#define BIND_AHEAD 4

static PyObject *py_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 || !PyList_Check(args[0]) || !PyTuple_Check(args[1]) ||
        !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "bind(list, tuple, tuple, int)");
        return NULL;
    }
    PyObject *group = args[0], *snapshot = args[1], *meta = args[2];
    int64_t table;
    if (as_i64(args[3], &table))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(group);
    if (n != PyTuple_GET_SIZE(snapshot))
        return PyLong_FromLong(-2);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_ITEM(group, i) != PyTuple_GET_ITEM(snapshot, i))
            return PyLong_FromLong(-2);
    }
    Py_ssize_t nrows = PyTuple_GET_SIZE(meta);
    Row *rows = (Row *)(intptr_t)table;
    for (Py_ssize_t i = 0; i < nrows; i++) {
        Row *row = &rows[i];
        PyObject *m = PyTuple_GET_ITEM(meta, i);
        if (!PyTuple_Check(m) || PyTuple_GET_SIZE(m) != 7) {
            PyErr_SetString(PyExc_TypeError, "bind(): a meta row is not a 7-tuple");
            return NULL;
        }
        if (i + BIND_AHEAD < nrows) { /* a later row's objects: their misses overlap ours */
            PyObject *later = PyTuple_GET_ITEM(PyTuple_GET_ITEM(meta, i + BIND_AHEAD), 1);
            __builtin_prefetch(later, 0, 3);
            __builtin_prefetch((const char *)later + 64, 0, 3);
        }
        PyObject *param = PyTuple_GET_ITEM(m, 1), *state = PyTuple_GET_ITEM(m, 5);
        PyObject *shape = PyTuple_GET_ITEM(m, 2), *strides = PyTuple_GET_ITEM(m, 4);
        /* contiguous rows of plain tensors take the shim */
        int by_shim = shim.on && is_fast(param) && strides == Py_None && PyTuple_Check(shape);
        void *pptr;
        if (by_shim ? shim.data_ptr(at_tensor(param), &pptr) || pptr != row->p
                    : (void *)(intptr_t)data_ptr(param) != row->p)
            goto changed;
        if (state != Py_None && !state_fits(state, PyTuple_GET_ITEM(m, 6)))
            goto changed;
        PyObject *grad = get_attr(param, g_grad, s_grad);
        if (grad == NULL)
            goto changed;
        row->flags &= ~(int64_t)ROW_ACTIVE;
        if (grad == Py_None) {
            Py_DECREF(grad);
            continue;
        }
        int ok = state != Py_None;
        int64_t gptr = 0;
        if (ok && by_shim && is_fast(grad)) {
            void *ptr = NULL;
            ok = shim_grad(grad, row, shape, &ptr);
            gptr = (int64_t)(intptr_t)ptr;
        } else if (ok) {
            ok = grad_fits(grad, shape, PyTuple_GET_ITEM(m, 3), strides);
            gptr = ok ? data_ptr(grad) : 0;
        }
        Py_DECREF(grad); /* the plan keeps no gradient alive between steps */
        if (!ok || PyErr_Occurred())
            goto changed;
        row->g = (void *)(intptr_t)gptr;
        row->flags |= ROW_ACTIVE;
        continue;
    changed: /* or a call raised (a sparse grad has no data_ptr): Python re-plans and decides */
        PyErr_Clear();
        return PyLong_FromSsize_t(i);
    }
    return PyLong_FromLong(-1);
}

/* configure(types, data_ptr, grad, is_contiguous, dtype, shape): torch.Tensor's accessors
 * (two method descriptors, three getset descriptors) and the exact types (torch.Tensor,
 * nn.Parameter) that use them unchanged. */
static PyObject *py_configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) > 2 ||
        !PyObject_TypeCheck(args[1], &PyMethodDescr_Type) ||
        !PyObject_TypeCheck(args[3], &PyMethodDescr_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(types, data_ptr, grad, is_contiguous, dtype, shape)");
        return NULL;
    }
    for (int i = 2; i < 6; i += (i == 2 ? 2 : 1)) {
        if (!PyObject_TypeCheck(args[i], &PyGetSetDescr_Type)) {
            PyErr_SetString(PyExc_TypeError, "configure(): grad, dtype, shape are getsets");
            return NULL;
        }
    }
    fast_type[0] = fast_type[1] = NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[0]); i++) {
        PyObject *type = PyTuple_GET_ITEM(args[0], i);
        Py_INCREF(type);
        fast_type[i] = (PyTypeObject *)type;
    }
    m_data_ptr = ((PyMethodDescrObject *)args[1])->d_method;
    m_is_contiguous = ((PyMethodDescrObject *)args[3])->d_method;
    g_grad = ((PyGetSetDescrObject *)args[2])->d_getset->get;
    g_dtype = ((PyGetSetDescrObject *)args[4])->d_getset->get;
    g_shape = ((PyGetSetDescrObject *)args[5])->d_getset->get;
    Py_RETURN_NONE;
}

/* use_shim(addresses, dtypes, cpu, probes) -> bool; use_shim(None) turns the shim off.
 *
 * `addresses`: those of aoti_torch_get_{data_ptr, dim, sizes, dtype, device_type} and
 * aoti_torch_is_contiguous; `dtypes` the shim's codes of plan.DTYPES in order, `cpu` its
 * CPU code; `probes`: (tensor, tensor._cdata, (data_ptr, dtype code, device code, dim,
 * sizes, is_contiguous)) as the Python accessors give them.  The shim is used only if
 * every probe has the layout and the answers above. */
static PyObject *py_use_shim(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    shim.on = 0;
    if (nargs == 1 && args[0] == Py_None)
        Py_RETURN_FALSE;
    if (nargs != 4 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != 6 ||
        !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 4 || !PyTuple_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "use_shim(addresses, dtypes, cpu, probes)");
        return NULL;
    }
    int64_t a[6], code;
    for (int i = 0; i < 6; i++) {
        if (as_i64(PyTuple_GET_ITEM(args[0], i), &a[i]))
            return NULL;
        if (a[i] == 0)
            Py_RETURN_FALSE;
    }
    for (int i = 0; i < 4; i++) {
        if (as_i64(PyTuple_GET_ITEM(args[1], i), &code))
            return NULL;
        shim.dtypes[i] = (int32_t)code;
    }
    if (as_i64(args[2], &code))
        return NULL;
    shim.cpu = (int32_t)code;
    shim.data_ptr = (shim_ptr)(intptr_t)a[0];
    shim.dim = (shim_i64)(intptr_t)a[1];
    shim.sizes = (shim_i64s)(intptr_t)a[2];
    shim.dtype = (shim_i32)(intptr_t)a[3];
    shim.device_type = (shim_i32)(intptr_t)a[4];
    shim.is_contiguous = (shim_bool)(intptr_t)a[5];
    PyObject *probes = args[3];
    Py_ssize_t n = PyTuple_GET_SIZE(probes);
    for (Py_ssize_t i = 0; i < n; i++) { /* the layout first: nothing is called before */
        PyObject *probe = PyTuple_GET_ITEM(probes, i);
        int64_t cdata;
        if (!PyTuple_Check(probe) || PyTuple_GET_SIZE(probe) != 3 ||
            !is_fast(PyTuple_GET_ITEM(probe, 0)) || as_i64(PyTuple_GET_ITEM(probe, 1), &cdata))
            goto refuse;
        if (*(int64_t *)at_tensor(PyTuple_GET_ITEM(probe, 0)) != cdata)
            Py_RETURN_FALSE;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *want = PyTuple_GET_ITEM(PyTuple_GET_ITEM(probes, i), 2);
        int64_t w[4];
        ShimView v;
        if (!PyTuple_Check(want) || PyTuple_GET_SIZE(want) != 6)
            goto refuse;
        for (int j = 0; j < 4; j++) {
            if (as_i64(PyTuple_GET_ITEM(want, j), &w[j]))
                return NULL;
        }
        if (shim_read(PyTuple_GET_ITEM(PyTuple_GET_ITEM(probes, i), 0), &v) ||
            (int64_t)(intptr_t)v.ptr != w[0] || v.dtype != w[1] || v.device != w[2] ||
            v.dim != w[3] || v.contiguous != (PyTuple_GET_ITEM(want, 5) == Py_True) ||
            !same_sizes(v.sizes, v.dim, PyTuple_GET_ITEM(want, 4))) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
    }
    shim.on = n > 0;
    return PyBool_FromLong(shim.on);
refuse:
    PyErr_SetString(PyExc_TypeError, "use_shim(): a probe is not (tensor, int, tuple)");
    return NULL;
}

/* isa() -> str: the clone the loader picked on this CPU. */
static PyObject *py_isa(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
    return PyUnicode_FromString(optim_isa());
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))py_configure, METH_FASTCALL,
     "configure(types, data_ptr, grad, is_contiguous, dtype, shape): fast accessors for bind"},
    {"use_shim", (PyCFunction)(void (*)(void))py_use_shim, METH_FASTCALL,
     "use_shim(addresses, dtypes, cpu, probes) -> whether bind reads tensors through torch's "
     "C shim"},
    {"isa", py_isa, METH_NOARGS, "isa() -> the instruction set of the loops in use"},
    {"step", (PyCFunction)(void (*)(void))py_step, METH_FASTCALL,
     "step(kernel, variant, nthreads, table, nrows, hyper, flags, grad_scale, found_inf, "
     "seed, rounding_step, scratch) -> (rows stepped, runs)"},
    {"bind", (PyCFunction)(void (*)(void))py_bind, METH_FASTCALL,
     "bind(group_params, snapshot, meta, table) -> -1 | -2 | row to re-plan"},
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
    s_dtype = PyUnicode_InternFromString("dtype");
    s_shape = PyUnicode_InternFromString("shape");
    no_args = PyTuple_New(0);
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
    const char *row_fields[] = {ROW_FIELD_NAMES};
    PyObject *fields_of_row = PyTuple_New(sizeof row_fields / sizeof row_fields[0]);
    for (size_t i = 0; i < sizeof row_fields / sizeof row_fields[0]; i++)
        PyTuple_SET_ITEM(fields_of_row, i, PyUnicode_FromString(row_fields[i]));
    PyModule_AddObject(m, "ROW_FIELDS", fields_of_row);
    PyModule_AddIntConstant(m, "ROW_WIDTH", sizeof(Row) / sizeof(int64_t));
    PyModule_AddIntConstant(m, "DTYPE_SHIFT", ROW_DTYPE_SHIFT);
    PyModule_AddIntConstant(m, "OPENMP", optim_openmp);
    PyModule_AddStringConstant(m, "CLONES", optim_clones);
    return m;
}
