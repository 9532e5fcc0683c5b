/* Compiled inner loops of gtsrb_kit.enhance, used when this module is built (the numpy code in
 * enhance.py does the same work where it is not):
 *
 * - resize: skimage's resize (Gaussian, then bilinear) as two products with the matrices of
 *   enhance.resize_matrix, computed only over each row's band of non-zero weights instead of
 *   multiplying whole dense matrices; it agrees with skimage to float rounding, like the numpy
 *   products, but not bit for bit with them (a different order of the same sums);
 * - equalize_hist: np.histogram's bins and np.interp's formula, image by image: bit-identical to
 *   enhance.equalize_hist_batch;
 * - store_modes: RGB, RGB-HE and L as uint8, the operations of enhance.apply_modes in the same
 *   order: bit-identical to it.
 *
 * Built with -ffp-contract=off, so that the compiler fuses no multiply-add on its own.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* an AVX2 build of the elementwise loops beside the baseline one, chosen at load time (the
 * same operations either way: vector lanes round exactly as scalar ones) */
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_FMA_DISPATCH 1
#define FMA_TARGET __attribute__((target("fma,avx2")))
#else
#define HAVE_FMA_DISPATCH 0
#define FMA_TARGET
#endif

/* ------------------------------------------------------------------------------------ resize */

/* One output size of a resize: out[c] = rows @ image[c] @ cols (cols scaled by 1/255). */
typedef struct {
    Py_ssize_t size;
    const double *rows;      /* (s, h) */
    const int32_t *row_band; /* (s, 2): first and end (exclusive) non-zero column of each row */
    const double *cols;      /* (w, s) */
    const int32_t *col_band; /* (s, 2): first and end (exclusive) non-zero row of each column */
    double *out;             /* (depth, s, s) */
} Target;

/* The row pass runs first, along the image's contiguous rows (all channels interleaved); the
 * column pass then writes each channel's plane. Every output is one chain of multiply-adds over
 * the non-zero weights of its row (column), in ascending order. This is the portable loop; the
 * AVX2 one below computes several outputs together over the union of their bands: the extra
 * steps multiply by an exact zero and change nothing, so grouping does not change the result. */
static void resize_plain(const double *image, Py_ssize_t h, Py_ssize_t w, Py_ssize_t depth,
                         const Target *target, double *rowpass) {
    const Py_ssize_t s = target->size, line = w * depth;
    for (Py_ssize_t i = 0; i < s; i++) {
        const int32_t first = target->row_band[2 * i], end = target->row_band[2 * i + 1];
        double *dst = rowpass + i * line;
        for (Py_ssize_t v = 0; v < line; v++) dst[v] = 0.0;
        for (int32_t y = first; y < end; y++) {
            const double wy = target->rows[i * h + y];
            const double *src = image + y * line;
            for (Py_ssize_t v = 0; v < line; v++) dst[v] = wy * src[v] + dst[v];
        }
    }
    for (Py_ssize_t c = 0; c < depth; c++)
        for (Py_ssize_t i = 0; i < s; i++) {
            const double *src = rowpass + i * line + c;
            double *dst = target->out + (c * s + i) * s;
            for (Py_ssize_t j = 0; j < s; j++) {
                const int32_t first = target->col_band[2 * j], end = target->col_band[2 * j + 1];
                double acc = 0.0;
                for (int32_t x = first; x < end; x++) acc = src[x * depth] * target->cols[x * s + j] + acc;
                dst[j] = acc;
            }
        }
}

#if HAVE_FMA_DISPATCH
#include <immintrin.h>

