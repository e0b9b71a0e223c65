// Per-instruction-set kernels, chosen once at run time (see dispatch.cpp).
#pragma once

#include <cstdint>

namespace lstmcpp {

// A codebook matrix as the kernels read it (weights/codebook.h): row n's weight k is
// books[(n / rows_per_book) * book_size + index(n, k)], its row of indices at indices + n * ld, in
// blocks of 32 weights (zero indices past K). bits 8: the block's 32 bytes, one index each.
// bits 4: the block's 16 bytes, byte j holding weight j's index in its low nibble and weight
// 16 + j's in its high one, so 16 bytes widened to 16 lanes give the first 16 indices in the
// lanes' low 4 bits and, shifted right by 4, the next 16.
struct CodebookView {
    const uint8_t* indices;
    int64_t ld;
    int bits;             // 4 or 8
    const float* books;
    int64_t rows_per_book;
    int64_t book_size;    // 16 or 256

    // weight k's index in the row of indices that starts at row
    int index(const uint8_t* row, int64_t k) const {
        return bits == 4 ? (row[(k >> 5) * 16 + (k & 15)] >> ((k & 16) >> 2)) & 15 : row[k];
    }
};

// An int8 matrix as the kernels read it (weights/int8.h): rows in blocks of 16, each block's K
// values in groups of 4, so one 64-byte vector holds 4 consecutive weights of 16 rows; and blocks
// in superblocks of 8, whose vectors for one group lie side by side (512 bytes), so a stream's
// step reading 8 blocks at once reads one run of memory, not 8 (15% faster from L2 on Zen 4).
// Block b's vector of group g is at block(b) + g * kGroupStride; weight (n, k) is byte
// (n % 16) * 4 + k % 4 of block(n / 16)'s vector k / 4. Every row from N to the next multiple of
// 128 and every k from K to 4 * groups, and on to the next multiple of 64 (an AMX tile's 16
// groups, in the padding of ld), is zero. row_sums[n] is the sum of row n's weights and
// scales[n] its scale (both padded with zeros to a multiple of 16 rows). has_min: some weight is
// -128, whose negation int8 cannot hold (the AVX2 kernel then multiplies another way).
struct Int8View {
    static constexpr int64_t kBlocksPerSuper = 8;
    static constexpr int64_t kGroupStride = 64 * kBlocksPerSuper;
    const int8_t* data;
    const int32_t* row_sums;
    const float* scales;
    int64_t groups;  // ceil(K / 4)
    int64_t ld;      // the bytes of one block: 64 a group, the groups padded with zeros to a multiple of 16
    bool has_min = false;

