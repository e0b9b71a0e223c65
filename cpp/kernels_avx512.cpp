// The avx512 kernels: kernels_impl.h compiled with this file's flags only (CMakeLists.txt).
#include <cstdint>

#include "kernels.h"

namespace lstmcpp {
namespace avx512 {
#include "kernels_impl.h"
}  // namespace avx512

const PointwiseKernels<float>& kernels_f32_avx512() {
    static const PointwiseKernels<float> table = avx512::make_kernels<float>("avx512");
    return table;
}
}  // namespace lstmcpp
