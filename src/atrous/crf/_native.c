/* The dense CRF's mean field on the permutohedral lattice, compiled (atrous.crf.native).
 *
 * Krähenbühl & Koltun (2011, alg. 1) with the lattice filter of Adams et al. (2010).  An
 * iteration is a pass over the pixels, then the splat and the blur over the vertices:
 * - the pixel pass: for each pixel, the logits (-U plus every kernel's slice of the blurred
 *   vertex values) and Q = softmax;
 * - the splat as a gather: each vertex row the sum of its pixels' weighted Q, added in pixel
 *   order (the terms sorted by vertex once per call), so that no two threads ever add into
 *   the same row;
 * - the blur along the d+1 lattice directions.  Where every blur neighbour is near (the
 *   positional kernel, numbered in raster order) the splat and the passes run as a wavefront
 *   over chunks of rows: a chunk's d+2 stages follow each other while it is in cache, instead
 *   of d+2 sweeps over memory.
 * Labels are the contiguous inner dimension of every array, padded to whole vectors.
 *
 * No Python object is touched while the iterations run (the GIL is released).  The caller's
 * thread and nthreads - 1 POSIX threads take blocks of every phase (pixels, vertex rows) from
 * a shared counter, with a barrier between phases: a thread slowed by others on a shared
 * machine takes fewer blocks.  Every value is computed the same way whichever thread computes
 * it, so the result is the same bits on any number of threads and any schedule.
 *
 * The lattice itself (vertex ids, barycentric weights, blur neighbours) is built by
 * lattice_build below, in the float32 arithmetic of densecrf's C++ (or by atrous.crf.lattice).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* How long a thread at a barrier spins before it sleeps.  Phases are short, so a short spin
 * usually sees the others arrive; a long one burns the core that a thread still working needs
 * where the machine is oversubscribed (a busy process beside a 2-thread call: 100 us of
 * spinning made the call 1.28x as slow as 7.5 us, 1 ms 2.1x; benchmarks/results/crf.md item
 * 15).  Timed by the clock rather than counted: a pause lasts from ~10 to ~150 cycles by CPU. */
#ifndef SPIN_NS
#define SPIN_NS 10000
#endif

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spin a little, then sleep on the condition variable. */
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
    int64_t until = now_ns() + SPIN_NS;
    for (int s = 1;; s++) {
        if (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) != gen) return;
        CPU_RELAX();
        if ((s & 15) == 0 && now_ns() > until) break;
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
    int nthreads; /* 0 until the helpers are started; -1: run without them */
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
    if (nt > 1) team->body(team->ctx, t->tid, nt, &team->bar);
    return NULL;
}

/* Run body(ctx, tid, nt, barrier) on nthreads threads, the caller's being tid 0; where the
 * system refuses a thread, on the caller's alone (nt = 1: the helpers that started leave). */
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
    int nt = started == nthreads ? nthreads : 1;
    barrier_init(&team.bar, nt);
    pthread_mutex_lock(&team.mu);
    team.nthreads = nt > 1 ? nt : -1;
    pthread_cond_broadcast(&team.cv);
    pthread_mutex_unlock(&team.mu);
    body(ctx, 0, nt, &team.bar);
    for (int t = 1; t < started; t++) pthread_join(th[t], NULL);
    barrier_destroy(&team.bar);
    pthread_mutex_destroy(&team.mu);
    pthread_cond_destroy(&team.cv);
    free(th);
    free(tasks);
}

/* the start of part t of nt of n items */
static inline int64_t part(int64_t n, int t, int nt) { return n * t / nt; }

/* ------------------------------------------------------------------ large buffers */

/* Zeroed buffers of tens of MB.  A fresh process's first touch of each 4 KiB page is a page
 * fault, tens of thousands of them per call, each a costly trap on a virtual machine (3-5 us
 * measured here, a quarter of a first call on two threads).  On Linux they are mapped with
 * MAP_POPULATE (the kernel fills the pages in one call), or, with big_lazy, left for
 * big_populate to fill a part per thread (MADV_POPULATE_WRITE, Linux 5.14; else a write per
 * page) so that the threads that use them share the cost.  Elsewhere calloc. */
typedef struct {
    void *base;
    size_t len; /* 0: from calloc */
} BigHeader;

#define BIG_HEAD ((size_t)64)
#define PAGE ((size_t)4096)

static void *big_map(size_t bytes, int populate) {
#if defined(__linux__) && defined(MAP_POPULATE)
    if (bytes >= ((size_t)1 << 20)) {
        size_t len = bytes + BIG_HEAD;
        char *p = (char *)mmap(NULL, len, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);
        if (p != (char *)MAP_FAILED) {
            ((BigHeader *)p)->base = p;
            ((BigHeader *)p)->len = len;
            return p + BIG_HEAD;
        }
    }
#endif
    (void)populate;
    char *p = (char *)calloc(1, bytes + BIG_HEAD);
    if (!p) return NULL;
    ((BigHeader *)p)->base = p;
    ((BigHeader *)p)->len = 0;
    return p + BIG_HEAD;
}

static void *big_zeros(size_t bytes) { return big_map(bytes, 1); }
static void *big_lazy(size_t bytes) { return big_map(bytes, 0); }

#if defined(__linux__) && !defined(MADV_POPULATE_WRITE)
#define MADV_POPULATE_WRITE 23 /* (headers older than the kernel) */
#endif

