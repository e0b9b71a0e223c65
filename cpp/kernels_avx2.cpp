// The avx2 kernels: kernels_impl.h compiled with this file's flags only (CMakeLists.txt).
#include <cstdint>

#include "kernels.h"

namespace lstmcpp {
namespace avx2 {
#include "kernels_impl.h"
}  // namespace avx2

const PointwiseKernels<float>& kernels_f32_avx2() {
    static const PointwiseKernels<float> table = avx2::make_kernels<float>("avx2");
    return table;
}
}  // namespace lstmcpp