    const int8_t* block(int64_t b) const {
        return data + (b / kBlocksPerSuper) * (kBlocksPerSuper * ld) + (b % kBlocksPerSuper) * 64;
    }
};

// An int8 kernel's results for rows row0 .. row0 + lanes of one row of C (C's column 0 is row
// first_row), kept only for rows begin .. end (the edge of a thread's range inside a block).
inline void store_int8_rows(float* C, const float* lanes, int64_t row0, int64_t begin, int64_t end, int64_t first_row,
                            float beta) {
    for (int64_t r = begin; r < end; ++r) {
        float& c = C[r - first_row];
        c = beta != 0.0f ? c + lanes[r - row0] : lanes[r - row0];
    }
}

// gates_forward / gates_backward: the fused elementwise work of one batch row at one step, for hidden units j in [j0, j1).
// Gate rows are laid out (4H) as i, f, g, o; peephole (3,H) rows i, f, o (zeros when unused);
// cell_clip is +inf when unused. All pointers are to the row's first element (j = 0).
template <class T>
struct Kernels {
    const char* name;
    // What runs for each weight format, in words (info() reports them).
    const char* int8_products;
    const char* bf16_products;
    const char* codebook_products;
    // gates (4H): pre-activations in, activated i,f,g,o out. c (H): new cell state.
    // m (H): o*tanh(c). c_prev (H): cell state entering the step.
    void (*gates_forward)(T* gates, T* c, T* m, const T* c_prev, const T* peephole,
                          int64_t H, int64_t j0, int64_t j1, T cell_clip);
    // dz (4H): gradient of the pre-activations. dc_prev (H): gradient into the previous cell.
    // dm (H): gradient of m = o*tanh(c). dc (H): gradient of c arriving from the next step.
    void (*gates_backward)(T* dz, T* dc_prev, const T* gates, const T* c_prev, const T* c,
                           const T* dm, const T* dc, const T* peephole,
                           int64_t H, int64_t j0, int64_t j1, T cell_clip);
    // The per-step products of a small batch (M rows), beta 0 or 1:
    // C (M,N) = beta*C + A (M,K) W (N,K)^T: rows of W dotted with rows of A (forward).
    void (*gemm_nt)(T* C, int64_t ldc, const T* A, int64_t lda, const T* W, int64_t ldw,
                    int64_t M, int64_t N, int64_t K, T beta);
    // C (M,N) = beta*C + A (M,K) W (K,N): rows of W scaled and summed (backward).
    void (*gemm_nn)(T* C, int64_t ldc, const T* A, int64_t lda, const T* W, int64_t ldw,
                    int64_t M, int64_t N, int64_t K, T beta);
    // The per-step products of a batch worth packing for: C (M,N) = beta*C + A (M,K) B (K,N),
    // with B packed once per call (pack_rows below, or weights/dense.h's pack_columns) into blocks
    // of panel_width columns.
    int64_t panel_width;
    void (*gemm_packed)(T* C, int64_t ldc, const T* A, int64_t lda, const T* B_packed,
                        int64_t M, int64_t N, int64_t K, T beta);
    // Packs rows [0, N) of W (N,K) (row stride ldw) as the columns of B = W^T for gemm_packed:
    // block n of panel_width columns holds K rows of panel_width values, W(n*width + r, k) at
    // [(n*K + k)*width + r], zero past row N; ceil(N / width) * width * K values. (Forward's
    // products pack so: a transpose, done in registers where the vectors allow.)
    void (*pack_rows)(T* packed, const T* W, int64_t ldw, int64_t K, int64_t N);
    // The int8 weight format (weights/int8.h), float32 only (null in the float64 table):
    // quantize_rows: row m of a (M,K) becomes q[m, k] = round(a[m, k] * 127 / max|a[m, :]|) in
    // [-127, 127] (round half to even), stored as the byte q + 128, then 128 (q = 0) from K to the
    // next multiple of 16; scale[m] = max|a[m, :]| / 127 (NaN when a row holds NaN or Inf: its q
    // are all 0, so the output is NaN too).
    void (*quantize_rows)(uint8_t* q, int64_t ldq, float* scale, const float* a, int64_t lda, int64_t M,
                          int64_t K);
    // C (M,N) = beta*C + (q (M,K) W[first_row ..+N]^T) * a_scale[m] * w_scale[n]: the bytes of
    // quantize_rows (q + 128, read up to 4 * W.groups) times int8 weights, summed exactly in int32
    // (sum (q + 128) w - 128 * row_sum: the zero-point correction), then scaled.
    void (*gemm_nt_s8)(float* C, int64_t ldc, const uint8_t* A, int64_t lda, const float* a_scale,
                       const Int8View& W, int64_t first_row, int64_t M, int64_t N, float beta);
    // The bf16 weight format (weights/bf16.h), float32 only: C (M,N) = beta*C + A (M,K) W (N,K)^T
    // with W's bfloat16 values widened to float32 (exactly) and every product and sum in float32.
    void (*gemm_nt_bf16)(float* C, int64_t ldc, const float* A, int64_t lda, const uint16_t* W, int64_t ldw,
                         int64_t M, int64_t N, int64_t K, float beta);
    // The codebook weight formats: C (M,N) = beta*C + A (M,K) W (N,K)^T for rows first_row ..
    // first_row + N of a codebook matrix, decoded as they are read; all arithmetic float32.
    void (*gemm_nt_codebook)(float* C, int64_t ldc, const float* A, int64_t lda, const CodebookView& W,
                             int64_t first_row, int64_t M, int64_t N, int64_t K, float beta);
    // Elementwise sigmoid and tanh over n values (exposed so their error can be measured), and
    // exp (for the softmax of the training loss). y may be x.
    void (*sigmoid)(T* y, const T* x, int64_t n);
    void (*tanh)(T* y, const T* x, int64_t n);
    void (*exp)(T* y, const T* x, int64_t n);
    // out (N,K), row stride ldo = rows first_row .. first_row + N of a codebook matrix as float32
    // (the product of many rows decodes once, then runs the BLAS); float32 only.
    void (*decode_codebook)(float* out, int64_t ldo, const CodebookView& W, int64_t first_row, int64_t N, int64_t K);
};

// float32: the best kernels the CPU supports, or the ones forced by LSTMCPP_ISA / set_isa().
const Kernels<float>& kernels_f32();
// float64: exact library exp/tanh, portable code (the gradient-check and reference path).
const Kernels<double>& kernels_f64();

template <class T>
inline const Kernels<T>& kernels();
template <>
inline const Kernels<float>& kernels<float>() { return kernels_f32(); }
template <>
inline const Kernels<double>& kernels<double>() { return kernels_f64(); }

// "portable", "avx2", "avx512" or "avx512_amx" (avx512's, with AMX's int8 products): the float32 kernels in use.
const char* isa_in_use();
// Every name above, from the plainest to the widest, then nullptr.
const char* const* isa_names();
// Whether this CPU (and OS) can run the named kernels.
bool isa_supported(const char* name);
// Force the named kernels; false (and nothing changes) when unknown or unsupported.
bool set_isa(const char* name);

}  // namespace lstmcpp