/* Fault in part t of nt of the pages of a big_lazy buffer of bytes (they stay zero). */
static void big_populate(void *a, size_t bytes, int t, int nt) {
    if (!a || bytes == 0) return;
    uintptr_t lo = (uintptr_t)a, hi = lo + bytes;
    uintptr_t first = (lo + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
    size_t pages = hi > first ? (hi - first) / PAGE : 0;
    uintptr_t p0 = first + (uintptr_t)((size_t)part((int64_t)pages, t, nt) * PAGE);
    uintptr_t p1 = first + (uintptr_t)((size_t)part((int64_t)pages, t + 1, nt) * PAGE);
    if (p1 <= p0) return;
#if defined(__linux__)
    if (madvise((void *)p0, p1 - p0, MADV_POPULATE_WRITE) == 0) return;
#endif
    for (uintptr_t p = p0; p < p1; p += PAGE) *(volatile char *)p = 0;
}

static void big_free(void *a) {
    if (!a) return;
    BigHeader *h = (BigHeader *)((char *)a - BIG_HEAD);
#if defined(__linux__)
    if (h->len) {
        munmap(h->base, h->len);
        return;
    }
#endif
    free(h->base);
}


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

/* the wavefront's chunk of rows; WAVE_OFF=1 turns the wavefront off (for measurements) */
#ifndef CHUNK
#define CHUNK 1024
#endif
#ifndef WAVE_OFF
#define WAVE_OFF 0
#endif
/* pixels per block of the pixel pass that a thread takes at a time */
#ifndef PIX_BLOCK
#define PIX_BLOCK 1024
#endif

/* One term of a vertex's splat: the pixel and its weight (barycentric x normalization). */
typedef struct {
    int32_t pix;
    float w;
} Entry;

typedef struct {
    int d1;               /* d + 1 vertices per simplex */
    int64_t m;            /* vertices; row m of every value buffer is the zero row */
    const int32_t *vid;   /* (N, d1) vertex of each point's simplex */
    const float *bary;    /* (N, d1) barycentric weights */
    const float *norm;    /* (N,) the normalization D^-1/2 */
    float aw;             /* alpha x kernel weight */
    const int32_t *lower; /* (d1, m) blur neighbours, m where absent (either order) */
    const int32_t *upper;
    /* The splat as a gather: vertex v's terms are ent[off[v]:off[v + 1]], in increasing pixel
     * order (the order in which a pass over the pixels would add them). */
    int64_t *off;
    Entry *ent;
    /* Two (m + 1, cp) buffers: the splat is gathered into buf[0] and the d1 blur passes go
     * back and forth between them, ending in buf[d1 & 1] (what the pixel pass slices). */
    float *buf[2];
    int scattered; /* whether successive pixels' vertices are far apart (then prefetched) */
    /* The splat and the blur run as a wavefront where every neighbour is within reach rows of
     * its vertex (the positional kernel, numbered in raster order): stage j (0: the splat,
     * 1..d1: the blur passes) works on chunk s - j * lag at step s, so that a chunk's d+2
     * stages follow each other while it is in cache.  Elsewhere chunk = m and lag = 1: one
     * stage per step over every row. */
    int64_t chunk, nchunks, lag;
} Kern;

typedef struct {
    int64_t n;
    int c;  /* labels */
    int cp; /* labels, padded to a multiple of W */
    int iters;
    float *q;       /* (N, c) out: Q (unless planes) */
    float *planes;  /* or (B, c, hw) out: Q label-major, image by image */
    int64_t hw;     /* pixels per image */
    const float *u; /* (N, c) -U = log p (may be q itself: a row is read before Q is written) */
    float *qbuf;    /* (N, cp) Q of the pass before the splat */
    int nk;
    int64_t steps; /* splat and blur steps per iteration (every kernel's stages done) */
    Kern k[MAX_KERNELS];
    float *scratch;   /* (nthreads, cp) */
    int64_t claim[2]; /* blocks of the phase taken so far (phases alternate between two) */
} MeanField;

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

/* The wavefront's chunk and lag (see Kern), from the farthest blur neighbour in rows (the
 * splat's stage reads only Q, complete before the first step). */
static void plan_blur(Kern *k) {
    int64_t m = k->m, reach = 0;
    for (int j = 0; j < k->d1; j++) {
        const int32_t *lo = k->lower + (int64_t)j * m, *up = k->upper + (int64_t)j * m;
        for (int64_t v = 0; v < m; v++) {
            if (lo[v] < m && llabs(lo[v] - v) > reach) reach = llabs(lo[v] - v);
            if (up[v] < m && llabs(up[v] - v) > reach) reach = llabs(up[v] - v);
        }
    }
    int64_t chunk = CHUNK;
    int64_t lag = (reach + chunk - 1) / chunk + 1;
    /* worth it while the stages' window (d+2 lags of chunks) is a small part of the rows */
    if (!WAVE_OFF && m >= 8 * chunk && (int64_t)(k->d1 + 1) * lag * chunk * 4 <= m) {
        k->chunk = chunk;
        k->nchunks = (m + chunk - 1) / chunk;
        k->lag = lag;
    } else {
        k->chunk = m > 0 ? m : 1;
        k->nchunks = 1;
        k->lag = 1;
    }
}

/* The splat's terms by vertex (a counting sort of the (pixel, vertex) pairs by vertex; ties
 * keep pixel order).  off[v] serves as vertex v's cursor while the terms are placed, which
 * leaves it at the start of v + 1: shifted back after. */
static void plan_splat(Kern *k, int64_t n) {
    int64_t m = k->m, ne = n * k->d1, *off = k->off;
    memset(off, 0, sizeof(int64_t) * (size_t)(m + 1));
    for (int64_t e = 0; e < ne; e++) off[k->vid[e] + 1]++;
    for (int64_t v = 0; v < m; v++) off[v + 1] += off[v];
    for (int64_t i = 0; i < n; i++) {
        float nw = k->norm[i];
        for (int r = 0; r < k->d1; r++) {
            int64_t e = i * k->d1 + r;
            k->ent[off[k->vid[e]]++] = (Entry){(int32_t)i, k->bary[e] * nw};
        }
    }
    for (int64_t v = m; v > 0; v--) off[v] = off[v - 1];
    off[0] = 0;
}

/* Q = softmax of the logits lg (cp labels) into o. */
static inline __attribute__((always_inline)) void softmax_into(const float *lg,
                                                               float *o, int cp) {
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

#ifndef PREFETCH_PIXELS
#define PREFETCH_PIXELS 6
#endif

static inline __attribute__((always_inline)) void prefetch_bytes(const void *p, int bytes) {
    for (int b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)p + b, 0, 3);
}

/* the blurred values of each kernel that the pixel pass slices (NULL: none yet) */
typedef struct {
    const float *res[MAX_KERNELS];
} Step;

static inline __attribute__((always_inline)) void prefetch_pixel(const MeanField *mf,
                                                                 const Step *st, int64_t i) {
    int cp = mf->cp;
    for (int t = 0; t < mf->nk; t++) {
        const Kern *k = &mf->k[t];
        if (!k->scattered) continue;
        const int32_t *vid = k->vid + i * k->d1;
        /* the previous pixel's simplex (common): its rows are on their way already */
        if (vid[0] == vid[-k->d1] && vid[1] == vid[1 - k->d1]) continue;
        for (int r = 0; r < k->d1; r++) prefetch_bytes(st->res[t] + (int64_t)vid[r] * cp, cp * 4);
    }
}

static inline __attribute__((always_inline)) void pixel_rows(const MeanField *mf,
                                                             const Step *st, int res, int last,
                                                             float *restrict lg, int64_t lo,
                                                             int64_t hi, const int nch) {
    /* nch: label vectors per row, a constant in the specialized copies (their loops over
     * labels unroll and the accumulators stay in registers), 0 for any count */
    int cp = nch ? nch * W : mf->cp;
    for (int64_t i = lo; i < hi; i++) {
        /* the vertex rows of a pixel a few ahead: random rows in L3 or memory, whose latency
         * (not bandwidth) bounds this loop otherwise */
        if (PREFETCH_PIXELS && res && i + PREFETCH_PIXELS < hi)
            prefetch_pixel(mf, st, i + PREFETCH_PIXELS);
        /* -U, padded with -1e30 (probability 0) */
        memcpy(lg, mf->u + i * mf->c, sizeof(float) * (size_t)mf->c);
        for (int l = mf->c; l < cp; l++) lg[l] = -1e30f;
        /* up to 8 label vectors at a time: every weight once, every row's vectors together */
        for (int l0 = 0; l0 < cp; l0 += 8 * W) {
            int nb = nch ? nch : ((cp - l0) / W < 8 ? (cp - l0) / W : 8);
            vf acc[8];
            for (int c = 0; c < nb; c++) acc[c] = load(lg + l0 + c * W);
            for (int t = 0; res && t < mf->nk; t++) {
                const Kern *k = &mf->k[t];
                int d1 = k->d1;
                const int32_t *vid = k->vid + i * d1;
                const float *bary = k->bary + i * d1;
                float nw = k->norm[i];
                for (int r = 0; r < d1; r++) {
                    float w = (bary[r] * nw) * k->aw;
                    const float *x = st->res[t] + (int64_t)vid[r] * cp + l0;
                    for (int c = 0; c < nb; c++) acc[c] += w * load(x + c * W);
                }
            }
            for (int c = 0; c < nb; c++) store(lg + l0 + c * W, acc[c]);
        }
        if (!last) { /* Q, for the splat */
            softmax_into(lg, mf->qbuf + i * cp, cp);
            continue;
        }
        softmax_into(lg, lg, cp);
        if (mf->planes) { /* label-major: each thread writes its pixels' part */
            int64_t img = i / mf->hw;
            float *o = mf->planes + img * mf->c * mf->hw + (i - img * mf->hw);
            for (int l = 0; l < mf->c; l++) o[l * mf->hw] = lg[l];
        } else {
            memcpy(mf->q + i * mf->c, lg, sizeof(float) * (size_t)mf->c);
        }
    }
}

/* The pixels [lo, hi): logits = -U + sum over kernels and simplex vertices of (slice weight x
 * blurred value) (just -U without res: Q0), Q = softmax(logits), into qbuf for the splat or,
 * the last time, into the result.  The slice weight of (pixel i, vertex r) is barycentric x
 * normalization x alpha x the kernel's weight (the products the torch path folds into its
 * matrices). */
HOT static void pixel_span(const MeanField *mf, const Step *st, int res, int last,
                           float *restrict lg, int64_t lo, int64_t hi) {
    switch (mf->cp / W) {
    case 1: pixel_rows(mf, st, res, last, lg, lo, hi, 1); break;
    case 2: pixel_rows(mf, st, res, last, lg, lo, hi, 2); break;
    case 3: pixel_rows(mf, st, res, last, lg, lo, hi, 3); break;
    case 4: pixel_rows(mf, st, res, last, lg, lo, hi, 4); break;
    default: pixel_rows(mf, st, res, last, lg, lo, hi, 0); break;
    }
}

/* The counter of blocks taken in phase g of a call (phases alternate between two counters;
 * thread 0 resets the other one for the next phase: every thread has left the phase before,
 * and none can start the next before the barrier after this one). */
static inline int64_t *phase_claim(MeanField *mf, int64_t g, int tid) {
    if (tid == 0) __atomic_store_n(&mf->claim[(g + 1) & 1], 0, __ATOMIC_RELAXED);
    return &mf->claim[g & 1];
}

/* The pixel pass, in blocks of PIX_BLOCK pixels that the threads take in turn: a thread slowed
 * by others on a shared machine takes fewer blocks instead of holding up the rest. */
static void pixel_pass(MeanField *mf, const Step *st, int res, int last, int64_t g, int tid) {
    float *lg = mf->scratch + (int64_t)tid * mf->cp;
    int64_t *claim = phase_claim(mf, g, tid), blocks = (mf->n + PIX_BLOCK - 1) / PIX_BLOCK;
    for (int64_t b = __atomic_fetch_add(claim, 1, __ATOMIC_RELAXED); b < blocks;
         b = __atomic_fetch_add(claim, 1, __ATOMIC_RELAXED)) {
        int64_t lo = b * PIX_BLOCK, hi = lo + PIX_BLOCK < mf->n ? lo + PIX_BLOCK : mf->n;
        pixel_span(mf, st, res, last, lg, lo, hi);
    }
}

/* The splat of vertices [lo, hi) as a gather: each row the sum of its terms' weight x Q, added
 * in pixel order (the sum a pass over the pixels adding into a cleared row makes, whichever
 * thread takes the row). */
static inline __attribute__((always_inline)) void gather_span(const Kern *k, const float *q,
                                                              float *restrict dst, int cp,
                                                              int64_t lo, int64_t hi,
                                                              const int nch) {
    const int64_t *off = k->off;
    const Entry *ent = k->ent;
    int64_t end = off[hi];
    for (int64_t v = lo; v < hi; v++) {
        float *o = dst + v * cp;
        if (nch) {
            vf acc[4];
            for (int c = 0; c < nch; c++) acc[c] = splat_vf(0.0f);
            for (int64_t e = off[v]; e < off[v + 1]; e++) {
                if (k->scattered && e + 8 < end) prefetch_bytes(q + (int64_t)ent[e + 8].pix * cp, cp * 4);
                const float *x = q + (int64_t)ent[e].pix * cp;
                float w = ent[e].w;
                for (int c = 0; c < nch; c++) acc[c] += w * load(x + c * W);
            }
            for (int c = 0; c < nch; c++) store(o + c * W, acc[c]);
        } else {
            for (int l = 0; l < cp; l += W) store(o + l, splat_vf(0.0f));
            for (int64_t e = off[v]; e < off[v + 1]; e++) {
                if (k->scattered && e + 8 < end) prefetch_bytes(q + (int64_t)ent[e + 8].pix * cp, cp * 4);
                const float *x = q + (int64_t)ent[e].pix * cp;
                float w = ent[e].w;
                for (int l = 0; l < cp; l += W) store(o + l, load(o + l) + w * load(x + l));
            }
        }
    }
}

HOT static void gather_rows(const Kern *k, const float *q, float *restrict dst, int cp,
                            int64_t lo, int64_t hi) {
    switch (cp / W) {
    case 1: gather_span(k, q, dst, cp, lo, hi, 1); break;
    case 2: gather_span(k, q, dst, cp, lo, hi, 2); break;
    case 3: gather_span(k, q, dst, cp, lo, hi, 3); break;
    case 4: gather_span(k, q, dst, cp, lo, hi, 4); break;
    default: gather_span(k, q, dst, cp, lo, hi, 0); break;
    }
}

static inline __attribute__((always_inline)) void blur_span(const Kern *k, int j,
                                                            const float *restrict src,
                                                            float *restrict dst, int cp,
                                                            int64_t lo, int64_t hi) {
    const int32_t *lower = k->lower + (int64_t)j * k->m, *upper = k->upper + (int64_t)j * k->m;
    const vf half = splat_vf(0.5f);
    for (int64_t v = lo; v < hi; v++) {
        if (k->scattered && v + 12 < hi) {
            prefetch_bytes(src + (int64_t)lower[v + 12] * cp, cp * 4);
            prefetch_bytes(src + (int64_t)upper[v + 12] * cp, cp * 4);
        }
        const float *a = src + (int64_t)lower[v] * cp, *b = src + (int64_t)upper[v] * cp;
        const float *s = src + v * cp;
        float *o = dst + v * cp;
        for (int l = 0; l < cp; l += W) store(o + l, load(s + l) + half * (load(a + l) + load(b + l)));
    }
}

/* Blur pass j (direction j), rows [lo, hi), from src into dst (copies for the common label
 * counts, whose loops over labels unroll). */
HOT static void blur_rows(const Kern *k, int j, const float *restrict src, float *restrict dst,
                          int cp, int64_t lo, int64_t hi) {
    switch (cp) {
    case W: blur_span(k, j, src, dst, W, lo, hi); break;
    case 2 * W: blur_span(k, j, src, dst, 2 * W, lo, hi); break;
    case 3 * W: blur_span(k, j, src, dst, 3 * W, lo, hi); break;
    case 4 * W: blur_span(k, j, src, dst, 4 * W, lo, hi); break;
    default: blur_span(k, j, src, dst, cp, lo, hi); break;
    }
}

/* Step s of the splat and blur: stage j on chunk s - j * lag of every kernel (stage 0 the
 * splat into buf[0], stage j >= 1 blur pass j - 1 from buf[(j - 1) & 1] into buf[j & 1]).
 * The step's rows are cut into blocks of about 64 KB that the threads take in turn: a thread
 * slowed by its neighbours on a shared machine takes fewer blocks and the others wait less at
 * the barrier.  Every row is computed the same way whichever thread takes it: the result does
 * not depend on the schedule. */
static void blur_step(MeanField *mf, int64_t s, int64_t g, int tid) {
    int cp = mf->cp;
    typedef struct {
        const Kern *k;
        int j;
        int64_t lo, hi, first_block;
    } Seg;
    Seg seg[MAX_KERNELS * 66];
    int ns = 0;
    int64_t rows = 16384 / cp > 32 ? 16384 / cp : 32, blocks = 0;
    for (int t = 0; t < mf->nk; t++) {
        const Kern *k = &mf->k[t];
        for (int j = 0; j <= k->d1; j++) {
            int64_t c = s - j * k->lag;
            if (c < 0 || c >= k->nchunks) continue;
            int64_t lo = c * k->chunk, hi = lo + k->chunk < k->m ? lo + k->chunk : k->m;
            if (hi <= lo) continue;
            seg[ns] = (Seg){k, j, lo, hi, blocks};
            blocks += (hi - lo + rows - 1) / rows;
            ns++;
        }
    }
    int64_t *claim = phase_claim(mf, g, tid);
    int at = 0;
    for (int64_t i = __atomic_fetch_add(claim, 1, __ATOMIC_RELAXED); i < blocks;
         i = __atomic_fetch_add(claim, 1, __ATOMIC_RELAXED)) {
        while (at + 1 < ns && seg[at + 1].first_block <= i) at++;
        const Seg *q = &seg[at];
        const Kern *k = q->k;
        int64_t lo = q->lo + (i - q->first_block) * rows, hi = lo + rows < q->hi ? lo + rows : q->hi;
        if (q->j == 0) gather_rows(k, mf->qbuf, k->buf[0], cp, lo, hi);
        else blur_rows(k, q->j - 1, k->buf[(q->j - 1) & 1], k->buf[q->j & 1], cp, lo, hi);
    }
}

static void mean_field_body(void *ctx, int tid, int nt, Barrier *bar) {
    MeanField *mf = (MeanField *)ctx;
    int cp = mf->cp, nk = mf->nk;
    Step st;
    int64_t g = 0; /* phases so far */
    /* every thread faults in its share of the pages; the splat's terms, kernel by kernel */
    size_t qbytes = sizeof(float) * (size_t)mf->n * (size_t)cp;
    big_populate(mf->qbuf, qbytes, tid, nt);
    for (int t = 0; t < nk; t++) {
        Kern *k = &mf->k[t];
        st.res[t] = k->buf[k->d1 & 1];
        size_t bytes = sizeof(float) * (size_t)(k->m + 1) * (size_t)cp;
        for (int s = 0; s < 2; s++) big_populate(k->buf[s], bytes, tid, nt);
        if (t % nt == tid) plan_splat(k, mf->n);
    }
    barrier_wait(bar);
    /* Q0 = softmax(-U) */
    pixel_pass(mf, &st, 0, mf->iters == 0, g++, tid);
    barrier_wait(bar);
    for (int it = 0; it < mf->iters; it++) {
        for (int64_t s = 0; s < mf->steps; s++) {
            blur_step(mf, s, g++, tid);
            barrier_wait(bar);
        }
        pixel_pass(mf, &st, 1, it == mf->iters - 1, g++, tid);
        barrier_wait(bar);
    }
}

static void free_kern(Kern *k) {
    for (int s = 0; s < 2; s++) {
        big_free(k->buf[s]);
        k->buf[s] = NULL;
    }
    free(k->off);
    k->off = NULL;
    big_free(k->ent);
    k->ent = NULL;
}

static void *addr(PyObject *o) { return PyLong_AsVoidPtr(o); }

/* mean_field(n, c, cp, iterations, threads, q_addr, u_addr, kernels[, planes_addr, hw]), u (n, c)
 * = log p (q_addr itself allowed), with kernels a sequence of (d1, m, vid_addr, bary_addr,
 * norm_addr, alpha_times_weight, minus_addr, plus_addr); Q (n, c) is written to q, or with
 * planes_addr, label-major (n / hw, c, hw) to planes. */
static PyObject *py_mean_field(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t n;
    int c, cp, iters, threads;
    PyObject *qo, *uo, *kernels, *po = NULL;
    Py_ssize_t hw = 0;
    if (!PyArg_ParseTuple(args, "niiiiOOO|On", &n, &c, &cp, &iters, &threads, &qo, &uo, &kernels,
                          &po, &hw))
        return NULL;
    MeanField mf;
    memset(&mf, 0, sizeof(mf));
    mf.n = n;
    mf.c = c;
    mf.cp = cp;
    mf.iters = iters;
    mf.q = (float *)addr(qo);
    mf.u = (const float *)addr(uo);
    if (po && po != Py_None) {
        mf.planes = (float *)addr(po);
        mf.hw = hw;
        if (hw < 1 || n % hw != 0) {
            PyErr_Format(PyExc_ValueError, "%zd pixels are not whole images of %zd", n, hw);
            return NULL;
        }
    }
    if (n > INT32_MAX) { /* (a splat term names its pixel in 32 bits) */
        PyErr_Format(PyExc_ValueError, "%zd pixels: at most %d in one call", n, INT32_MAX);
        return NULL;
    }
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
        PyObject *vo, *bo, *no, *lo, *uo2;
        Py_ssize_t m;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, t), "inOOOfOO", &k->d1, &m, &vo, &bo,
                              &no, &k->aw, &lo, &uo2)) {
            Py_DECREF(seq);
            return NULL;
        }
        k->m = m;
        k->vid = (const int32_t *)addr(vo);
        k->bary = (const float *)addr(bo);
        k->norm = (const float *)addr(no);
        k->lower = (const int32_t *)addr(lo);
        k->upper = (const int32_t *)addr(uo2);
    }
    Py_DECREF(seq);
    if (PyErr_Occurred()) return NULL;
    if (cp < W || cp % W != 0 || c < 1 || c > cp) {
        PyErr_Format(PyExc_ValueError, "labels %d in a stride %d (a multiple of %d)", c, cp, W);
        return NULL;
    }
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    mf.scratch = (float *)malloc(sizeof(float) * (size_t)cp * (size_t)threads);
    mf.qbuf = (float *)big_lazy(sizeof(float) * (size_t)n * (size_t)cp);
    failed = mf.scratch == NULL || mf.qbuf == NULL;
    for (int t = 0; t < mf.nk && !failed; t++) {
        Kern *k = &mf.k[t];
        k->scattered = is_scattered(k->vid, n, k->d1);
        plan_blur(k);
        int64_t steps = k->nchunks + (int64_t)k->d1 * k->lag;
        if (steps > mf.steps) mf.steps = steps;
        size_t rows = (size_t)(k->m + 1) * (size_t)cp;
        for (int s = 0; s < 2 && !failed; s++) {
            k->buf[s] = (float *)big_lazy(sizeof(float) * rows);
            if (!k->buf[s]) failed = 1;
            else memset(k->buf[s] + k->m * cp, 0, sizeof(float) * cp); /* the zero row */
        }
        k->off = (int64_t *)malloc(sizeof(int64_t) * (size_t)(k->m + 1));
        k->ent = (Entry *)big_lazy(sizeof(Entry) * (size_t)(n * k->d1));
        if (!k->off || !k->ent) failed = 1;
    }
    if (!failed) run_parallel(mean_field_body, &mf, threads);
    for (int t = 0; t < mf.nk; t++) free_kern(&mf.k[t]);
    free(mf.scratch);
    big_free(mf.qbuf);
    Py_END_ALLOW_THREADS;
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_lattice_degree(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t n, m;
    int d1;
    float alpha;
    PyObject *vo, *bo, *mo, *po, *oo;
    if (!PyArg_ParseTuple(args, "ninOOOOfO", &n, &d1, &m, &vo, &bo, &mo, &po, &alpha, &oo))
        return NULL;
    const int32_t *vid = (const int32_t *)addr(vo), *minus = (const int32_t *)addr(mo),
                  *plus = (const int32_t *)addr(po);
    const float *bary = (const float *)addr(bo);
    float *out = (float *)addr(oo);
    if (PyErr_Occurred()) return NULL;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    float *a = (float *)calloc((size_t)(m + 1), sizeof(float));
    float *b = (float *)calloc((size_t)(m + 1), sizeof(float));
    if (!a || !b) {
        failed = 1;
    } else {
        for (int64_t e = 0; e < n * d1; e++) a[vid[e]] += bary[e];
        for (int j = 0; j < d1; j++) {
            const int32_t *lo = minus + (int64_t)j * m, *up = plus + (int64_t)j * m;
            for (int64_t v = 0; v < m; v++) b[v] = a[v] + 0.5f * (a[lo[v]] + a[up[v]]);
            float *t = a;
            a = b;
            b = t;
        }
        for (int64_t i = 0; i < n; i++) {
            float s = 0.0f;
            for (int r = 0; r < d1; r++) s += a[vid[i * d1 + r]] * bary[i * d1 + r];
            out[i] = s * alpha;
        }
    }
    free(a);
    free(b);
    Py_END_ALLOW_THREADS;
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ buffers for Python */

/* A big buffer handed to Python without a copy (torch.frombuffer reads it in place); freed
 * with the last reference. */
typedef struct {
    PyObject_HEAD
    void *data;
    Py_ssize_t len;
} Buffer;

static int buffer_get(PyObject *o, Py_buffer *view, int flags) {
    Buffer *b = (Buffer *)o;
    return PyBuffer_FillInfo(view, o, b->data, b->len, 0, flags);
}

static void buffer_dealloc(PyObject *o) {
    big_free(((Buffer *)o)->data);
    Py_TYPE(o)->tp_free(o);
}

static PyBufferProcs buffer_procs = {buffer_get, NULL};

static PyTypeObject BufferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "atrous.crf._native.Buffer",
    .tp_basicsize = sizeof(Buffer),
    .tp_dealloc = buffer_dealloc,
    .tp_as_buffer = &buffer_procs,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "memory of the compiled code, read through the buffer protocol",
};

