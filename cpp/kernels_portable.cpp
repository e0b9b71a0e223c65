// The portable kernels: kernels_impl.h compiled with this file's flags only (CMakeLists.txt).
#include <cstdint>

#include "kernels.h"

namespace lstmcpp {
namespace portable {
#include "kernels_impl.h"
}  // namespace portable

const PointwiseKernels<float>& kernels_f32_portable() {
    static const PointwiseKernels<float> table = portable::make_kernels<float>("portable");
    return table;
}

const PointwiseKernels<double>& kernels_f64() {
    static const PointwiseKernels<double> table = portable::make_kernels<double>("portable");
    return table;
}
}  // namespace lstmcpp
