#include "dptrain/winograd.h"

#include "dptrain/tensor.h"

#include <stdint.h>
#include <string.h>

/* The transformed tiles of about this many bytes (inputs and outputs together) at a time: they
 * stay in L2 between the transforms and the GEMMs. The GEMMs run as fast on 2 images' tiles as
 * on 32 (measured: 102-107 GFLOP/s for 64 x 32 x 98..1568 products, sgemm peak 115). */
enum { CHUNK_BYTES = 1024 * 1024, TILE = 4, TILE_VALUES = TILE * TILE, LANES = 8,
       MAX_TILES = WINOGRAD_MAX_SIDE / 2 };

struct tiling {
    int rows, columns;                  /* 2×2 output blocks (the last cropped when odd) */
    int stride;                         /* a row of tiles, padded to whole vectors */
    int per_image, images;              /* tiles per image (padded); images per chunk */
};

static struct tiling tiling_of(const struct winograd_shape *s, int batch)
{
    struct tiling t = {(s->height + 1) / 2, (s->width + 1) / 2, 0, 0, 0};
    t.stride = (t.columns + LANES - 1) / LANES * LANES;
    t.per_image = t.rows * t.stride;
    size_t per_image = (size_t)TILE_VALUES * (s->channels_in + s->channels_out) * t.per_image * sizeof(float);
    t.images = (int)(CHUNK_BYTES / per_image);
    if (t.images < 1)
        t.images = 1;
    if (batch > 0 && t.images > batch)
        t.images = batch;
    return t;
}

double winograd_tile_use(const struct winograd_shape *s)
{
    struct tiling t = tiling_of(s, 0);
    return (double)t.columns / t.stride;
}

size_t winograd_workspace_floats(const struct winograd_shape *s)
{
    struct tiling t = tiling_of(s, 0);
    size_t tiles = (size_t)t.images * t.per_image;
    return (size_t)TILE_VALUES * s->channels_in * s->channels_out +
           (size_t)TILE_VALUES * (s->channels_in + s->channels_out) * tiles;
}

/* u = G g Gᵀ for one 3×3 filter g (rows of 3), into u[ξ·stride], ξ = 4·row + column. */
static void filter_tile(const float g[9], float *u, size_t stride)
{
    float t[TILE][3];
    for (int c = 0; c < 3; c++) {
        t[0][c] = g[c];
        t[1][c] = 0.5f * (g[c] + g[3 + c] + g[6 + c]);
        t[2][c] = 0.5f * (g[c] - g[3 + c] + g[6 + c]);
        t[3][c] = g[6 + c];
    }
    for (int r = 0; r < TILE; r++) {
        u[(size_t)(4 * r) * stride] = t[r][0];
        u[(size_t)(4 * r + 1) * stride] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
        u[(size_t)(4 * r + 2) * stride] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
        u[(size_t)(4 * r + 3) * stride] = t[r][2];
    }
}

void winograd_filters(const float *w, float *u, const struct winograd_shape *s, int for_input_gradient)
{
    int in = s->channels_in, out = s->channels_out;
    size_t stride = (size_t)in * out;
    for (int co = 0; co < out; co++)
        for (int ci = 0; ci < in; ci++) {
            const float *g = w + ((size_t)co * in + ci) * 9;
            if (!for_input_gradient) {
                filter_tile(g, u + (size_t)co * in + ci, stride);
                continue;
            }
            float rotated[9];
            for (int k = 0; k < 9; k++)
                rotated[k] = g[8 - k];
            filter_tile(rotated, u + (size_t)ci * out + co, stride); /* u[ξ][ci][co]: ci is the output */
        }
}

/* The transforms work on eight tiles of a row at once in one vector register (GCC's vector
 * extension): each image's row of tiles is padded to a multiple of eight (tiles past the edge are
 * zeros, and their products are computed and dropped: 8/7 of the GEMMs' work at 14 columns). With
 * loops over the 7 tiles of a row, the transforms cost more than the products they saved (perf). */
typedef float lanes __attribute__((vector_size(LANES * sizeof(float))));

