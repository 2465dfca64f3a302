/* The dense CRF's mean field on the permutohedral lattice, compiled (atrous.crf.native).
 *
 * Krähenbühl & Koltun (2011, alg. 1) with the lattice filter of Adams et al. (2010): every
 * iteration splats Q onto each kernel's lattice vertices, blurs them along the d+1 lattice
 * directions and slices them back; the slice is fused with the unary, the exponential and the
 * normalization, so that Q is read once (splat) and written once (slice) per iteration.
 * Labels are the contiguous inner dimension of every array (vectorized loops over labels).
 *
 * No Python object is touched while the iterations run (the GIL is released); the work is
 * split between the caller's thread and nthreads - 1 POSIX threads by rows (vertices for the
 * splat and blur, pixels for the slice), with a barrier between phases.  Every row is summed
 * in the same order whatever the thread count, so results do not depend on it.
 *
 * The lattice itself (vertex ids, barycentric weights, blur neighbours) is built by
 * atrous.crf.lattice or by lattice_build below, following the float32 arithmetic of the C++
 * original of densecrf.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one copy of each hot loop per instruction-set level, picked at load time (AVX-512, AVX2) */
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_KERNELS 8

/* ------------------------------------------------------------------ barrier */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    int count;
    unsigned gen;
} Barrier;

static void barrier_init(Barrier *b, int n) {
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->n = n;
    b->count = 0;
    b->gen = 0;
}

static void barrier_destroy(Barrier *b) {
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

/* Spin a little (phases are short), then sleep on the condition variable (an oversubscribed
 * machine must not burn the core another thread needs). */
static void barrier_wait(Barrier *b) {
    if (b->n <= 1) return;
    unsigned gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        pthread_mutex_lock(&b->mu);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        return;
    }
    for (int s = 0; s < 4000; s++) {
        if (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) != gen) return;
        CPU_RELAX();
    }
    pthread_mutex_lock(&b->mu);
    while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen) pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

/* ------------------------------------------------------------------ parallel runs */

typedef void (*Body)(void *ctx, int tid, int nthreads, Barrier *bar);

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int nthreads; /* 0 until every helper that could be started is */
    Body body;
    void *ctx;
    Barrier bar;
} Team;

typedef struct {
    Team *team;
    int tid;
} Task;

static void *task_main(void *arg) {
    Task *t = (Task *)arg;
    Team *team = t->team;
    pthread_mutex_lock(&team->mu);
    while (team->nthreads == 0) pthread_cond_wait(&team->cv, &team->mu);
    int nt = team->nthreads;
    pthread_mutex_unlock(&team->mu);
    team->body(team->ctx, t->tid, nt, &team->bar);
    return NULL;
}

/* Run body(ctx, tid, nt, barrier) on nt threads, the caller's being tid 0: nthreads, or fewer
 * where the system refuses a new thread (the helpers wait until the count is known). */
static void run_parallel(Body body, void *ctx, int nthreads) {
    Team team;
    pthread_mutex_init(&team.mu, NULL);
    pthread_cond_init(&team.cv, NULL);
    team.nthreads = 0;
    team.body = body;
    team.ctx = ctx;
    pthread_t *th = NULL;
    Task *tasks = NULL;
    if (nthreads > 1) {
        th = (pthread_t *)malloc(sizeof(pthread_t) * (size_t)nthreads);
        tasks = (Task *)malloc(sizeof(Task) * (size_t)nthreads);
    }
    int started = 1;
    if (th && tasks) {
        for (int t = 1; t < nthreads; t++) {
            tasks[t] = (Task){&team, t};
            if (pthread_create(&th[t], NULL, task_main, &tasks[t]) != 0) break;
            started++;
        }
    }
    barrier_init(&team.bar, started);
    pthread_mutex_lock(&team.mu);
    team.nthreads = started;
    pthread_cond_broadcast(&team.cv);
    pthread_mutex_unlock(&team.mu);
    body(ctx, 0, started, &team.bar);
    for (int t = 1; t < started; t++) pthread_join(th[t], NULL);
    barrier_destroy(&team.bar);
    pthread_mutex_destroy(&team.mu);
    pthread_cond_destroy(&team.cv);
    free(th);
    free(tasks);
}

static inline int64_t part(int64_t n, int t, int nt) { return n * t / nt; }

/* ------------------------------------------------------------------ label vectors */

