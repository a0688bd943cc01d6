/* optimlab's fused CPU optimizer kernels: one pass over memory per step, one
 * parallel region per param group.  Plain C: the Python side is module.c.
 *
 * The caller (backend.py, through module.c) hands over a table of rows, one per
 * tensor (optim.h): raw data pointers from Tensor.data_ptr() (no torch C++ ABI), the
 * element count, the scalar state counters, and per-row flags.  optim_step advances
 * the counters serially, then splits the elements of all rows evenly across
 * OpenMP threads; each thread walks its rows and runs the optimizer's
 * per-element update (updates.h) over its share.
 *
 * Build: -O3 -fno-math-errno (else sqrtf stays a libm call and the loops do
 * not vectorize: 3x slower), -fno-trapping-math (lets conditionals on flags be
 * if-converted), -ffp-contract=off (only the fma()s written in updates.h are fused,
 * so results match torch bitwise on every instruction set), -fopenmp.
 * OpenMP comes from torch's own libgomp: torch is imported first, so the
 * loader resolves our libgomp.so.1 to the copy already mapped, and the
 * kernels share torch's thread pool instead of oversubscribing the cores.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <tgmath.h>
#ifdef _OPENMP
#include <omp.h>
const int optim_openmp = _OPENMP;
#else
const int optim_openmp = 0;
#endif

#include "optim.h"

/* x86-64 Linux with GCC >= 12: AVX-512, AVX2+FMA and baseline clones picked at load. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12
#define TARGETS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
const char optim_clones[] = "x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA), baseline";
#else
#define TARGETS
const char optim_clones[] = "baseline only";
#endif

/* The per-element functions must inline into every clone (GCC inlines across a target
 * difference only when told to); a call left in the loop stops vectorization. */
#if defined(__GNUC__)
#define INLINE inline __attribute__((always_inline))
#else
#define INLINE inline
#endif

const char *const optim_hyper_fields[NH] = {
    "lr", "weight_decay", "momentum", "dampening", "alpha", "eps", "beta1", "beta2",
    "lr_decay", "momentum_decay"};
const char *const optim_flag_names[NFLAG_NAMES] = {
    "maximize", "weight_decay", "nesterov", "lecture", "decoupled", "eps_inside",
    "bias_correction", NULL, "active", "fresh", "nostate", "strided", "step_f64", "mu_f64"};

/* Per-tensor scalars (double, from the hyperparameters and the tensor's counters), rounded
 * to the math type before the loop; updates.h indexes them. */
enum { K_NEG_LR, K_WD, K_MOMENTUM, K_ONE_MINUS_DAMPENING, K_NEG_STEP, K_NEG_STEP_NEXT, K_EPS,
       K_ALPHA, K_ONE_MINUS_ALPHA, K_DECAY, K_ONE_MINUS_BETA1, K_BETA2, K_ONE_MINUS_BETA2,
       K_SQRT_BC2, K_BC2, NK };

#include "formats.h"

/* The update functions (updates.h), once per math type: float (float32 and bfloat16
 * tensors), double (float64), and float that rounds to float16 where torch's float16
 * math does (float16 tensors: see HALF in updates.h). */
#define real float
#define BITS uint32_t
#define HALF(x) (x)
#define F(name) name##_f
#include "updates.h"
#undef F
#define F(name) name##_h
#undef HALF
#define HALF(x) f16_load(f16_store(x))
#include "updates.h"
#undef HALF
#undef real
#undef BITS
#undef F
#define real double
#define BITS uint64_t
#define HALF(x) (x)
#define F(name) name##_d
#include "updates.h"
#undef HALF
#undef real
#undef BITS
#undef F


typedef float f32_t;
typedef double f64_t;
typedef uint16_t bf16_t;
typedef uint16_t f16_t;
#define f32_load(x) (x)
#define f32_store(x) (x)
#define f64_load(x) (x)
#define f64_store(x) (x)
#define REAL_f32 f
#define REAL_f64 d
#define REAL_bf16 f
#define REAL_f16 h

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define MATH_f float
#define MATH_d double
#define MATH_h float

/* ---- the generic multi-tensor driver ------------------------------------------------ */

/* Elements [lo, hi) of one row. */
typedef void (*Loop)(const double *dk, int64_t flags, const Row *row, int64_t lo, int64_t hi,
                     float scale);

/* One loop per (optimizer, slot set V, dtype).  `scale` != 0 unscales the gradient
 * (GradScaler) and writes it back, as torch's fused kernels do. */
