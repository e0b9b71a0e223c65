#include "weights/bf16.h"

#include <cstring>


namespace lstmcpp {

void Bf16Matrix::multiply_rows(float* out, const float* x, int64_t M, float beta) const {
    multiply_float_rows(*this, out, x, M, beta);
}

void Bf16Matrix::decode_rows(float* out, Range r) const {
    const uint16_t* __restrict in = data;
    uint32_t* __restrict bits = reinterpret_cast<uint32_t*>(out);  // bfloat16 is float32's high half
    for (int64_t i = r.begin * cols; i < r.end * cols; ++i) bits[i] = static_cast<uint32_t>(in[i]) << 16;
}

}  // namespace lstmcpp