static inline lanes load_lanes(const float *p)
{
    lanes v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store_lanes(float *p, lanes v)
{
    memcpy(p, &v, sizeof v);
}

/* One plane of a tensor, and the tensor's bounds: whole-vector reads may run past the plane's
 * rows but not past the tensor. */
struct source {
    const float *plane, *begin, *end;
};

/* Which image row to split, at which column offset in the zero-padded row, into how many groups. */
struct row_at {
    int y, offset, groups;
};

/* Image row y (zeros when outside the image), shifted right by offset columns into a zero-padded
 * row, split into its even and odd columns: groups·LANES of each. The row is read straight from
 * the tensor in whole vectors, the columns outside the image masked to zero; only where those
 * reads would leave the tensor is it copied into a zeroed buffer first (a copy per row, and the
 * stalled loads after it, took 15% of a CNN step). */
static void split_row(const struct source *src, const struct winograd_shape *s, struct row_at at, float *even,
                      float *odd)
{
    typedef int32_t lane_index __attribute__((vector_size(LANES * sizeof(int32_t))));
    const lane_index iota = {0, 1, 2, 3, 4, 5, 6, 7};
    long first = (long)at.y * s->width - at.offset, padded = 2L * LANES * at.groups;
    if (at.y < 0 || at.y >= s->height) {
        memset(even, 0, (size_t)(LANES * at.groups) * sizeof(float));
        memset(odd, 0, (size_t)(LANES * at.groups) * sizeof(float));
        return;
    }
    float copy[2 * (MAX_TILES + LANES)];
    long start = (long)(src->plane - src->begin) + first; /* where the reads start in the tensor */
    const float *row = copy;
    if (start >= 0 && start + padded <= (long)(src->end - src->begin))
        row = src->begin + start;
    else {
        memset(copy, 0, sizeof copy);
        memcpy(copy + at.offset, src->plane + (size_t)at.y * s->width, (size_t)s->width * sizeof(float));
    }
    for (int g = 0; g < at.groups; g++) {
        lane_index column = iota + (2 * LANES * g - at.offset), next = column + LANES;
        lanes lo = load_lanes(row + 2 * LANES * g), hi = load_lanes(row + 2 * LANES * g + LANES);
        lo = (lanes)((lane_index)lo & ((column >= 0) & (column < s->width)));
        hi = (lanes)((lane_index)hi & ((next >= 0) & (next < s->width)));
        store_lanes(even + LANES * g, __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14));
        store_lanes(odd + LANES * g, __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15));
    }
}

/* One input plane's tiles: v[ξ][t] = Bᵀ d B of each 4×4 tile d, whose rows are the image rows
 * 2·ty − 1 .. 2·ty + 2 and columns 2·tx − 1 .. 2·tx + 2 (zeros outside), t = ty·stride + tx.
 * Each padded row (column j = image column j − 1) is split into its even and odd columns, so that
 * Bᵀ on the rows and then on each tile's columns are whole-vector operations. */
static void input_tiles(const struct source *src, const struct winograd_shape *s, const struct tiling *t, float *v,
                        size_t stride)
{
    int groups = t->stride / LANES + 1, padded_rows = 2 * t->rows + 2;
    float even[2 * MAX_TILES + 2][MAX_TILES + LANES], odd[2 * MAX_TILES + 2][MAX_TILES + LANES];
    for (int r = 0; r < padded_rows; r++)
        split_row(src, s, (struct row_at){r - 1, 1, groups}, even[r], odd[r]);
    for (int ty = 0; ty < t->rows; ty++) {
        float re[TILE][MAX_TILES + LANES], ro[TILE][MAX_TILES + LANES];
        const float(*e)[MAX_TILES + LANES] = even + 2 * ty, (*o)[MAX_TILES + LANES] = odd + 2 * ty;
        for (int g = 0; g < groups; g++) {
            int k = LANES * g;
            lanes e0 = load_lanes(e[0] + k), e1 = load_lanes(e[1] + k), e2 = load_lanes(e[2] + k), e3 = load_lanes(e[3] + k);
            lanes o0 = load_lanes(o[0] + k), o1 = load_lanes(o[1] + k), o2 = load_lanes(o[2] + k), o3 = load_lanes(o[3] + k);
            store_lanes(re[0] + k, e0 - e2), store_lanes(ro[0] + k, o0 - o2);
            store_lanes(re[1] + k, e1 + e2), store_lanes(ro[1] + k, o1 + o2);
            store_lanes(re[2] + k, e2 - e1), store_lanes(ro[2] + k, o2 - o1);
            store_lanes(re[3] + k, e1 - e3), store_lanes(ro[3] + k, o1 - o3);
        }
        for (int a = 0; a < TILE; a++)
            for (int k = 0; k < t->stride; k += LANES) {   /* tile tx: padded columns 2tx .. 2tx + 3 */
                /* the next column's values by a shuffle, not an unaligned load of what was just
                 * stored (the load would wait for the stores to drain) */
                lanes left = load_lanes(re[a] + k), left_odd = load_lanes(ro[a] + k);
                lanes after = load_lanes(re[a] + k + LANES), after_odd = load_lanes(ro[a] + k + LANES);
                lanes right = __builtin_shufflevector(left, after, 1, 2, 3, 4, 5, 6, 7, 8);
                lanes right_odd = __builtin_shufflevector(left_odd, after_odd, 1, 2, 3, 4, 5, 6, 7, 8);
                float *out = v + (size_t)(4 * a) * stride + (size_t)ty * t->stride + k;
                store_lanes(out, left - right);
                store_lanes(out + stride, left_odd + right);
                store_lanes(out + 2 * stride, right - left_odd);
                store_lanes(out + 3 * stride, left_odd - right_odd);
            }
    }
}