/* A Buffer owning data (a big_zeros / big_lazy block of len bytes); frees data on failure. */
static PyObject *buffer_new(void *data, Py_ssize_t len) {
    Buffer *b = PyObject_New(Buffer, &BufferType);
    if (!b) {
        big_free(data);
        return NULL;
    }
    b->data = data;
    b->len = len;
    return (PyObject *)b;
}

/* ------------------------------------------------------------------ lattice build */

/* The C++ original's lattice (Adams et al. 2010, as densecrf builds it), in its float32
 * arithmetic: each point's enclosing simplex and barycentric weights, its d+1 vertices
 * numbered by first use in point order, and every vertex's blur neighbours.  Vertex r of a
 * simplex is the pair (r, k) with k_i = K_i - [rank_i > d - r] (every coordinate of vertex r is
 * r mod d+1), packed into an int64 key r + (d+1) sum_i (k_i - kmin_i) radix_i. */

typedef struct {
    int64_t key; /* -1: empty */
    int64_t val;
} Slot; /* key and id side by side: one cache line per probe */

typedef struct {
    Slot *slots;
    int64_t cap; /* a power of two */
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
    h->slots = (Slot *)big_zeros(sizeof(Slot) * (size_t)h->cap);
    if (!h->slots) return -1;
    memset(h->slots, 0xff, sizeof(Slot) * (size_t)h->cap);
    return 0;
}

