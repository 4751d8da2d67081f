// repr() of a decoded JSON value, as Python prints the same value after json.loads: kept apart
// from pyfmt.hpp so that only the files that parse JSON pay for nlohmann/json.hpp.
#pragma once

#include <nlohmann/json.hpp>

#include "pyfmt.hpp"

namespace bld::core::py {

using Json = nlohmann::ordered_json;

// None, True, 3, 0.5, 'x', [1, 2], {'k': 1}
inline std::string repr(const Json &v) {
    switch (v.type()) {
        case Json::value_t::null: return "None";
        case Json::value_t::boolean: return v.get<bool>() ? "True" : "False";
        case Json::value_t::number_integer: return std::to_string(v.get<int64_t>());
        case Json::value_t::number_unsigned: return std::to_string(v.get<uint64_t>());
        case Json::value_t::number_float: return repr(v.get<double>());
        case Json::value_t::string: return repr(v.get<std::string>());
        case Json::value_t::array: {
            std::vector<std::string> items;
            for (const auto &item : v) items.push_back(repr(item));
            return "[" + join(items, ", ") + "]";
        }
        case Json::value_t::object: {
            std::vector<std::string> items;
            for (const auto &[key, item] : v.items()) items.push_back(repr(key) + ": " + repr(item));
            return "{" + join(items, ", ") + "}";
        }
        default: return "?";
    }
}

// json.dumps(value) with Python's defaults: ", " and ": ", ASCII only, floats as repr().
inline std::string dumps(const Json &v) {
    switch (v.type()) {
        case Json::value_t::null: return "null";
        case Json::value_t::boolean: return v.get<bool>() ? "true" : "false";
        case Json::value_t::number_float: return repr(v.get<double>());
        case Json::value_t::string: return v.dump(-1, ' ', true);
        case Json::value_t::array: {
            std::vector<std::string> items;
            for (const auto &item : v) items.push_back(dumps(item));
            return "[" + join(items, ", ") + "]";
        }
        case Json::value_t::object: {
            std::vector<std::string> items;
            for (const auto &[key, item] : v.items()) items.push_back(Json(key).dump(-1, ' ', true) + ": " + dumps(item));
            return "{" + join(items, ", ") + "}";
        }
        default: return v.dump();
    }
}

// Equality as Python's == on decoded JSON: objects compare regardless of key order.
inline bool same(const Json &a, const Json &b) { return nlohmann::json::parse(a.dump()) == nlohmann::json::parse(b.dump()); }

}  // namespace bld::core::py