/* One output plane from its tiles' 16 products m[ξ][t]: the 2×2 block Aᵀ m A of eight tiles at a
 * time, interleaved into two image rows and cropped at the image's edge. */
static void output_tiles(const float *m, size_t stride, const struct winograd_shape *s, const struct tiling *t,
                         float *plane)
{
    for (int ty = 0; ty < t->rows; ty++) {
        float rows[2][2 * (MAX_TILES + LANES)];
        for (int k = 0; k < t->stride; k += LANES) {
            const float *at = m + (size_t)ty * t->stride + k;
            lanes sum[TILE], difference[TILE];
            for (int b = 0; b < TILE; b++) {
                lanes m0 = load_lanes(at + (size_t)b * stride), m1 = load_lanes(at + (size_t)(4 + b) * stride);
                lanes m2 = load_lanes(at + (size_t)(8 + b) * stride), m3 = load_lanes(at + (size_t)(12 + b) * stride);
                sum[b] = m0 + m1 + m2;
                difference[b] = m1 - m2 - m3;
            }
            lanes top_left = sum[0] + sum[1] + sum[2], top_right = sum[1] - sum[2] - sum[3];
            lanes bottom_left = difference[0] + difference[1] + difference[2];
            lanes bottom_right = difference[1] - difference[2] - difference[3];
            store_lanes(rows[0] + 2 * k, __builtin_shufflevector(top_left, top_right, 0, 8, 1, 9, 2, 10, 3, 11));
            store_lanes(rows[0] + 2 * k + LANES, __builtin_shufflevector(top_left, top_right, 4, 12, 5, 13, 6, 14, 7, 15));
            store_lanes(rows[1] + 2 * k, __builtin_shufflevector(bottom_left, bottom_right, 0, 8, 1, 9, 2, 10, 3, 11));
            store_lanes(rows[1] + 2 * k + LANES, __builtin_shufflevector(bottom_left, bottom_right, 4, 12, 5, 13, 6, 14, 7, 15));
        }
        for (int i = 0; i < 2 && 2 * ty + i < s->height; i++)
            memcpy(plane + (size_t)(2 * ty + i) * s->width, rows[i], (size_t)s->width * sizeof(float));
    }
}

/* One output-gradient plane's tiles: dm[ξ][t] = A dY Aᵀ of each tile's 2×2 block dY (zeros past
 * the image's edge), the gradient of the tile's 16 products. */
static void gradient_tiles(const struct source *src, const struct winograd_shape *s, const struct tiling *t, float *dm,
                           size_t stride)
{
    int groups = t->stride / LANES;
    for (int ty = 0; ty < t->rows; ty++) {
        float even[2][MAX_TILES + LANES], odd[2][MAX_TILES + LANES];
        for (int i = 0; i < 2; i++)
            split_row(src, s, (struct row_at){2 * ty + i, 0, groups}, even[i], odd[i]);
        for (int k = 0; k < t->stride; k += LANES) {
            lanes top[2] = {load_lanes(even[0] + k), load_lanes(odd[0] + k)};
            lanes bottom[2] = {load_lanes(even[1] + k), load_lanes(odd[1] + k)};
            lanes rows[TILE][2];                        /* A dY: 4 rows of 2 */
            for (int j = 0; j < 2; j++) {
                rows[0][j] = top[j];
                rows[1][j] = top[j] + bottom[j];
                rows[2][j] = top[j] - bottom[j];
                rows[3][j] = -bottom[j];
            }
            float *out = dm + (size_t)ty * t->stride + k;
            for (int a = 0; a < TILE; a++) {            /* (A dY) Aᵀ */
                store_lanes(out + (size_t)(4 * a) * stride, rows[a][0]);
                store_lanes(out + (size_t)(4 * a + 1) * stride, rows[a][0] + rows[a][1]);
                store_lanes(out + (size_t)(4 * a + 2) * stride, rows[a][0] - rows[a][1]);
                store_lanes(out + (size_t)(4 * a + 3) * stride, -rows[a][1]);
            }
        }
    }
}

/* dw = Gᵀ du G for one filter: the 3×3 gradient from the 4×4 gradient of its transform
 * (du[ξ·stride], ξ = 4·row + column). */