FMA_TARGET static void resize_fma(const double *image, Py_ssize_t h, Py_ssize_t w, Py_ssize_t depth,
                                  const Target *target, double *rowpass) {
    const Py_ssize_t s = target->size, line = w * depth;
    for (Py_ssize_t i = 0; i < s; i++) {
        const int32_t first = target->row_band[2 * i], end = target->row_band[2 * i + 1];
        const double *weights = target->rows + i * h;
        double *dst = rowpass + i * line;
        Py_ssize_t v = 0;
        for (; v + 16 <= line; v += 16) {
            __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
            __m256d a2 = _mm256_setzero_pd(), a3 = _mm256_setzero_pd();
            for (int32_t y = first; y < end; y++) {
                const __m256d wy = _mm256_broadcast_sd(weights + y);
                const double *src = image + y * line + v;
                a0 = _mm256_fmadd_pd(wy, _mm256_loadu_pd(src), a0);
                a1 = _mm256_fmadd_pd(wy, _mm256_loadu_pd(src + 4), a1);
                a2 = _mm256_fmadd_pd(wy, _mm256_loadu_pd(src + 8), a2);
                a3 = _mm256_fmadd_pd(wy, _mm256_loadu_pd(src + 12), a3);
            }
            _mm256_storeu_pd(dst + v, a0);
            _mm256_storeu_pd(dst + v + 4, a1);
            _mm256_storeu_pd(dst + v + 8, a2);
            _mm256_storeu_pd(dst + v + 12, a3);
        }
        for (; v < line; v++) {
            double acc = 0.0;
            for (int32_t y = first; y < end; y++) acc = __builtin_fma(weights[y], image[y * line + v], acc);
            dst[v] = acc;
        }
    }
    for (Py_ssize_t j0 = 0; j0 < s; j0 += 4) {
        const Py_ssize_t nj = s - j0 < 4 ? s - j0 : 4;
        int32_t first = target->col_band[2 * j0], end = target->col_band[2 * j0 + 1];
        for (Py_ssize_t j = j0 + 1; j < j0 + nj; j++) {
            if (target->col_band[2 * j] < first) first = target->col_band[2 * j];
            if (target->col_band[2 * j + 1] > end) end = target->col_band[2 * j + 1];
        }
        if (nj < 4) {
            for (Py_ssize_t c = 0; c < depth; c++)
                for (Py_ssize_t i = 0; i < s; i++) {
                    const double *src = rowpass + i * line + c;
                    for (Py_ssize_t j = j0; j < s; j++) {
                        double acc = 0.0;
                        for (int32_t x = first; x < end; x++) acc = __builtin_fma(src[x * depth], target->cols[x * s + j], acc);
                        target->out[(c * s + i) * s + j] = acc;
                    }
                }
            continue;
        }
        for (Py_ssize_t c = 0; c < depth; c++) {
            Py_ssize_t i = 0;
            for (; i + 4 <= s; i += 4) { /* four output rows at once: independent chains */
                const double *r0 = rowpass + i * line + c;
                __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
                __m256d a2 = _mm256_setzero_pd(), a3 = _mm256_setzero_pd();
                for (int32_t x = first; x < end; x++) {
                    const __m256d wx = _mm256_loadu_pd(target->cols + x * s + j0);
                    const double *p = r0 + x * depth;
                    a0 = _mm256_fmadd_pd(_mm256_broadcast_sd(p), wx, a0);
                    a1 = _mm256_fmadd_pd(_mm256_broadcast_sd(p + line), wx, a1);
                    a2 = _mm256_fmadd_pd(_mm256_broadcast_sd(p + 2 * line), wx, a2);
                    a3 = _mm256_fmadd_pd(_mm256_broadcast_sd(p + 3 * line), wx, a3);
                }
                double *dst = target->out + (c * s + i) * s + j0;
                _mm256_storeu_pd(dst, a0);
                _mm256_storeu_pd(dst + s, a1);
                _mm256_storeu_pd(dst + 2 * s, a2);
                _mm256_storeu_pd(dst + 3 * s, a3);
            }
            for (; i < s; i++) {
                const double *p = rowpass + i * line + c;
                __m256d a0 = _mm256_setzero_pd();
                for (int32_t x = first; x < end; x++)
                    a0 = _mm256_fmadd_pd(_mm256_broadcast_sd(p + x * depth), _mm256_loadu_pd(target->cols + x * s + j0), a0);
                _mm256_storeu_pd(target->out + (c * s + i) * s + j0, a0);
            }
        }
    }
}
#endif

static int check_buffer(Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t count, const char *what) {
    if (view->itemsize != itemsize || view->len != itemsize * count) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes, got %zd bytes",
                     what, count, itemsize, view->len);
        return -1;
    }
    return 0;
}

static int check_bands(const int32_t *band, Py_ssize_t n, Py_ssize_t limit) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (band[2 * i] < 0 || band[2 * i + 1] > limit || band[2 * i] > band[2 * i + 1]) {
            PyErr_SetString(PyExc_ValueError, "band out of range");
            return -1;
        }
    return 0;
}

#define TARGET_BUFFERS 5

/* resize(image, h, w, depth, targets, fma): image uint8 (h, w, depth); targets: tuple of
 * (size, rows, row_band, cols, col_band, out) tuples, see Target. */