static void hash_free(Hash *h) {
    big_free(h->slots);
    h->slots = NULL;
}

static inline int32_t hash_find(const Hash *h, int64_t key) {
    uint64_t mask = (uint64_t)h->cap - 1, s = hash_slot(h, key);
    for (;;) {
        int64_t k = h->slots[s].key;
        if (k == key) return (int32_t)h->slots[s].val;
        if (k < 0) return -1;
        s = (s + 1) & mask;
    }
}

static int hash_grow(Hash *h) {
    Hash g;
    if (hash_init(&g, h->cap) != 0) return -1; /* twice the slots */
    uint64_t mask = (uint64_t)g.cap - 1;
    for (int64_t s = 0; s < h->cap; s++) {
        if (h->slots[s].key < 0) continue;
        uint64_t t = hash_slot(&g, h->slots[s].key);
        while (g.slots[t].key >= 0) t = (t + 1) & mask;
        g.slots[t] = h->slots[s];
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
        int64_t k = h->slots[s].key;
        if (k == key) return (int32_t)h->slots[s].val;
        if (k < 0) break;
        s = (s + 1) & mask;
    }
    int32_t id = (int32_t)(*m)++;
    h->slots[s].key = key;
    h->slots[s].val = id;
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
    int bad; /* a point float32 cannot place (features too large for their precision) */
} Build;

