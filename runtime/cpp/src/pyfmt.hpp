// Python's formatting, so that messages read exactly like the Python runtime's: repr() of
// strings, floats and decoded JSON values, format(x, "g"), lists, tuples and pathlib paths.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bld::core::py {

std::string repr(const std::string &s);  // 'abc', "it's"
std::string repr(double v);              // 1.0, 1e-05, 1e+16, nan, inf
std::string format_g(double v);          // f"{v:g}"
std::string path(const std::string &p);  // str(pathlib.Path(p)): "a//b/./c/" -> "a/b/c"

template <class T>
std::string list(const std::vector<T> &items) {  // [1, 2, 3]
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + std::to_string(items[i]);
    return out + "]";
}

template <class T>
std::string tuple(const std::vector<T> &items) {  // (1, 2) and (1,)
    std::string out = "(";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + std::to_string(items[i]);
    return out + (items.size() == 1 ? ",)" : ")");
}

std::string join(const std::vector<std::string> &items, const std::string &sep);

}  // namespace bld::core::py