#define LOOP_BODY(OPT, V, D, UNSCALE, FLAGS)                                                 \
    for (int64_t i = lo; i < hi; i++) {                                                      \
        R P = CAT(D, _load)(p[i]), G = CAT(D, _load)(g[i]), S[3];                            \
        if (UNSCALE) {                                                                       \
            G = G / sc;                                                                      \
            g[i] = CAT(D, _store)(G);                                                        \
        }                                                                                    \
        if ((V) & 1) S[0] = CAT(D, _load)(s0[i]);                                            \
        if ((V) & 2) S[1] = CAT(D, _load)(s1[i]);                                            \
        if ((V) & 4) S[2] = CAT(D, _load)(s2[i]);                                            \
        CAT(OPT##_, CAT(REAL_, D))(k, (FLAGS), (V), &P, G, S);                               \
        p[i] = CAT(D, _store)(P);                                                            \
        if ((V) & 1) s0[i] = CAT(D, _store)(S[0]);                                           \
        if ((V) & 2) s1[i] = CAT(D, _store)(S[1]);                                           \
        if ((V) & 4) s2[i] = CAT(D, _store)(S[2]);                                           \
    }

#define DEFINE_LOOP(OPT, V, D)                                                               \
    TARGETS static void OPT##_##V##_##D(const double *dk, int64_t flags, const Row *row,     \
                                        int64_t lo, int64_t hi, float scale)                 \
    {                                                                                        \
        typedef CAT(MATH_, CAT(REAL_, D)) R;                                                 \
        R k[NK];                                                                             \
        for (int j = 0; j < NK; j++) k[j] = (R)dk[j];                                        \
        D##_t *restrict p = row->p, *restrict g = row->g;                                    \
        D##_t *restrict s0 = row->s[0], *restrict s1 = row->s[1], *restrict s2 = row->s[2]; \
        const R sc = (R)scale;                                                               \
        (void)s0, (void)s1, (void)s2;                                                        \
        if (scale != 0.0f) {                                                                 \
            LOOP_BODY(OPT, V, D, 1, flags)                                                   \
        } else if (CAT(COMMON_, D)) {                                                        \
            WITH_COMMON_FLAGS(CAT(PLAIN_, D), OPT, V);                                       \
        } else {                                                                             \
            LOOP_BODY(OPT, V, D, 0, flags)                                                   \
        }                                                                                    \
    }

/* The options are loop-invariant, but the updates read them as selects (which is what lets
 * GCC vectorize them): vector operations per element that a constant folds away.  On a large
 * float32 tensor the loop streams from memory, and those operations cut how far ahead the
 * core keeps loads in flight: plain SGD on 16M elements ran 26 % slower than the same loop
 * with its flags a constant (one thread, same tensors), and 15-25 % slower than torch's.
 * So the option sets most calls use (torch's defaults, with weight decay, Nesterov, AdamW)
 * get float32 loops of their own, with the flags a constant; -1 marks an unused slot. */
#define COMMON_f32 1 /* (the other dtypes' loops are rarer, and slower for other reasons) */
#define COMMON_f64 0
#define COMMON_bf16 0
#define COMMON_f16 0
#define PLAIN_f32(OPT, V, FLAGS) LOOP_BODY(OPT, V, f32, 0, FLAGS)
#define PLAIN_f64(OPT, V, FLAGS) LOOP_BODY(OPT, V, f64, 0, FLAGS)
#define PLAIN_bf16(OPT, V, FLAGS) LOOP_BODY(OPT, V, bf16, 0, FLAGS)
#define PLAIN_f16(OPT, V, FLAGS) LOOP_BODY(OPT, V, f16, 0, FLAGS)
#define sgd_A 0
#define sgd_B F_WD
#define sgd_C F_NESTEROV
#define sgd_D (F_WD | F_NESTEROV)
#define adagrad_A 0
#define adagrad_B F_WD
#define adagrad_C (-1)
#define adagrad_D (-1)
#define rmsprop_A 0
#define rmsprop_B F_WD
#define rmsprop_C (-1)
#define rmsprop_D (-1)
#define adam_A F_BIAS_CORRECTION
#define adam_B (F_BIAS_CORRECTION | F_WD | F_DECOUPLED)
#define adam_C (-1)
#define adam_D (-1)
#define nadam_A 0
#define nadam_B (F_WD | F_DECOUPLED)
#define nadam_C (-1)
#define nadam_D (-1)

/* LOOP(OPT, V, FLAGS) with the flags a constant when they are one of the common sets (see
 * COMMON above), else as they are. */