/* Elevation, enclosing simplex and barycentric weights of points [lo, hi) (thread body part),
 * bit for bit the float32 operations of atrous.crf.lattice (the original's arithmetic). */
HOT static void simplex_rows(Build *b, int64_t lo, int64_t hi, int32_t *kmin, int32_t *kmax) {
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
        /* rank_i: the original's pairwise count (for i < j, e_i < e_j ranks i up, else j), per
         * coordinate in a register rather than as increments of memory */
        float e[65];
        for (int i = 0; i <= d; i++) e[i] = el[i] - rem0[i];
        for (int i = 0; i <= d; i++) {
            int r = 0;
            for (int j = 0; j < i; j++) r += !(e[j] < e[i]);
            for (int j = i + 1; j <= d; j++) r += e[i] < e[j];
            rank[i] = r;
        }
        int32_t *kk = b->big_k + p * d;
        uint8_t *rk = b->rank + p * d1;
        for (int i = 0; i <= d; i++) {
            float rf = (float)rank[i] + coord_sum;
            float wrap = (float)(rf < 0.0f) - (float)(rf >= (float)d1);
            rf += wrap * (float)d1;
            rem0[i] += wrap * (float)d1;
            rank[i] = (int)rf;
            if (rank[i] < 0 || rank[i] > d) { /* float32 lost the features (huge values) */
                b->bad = 1;
                rank[i] = 0;
            }
            rk[i] = (uint8_t)rank[i];
            if (i < d) {
                float kf = v[i] + wrap;
                if (!(kf > -1.0e9f && kf < 1.0e9f)) { /* (and NaN) */
                    b->bad = 1;
                    kf = 0.0f;
                }
                int32_t K = (int32_t)kf;
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

/* The keys of point p's d+1 vertices into out; 0 (and out[0] = -1) where its simplex is the
 * previous point's of the same image (often), whose ids it takes. */
static inline int vertex_keys(const Build *b, int64_t p, int64_t per_image, const int64_t *radix,
                              int64_t *out) {
    int d = b->d, d1 = d + 1;
    const int32_t *kk = b->big_k + p * d;
    const uint8_t *rk = b->rank + p * d1;
    if (p > 0 && p % per_image != 0 && memcmp(kk, kk - d, sizeof(int32_t) * d) == 0 &&
        memcmp(rk, rk - d1, (size_t)d1) == 0) {
        out[0] = -1;
        return 0;
    }
    int inv[65];
    int64_t base = 0;
    for (int i = 0; i < d; i++) base += (int64_t)(kk[i] - (b->kmin[i] - 2)) * radix[i];
    base += (p / per_image) * radix[d];
    for (int i = 0; i <= d; i++) inv[rk[i]] = i;
    int64_t drop = 0;
    for (int r = 0; r <= d; r++) {
        if (r > 0) { /* coordinate ranked d - r + 1 drops by one from vertex r on */
            int i = inv[d - r + 1];
            if (i < d) drop += radix[i];
        }
        out[r] = r + (int64_t)d1 * (base - drop);
    }
    return 1;
}

#define FILL_AHEAD 4

/* The blur neighbours of every vertex along direction j (thread body: directions tid, tid + nt,
 * ...). minus along j: every coordinate -1, coordinate j +d; in (r, k): r - 1 and k_j + 1, or
 * from r = 0 to r = d with k_i - 1 for i != j.  plus: the inverse. */
typedef struct {
    int d;
    int64_t m;
    int direct;
    int64_t n_keys;
    int64_t rsum;
    const int64_t *radix;
    const int64_t *keys_by_id;
    const int32_t *table;
    const Hash *h;
    int32_t *nbr; /* (2, d+1, m) out */
} NbrJob;

static void neighbour_body(void *ctx, int tid, int nt, Barrier *bar) {
    (void)bar;
    const NbrJob *q = (const NbrJob *)ctx;
    int d = q->d, d1 = d + 1;
    int64_t m = q->m;
    for (int j = tid; j <= d; j += nt) {
        int64_t rj = j < d ? q->radix[j] : 0;
        int64_t minus_hi = -1 + (int64_t)d1 * rj;            /* r >= 1 */
        int64_t minus_lo = d - (int64_t)d1 * (q->rsum - rj); /* r == 0 */
        int32_t *mo = q->nbr + (int64_t)j * m;
        int32_t *po = q->nbr + (int64_t)(d1 + j) * m;
        for (int64_t v = 0; v < m; v++) po[v] = (int32_t)m;
        for (int64_t v = 0; v < m; v++) {
            int64_t key = q->keys_by_id[v];
            int64_t nk = key + ((key % d1) ? minus_hi : minus_lo);
            if (v + 16 < m) { /* the slot (or table entry) 16 vertices on: misses overlap */
                int64_t fk = q->keys_by_id[v + 16];
                fk += (fk % d1) ? minus_hi : minus_lo;
                if (q->direct) {
                    if (fk >= 0 && fk < q->n_keys) __builtin_prefetch(q->table + fk);
                } else {
                    __builtin_prefetch(q->h->slots + hash_slot(q->h, fk));
                }
            }
            int32_t id;
            if (q->direct) id = (nk >= 0 && nk < q->n_keys) ? q->table[nk] : -1;
            else id = hash_find(q->h, nk);
            mo[v] = id < 0 ? (int32_t)m : id;
            if (id >= 0) po[id] = (int32_t)v; /* u = minus(v) exactly when v = plus(u) */
        }
    }
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
    Hash h = {NULL, 0, 0, 0};
    int32_t *table = NULL;
    SimplexJob *job = NULL;
    Py_BEGIN_ALLOW_THREADS;
    b.big_k = (int32_t *)big_zeros(sizeof(int32_t) * (size_t)(n * d));
    b.rank = (uint8_t *)big_zeros((size_t)(n * d1));
    job = (SimplexJob *)malloc(sizeof(SimplexJob));
    if (!b.big_k || !b.rank || !job) err = "memory";
    if (!err) {
        job->b = &b;
        b.bad = 0;
        int nt = n < 50000 ? 1 : threads;
        for (int t = 0; t < MAX_THREADS; t++)
            for (int i = 0; i < d; i++) {
                job->kmin[t][i] = INT32_MAX;
                job->kmax[t][i] = INT32_MIN;
            }
        run_parallel(simplex_body, job, nt);
        if (b.bad) err = "range";
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
            table = (int32_t *)big_zeros(sizeof(int32_t) * (size_t)n_keys);
            if (table) memset(table, 0xff, sizeof(int32_t) * (size_t)n_keys);
        } else if (hash_init(&h, n / 4 + 1) != 0) { /* grows as vertices come */
            err = "memory";
        }
        if (!keys_by_id || (direct && !table)) err = "memory";
        /* Points in order (the ids are by first use), each one's keys made FILL_AHEAD points
         * before its turn and their slots prefetched: the probes miss the caches (the table
         * is a few MB), so the misses of several points overlap. */
        int64_t ring[FILL_AHEAD][65];
        for (int64_t p = 0; p < n + FILL_AHEAD && !err; p++) {
            int64_t q = p - FILL_AHEAD; /* point q takes its ids, then p's keys take its place */
            const int64_t *kq = ring[p % FILL_AHEAD];
            if (q >= 0 && kq[0] < 0) { /* the simplex of the point before */
                memcpy(b.vid + q * d1, b.vid + (q - 1) * d1, sizeof(int32_t) * d1);
            } else if (q >= 0) {
                for (int r = 0; r <= d; r++) {
                    int64_t key = kq[r];
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
                    b.vid[q * d1 + r] = id;
                }
            }
            if (p < n) {
                int64_t *kr = ring[p % FILL_AHEAD];
                if (vertex_keys(&b, p, per_image, radix, kr)) {
                    for (int r = 0; r <= d; r++) {
                        if (direct) __builtin_prefetch(table + kr[r]);
                        else __builtin_prefetch(h.slots + hash_slot(&h, kr[r]));
                    }
                }
            }
        }
        if (!err) { /* (every entry is written: its pages are faulted in by those threads) */
            nbr = (int32_t *)big_lazy(sizeof(int32_t) * (size_t)(2 * d1 * m));
            if (!nbr) err = "memory";
        }
        if (!err) {
            NbrJob nj = {d, m, direct, (int64_t)n_keys, rsum, radix, keys_by_id, table, &h, nbr};
            run_parallel(neighbour_body, &nj, m < 20000 ? 1 : (threads < d1 ? threads : d1));
        }
    }
    big_free(b.big_k);
    big_free(b.rank);
    free(job);
    free(keys_by_id);
    big_free(table);
    hash_free(&h);
    Py_END_ALLOW_THREADS;
    if (err) {
        big_free(nbr);
        if (err[0] == 'm') return PyErr_NoMemory();
        PyErr_SetString(PyExc_ValueError,
                        "features span too large a range for the permutohedral lattice keys; use "
                        "larger standard deviations");
        return NULL;
    }
    PyObject *ba = buffer_new(nbr, (Py_ssize_t)(2 * d1 * m * 4)); /* (owns nbr) */
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
    {"lattice_degree", py_lattice_degree, METH_VARARGS, "The lattice filter of ones."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

/* the interface version native.py expects (a stale build of an older source is not used) */
#define ABI 5

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&BufferType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "ABI", ABI) != 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
