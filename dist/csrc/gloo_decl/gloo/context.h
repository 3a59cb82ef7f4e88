// Declarations only (see c10d_shim.cpp, "Why gloo_decl/").
//
// ProcessGroupGloo.hpp holds its Gloo contexts through std::shared_ptr and calls
// setTimeout on them in one inline member. The shim never calls it; the class only
// has to be complete enough for the header to parse. Nothing here is defined, so
// no code in the shim depends on Gloo's real layout.
#pragma once

#include <chrono>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

} // namespace gloo
