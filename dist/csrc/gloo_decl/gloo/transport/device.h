// Declarations only (see c10d_shim.cpp, "Why gloo_decl/").
//
// The shim passes Gloo devices around as std::shared_ptr<Device> created inside
// libtorch (whose control block carries the real deleter), and never touches an
// UnboundBuffer, so both stay incomplete types.
#pragma once

namespace gloo {
namespace transport {

class Device;
class UnboundBuffer;

} // namespace transport
} // namespace gloo
