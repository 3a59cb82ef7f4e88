// Declarations only (see c10d_shim.cpp, "Why gloo_decl/").
//
// ProcessGroupGloo.hpp defines GlooStore, an adapter deriving from this class and
// overriding these four members. The shim never constructs a GlooStore, so neither
// this class's vtable nor its layout is ever emitted or relied on here.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {
namespace rendezvous {

class Store {
 public:
  virtual ~Store();
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(
      const std::vector<std::string>& keys,
      const std::chrono::milliseconds& timeout) = 0;
};

} // namespace rendezvous
} // namespace gloo