static void filter_gradient_tile(const float *du, size_t stride, float dw[9])
{
    float t[3][TILE];
    for (int b = 0; b < TILE; b++) {
        float d0 = du[(size_t)b * stride], d1 = du[(size_t)(4 + b) * stride];
        float d2 = du[(size_t)(8 + b) * stride], d3 = du[(size_t)(12 + b) * stride];
        t[0][b] = d0 + 0.5f * (d1 + d2);
        t[1][b] = 0.5f * (d1 - d2);
        t[2][b] = 0.5f * (d1 + d2) + d3;
    }
    for (int r = 0; r < 3; r++) {
        dw[3 * r] = t[r][0] + 0.5f * (t[r][1] + t[r][2]);
        dw[3 * r + 1] = 0.5f * (t[r][1] - t[r][2]);
        dw[3 * r + 2] = 0.5f * (t[r][1] + t[r][2]) + t[r][3];
    }
}

/* The images first .. first + images − 1 of a batch: one chunk. */
struct chunk {
    const struct winograd_shape *s;
    const struct tiling *t;
    int batch, first, images;
};

/* A tensor [channels][batch][H][W] and the transform that makes its tiles. */
struct planes {
    const float *tensor;
    int channels;
    void (*tiles)(const struct source *, const struct winograd_shape *, const struct tiling *, float *, size_t);
};

/* The tiles of every plane of the chunk's images into out[ξ][channel][t]. */
static void tile_planes(const struct chunk *c, const struct planes *p, float *out)
{
    size_t plane = (size_t)c->s->height * c->s->width, tiles = (size_t)c->images * c->t->per_image;
    const float *end = p->tensor + (size_t)p->channels * c->batch * plane;
    for (int channel = 0; channel < p->channels; channel++)
        for (int n = 0; n < c->images; n++) {
            const float *at = p->tensor + ((size_t)channel * c->batch + c->first + n) * plane;
            p->tiles(&(struct source){at, p->tensor, end}, c->s, c->t,
                     out + (size_t)channel * tiles + (size_t)n * c->t->per_image, (size_t)p->channels * tiles);
        }
}

void winograd_filter_gradient(const struct winograd_shape *s, int batch, const float *in, const float *dy,
                              float *dw, float *work)
{
    struct tiling t = tiling_of(s, batch);
    int cin = s->channels_in, cout = s->channels_out;
    size_t chunk_tiles = (size_t)t.images * t.per_image;
    float *du = work, *v = work + (size_t)TILE_VALUES * cin * cout;
    float *dm = v + (size_t)TILE_VALUES * cin * chunk_tiles;
    for (int first = 0; first < batch; first += t.images) {
        int images = batch - first < t.images ? batch - first : t.images;
        int tiles = images * t.per_image;
        size_t v_stride = (size_t)cin * tiles, m_stride = (size_t)cout * tiles;
        struct chunk chunk = {s, &t, batch, first, images};
        tile_planes(&chunk, &(struct planes){in, cin, input_tiles}, v);
        tile_planes(&chunk, &(struct planes){dy, cout, gradient_tiles}, dm);
        /* du[ξ] (+)= dm[ξ] · v[ξ]ᵀ: summed over the tiles of every chunk */
        for (int xi = 0; xi < TILE_VALUES; xi++)
            tensor_gemm(&(struct gemm){0, 1, cout, cin, tiles, 1.0f, dm + (size_t)xi * m_stride, tiles,
                                       v + (size_t)xi * v_stride, tiles, first == 0 ? 0.0f : 1.0f,
                                       du + (size_t)xi * cin * cout, cin});
    }
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            filter_gradient_tile(du + (size_t)co * cin + ci, (size_t)cin * cout, dw + ((size_t)co * cin + ci) * 9);
}

void winograd_convolve(const struct winograd_shape *s, int batch, const float *in, float *out, float *work)
{
    struct tiling t = tiling_of(s, batch);
    int cin = s->channels_in, cout = s->channels_out;
    size_t plane = (size_t)s->height * s->width, chunk_tiles = (size_t)t.images * t.per_image;
    const float *u = work;
    float *v = work + (size_t)TILE_VALUES * cin * cout;
    float *m = v + (size_t)TILE_VALUES * cin * chunk_tiles;
    for (int first = 0; first < batch; first += t.images) {
        int images = batch - first < t.images ? batch - first : t.images;
        int tiles = images * t.per_image;                /* this chunk's: the GEMMs' width */
        size_t v_stride = (size_t)cin * tiles, m_stride = (size_t)cout * tiles;
        tile_planes(&(struct chunk){s, &t, batch, first, images}, &(struct planes){in, cin, input_tiles}, v);
        for (int xi = 0; xi < TILE_VALUES; xi++)
            tensor_gemm(&(struct gemm){0, 0, cout, tiles, cin, 1.0f, u + (size_t)xi * cin * cout, cin,
                                       v + (size_t)xi * v_stride, tiles, 0.0f, m + (size_t)xi * m_stride, tiles});
        for (int co = 0; co < cout; co++)
            for (int n = 0; n < images; n++)
                output_tiles(m + (size_t)co * tiles + (size_t)n * t.per_image, m_stride, s, &t,
                             out + ((size_t)co * batch + first + n) * plane);
    }
}