/* Labels are processed 8 at a time (GCC vector extensions: one AVX register, two SSE ones);
 * the label dim of every buffer is padded to a multiple of 8 (padded logits are -1e30, so
 * their probabilities are 0 and they add nothing). */
#define W 8
typedef float vf __attribute__((vector_size(W * sizeof(float)), aligned(4)));
typedef int32_t vi __attribute__((vector_size(W * sizeof(int32_t)), aligned(4)));

static inline __attribute__((always_inline)) vf splat_vf(float x) {
    vf v = {0};
    return v + x;
}

/* lane-wise mask ? a : b (mask lanes all ones or all zeros, from a comparison) */
static inline __attribute__((always_inline)) vf vselect(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

static inline __attribute__((always_inline)) float hmax(vf v) {
    float m = v[0];
    for (int l = 1; l < W; l++) m = v[l] > m ? v[l] : m;
    return m;
}

static inline __attribute__((always_inline)) float hsum(vf v) {
    vf a = v;
    float s = 0.0f;
    for (int l = 0; l < W; l++) s += a[l];
    return s;
}

/* exp(x) for x <= 0 (logits minus their row max), lane-wise: Cody-Waite reduction by ln 2 and
 * the Cephes expf polynomial (relative error ~1e-7); exp(x) below e^-87 is 0.  The rounding
 * to the nearest integer adds and subtracts 1.5 * 2^23. */
static inline __attribute__((always_inline)) vf exp_nonpos(vf x) {
    const vf lo = splat_vf(-87.0f);
    vi small = x < lo;
    vf xc = vselect(small, lo, x);
    vf t = xc * splat_vf(1.44269504088896341f) + splat_vf(12582912.0f);
    vf n = t - splat_vf(12582912.0f);
    vf r = xc - n * splat_vf(0.693359375f);
    r = r + n * splat_vf(2.12194440e-4f);
    vf p = splat_vf(1.9875691500e-4f);
    p = p * r + splat_vf(1.3981999507e-3f);
    p = p * r + splat_vf(8.3334519073e-3f);
    p = p * r + splat_vf(4.1665795894e-2f);
    p = p * r + splat_vf(1.6666665459e-1f);
    p = p * r + splat_vf(5.0000001201e-1f);
    p = p * (r * r) + r + splat_vf(1.0f);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    vf y = p * (vf)e;
    return vselect(small, splat_vf(0.0f), y);
}

static inline __attribute__((always_inline)) vf load(const float *p) { return *(const vf *)p; }
static inline __attribute__((always_inline)) void store(float *p, vf v) { *(vf *)p = v; }

/* ------------------------------------------------------------------ mean field */

#define MAX_THREADS 64

typedef struct {
    int d1;               /* d + 1 vertices per simplex */
    int64_t m;            /* vertices; row m of every value buffer is the zero row */
    const int32_t *vid;   /* (N, d1) vertex of each point's simplex */
    const float *ws;      /* (N, d1) splat weights (barycentric x normalization) */
    const float *wl;      /* (N, d1) slice weights (x alpha x kernel weight) */
    const int32_t *lower; /* (d1, m) blur neighbours, m where absent */
    const int32_t *upper;
    float *buf[2];              /* (m + 1, cp) vertex values: splat target and blur ping-pong */
    float *priv[MAX_THREADS];   /* threads >= 1: their own splat targets (summed before the blur) */
    int scattered; /* whether successive pixels' vertices are far apart (then prefetched) */
} Kern;

/* Whether successive pixels use vertices far apart in memory (the bilateral kernel: a vertex
 * gathers pixels of similar colour from far across the image) rather than nearby ones (the
 * positional kernel, whose vertex ids follow the raster order): the pixel loop prefetches the
 * rows of the former and streams the latter. */
static int is_scattered(const int32_t *vid, int64_t n, int d1) {
    int64_t far = 0, step = n / 4096 + 1, count = 0;
    for (int64_t i = step; i < n; i += step, count++) {
        int64_t a = vid[(i - 1) * d1], b = vid[i * d1];
        if (llabs(a - b) > 64) far++;
    }
    return count > 0 && far * 4 > count;
}

typedef struct {
    int64_t n;
    int cp; /* labels, padded to a multiple of W */
    int iters;
    float *q;       /* (N, cp) out: Q */
    const float *u; /* (N, cp) -U = log p; -1e30 in the padding */
    int nk;
    int maxd1;
    Kern k[MAX_KERNELS];
    float *scratch; /* (nthreads, cp) */
} MeanField;

/* Q = softmax of the logits lg (cp labels) into o. */
static inline __attribute__((always_inline)) void softmax_into(const float *restrict lg,
                                                               float *restrict o, int cp) {
    vf mx = load(lg);
    for (int l = W; l < cp; l += W) {
        vf x = load(lg + l);
        mx = vselect(x > mx, x, mx);
    }
    float m = hmax(mx);
    vf s = splat_vf(0.0f);
    for (int l = 0; l < cp; l += W) {
        vf e = exp_nonpos(load(lg + l) - m);
        store(o + l, e);
        s += e;
    }
    float inv = 1.0f / hsum(s);
    for (int l = 0; l < cp; l += W) store(o + l, load(o + l) * inv);
}

#define PREFETCH_PIXELS 6
#define PREFETCH_ROWS 12

static inline __attribute__((always_inline)) void prefetch_row(const float *p, int cp) {
    for (int l = 0; l < cp; l += 16) __builtin_prefetch(p + l, 0, 3);
}

static inline __attribute__((always_inline)) void prefetch_pixel(const MeanField *mf,
                                                                 float *const *res,
                                                                 float *const *tgt, int64_t i) {
    int cp = mf->cp;
    for (int t = 0; t < mf->nk; t++) {
        const Kern *k = &mf->k[t];
        if (!k->scattered) continue;
        const int32_t *vid = k->vid + i * k->d1;
        for (int r = 0; r < k->d1; r++) {
            if (res) prefetch_row(res[t] + (int64_t)vid[r] * cp, cp);
            if (tgt) prefetch_row(tgt[t] + (int64_t)vid[r] * cp, cp);
        }
    }
}

/* One pass over the pixels [lo, hi): logits = -U + sum over kernels and simplex vertices of
 * (slice weight x blurred value) (just -U when res is NULL: Q0), Q = softmax(logits); then
 * either Q is the result (out) or it is splatted at once onto every kernel's vertices
 * (tgt[k]).  Q itself is never stored between iterations. */
HOT static void pixel_pass(const MeanField *mf, float *const *res, float *const *tgt,
                           float *restrict out, float *restrict lg, int64_t lo, int64_t hi) {
    int cp = mf->cp;
    for (int64_t i = lo; i < hi; i++) {
        /* the vertex rows of a pixel a few ahead: random rows in L3 or memory, whose latency
         * (not bandwidth) bounds this loop otherwise */
        if (i + PREFETCH_PIXELS < hi) prefetch_pixel(mf, res, tgt, i + PREFETCH_PIXELS);
        for (int l = 0; l < cp; l += W) {
            vf acc = load(mf->u + i * cp + l);
            if (res) {
                for (int t = 0; t < mf->nk; t++) {
                    const Kern *k = &mf->k[t];
                    int d1 = k->d1;
                    const int32_t *vid = k->vid + i * d1;
                    const float *wl = k->wl + i * d1;
                    const float *x = res[t];
                    for (int r = 0; r < d1; r++)
                        acc += wl[r] * load(x + (int64_t)vid[r] * cp + l);
                }
            }
            store(lg + l, acc);
        }
        float *q = out ? out + i * cp : lg;
        softmax_into(lg, q, cp);
        if (out) continue;
        for (int t = 0; t < mf->nk; t++) {
            const Kern *k = &mf->k[t];
            int d1 = k->d1;
            const int32_t *vid = k->vid + i * d1;
            const float *ws = k->ws + i * d1;
            float *x = tgt[t];
            for (int r = 0; r < d1; r++) {
                float *row = x + (int64_t)vid[r] * cp;
                float w = ws[r];
                for (int l = 0; l < cp; l += W) store(row + l, load(row + l) + w * load(q + l));
            }
        }
    }
}

HOT static void blur_rows(const int32_t *restrict lower, const int32_t *restrict upper,
                          const float *restrict src, float *restrict dst, int cp, int64_t lo,
                          int64_t hi, int prefetch) {
    const vf half = splat_vf(0.5f);
    for (int64_t v = lo; v < hi; v++) {
        if (prefetch && v + PREFETCH_ROWS < hi) {
            prefetch_row(src + (int64_t)lower[v + PREFETCH_ROWS] * cp, cp);
            prefetch_row(src + (int64_t)upper[v + PREFETCH_ROWS] * cp, cp);
        }
        const float *a = src + (int64_t)lower[v] * cp;
        const float *b = src + (int64_t)upper[v] * cp;
        const float *s = src + v * cp;
        float *o = dst + v * cp;
        for (int l = 0; l < cp; l += W) store(o + l, load(s + l) + half * (load(a + l) + load(b + l)));
    }
}

/* rows [lo, hi) of dst += each helper's splat (which is zeroed for the next iteration) */
HOT static void gather_rows(const Kern *k, float *restrict dst, int nt, int cp, int64_t lo,
                            int64_t hi) {
    for (int t = 1; t < nt; t++) {
        float *restrict p = k->priv[t];
        for (int64_t e = lo * cp; e < hi * cp; e += W) {
            store(dst + e, load(dst + e) + load(p + e));
            store(p + e, splat_vf(0.0f));
        }
    }
}

static void mean_field_body(void *ctx, int tid, int nt, Barrier *bar) {
    MeanField *mf = (MeanField *)ctx;
    int cp = mf->cp, nk = mf->nk;
    int64_t n = mf->n;
    float *lg = mf->scratch + (int64_t)tid * cp;
    int side[MAX_KERNELS]; /* which buffer the splat goes to */
    float *res[MAX_KERNELS], *tgt[MAX_KERNELS];
    for (int t = 0; t < nk; t++) {
        Kern *k = &mf->k[t];
        side[t] = 0;
        memset(k->buf[0] + part(k->m, tid, nt) * cp, 0,
               sizeof(float) * (size_t)((part(k->m, tid + 1, nt) - part(k->m, tid, nt)) * cp));
        tgt[t] = tid == 0 ? k->buf[0] : k->priv[tid];
    }
    barrier_wait(bar);
    /* Q0 = softmax(-U), splatted */
    pixel_pass(mf, NULL, tgt, mf->iters == 0 ? mf->q : NULL, lg, part(n, tid, nt),
               part(n, tid + 1, nt));
    barrier_wait(bar);
    for (int it = 0; it < mf->iters; it++) {
        if (nt > 1) {
            for (int t = 0; t < nk; t++) {
                Kern *k = &mf->k[t];
                gather_rows(k, k->buf[side[t]], nt, cp, part(k->m, tid, nt), part(k->m, tid + 1, nt));
            }
            barrier_wait(bar);
        }
        /* pass j of every kernel in one phase */
        for (int j = 0; j < mf->maxd1; j++) {
            for (int t = 0; t < nk; t++) {
                Kern *k = &mf->k[t];
                if (j >= k->d1) continue;
                int from = side[t] ^ (j & 1);
                blur_rows(k->lower + j * k->m, k->upper + j * k->m, k->buf[from],
                          k->buf[from ^ 1], cp, part(k->m, tid, nt), part(k->m, tid + 1, nt),
                          k->scattered);
            }
            barrier_wait(bar);
        }
        int last = it == mf->iters - 1;
        for (int t = 0; t < nk; t++) {
            Kern *k = &mf->k[t];
            int r = side[t] ^ (k->d1 & 1); /* where the d1 passes ended */
            res[t] = k->buf[r];
            side[t] = r ^ 1; /* the next splat: the other buffer, cleared here */
            if (!last)
                memset(k->buf[side[t]] + part(k->m, tid, nt) * cp, 0,
                       sizeof(float) * (size_t)((part(k->m, tid + 1, nt) - part(k->m, tid, nt)) * cp));
            tgt[t] = tid == 0 ? k->buf[side[t]] : k->priv[tid];
        }
        if (!last) barrier_wait(bar);
        pixel_pass(mf, res, tgt, last ? mf->q : NULL, lg, part(n, tid, nt), part(n, tid + 1, nt));
        barrier_wait(bar);
    }
}

static void free_kern(Kern *k) {
    for (int s = 0; s < 2; s++) {
        free(k->buf[s]);
        k->buf[s] = NULL;
    }
    for (int t = 0; t < MAX_THREADS; t++) {
        free(k->priv[t]);
        k->priv[t] = NULL;
    }
}

static void *addr(PyObject *o) { return PyLong_AsVoidPtr(o); }

/* mean_field(n, c, iterations, threads, q_addr, u_addr, kernels) with kernels a sequence of
 * (d1, m, vid_addr, ws_addr, wl_addr, lower_addr, upper_addr); q is overwritten with Q. */
static PyObject *py_mean_field(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t n;
    int c, iters, threads;
    PyObject *qo, *uo, *kernels;
    if (!PyArg_ParseTuple(args, "niiiOOO", &n, &c, &iters, &threads, &qo, &uo, &kernels))
        return NULL;
    MeanField mf;
    memset(&mf, 0, sizeof(mf));
    mf.n = n;
    mf.cp = c;
    mf.iters = iters;
    mf.q = (float *)addr(qo);
    mf.u = (const float *)addr(uo);
    PyObject *seq = PySequence_Fast(kernels, "kernels must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t nk = PySequence_Fast_GET_SIZE(seq);
    if (nk < 1 || nk > MAX_KERNELS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "1 to %d kernels, got %zd", MAX_KERNELS, nk);
        return NULL;
    }
    mf.nk = (int)nk;
    for (Py_ssize_t t = 0; t < nk; t++) {
        Kern *k = &mf.k[t];
        PyObject *vo, *wso, *wlo, *lo, *uo2;
        Py_ssize_t m;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, t), "inOOOOO", &k->d1, &m, &vo, &wso,
                              &wlo, &lo, &uo2)) {
            Py_DECREF(seq);
            return NULL;
        }
        k->m = m;
        k->vid = (const int32_t *)addr(vo);
        k->ws = (const float *)addr(wso);
        k->wl = (const float *)addr(wlo);
        k->lower = (const int32_t *)addr(lo);
        k->upper = (const int32_t *)addr(uo2);
    }
    Py_DECREF(seq);
    if (PyErr_Occurred()) return NULL;
    if (c < W || c % W != 0) {
        PyErr_Format(PyExc_ValueError, "the label stride must be a multiple of %d, got %d", W, c);
        return NULL;
    }
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    mf.scratch = (float *)malloc(sizeof(float) * (size_t)c * (size_t)threads);
    failed = mf.scratch == NULL;
    for (int t = 0; t < mf.nk && !failed; t++) {
        Kern *k = &mf.k[t];
        if (k->d1 > mf.maxd1) mf.maxd1 = k->d1;
        k->scattered = is_scattered(k->vid, n, k->d1);
        size_t rows = (size_t)(k->m + 1) * (size_t)c;
        for (int s = 0; s < 2; s++) {
            k->buf[s] = (float *)malloc(sizeof(float) * rows);
            if (!k->buf[s]) failed = 1;
            else memset(k->buf[s] + k->m * c, 0, sizeof(float) * c); /* the zero row */
        }
        for (int h = 1; h < threads && !failed; h++) {
            k->priv[h] = (float *)calloc(rows, sizeof(float));
            if (!k->priv[h]) failed = 1;
        }
    }
    if (!failed) run_parallel(mean_field_body, &mf, threads);
    for (int t = 0; t < mf.nk; t++) free_kern(&mf.k[t]);
    free(mf.scratch);
    Py_END_ALLOW_THREADS;
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ lattice build */

