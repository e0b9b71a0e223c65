// The portable kernels: kernels_impl.h compiled with this file's flags only (CMakeLists.txt).
#include <cstdint>

#include "kernels/kernels.h"

namespace lstmcpp {
namespace portable {
#include "kernels_impl.h"
}  // namespace portable

const Kernels<float>& kernels_f32_portable() {
    static const Kernels<float> table = portable::make_kernels<float>("portable");
    return table;
}

const Kernels<double>& kernels_f64() {
    static const Kernels<double> table = portable::make_kernels<double>("portable");
    return table;
}
}  // namespace lstmcpp
