// The output projection with its clip (SPEC §1): h = clip(m W_hr^T, -proj_clip, proj_clip),
// forward beside backward. The product itself is a per-step product of the weight format; this
// is what surrounds it, for one batch row and one thread's outputs.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/team.h"

namespace lstmcpp {

// forward: h[outputs] = clip(h_raw[outputs]), in place
template <class T>
inline void clip_projection(T* h, Range outputs, T proj_clip) {
    for (int64_t p = outputs.begin; p < outputs.end; ++p) h[p] = std::min(std::max(h[p], -proj_clip), proj_clip);
}

// forward was: h = clip(h_raw)   so: a clipped element passes no gradient.
// dh_raw[outputs] = dh + dy where h is inside the clip and the step ran, else 0.
template <class T>
inline void clip_projection_backward(T* dh_raw, const T* h, const T* dh, const T* dy, bool ran, Range outputs,
                                     T proj_clip) {
    for (int64_t p = outputs.begin; p < outputs.end; ++p)
        dh_raw[p] = (ran && h[p] < proj_clip && h[p] > -proj_clip) ? dh[p] + dy[p] : T(0);
}

}  // namespace lstmcpp