/* The C++ original's lattice (Adams et al. 2010, as densecrf builds it), in its float32
 * arithmetic: each point's enclosing simplex and barycentric weights, its d+1 vertices
 * numbered by first use in point order, and every vertex's blur neighbours.  Vertex r of a
 * simplex is the pair (r, k) with k_i = K_i - [rank_i > d - r] (every coordinate of vertex r is
 * r mod d+1), packed into an int64 key r + (d+1) sum_i (k_i - kmin_i) radix_i. */

typedef struct {
    int64_t *keys; /* -1: empty */
    int32_t *vals;
    int64_t cap;   /* a power of two */
    int bits;
    int64_t size;
} Hash;

static inline uint64_t hash_slot(const Hash *h, int64_t key) {
    return ((uint64_t)key * 0x9E3779B97F4A7C15ull) >> (64 - h->bits);
}

static int hash_init(Hash *h, int64_t want) {
    int bits = 10;
    while (((int64_t)1 << bits) < 2 * want) bits++;
    h->bits = bits;
    h->cap = (int64_t)1 << bits;
    h->size = 0;
    h->keys = (int64_t *)malloc(sizeof(int64_t) * (size_t)h->cap);
    h->vals = (int32_t *)malloc(sizeof(int32_t) * (size_t)h->cap);
    if (!h->keys || !h->vals) return -1;
    memset(h->keys, 0xff, sizeof(int64_t) * (size_t)h->cap);
    return 0;
}