#define WITH_COMMON_FLAGS(LOOP, OPT, V)                                                     \
    do {                                                                                    \
        if (OPT##_A >= 0 && flags == OPT##_A) {                                             \
            LOOP(OPT, V, OPT##_A);                                                          \
        } else if (OPT##_B >= 0 && flags == OPT##_B) {                                      \
            LOOP(OPT, V, OPT##_B);                                                          \
        } else if (OPT##_C >= 0 && flags == OPT##_C) {                                      \
            LOOP(OPT, V, OPT##_C);                                                          \
        } else if (OPT##_D >= 0 && flags == OPT##_D) {                                      \
            LOOP(OPT, V, OPT##_D);                                                          \
        } else {                                                                            \
            LOOP(OPT, V, flags);                                                            \
        }                                                                                   \
    } while (0)

#define FOR_DTYPES(X, OPT, V) X(OPT, V, f32) X(OPT, V, f64) X(OPT, V, bf16) X(OPT, V, f16)
#define DTYPE_LOOPS(OPT, V) {OPT##_##V##_f32, OPT##_##V##_f64, OPT##_##V##_bf16, OPT##_##V##_f16}

/* The slot sets each optimizer runs with (see updates.h for the slots). */
FOR_DTYPES(DEFINE_LOOP, sgd, 0)
FOR_DTYPES(DEFINE_LOOP, sgd, 1)
FOR_DTYPES(DEFINE_LOOP, adagrad, 1)
FOR_DTYPES(DEFINE_LOOP, rmsprop, 1)
FOR_DTYPES(DEFINE_LOOP, rmsprop, 3)
FOR_DTYPES(DEFINE_LOOP, rmsprop, 5)
FOR_DTYPES(DEFINE_LOOP, rmsprop, 7)
FOR_DTYPES(DEFINE_LOOP, adam, 3)
FOR_DTYPES(DEFINE_LOOP, adam, 7)
FOR_DTYPES(DEFINE_LOOP, nadam, 3)

/* ---- staged rows: state or params stored in a format of their own -------------------
 * A chunk of CHUNK elements (whole 8-bit blocks of BLOCK8: a row's chunks start on its block
 * bounds) is loaded into float32 arrays in L1 -- or, for float32 tensors, used where it lies
 * -- updated there by the optimizer's float update, and stored back: still one pass over
 * memory, and the update never knows how anything is stored.  Everything below is inlined
 * into one driver per (optimizer, slot set), so a full chunk runs loops of constant length
 * (no vector prologues or tails).  Formats apply to float32, bfloat16 and float16 params. */
#define BLOCK8 256 /* elements per 8-bit absmax (storage.BLOCK) */
#define CHUNK 512 /* elements staged at once: two blocks, 10 KiB of scratch */

typedef struct {
    float *p, *g, *s[3];
    float scratch[5][CHUNK];
} Chunk;

static const int elem_size[NDT] = {4, 8, 2, 2};

/* Elements [at, at + len) of an array of dtype `dt` (float32, bfloat16, float16) as floats. */
static INLINE void load_floats(const void *src, int dt, int64_t at, int64_t len, float *out)
{
    const uint16_t *in = (const uint16_t *)src + at;
    if (dt == DT_F32) {
        memcpy(out, (const float *)src + at, (size_t)len * sizeof(float));
    } else if (dt == DT_BF16) {
        for (int64_t i = 0; i < len; i++)
            out[i] = bf16_load(in[i]);
    } else {
        for (int64_t i = 0; i < len; i++)
            out[i] = f16_load(in[i]);
    }
}

/* The reverse, rounding to nearest even. */
static INLINE void store_floats(void *dst, int dt, int64_t at, int64_t len, const float *in)
{
    uint16_t *out = (uint16_t *)dst + at;
    if (dt == DT_F32) {
        memcpy((float *)dst + at, in, (size_t)len * sizeof(float));
    } else if (dt == DT_BF16) {
        for (int64_t i = 0; i < len; i++)
            out[i] = bf16_store(in[i]);
    } else {
        for (int64_t i = 0; i < len; i++)
            out[i] = f16_store(in[i]);
    }
}

static INLINE void store_bf16_stochastic(uint16_t *dst, int64_t at, int64_t len,
                                         const float *in, uint32_t stream)
{
    uint32_t key = (uint32_t)at * GOLDEN; /* the element's index, hashed, in 32-bit lanes */
    for (int64_t i = 0; i < len; i++, key += GOLDEN)
        dst[at + i] = bf16_store_stochastic(in[i], stream, key);
}

/* The 8-bit blocks of [at, at + len): codes and absmax to floats, and back.  A block's absmax
 * is its largest |x|, found as the largest bit pattern of |x| (the same order for
 * non-negative floats, NaN above everything: a NaN makes the whole block NaN). */
static INLINE void load_q8(const uint8_t *codes, const float *absmax, int is_unsigned,
                           int64_t at, int64_t len, float *out)
{
    for (int64_t block = 0; block < len; block += BLOCK8) {
        float scale = absmax[(at + block) / BLOCK8];
        int64_t n = len - block < BLOCK8 ? len - block : BLOCK8;
        for (int64_t i = 0; i < n; i++)
            out[block + i] = q8_decode(codes[at + block + i], scale, is_unsigned);
    }
}

/* Rounded stochastically: `stream` is the slot's, elements keyed by their index in the row. */
static INLINE void store_q8(uint8_t *codes, float *absmax, int is_unsigned, int64_t at,
                            int64_t len, const float *in, uint32_t stream)
{
    for (int64_t block = 0; block < len; block += BLOCK8) {
        int64_t n = len - block < BLOCK8 ? len - block : BLOCK8;
        uint32_t top = 0;
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = f32_bits(in[block + i]) & 0x7fffffffu;
            top = bits > top ? bits : top;
        }
        float scale = f32_from_bits(top), inverse = 1.0f / scale;
        absmax[(at + block) / BLOCK8] = scale;
        uint32_t key = (uint32_t)(at + block) * GOLDEN; /* the element's index, hashed */
        for (int64_t i = 0; i < n; i++, key += GOLDEN)
            codes[at + block + i] = q8_encode(in[block + i], inverse, is_unsigned,
                                              sr_noise(stream, key, NOISE8));
    }
}

static INLINE int in_place(int fmt, int dt)
{
    return fmt == STATE_F32 || (fmt == STATE_NATIVE && dt == DT_F32);
}

/* Slot j of the chunk at `at`: the row's own float32 memory, or decoded into scratch. */
static INLINE float *stage_slot_in(Chunk *x, const Row *row, int j, int fmt, int dt, int64_t at,
                                   int64_t len)
{
    if (in_place(fmt, dt))
        return (float *)row->s[j] + at;
    float *out = x->scratch[2 + j];
    if (fmt == STATE_Q8)
        load_q8(row->s[j], row->q[j], (int)(row->flags >> (ROW_UNSIGNED_SHIFT + j)) & 1, at,
                len, out);
    else
        load_floats(row->s[j], fmt == STATE_BF16 ? DT_BF16 : dt, at, len, out);
    return out;
}

static INLINE void stage_slot_out(const Chunk *x, const Row *row, int j, int fmt, int dt,
                                  int64_t at, int64_t len, uint32_t stream)
{
    if (in_place(fmt, dt))
        return;
    if (fmt == STATE_Q8)
        store_q8(row->s[j], row->q[j], (int)(row->flags >> (ROW_UNSIGNED_SHIFT + j)) & 1, at,
                 len, x->s[j], stream);
    else if (fmt == STATE_BF16)
        store_bf16_stochastic(row->s[j], at, len, x->s[j], stream);
    else
        store_floats(row->s[j], dt, at, len, x->s[j]);
}

/* Everything a staged chunk needs to know of its row, read once per row. */
typedef struct {
    int dt, fmt, rounding, size, slot_size;
    uint32_t streams[4]; /* state slots 0-2, then the param (storage.PARAM_SLOT) */
} Staging;

static INLINE Staging staging(const Row *row, uint64_t seed, uint64_t rounding_step)
{
    Staging st;
    st.dt = (int)((row->flags >> ROW_DTYPE_SHIFT) & 15);
    st.fmt = (int)((row->flags >> ROW_STATE_SHIFT) & 3);
    st.rounding = (int)((row->flags >> ROW_ROUNDING_SHIFT) & 3);
    st.size = elem_size[st.dt & 3];
    st.slot_size = st.fmt == STATE_Q8 ? 1 : st.fmt == STATE_BF16 ? 2 : st.fmt == STATE_F32 ? 4
                                                                                   : st.size;
    for (uint32_t j = 0; j < 4; j++)
        st.streams[j] = sr_stream(seed, rounding_step, (uint64_t)row->key, j);
    return st;
}

/* A later chunk of every array of a staged row, into the caches: the loops are short and
 * there are many streams, so the hardware prefetchers alone fall behind. */
#define AHEAD 8
static INLINE void prefetch_chunk(const Row *row, int variant, const Staging *st, int64_t at)
{
    for (int64_t byte = 0; byte < CHUNK * st->size; byte += 64) {
        __builtin_prefetch((const char *)row->p + at * st->size + byte, 1, 3);
        __builtin_prefetch((const char *)row->g + at * st->size + byte, 0, 3);
    }
    for (int j = 0; j < 3; j++) {
        if (variant & (1 << j)) {
            for (int64_t byte = 0; byte < CHUNK * st->slot_size; byte += 64)
                __builtin_prefetch((const char *)row->s[j] + at * st->slot_size + byte, 1, 3);
        }
    }
}

/* Load the chunk at `at` (param, grad, slots), unscaling the grad. */
static INLINE void stage_in(Chunk *x, const Row *row, int variant, const Staging *st, int64_t at,
                            int64_t len, float scale)
{
    if (st->dt == DT_F32) { /* float32 params and grads: in place */
        x->p = (float *)row->p + at;
        x->g = (float *)row->g + at;
    } else {
        x->p = x->scratch[0];
        x->g = x->scratch[1];
        load_floats(row->p, st->dt, at, len, x->p);
        load_floats(row->g, st->dt, at, len, x->g);
    }
    if (st->rounding == ROUND_KAHAN) {
        const uint16_t *comp = (const uint16_t *)row->c + at;
        for (int64_t i = 0; i < len; i++)
            x->p[i] = x->p[i] + bf16_load(comp[i]);
    }
    if (scale != 0.0f) { /* GradScaler: unscale, and leave the grads unscaled as torch */
        for (int64_t i = 0; i < len; i++)
            x->g[i] = x->g[i] / scale;
        if (st->dt != DT_F32)
            store_floats(row->g, st->dt, at, len, x->g);
    }
    for (int j = 0; j < 3; j++)
        x->s[j] = (variant & (1 << j)) ? stage_slot_in(x, row, j, st->fmt, st->dt, at, len) : NULL;
}

/* Store the chunk back: the slots in their format, the param with its rounding. */
static INLINE void stage_out(const Chunk *x, const Row *row, int variant, const Staging *st,
                             int64_t at, int64_t len)
{
    for (int j = 0; j < 3; j++) {
        if (variant & (1 << j))
            stage_slot_out(x, row, j, st->fmt, st->dt, at, len, st->streams[j]);
    }
    if (st->rounding == ROUND_STOCHASTIC) {
        store_bf16_stochastic(row->p, at, len, x->p, st->streams[3]);
    } else if (st->rounding == ROUND_KAHAN) { /* the weight to nearest, the rest in comp */
        uint16_t *p = (uint16_t *)row->p + at, *comp = (uint16_t *)row->c + at;
        for (int64_t i = 0; i < len; i++) {
            uint16_t rounded = bf16_store(x->p[i]);
            p[i] = rounded;
            comp[i] = bf16_store(x->p[i] - bf16_load(rounded));
        }
    } else if (st->dt != DT_F32) {
        store_floats(row->p, st->dt, at, len, x->p);
    }
}

/* The update of a chunk: the optimizer's float function over its arrays. */
#define STAGED_UPDATE(OPT, V, LEN)                                                           \
    do {                                                                                    \
        float *restrict p = x.p, *restrict s0 = x.s[0], *restrict s1 = x.s[1];              \
        float *restrict s2 = x.s[2];                                                        \
        const float *restrict g = x.g;                                                      \
        (void)s0, (void)s1, (void)s2;                                                       \
        for (int64_t i = 0; i < (LEN); i++) {                                               \
            float S[3] = {0.0f, 0.0f, 0.0f};                                                \
            if ((V) & 1) S[0] = s0[i];                                                      \
            if ((V) & 2) S[1] = s1[i];                                                      \
            if ((V) & 4) S[2] = s2[i];                                                      \
            OPT##_f(k, flags, (V), &p[i], g[i], S);                                        \
            if ((V) & 1) s0[i] = S[0];                                                      \
            if ((V) & 2) s1[i] = S[1];                                                      \
            if ((V) & 4) s2[i] = S[2];                                                      \
        }                                                                                   \
    } while (0)

/* The two formats that make float32 training faster (fewer bytes per parameter), each in one
 * fused loop as the in-dtype kernels are: float32 params with bfloat16 state (decode, update,
 * round stochastically, per element) and with 8-bit state (per block: decode and update,
 * keeping the new state in L1; then the block's absmax, and encode, rounding stochastically).
 * Staging in chunks (below) serves every other combination. */
#define UNSCALED(i) (scale != 0.0f ? g[i] / scale : g[i])

#define FUSED_BF16(OPT, V, FLAGS)                                                           \
    do {                                                                                    \
        float *restrict p = row->p, *restrict g = row->g;                                   \
        uint16_t *restrict b0 = row->s[0], *restrict b1 = row->s[1], *restrict b2 = row->s[2]; \
        (void)b0, (void)b1, (void)b2;                                                       \
        uint32_t key = (uint32_t)a * GOLDEN; /* the element's index, hashed */               \
        for (int64_t i = a; i < b; i++, key += GOLDEN) {                                    \
            float G = UNSCALED(i), S[3] = {0.0f, 0.0f, 0.0f};                               \
            if (scale != 0.0f) g[i] = G;                                                    \
            if ((V) & 1) S[0] = bf16_load(b0[i]);                                           \
            if ((V) & 2) S[1] = bf16_load(b1[i]);                                           \
            if ((V) & 4) S[2] = bf16_load(b2[i]);                                           \
            OPT##_f(k, (FLAGS), (V), &p[i], G, S);                                         \
            if ((V) & 1) b0[i] = bf16_store_stochastic(S[0], st.streams[0], key);           \
            if ((V) & 2) b1[i] = bf16_store_stochastic(S[1], st.streams[1], key);           \
            if ((V) & 4) b2[i] = bf16_store_stochastic(S[2], st.streams[2], key);           \
        }                                                                                   \
    } while (0)

#define FUSED_Q8(OPT, V, FLAGS)                                                             \
    do {                                                                                    \
        float *restrict p = row->p, *restrict g = row->g;                                   \
        const int u0 = OPT##_UNSIGNED & 1, u1 = (OPT##_UNSIGNED >> 1) & 1;                  \
        const int u2 = (OPT##_UNSIGNED >> 2) & 1;                                           \
        float fresh[3][BLOCK8];                                                             \
        for (int64_t at = a; at < b; at += BLOCK8) {                                        \
            int64_t n = b - at < BLOCK8 ? b - at : BLOCK8, blk = at / BLOCK8;               \
            const uint8_t *restrict c0 = (const uint8_t *)row->s[0] + at;                   \
            const uint8_t *restrict c1 = (const uint8_t *)row->s[1] + at;                   \
            const uint8_t *restrict c2 = (const uint8_t *)row->s[2] + at;                   \
            float a0 = (V) & 1 ? ((const float *)row->q[0])[blk] : 0.0f;                    \
            float a1 = (V) & 2 ? ((const float *)row->q[1])[blk] : 0.0f;                    \
            float a2 = (V) & 4 ? ((const float *)row->q[2])[blk] : 0.0f;                    \
            (void)c0, (void)c1, (void)c2, (void)a0, (void)a1, (void)a2;                     \
            for (int64_t i = 0; i < n; i++) {                                               \
                float G = UNSCALED(at + i), S[3] = {0.0f, 0.0f, 0.0f};                      \
                if (scale != 0.0f) g[at + i] = G;                                           \
                if ((V) & 1) S[0] = q8_decode(c0[i], a0, u0);                               \
                if ((V) & 2) S[1] = q8_decode(c1[i], a1, u1);                               \
                if ((V) & 4) S[2] = q8_decode(c2[i], a2, u2);                               \
                OPT##_f(k, (FLAGS), (V), &p[at + i], G, S);                                \
                if ((V) & 1) fresh[0][i] = S[0];                                            \
                if ((V) & 2) fresh[1][i] = S[1];                                            \
                if ((V) & 4) fresh[2][i] = S[2];                                            \
            }                                                                               \
            for (int j = 0; j < 3; j++) {                                                   \
                if ((V) & (1 << j))                                                         \
                    store_q8(row->s[j], row->q[j], (OPT##_UNSIGNED >> j) & 1, at, n,        \
                             fresh[j], st.streams[j]);                                      \
            }                                                                               \
        }                                                                                   \
    } while (0)

/* Which state slots hold non-negative values (storage.NONNEGATIVE: the unsigned 8-bit
 * code), by optimizer: constants, so the fused 8-bit loop decodes and encodes without a
 * select per element; a row that says otherwise takes the staged path. */
#define sgd_UNSIGNED 0     /* momentum_buffer (or the lecture's velocity) */
#define adagrad_UNSIGNED 1 /* sum */
#define rmsprop_UNSIGNED 1 /* square_avg; momentum_buffer and grad_avg are signed */
#define adam_UNSIGNED 6    /* exp_avg_sq, max_exp_avg_sq */
#define nadam_UNSIGNED 2   /* exp_avg_sq */

/* Elements [a, b) of a staged row (a, and b unless it is the row's end, on block bounds):
 * full chunks with a constant length, then what is left. */
typedef void (*Staged)(const double *dk, int64_t flags, const Row *row, int64_t a, int64_t b,
                       float scale, uint64_t seed, uint64_t rounding_step);

#define DEFINE_STAGED(OPT, V)                                                               \
    TARGETS static void staged_##OPT##_##V(const double *dk, int64_t flags, const Row *row,  \
                                           int64_t a, int64_t b, float scale, uint64_t seed,  \
                                           uint64_t rounding_step)                           \
    {                                                                                       \
        float k[NK];                                                                        \
        for (int j = 0; j < NK; j++)                                                        \
            k[j] = (float)dk[j];                                                            \
        Staging st = staging(row, seed, rounding_step);                                     \
        if (st.dt == DT_F32 && st.rounding == ROUND_NEAREST && st.fmt == STATE_BF16) {      \
            WITH_COMMON_FLAGS(FUSED_BF16, OPT, V);                                          \
            return;                                                                         \
        }                                                                                   \
        if (st.dt == DT_F32 && st.rounding == ROUND_NEAREST && st.fmt == STATE_Q8 &&        \
            ((row->flags >> ROW_UNSIGNED_SHIFT) & (V)) == (OPT##_UNSIGNED & (V))) {         \
            WITH_COMMON_FLAGS(FUSED_Q8, OPT, V);                                            \
            return;                                                                         \
        }                                                                                   \
        Chunk x;                                                                            \
        int64_t at = a;                                                                     \
        for (; at + CHUNK <= b; at += CHUNK) {                                              \
            if (at + (AHEAD + 1) * CHUNK <= b)                                              \
                prefetch_chunk(row, (V), &st, at + AHEAD * CHUNK);                          \
            stage_in(&x, row, (V), &st, at, CHUNK, scale);                                  \
            STAGED_UPDATE(OPT, V, CHUNK);                                                   \
            stage_out(&x, row, (V), &st, at, CHUNK);                                        \
        }                                                                                   \
        if (at < b) {                                                                       \
            stage_in(&x, row, (V), &st, at, b - at, scale);                                 \
            STAGED_UPDATE(OPT, V, b - at);                                                  \
            stage_out(&x, row, (V), &st, at, b - at);                                       \
        }                                                                                   \
    }

DEFINE_STAGED(sgd, 0)
DEFINE_STAGED(sgd, 1)
DEFINE_STAGED(adagrad, 1)
DEFINE_STAGED(rmsprop, 1)
DEFINE_STAGED(rmsprop, 3)
DEFINE_STAGED(rmsprop, 5)
DEFINE_STAGED(rmsprop, 7)
DEFINE_STAGED(adam, 3)
DEFINE_STAGED(adam, 7)
DEFINE_STAGED(nadam, 3)

static int staged(const Row *row)
{
    return ((row->flags >> ROW_STATE_SHIFT) & 3) != STATE_NATIVE ||
           ((row->flags >> ROW_ROUNDING_SHIFT) & 3) != ROUND_NEAREST;
}

/* ---- per-optimizer scalars: what the reference computes in Python doubles ------------- */

/* Fill the K_* scalars of one tensor, from its step t (after the increment) and mu_product. */
typedef void (*Prepare)(const double *h, int64_t flags, double t, double mu_product, double *k);

static void prepare_common(const double *h, double *k)
{
    k[K_NEG_LR] = -h[H_LR];
    k[K_WD] = h[H_WEIGHT_DECAY];
    k[K_MOMENTUM] = h[H_MOMENTUM];
    k[K_ONE_MINUS_DAMPENING] = 1 - h[H_DAMPENING];
    k[K_EPS] = h[H_EPS];
    k[K_ALPHA] = h[H_ALPHA];
    k[K_ONE_MINUS_ALPHA] = 1 - h[H_ALPHA];
    k[K_DECAY] = 1 - h[H_LR] * h[H_WEIGHT_DECAY];
    k[K_ONE_MINUS_BETA1] = 1 - h[H_BETA1];
    k[K_BETA2] = h[H_BETA2];
    k[K_ONE_MINUS_BETA2] = 1 - h[H_BETA2];
}

static void prepare_plain(const double *h, int64_t flags, double t, double mp, double *k)
{
    (void)flags, (void)t, (void)mp;
    prepare_common(h, k);
}

static void prepare_adagrad(const double *h, int64_t flags, double t, double mp, double *k)
{
    (void)flags, (void)mp;
    prepare_common(h, k);
    k[K_NEG_STEP] = -(h[H_LR] / (1 + (t - 1) * h[H_LR_DECAY]));
}

static void prepare_adam(const double *h, int64_t flags, double t, double mp, double *k)
{
    (void)mp;
    prepare_common(h, k);
    double bc1 = 1.0, bc2 = 1.0;
    if (flags & F_BIAS_CORRECTION) {
        bc1 = 1 - pow(h[H_BETA1], t);
        bc2 = 1 - pow(h[H_BETA2], t);
    }
    k[K_NEG_STEP] = -(h[H_LR] / bc1);
    k[K_SQRT_BC2] = pow(bc2, 0.5);
}

/* NAdam's momentum schedule mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)). */
static double nadam_mu(const double *h, double t)
{
    return h[H_BETA1] * (1.0 - 0.5 * pow(0.96, t * h[H_MOMENTUM_DECAY]));
}

static void prepare_nadam(const double *h, int64_t flags, double t, double mp, double *k)
{
    (void)flags;
    prepare_common(h, k);
    double mu = nadam_mu(h, t), mu_next = nadam_mu(h, t + 1);
    k[K_NEG_STEP] = -h[H_LR] * (1.0 - mu) / (1.0 - mp);
    k[K_NEG_STEP_NEXT] = (-h[H_LR] * mu_next) / (1.0 - mp * mu_next);
    k[K_BC2] = 1 - pow(h[H_BETA2], t);
}

/* Counters of one row, as the reference advances them: step += 1 in the counter's own
 * dtype; NAdam's mu_product *= mu_t (float32 counters multiply by (float)mu_t). */
static double load_counter(const void *ptr, int is_f64)
{
    return is_f64 ? *(const double *)ptr : (double)*(const float *)ptr;
}

static void advance(const double *h, int counters, Row *row)
{
    if (counters < 1)
        return;
    if (row->flags & ROW_STEP_F64)
        *(double *)row->step += 1.0;
    else
        *(float *)row->step += 1.0f;
    if (counters < 2)
        return;
    double mu = nadam_mu(h, load_counter(row->step, row->flags & ROW_STEP_F64));
    if (row->flags & ROW_MU_F64)
        *(double *)row->mu_product *= mu;
    else
        *(float *)row->mu_product *= (float)mu;
}

typedef struct {
    const char *name;
    int counters; /* 0: none, 1: step, 2: step and mu_product */
    Prepare prepare;
    Loop loops[NV][NDT];      /* by slot set V, then dtype */
    Staged staged[NV];   /* by slot set V: rows stored in a format of their own */
} Kernel;

static const Kernel kernels[] = {
    {"sgd", 0, prepare_plain, {[0] = DTYPE_LOOPS(sgd, 0), [1] = DTYPE_LOOPS(sgd, 1)},
     {[0] = staged_sgd_0, [1] = staged_sgd_1}},
    {"adagrad", 1, prepare_adagrad, {[1] = DTYPE_LOOPS(adagrad, 1)}, {[1] = staged_adagrad_1}},
    {"rmsprop", 1, prepare_plain,
     {[1] = DTYPE_LOOPS(rmsprop, 1), [3] = DTYPE_LOOPS(rmsprop, 3),
      [5] = DTYPE_LOOPS(rmsprop, 5), [7] = DTYPE_LOOPS(rmsprop, 7)},
     {[1] = staged_rmsprop_1, [3] = staged_rmsprop_3, [5] = staged_rmsprop_5,
      [7] = staged_rmsprop_7}},
    {"adam", 1, prepare_adam, {[3] = DTYPE_LOOPS(adam, 3), [7] = DTYPE_LOOPS(adam, 7)},
     {[3] = staged_adam_3, [7] = staged_adam_7}},
    {"nadam", 2, prepare_nadam, {[3] = DTYPE_LOOPS(nadam, 3)}, {[3] = staged_nadam_3}},
};
#define NKERNELS ((int)(sizeof kernels / sizeof kernels[0]))

/* Below this many elements per thread, waking another thread costs more than it saves
 * (a parallel region is ~2-5 us; 32K Adam elements move ~0.9 MB). */
#define GRAIN 32768

/* Thread `tid` of `nt` owns elements [split(tid), split(tid + 1)) of the concatenated rows;
 * interior boundaries fall on multiples of 64 elements. */
static int64_t split(int64_t total, int nt, int tid)
{
    if (tid >= nt)
        return total;
    int64_t at = (int64_t)((__int128)total * tid / nt);
    return at - at % 64;
}


/* Up to this many leading bytes of each array of the next tensor are prefetched while the
 * current one runs: the hardware prefetcher stops at 4 KiB pages, so without it every small
 * tensor starts with a row of demand misses (and TLB walks).  Measured on 1,000 tensors of
 * 1,024 float32 (Adam, one thread): the kernel part of the step ~10% faster, cold or warm. */
#define PREFETCH_BYTES 8192

static void prefetch_row(const Row *row)
{
    int64_t bytes = row->n * elem_size[(row->flags >> ROW_DTYPE_SHIFT) & 3];
    if (bytes > PREFETCH_BYTES)
        bytes = PREFETCH_BYTES;
    const char *arrays[5] = {row->p, row->g, row->s[0], row->s[1], row->s[2]};
    for (int a = 0; a < 5; a++) {
        if (arrays[a] == NULL)
            continue;
        for (int64_t at = 0; at < bytes; at += 64)
            __builtin_prefetch(arrays[a] + at, 1, 3);
    }
}

static void run_share(const Kernel *kern, int variant, const double *h, int64_t call_flags,
                      const Row *rows, int64_t nrows, int64_t lo, int64_t hi, float scale,
                      uint64_t seed, uint64_t rounding_step)
{
    double dk[NK] = {0}, last_t = -1.0, last_mp = -1.0;
    int64_t offset = 0;
    for (int64_t r = 0; r < nrows && offset < hi; r++) {
        const Row *row = &rows[r];
        if (!(row->flags & ROW_ACTIVE))
            continue;
        int64_t begin = offset, end = offset + row->n;
        offset = end;
        if (end <= lo || row->n == 0)
            continue;
        if (end < hi) { /* the thread goes on to the next active row */
            for (int64_t next = r + 1; next < nrows; next++) {
                if (rows[next].flags & ROW_ACTIVE) {
                    prefetch_row(&rows[next]);
                    break;
                }
            }
        }
        double t = 0.0, mp = 0.0;
        if (kern->counters >= 1)
            t = load_counter(row->step, row->flags & ROW_STEP_F64);
        if (kern->counters >= 2)
            mp = load_counter(row->mu_product, row->flags & ROW_MU_F64);
        if (t != last_t || mp != last_mp) { /* usually once: a group's rows share a step */
            kern->prepare(h, call_flags, t, mp, dk);
            last_t = t, last_mp = mp;
        }
        int64_t a = (lo > begin ? lo : begin) - begin, b = (hi < end ? hi : end) - begin;
        int64_t flags = call_flags | (row->flags & F_FRESH);
        if (staged(row)) { /* both threads at a split move it to the same block bound */
            a -= a % BLOCK8;
            b = b == row->n ? b : b - b % BLOCK8;
            kern->staged[variant](dk, flags, row, a, b, scale, seed, rounding_step);
            continue;
        }
        int dtype = (int)((row->flags >> ROW_DTYPE_SHIFT) & 15);
        kern->loops[variant][dtype](dk, flags, row, a, b, scale);
    }
}

/* A child forked after the parent ran a parallel region inherits libgomp's pool state but
 * not its threads: its next parallel region waits forever on them (torch's own ops hang the
 * same way unless the child sets one thread, as DataLoader workers do).  Kernels in a forked
 * child therefore run on the calling thread. */
static volatile int forked_child = 0;
static void on_fork_child(void) { forked_child = 1; }

void optim_init(void) { pthread_atfork(NULL, NULL, on_fork_child); }

const int optim_nkernels = NKERNELS;

const char *optim_kernel_name(int kernel)
{
    return (kernel >= 0 && kernel < NKERNELS) ? kernels[kernel].name : "?";
}

int optim_has_loop(int kernel, int variant, int dtype)
{
    return kernel >= 0 && kernel < NKERNELS && variant >= 0 && variant < NV && dtype >= 0 &&
           dtype < NDT && kernels[kernel].loops[variant][dtype] != NULL;
}

/* Whether row b continues row a in memory and may run with it as one row: param, grad and
 * each state slot of b start where a's end (as after flatten_parameters, with the state
 * arena), with the same flags and counter values, and stored in the tensors' own dtype with
 * round-to-nearest (stochastic rounding keys its stream by tensor; 8-bit blocks by tensor).
 * A run of small tensors then pays the loop's setup and a restart of the hardware
 * prefetcher (~70 ns a tensor) once. */
static int continues(const Row *a, const Row *b, int counters)
{
    if (a->flags != b->flags || staged(a) || (a->flags & ROW_STRIDED))
        return 0;
    int64_t bytes = a->n * elem_size[(a->flags >> ROW_DTYPE_SHIFT) & 3];
    if ((const char *)a->p + bytes != (const char *)b->p ||
        (const char *)a->g + bytes != (const char *)b->g)
        return 0;
    for (int j = 0; j < 3; j++) {
        if ((a->s[j] == NULL) != (b->s[j] == NULL) ||
            (a->s[j] && (const char *)a->s[j] + bytes != (const char *)b->s[j]))
            return 0;
    }
    int f64 = (int)(a->flags & ROW_STEP_F64), mu64 = (int)(a->flags & ROW_MU_F64);
    return (counters < 1 || load_counter(a->step, f64) == load_counter(b->step, f64)) &&
           (counters < 2 || load_counter(a->mu_product, mu64) ==
                                load_counter(b->mu_product, mu64));
}

/* The active rows of `rows` as runs (continues()) in `runs`; their count. */
static int64_t coalesce(Row *runs, const Row *rows, int64_t nrows, int counters)
{
    int64_t n = 0;
    for (int64_t r = 0; r < nrows; r++) {
        if (!(rows[r].flags & ROW_ACTIVE) || rows[r].n == 0)
            continue;
        if (n > 0 && continues(&runs[n - 1], &rows[r], counters)) { /* the run grows */
            runs[n - 1].n += rows[r].n;
            continue;
        }
        runs[n++] = rows[r];
    }
    return n;
}

int64_t optim_step(int kernel, int variant, int nthreads, Row *rows, int64_t nrows,
                   const double *h, int64_t call_flags, const float *grad_scale,
                   const float *found_inf, uint64_t seed, uint64_t rounding_step,
                   Row *scratch, int64_t *nruns)
{
    if (found_inf && *found_inf != 0.0f)
        return -1;
    const Kernel *kern = &kernels[kernel];
    float scale = grad_scale ? *grad_scale : 0.0f;
    int64_t total = 0, stepped = 0;
    for (int64_t r = 0; r < nrows; r++) {
        if (rows[r].flags & ROW_ACTIVE) {
            advance(h, kern->counters, &rows[r]);
            total += rows[r].n;
            stepped++;
        }
    }
    const Row *table = rows;
    int64_t ntable = nrows;
    if (scratch) {
        ntable = coalesce(scratch, rows, nrows, kern->counters);
        table = scratch;
    }
    *nruns = scratch ? ntable : stepped;
    int64_t want = total / GRAIN + 1;
    int nt = (int)(nthreads < want ? nthreads : want);
    if (nt < 1)
        nt = 1;
#ifdef _OPENMP
    if (nt > 1 && !forked_child) {
#pragma omp parallel num_threads(nt)
        {
            int tid = omp_get_thread_num(), n = omp_get_num_threads();
            run_share(kern, variant, h, call_flags, table, ntable, split(total, n, tid),
                      split(total, n, tid + 1), scale, seed, rounding_step);
        }
    } else
#endif
        run_share(kern, variant, h, call_flags, table, ntable, 0, total, scale, seed,
                  rounding_step);
    for (int64_t r = 0; r < nrows; r++) {
        if (rows[r].flags & ROW_ACTIVE)
            rows[r].flags &= ~(int64_t)F_FRESH;
    }
    return stepped;
}

const char *optim_isa(void)
{
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return "x86-64-v4 (AVX-512)";
    if (__builtin_cpu_supports("x86-64-v3"))
        return "x86-64-v3 (AVX2+FMA)";
#endif
    return "baseline";
}

