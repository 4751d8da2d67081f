// The core's one exception type: a kind (bld.h's bld_error_kind) and the sentence the Python
// runtime would raise. It never crosses the C ABI: c_api.cpp turns it into a bld_status.
#pragma once

#include <stdexcept>
#include <string>

#include "bld/bld.h"

namespace bld::core {

class Failure : public std::runtime_error {
  public:
    Failure(bld_error_kind kind, const std::string &message)
        : std::runtime_error(message), kind_(kind) {}
    bld_error_kind kind() const { return kind_; }

  private:
    bld_error_kind kind_;
};

[[noreturn]] inline void fail(bld_error_kind kind, const std::string &message) {
    throw Failure(kind, message);
}
[[noreturn]] inline void invalid_request(const std::string &message) {
    fail(BLD_ERROR_INVALID_REQUEST, message);
}
[[noreturn]] inline void manifest_error(const std::string &message) {
    fail(BLD_ERROR_MANIFEST, message);
}
[[noreturn]] inline void integrity_error(const std::string &message) {
    fail(BLD_ERROR_BUNDLE_INTEGRITY, message);
}

}  // namespace bld::core