static void hash_free(Hash *h) {
    free(h->keys);
    free(h->vals);
    h->keys = NULL;
    h->vals = NULL;
}

static inline int32_t hash_find(const Hash *h, int64_t key) {
    uint64_t mask = (uint64_t)h->cap - 1, s = hash_slot(h, key);
    for (;;) {
        int64_t k = h->keys[s];
        if (k == key) return h->vals[s];
        if (k < 0) return -1;
        s = (s + 1) & mask;
    }
}

static int hash_grow(Hash *h) {
    Hash g;
    if (hash_init(&g, h->cap) != 0) return -1; /* twice the slots */
    uint64_t mask = (uint64_t)g.cap - 1;
    for (int64_t s = 0; s < h->cap; s++) {
        if (h->keys[s] < 0) continue;
        uint64_t t = hash_slot(&g, h->keys[s]);
        while (g.keys[t] >= 0) t = (t + 1) & mask;
        g.keys[t] = h->keys[s];
        g.vals[t] = h->vals[s];
    }
    g.size = h->size;
    hash_free(h);
    *h = g;
    return 0;
}

/* the id of key, inserting it as id *m (then ++*m) if new; -1 when out of memory */
static inline int32_t hash_insert(Hash *h, int64_t key, int64_t *m, int64_t *keys_by_id) {
    uint64_t mask = (uint64_t)h->cap - 1, s = hash_slot(h, key);
    for (;;) {
        int64_t k = h->keys[s];
        if (k == key) return h->vals[s];
        if (k < 0) break;
        s = (s + 1) & mask;
    }
    int32_t id = (int32_t)(*m)++;
    h->keys[s] = key;
    h->vals[s] = id;
    keys_by_id[id] = key;
    if (++h->size * 2 > h->cap && hash_grow(h) != 0) return -1;
    return id;
}