static PyObject *kernels_resize(PyObject *self, PyObject *args) {
    Py_buffer image = {0};
    Py_ssize_t h, w, depth;
    PyObject *targets;
    int fma;
    if (!PyArg_ParseTuple(args, "y*nnnO!p", &image, &h, &w, &depth, &PyTuple_Type, &targets, &fma)) return NULL;
    PyObject *result = NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(targets);
    Py_buffer *views = PyMem_Calloc(TARGET_BUFFERS * (n ? n : 1), sizeof(Py_buffer));
    Target *tg = PyMem_Calloc(n ? n : 1, sizeof(Target));
    double *work = NULL;
    Py_ssize_t opened = 0, largest = 0;
    if (!views || !tg) {
        PyErr_NoMemory();
        goto done;
    }
    if (h < 1 || w < 1 || depth < 1 || check_buffer(&image, 1, h * w * depth, "image")) goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyTuple_GET_ITEM(targets, k);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 1 + TARGET_BUFFERS) {
            PyErr_SetString(PyExc_TypeError, "targets: tuples (size, rows, row_band, cols, col_band, out)");
            goto done;
        }
        const Py_ssize_t s = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 0));
        if (s < 1) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "size must be positive");
            goto done;
        }
        for (int b = 0; b < TARGET_BUFFERS; b++) {
            int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (b == TARGET_BUFFERS - 1 ? PyBUF_WRITABLE : 0);
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 1 + b), &views[opened], flags) < 0) goto done;
            opened++;
        }
        Py_buffer *v = views + TARGET_BUFFERS * k;
        if (check_buffer(&v[0], sizeof(double), s * h, "rows") || check_buffer(&v[1], sizeof(int32_t), 2 * s, "row_band") ||
            check_buffer(&v[2], sizeof(double), w * s, "cols") || check_buffer(&v[3], sizeof(int32_t), 2 * s, "col_band") ||
            check_buffer(&v[4], sizeof(double), depth * s * s, "out") || check_bands(v[1].buf, s, h) ||
            check_bands(v[3].buf, s, w))
            goto done;
        tg[k] = (Target){s, v[0].buf, v[1].buf, v[2].buf, v[3].buf, v[4].buf};
        if (s > largest) largest = s;
    }
    work = PyMem_Malloc(sizeof(double) * w * depth * (h + largest));
    if (!work) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *pixels = image.buf;
    Py_BEGIN_ALLOW_THREADS
    uint8_t lo = pixels[0], hi = pixels[0];
    for (Py_ssize_t i = 0; i < h * w * depth; i++) {
        lo = pixels[i] < lo ? pixels[i] : lo;
        hi = pixels[i] > hi ? pixels[i] : hi;
        work[i] = pixels[i];
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (lo == hi) { /* skimage clips to the input's range; only a flat image can drift from it */
            const double value = (double)lo / 255.0;
            for (Py_ssize_t i = 0; i < depth * tg[k].size * tg[k].size; i++) tg[k].out[i] = value;
            continue;
        }
#if HAVE_FMA_DISPATCH
        if (fma) resize_fma(work, h, w, depth, &tg[k], work + h * w * depth);
        else
#endif
            resize_plain(work, h, w, depth, &tg[k], work + h * w * depth);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    for (Py_ssize_t i = 0; i < opened; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(tg);
    PyMem_Free(work);
    PyBuffer_Release(&image);
    return result;
}

/* ---------------------------------------------------------------------- histogram equalization */

#define NBINS 256

/* Closer than this (in bin units) to a bin edge or a bin centre, a value's side is decided by
 * comparing it with the edge or centre itself, as numpy does; elsewhere its fractional bin
 * position decides, which is the same (position errors are orders of magnitude smaller). */
#define EDGE_BAND 1e-6

/* skimage.exposure.equalize_hist of one image (256 bins): np.histogram's bins, np.interp. */
static CLONES void equalize_one(const double *v, double *out, Py_ssize_t npix, int32_t *bins) {
    double lo4[4] = {v[0], v[0], v[0], v[0]}, hi4[4] = {v[0], v[0], v[0], v[0]};
    Py_ssize_t i = 0;
    for (; i + 4 <= npix; i += 4)
        for (int t = 0; t < 4; t++) {
            lo4[t] = v[i + t] < lo4[t] ? v[i + t] : lo4[t];
            hi4[t] = v[i + t] > hi4[t] ? v[i + t] : hi4[t];
        }
    for (; i < npix; i++) {
        lo4[0] = v[i] < lo4[0] ? v[i] : lo4[0];
        hi4[0] = v[i] > hi4[0] ? v[i] : hi4[0];
    }
    double lo = lo4[0], hi = hi4[0];
    for (int t = 1; t < 4; t++) {
        lo = lo4[t] < lo ? lo4[t] : lo;
        hi = hi4[t] > hi ? hi4[t] : hi;
    }
    if (lo == hi) {
        lo -= 0.5;
        hi += 0.5;
    }
    /* np.linspace(lo, hi, 257), as np.histogram makes its edges */
    double edges[NBINS + 1];
    const double step = (hi - lo) / NBINS;
    for (int k = 0; k < NBINS; k++) edges[k] = (double)k * step + lo;
    edges[NBINS] = hi;
    double centers[NBINS];
    for (int k = 0; k < NBINS; k++) centers[k] = (edges[k] + edges[k + 1]) / 2.0;
    /* the bin: the one whose edges hold the value (np.histogram; hi is in the last bin); bins[i]
     * also records the side of the bin centre: 2 * bin + (value >= centre) */
    const double norm = NBINS / (hi - lo);
    int64_t hist[NBINS] = {0};
    for (i = 0; i < npix; i++) {
        const double x = v[i], f = (x - lo) * norm;
        int k = (int)f;
        k = k > NBINS - 1 ? NBINS - 1 : (k < 0 ? 0 : k);
        const double frac = f - k;
        int upper = frac > 0.5;  /* no branch on it: it is a coin toss */
        const int near = (frac <= EDGE_BAND) | (frac >= 1.0 - EDGE_BAND) | (fabs(frac - 0.5) <= EDGE_BAND);
        if (near) {  /* rare */
            k -= (x < edges[k]) & (k > 0);
            k += (x >= edges[k + 1]) & (k != NBINS - 1);
            upper = x >= centers[k];
        }
        bins[i] = 2 * k + upper;
        hist[k]++;
    }
    /* np.interp(x, centers, cdf) reads, for x with centers[j] <= x < centers[j + 1],
     * slope[j] * (x - centers[j]) + cdf[j]; x's bin is j or j + 1. The table is indexed by
     * j + 1: entry 0 (left of the first centre) and entry 256 (from the last centre on) have
     * slope 0, which gives cdf[0] and cdf[255] exactly, as np.interp does. */
    struct { double x0, slope, y0; } table[NBINS + 1];
    double cdf[NBINS];
    int64_t running = 0;
    for (int k = 0; k < NBINS; k++) {
        running += hist[k];
        cdf[k] = (double)running;
    }
    const double total = cdf[NBINS - 1];
    for (int k = 0; k < NBINS; k++) cdf[k] = cdf[k] / total;
    table[0].x0 = centers[0];
    table[0].slope = 0.0;
    table[0].y0 = cdf[0];
    for (int j = 0; j < NBINS; j++) {
        table[j + 1].x0 = centers[j];
        table[j + 1].y0 = cdf[j];
        table[j + 1].slope = j < NBINS - 1 ? (cdf[j + 1] - cdf[j]) / (centers[j + 1] - centers[j]) : 0.0;
    }
    for (i = 0; i < npix; i++) {
        const int j1 = (bins[i] >> 1) + (bins[i] & 1);
        out[i] = table[j1].slope * (v[i] - table[j1].x0) + table[j1].y0;
    }
}

/* equalize_hist(images, out, n, npix): both (n, npix) float64, C order */
static PyObject *kernels_equalize_hist(PyObject *self, PyObject *args) {
    Py_buffer src = {0}, dst = {0};
    Py_ssize_t n, npix;
    if (!PyArg_ParseTuple(args, "y*w*nn", &src, &dst, &n, &npix)) return NULL;
    PyObject *result = NULL;
    int32_t *bins = NULL;
    if (n < 0 || npix < 1 || check_buffer(&src, sizeof(double), n * npix, "images") ||
        check_buffer(&dst, sizeof(double), n * npix, "out"))
        goto done;
    bins = PyMem_Malloc(sizeof(int32_t) * npix);
    if (!bins) {
        PyErr_NoMemory();
        goto done;
    }
    const double *images = src.buf;
    double *out = dst.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n; r++) equalize_one(images + r * npix, out + r * npix, npix, bins);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(bins);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

/* ------------------------------------------------------------------------------------- modes */

/* round(255 * value) to the nearest integer, ties to even (np.rint), for 0 <= 255 * value < 2**51:
 * adding and subtracting 2**52 rounds in the FPU's default mode, without a libm call */
static inline uint8_t to_u8(double value) {
    const double scaled = value * 255.0, big = 4503599627370496.0;
    return (uint8_t)((scaled > 0.0 ? scaled : 0.0) + big - big);
}

/* The modes of n planar images; work: room for 2 * npix doubles, bins for npix bin numbers. */
static CLONES void modes_batch(const double *all, Py_ssize_t n, Py_ssize_t npix, uint8_t *rgb, uint8_t *he,
                               uint8_t *gray, double *work, int32_t *bins) {
    for (Py_ssize_t img = 0; img < n; img++) {
        const double *r = all + img * 3 * npix, *g = r + npix, *b = g + npix;
        if (rgb) {
            uint8_t *dst = rgb + img * 3 * npix;
            for (Py_ssize_t i = 0; i < npix; i++) {
                dst[3 * i] = to_u8(r[i]);
                dst[3 * i + 1] = to_u8(g[i]);
                dst[3 * i + 2] = to_u8(b[i]);
            }
        }
        if (gray) {
            uint8_t *dst = gray + img * npix;
            for (Py_ssize_t i = 0; i < npix; i++) dst[i] = to_u8(r[i] * 0.2125 + g[i] * 0.7154 + b[i] * 0.0721);
        }
        if (he) {
            double *v = work, *v_eq = work + npix;
            for (Py_ssize_t i = 0; i < npix; i++) {
                const double m = r[i] > g[i] ? r[i] : g[i];
                v[i] = m > b[i] ? m : b[i];
            }
            equalize_one(v, v_eq, npix, bins);
            uint8_t *dst = he + img * 3 * npix;
            for (Py_ssize_t i = 0; i < npix; i++) {
                if (v[i] > 0) {
                    const double scale = v_eq[i] / v[i];
                    dst[3 * i] = to_u8(r[i] * scale);
                    dst[3 * i + 1] = to_u8(g[i] * scale);
                    dst[3 * i + 2] = to_u8(b[i] * scale);
                } else { /* black: the equalized grey */
                    dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = to_u8(v_eq[i]);
                }
            }
        }
    }
}

/* store_modes(planes, n, s, rgb, rgb_he, gray): planes float64 (n, 3, s, s) in [0, 1]; each
 * output a writable uint8 (n, s, s, 3) / (n, s, s, 3) / (n, s, s) buffer, or None to skip it.
 * The same operations as enhance.apply_modes (to_uint8, rgb_equalize_value_batch, to_gray). */
static PyObject *kernels_store_modes(PyObject *self, PyObject *args) {
    Py_buffer planes = {0}, outs[3] = {{0}};
    PyObject *objs[3];
    Py_ssize_t n, s;
    if (!PyArg_ParseTuple(args, "y*nnOOO", &planes, &n, &s, &objs[0], &objs[1], &objs[2])) return NULL;
    PyObject *result = NULL;
    double *work = NULL;
    int32_t *bins = NULL;
    int opened[3] = {0, 0, 0};
    const Py_ssize_t npix = s * s;
    if (n < 0 || s < 1 || check_buffer(&planes, sizeof(double), n * 3 * npix, "planes")) goto done;
    const Py_ssize_t channels[3] = {3, 3, 1};
    for (int m = 0; m < 3; m++) {
        if (objs[m] == Py_None) continue;
        if (PyObject_GetBuffer(objs[m], &outs[m], PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) goto done;
        opened[m] = 1;
        if (check_buffer(&outs[m], 1, n * npix * channels[m], "out")) goto done;
    }
    work = PyMem_Malloc(sizeof(double) * 2 * npix);
    bins = PyMem_Malloc(sizeof(int32_t) * npix);
    if (!work || !bins) {
        PyErr_NoMemory();
        goto done;
    }
    const double *all = planes.buf;
    uint8_t *rgb = opened[0] ? outs[0].buf : NULL, *he = opened[1] ? outs[1].buf : NULL;
    uint8_t *gray = opened[2] ? outs[2].buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    modes_batch(all, n, npix, rgb, he, gray, work, bins);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    for (int m = 0; m < 3; m++)
        if (opened[m]) PyBuffer_Release(&outs[m]);
    PyMem_Free(work);
    PyMem_Free(bins);
    PyBuffer_Release(&planes);
    return result;
}

static PyObject *kernels_has_fma(PyObject *self, PyObject *noargs) {
#if HAVE_FMA_DISPATCH
    __builtin_cpu_init();
    return PyBool_FromLong(__builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2"));
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef kernels_methods[] = {
    {"resize", kernels_resize, METH_VARARGS, "Banded resize products (see gtsrb_kit.enhance.resize_planes)."},
    {"equalize_hist", kernels_equalize_hist, METH_VARARGS, "Histogram equalization of each row (see enhance.equalize_hist_batch)."},
    {"store_modes", kernels_store_modes, METH_VARARGS, "RGB, RGB-HE and L of a planar batch as uint8 (see gtsrb_kit.enhance.apply_modes)."},
    {"has_fma", kernels_has_fma, METH_NOARGS, "Whether this CPU has AVX2 and fused multiply-add instructions."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernels_module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, kernels_methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&kernels_module); }
