/* The interface between optimlab's kernel driver (optim.c, plain C) and its Python
 * bindings (module.c): the row table, the hyperparameters, the flags. */
#ifndef OPTIMLAB_OPTIM_H
#define OPTIMLAB_OPTIM_H

#include <stdint.h>

/* Hyperparameters, in the order of HYPER_FIELDS (exported to Python). */
enum { H_LR, H_WEIGHT_DECAY, H_MOMENTUM, H_DAMPENING, H_ALPHA, H_EPS, H_BETA1, H_BETA2,
       H_LR_DECAY, H_MOMENTUM_DECAY, NH };
extern const char *const optim_hyper_fields[NH];

/* Flags: per call (the optimizer's options, bits 0-7) and per row (bits 8-15). */
enum {
    F_MAXIMIZE = 1 << 0, F_WD = 1 << 1, F_NESTEROV = 1 << 2, F_LECTURE = 1 << 3,
    F_DECOUPLED = 1 << 4, F_EPS_INSIDE = 1 << 5, F_BIAS_CORRECTION = 1 << 6,
    ROW_ACTIVE = 1 << 8,   /* has a grad this step */
    F_FRESH = 1 << 9,      /* state slots just created: SGD's buffer takes the grad */
    ROW_NOSTATE = 1 << 10, /* no state yet (no grad when planned): bind asks for a re-plan */
    ROW_STRIDED = 1 << 11, /* dense but not contiguous: grads must match the param's strides */
    ROW_STEP_F64 = 1 << 12, ROW_MU_F64 = 1 << 13,
    ROW_DTYPE_SHIFT = 16, /* bits 16-19: dtype code */
    /* how the row is stored (kernels/storage.py): bits 20-21 the state format, 22-24 which
     * 8-bit slots take the unsigned code, 25-26 the param's rounding */
    ROW_STATE_SHIFT = 20, ROW_UNSIGNED_SHIFT = 22, ROW_ROUNDING_SHIFT = 25,
};
enum { STATE_NATIVE, STATE_F32, STATE_BF16, STATE_Q8 };      /* a row's state format */
enum { ROUND_NEAREST, ROUND_STOCHASTIC, ROUND_KAHAN };        /* a row's param rounding */
#define NFLAG_NAMES 14
extern const char *const optim_flag_names[NFLAG_NAMES]; /* by bit; NULL: unused */

/* One tensor: a row of the plan's int64 table (kernels/__init__.py's ROW_FIELDS, in order). */
typedef struct {
    void *p, *g, *s[3]; /* param, grad, state slots */
    void *q[3];         /* 8-bit slots: per-block fp32 absmax */
    void *c;            /* Kahan-compensated params: the compensation */
    int64_t n;
    void *step, *mu_product;
    int64_t flags;
    int64_t key; /* stochastic rounding: (group index << 32) | param index */
} Row;
#define ROW_FIELD_NAMES                                                                     \
    "param", "grad", "slot0", "slot1", "slot2", "scale0", "scale1", "scale2", "comp", "numel", \
        "step", "mu_product", "flags", "key"

enum { DT_F32, DT_F64, DT_BF16, DT_F16, NDT }; /* a row's dtype code */
#define NV 8                                  /* slot sets: bit i, state slot i present */

void optim_init(void); /* once, at load: marks forked children (see optim.c) */
extern const int optim_nkernels;
const char *optim_kernel_name(int kernel);
int optim_has_loop(int kernel, int variant, int dtype);

/* One optimizer step over the active rows: advance their counters, then update every element
 * on up to `nthreads` threads.  `scale` != 0 unscales the grads (and writes them back);
 * a nonzero *found_inf skips the step untouched (returns -1).  `seed` and `rounding_step`
 * key stochastic rounding.  With `scratch` (room for nrows rows; NULL: none), rows that
 * continue each other in memory run as one, joined there: *nruns says how many runs the rows
 * made.  Returns the rows stepped. */
int64_t optim_step(int kernel, int variant, int nthreads, Row *rows, int64_t nrows,
                   const double *hyper, int64_t flags, const float *grad_scale,
                   const float *found_inf, uint64_t seed, uint64_t rounding_step,
                   Row *scratch, int64_t *nruns);

const char *optim_isa(void);   /* the clone in use on this CPU */
extern const char optim_clones[];
extern const int optim_openmp; /* _OPENMP, or 0 */

#endif