typedef struct {
    int64_t n;
    int d;
    const float *f;     /* (N, d) features */
    const float *scale; /* (d,) elevation scale factors (float32, as the original's) */
    float inv_d1;       /* float32(1 / (d+1)) */
    int32_t *vid;       /* (N, d+1) out */
    float *bary;        /* (N, d+1) out */
    int32_t *big_k;     /* (N, d) K of each point's remainder-0 vertex */
    uint8_t *rank;      /* (N, d+1) rank of each coordinate */
    int32_t kmin[64], kmax[64];
} Build;

/* Elevation, enclosing simplex and barycentric weights of points [lo, hi) (thread body part),
 * bit for bit the float32 operations of atrous.crf.lattice (the original's arithmetic). */
static void simplex_rows(Build *b, int64_t lo, int64_t hi, int32_t *kmin, int32_t *kmax) {
    int d = b->d, d1 = d + 1;
    float el[65], rem0[65], s_rev[65];
    int rank[65];
    for (int i = 0; i < d; i++) {
        kmin[i] = INT32_MAX;
        kmax[i] = INT32_MIN;
    }
    for (int64_t p = lo; p < hi; p++) {
        const float *f = b->f + p * d;
        float sm = 0.0f;
        for (int j = d; j > 0; j--) {
            float cf = f[j - 1] * b->scale[j - 1];
            el[j] = sm - cf * (float)j;
            sm += cf;
        }
        el[0] = sm;
        float coord_sum = 0.0f;
        float v[65];
        for (int i = 0; i <= d; i++) {
            v[i] = rintf(el[i] * b->inv_d1); /* round half to even */
            rem0[i] = v[i] * (float)d1;
            coord_sum += v[i];
        }
        for (int i = 0; i <= d; i++) rank[i] = 0;
        for (int i = 0; i < d; i++) {
            float ri = el[i] - rem0[i];
            for (int j = i + 1; j <= d; j++) {
                if (ri < el[j] - rem0[j]) rank[i]++;
                else rank[j]++;
            }
        }
        int32_t *kk = b->big_k + p * d;
        uint8_t *rk = b->rank + p * d1;
        for (int i = 0; i <= d; i++) {
            float rf = (float)rank[i] + coord_sum;
            float wrap = (float)(rf < 0.0f) - (float)(rf >= (float)d1);
            rf += wrap * (float)d1;
            rem0[i] += wrap * (float)d1;
            rank[i] = (int)rf;
            rk[i] = (uint8_t)rank[i];
            if (i < d) {
                int32_t K = (int32_t)(v[i] + wrap);
                kk[i] = K;
                if (K < kmin[i]) kmin[i] = K;
                if (K > kmax[i]) kmax[i] = K;
            }
        }
        for (int i = 0; i <= d; i++) s_rev[d - rank[i]] = (el[i] - rem0[i]) * b->inv_d1;
        float *bo = b->bary + p * d1;
        for (int j = 1; j <= d; j++) bo[j] = s_rev[j] - s_rev[j - 1];
        bo[0] = s_rev[0] + (1.0f - s_rev[d]);
    }
}

typedef struct {
    Build *b;
    int32_t kmin[MAX_THREADS][64], kmax[MAX_THREADS][64];
} SimplexJob;

static void simplex_body(void *ctx, int tid, int nt, Barrier *bar) {
    (void)bar;
    SimplexJob *job = (SimplexJob *)ctx;
    simplex_rows(job->b, part(job->b->n, tid, nt), part(job->b->n, tid + 1, nt), job->kmin[tid],
                 job->kmax[tid]);
}

/* lattice_build(n, per_image, d, f, scale, inv_d1, vid, bary, threads)
 * -> (m, neighbours, kmin, kmax), over n points, per_image to an image of a batch (its own
 * block of keys: the images' lattices are disjoint):
 * neighbours a bytearray of int32 (2, d+1, m), the "minus" then the "plus" neighbour of every
 * vertex along each direction (m where absent); kmin / kmax the range of K per coordinate. */
static PyObject *py_lattice_build(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t n, per_image;
    int d, threads;
    float inv_d1;
    PyObject *fo, *so, *vo, *bo;
    if (!PyArg_ParseTuple(args, "nniOOfOOi", &n, &per_image, &d, &fo, &so, &inv_d1, &vo, &bo,
                          &threads))
        return NULL;
    if (per_image < 1) per_image = n > 0 ? n : 1;
    if (d < 1 || d > 63) {
        PyErr_Format(PyExc_ValueError, "the compiled lattice takes 1 to 63 dims, got %d", d);
        return NULL;
    }
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    Build b;
    memset(&b, 0, sizeof(b));
    b.n = n;
    b.d = d;
    b.f = (const float *)addr(fo);
    b.scale = (const float *)addr(so);
    b.inv_d1 = inv_d1;
    b.vid = (int32_t *)addr(vo);
    b.bary = (float *)addr(bo);
    if (PyErr_Occurred()) return NULL;
    int d1 = d + 1;
    const char *err = NULL;
    int64_t m = 0;
    int32_t *nbr = NULL;
    int64_t *keys_by_id = NULL;
    Hash h = {0};
    int32_t *table = NULL;
    SimplexJob *job = NULL;
    Py_BEGIN_ALLOW_THREADS;
    b.big_k = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n * d));
    b.rank = (uint8_t *)malloc((size_t)(n * d1));
    job = (SimplexJob *)malloc(sizeof(SimplexJob));
    if (!b.big_k || !b.rank || !job) err = "memory";
    if (!err) {
        job->b = &b;
        int nt = n < 50000 ? 1 : threads;
        for (int t = 0; t < MAX_THREADS; t++)
            for (int i = 0; i < d; i++) {
                job->kmin[t][i] = INT32_MAX;
                job->kmax[t][i] = INT32_MIN;
            }
        run_parallel(simplex_body, job, nt);
        for (int i = 0; i < d; i++) {
            b.kmin[i] = INT32_MAX;
            b.kmax[i] = INT32_MIN;
            for (int t = 0; t < nt; t++) {
                if (job->kmin[t][i] < b.kmin[i]) b.kmin[i] = job->kmin[t][i];
                if (job->kmax[t][i] > b.kmax[i]) b.kmax[i] = job->kmax[t][i];
            }
        }
    }
    /* key packing: k_i - kmin_i with kmin_i = min K - 2 (a vertex is K or K - 1, a blur
     * neighbour one further either way) */
    int64_t radix[65];
    double n_keys = 0;
    if (!err) {
        radix[0] = 1;
        double r = 1.0;
        for (int i = 0; i < d; i++) {
            int64_t span = (int64_t)b.kmax[i] - b.kmin[i] + 4;
            radix[i + 1] = radix[i] * span;
            r *= (double)span;
        }
        n_keys = r * d1 * (double)((n + per_image - 1) / per_image);
        if (n_keys >= 4.0e18) err = "range";
    }
    if (!err) {
        int64_t rsum = 0;
        for (int i = 0; i < d; i++) rsum += radix[i];
        keys_by_id = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n * d1 + 1));
        /* a direct-address table where the key range is small (the positional kernel),
         * else a hash table */
        int direct = n_keys <= 4.0 * (double)(n * d1 + 1024);
        if (direct) {
            table = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_keys);
            if (table) memset(table, 0xff, sizeof(int32_t) * (size_t)n_keys);
        } else if (hash_init(&h, n) != 0) {
            err = "memory";
        }
        if (!keys_by_id || (direct && !table)) err = "memory";
        int inv[65];
        for (int64_t p = 0; p < n && !err; p++) {
            const int32_t *kk = b.big_k + p * d;
            const uint8_t *rk = b.rank + p * d1;
            int64_t base = 0;
            for (int i = 0; i < d; i++) base += (int64_t)(kk[i] - (b.kmin[i] - 2)) * radix[i];
            base += (p / per_image) * radix[d];
            for (int i = 0; i <= d; i++) inv[rk[i]] = i;
            int64_t drop = 0;
            for (int r = 0; r <= d; r++) {
                if (r > 0) { /* coordinate ranked d - r + 1 drops by one from vertex r on */
                    int i = inv[d - r + 1];
                    if (i < d) drop += radix[i];
                }
                int64_t key = r + (int64_t)d1 * (base - drop);
                int32_t id;
                if (direct) {
                    id = table[key];
                    if (id < 0) {
                        id = (int32_t)m++;
                        table[key] = id;
                        keys_by_id[id] = key;
                    }
                } else {
                    id = hash_insert(&h, key, &m, keys_by_id);
                    if (id < 0) {
                        err = "memory";
                        break;
                    }
                }
                b.vid[p * d1 + r] = id;
            }
        }
        if (!err) {
            nbr = (int32_t *)malloc(sizeof(int32_t) * (size_t)(2 * d1 * m));
            if (!nbr) err = "memory";
        }
        if (!err) {
            /* minus along j: every coordinate -1, coordinate j +d; in (r, k): r - 1 and k_j + 1,
             * or from r = 0 to r = d with k_i - 1 for i != j.  plus: the inverse. */
            for (int j = 0; j <= d; j++) {
                int64_t rj = j < d ? radix[j] : 0;
                int64_t minus_hi = -1 + (int64_t)d1 * rj;         /* r >= 1 */
                int64_t minus_lo = d - (int64_t)d1 * (rsum - rj); /* r == 0 */
                int32_t *mo = nbr + (int64_t)j * m;
                int32_t *po = nbr + (int64_t)(d1 + j) * m;
                for (int64_t v = 0; v < m; v++) po[v] = (int32_t)m;
                for (int64_t v = 0; v < m; v++) {
                    int64_t key = keys_by_id[v];
                    int64_t nk = key + ((key % d1) ? minus_hi : minus_lo);
                    int32_t id;
                    if (direct) id = (nk >= 0 && nk < (int64_t)n_keys) ? table[nk] : -1;
                    else id = hash_find(&h, nk);
                    mo[v] = id < 0 ? (int32_t)m : id;
                    if (id >= 0) po[id] = (int32_t)v; /* u = minus(v) exactly when v = plus(u) */
                }
            }
        }
    }
    free(b.big_k);
    free(b.rank);
    free(job);
    free(keys_by_id);
    free(table);
    hash_free(&h);
    Py_END_ALLOW_THREADS;
    if (err) {
        free(nbr);
        if (err[0] == 'm') return PyErr_NoMemory();
        PyErr_SetString(PyExc_ValueError,
                        "features span too large a range for the permutohedral lattice keys; use "
                        "larger standard deviations");
        return NULL;
    }
    PyObject *ba = PyByteArray_FromStringAndSize((const char *)nbr, (Py_ssize_t)(2 * d1 * m * 4));
    free(nbr);
    if (!ba) return NULL;
    PyObject *kmin = PyList_New(d), *kmax = PyList_New(d);
    for (int i = 0; i < d && kmin && kmax; i++) {
        PyList_SET_ITEM(kmin, i, PyLong_FromLong(b.kmin[i]));
        PyList_SET_ITEM(kmax, i, PyLong_FromLong(b.kmax[i]));
    }
    return Py_BuildValue("nNNN", (Py_ssize_t)m, ba, kmin, kmax);
}

static PyMethodDef methods[] = {
    {"mean_field", py_mean_field, METH_VARARGS, "Mean field on lattice kernels (see native.py)."},
    {"lattice_build", py_lattice_build, METH_VARARGS, "A permutohedral lattice (see lattice.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
