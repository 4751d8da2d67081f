// A small command-line parser for bld-cpp, reporting bad usage in the words of click (the
// parser behind `bld`), so that both tools print the same `error: ...` line.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bld/bld.hpp"

namespace app {

struct Usage {  // bad usage: printed as `error: <message>`, exit 1
    std::string message;
};

struct Option {
    std::vector<std::string> names;  // e.g. {"-o", "--out"}
    bool flag = false;               // takes no value
    std::string fallback;            // default value ("" = none)
    std::string help;
};

class Args {
  public:
    Args(std::vector<Option> options, std::vector<std::string> positional)
        : options_(std::move(options)), positional_names_(std::move(positional)) {}

    void parse(int argc, char **argv, int first) {
        for (int i = first; i < argc; ++i) {
            std::string a = argv[i], value;
            const size_t eq = a.find('=');
            const bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
            if (has_eq) value = a.substr(eq + 1), a = a.substr(0, eq);
            if (a.size() > 1 && a[0] == '-' && !is_number(a)) {
                const Option *o = find(a);
                if (!o) throw Usage{"No such option: " + a};
                if (o->flag) {
                    values_[o->names.back()] = "1";
                    continue;
                }
                if (!has_eq) {
                    if (i + 1 >= argc) throw Usage{"Option '" + a + "' requires an argument."};
                    value = argv[++i];
                }
                values_[o->names.back()] = value;
            } else {
                positional_.push_back(a);
            }
        }
        if (positional_.size() > positional_names_.size())
            throw Usage{"Got unexpected extra argument (" + positional_.back() + ")"};
        if (positional_.size() < positional_names_.size())
            throw Usage{"Missing argument '" + positional_names_[positional_.size()] + "'."};
    }

    const std::string &positional(size_t i) const { return positional_[i]; }
    bool has(const std::string &name) const { return values_.count(name) > 0; }
    std::string get(const std::string &name) const {
        auto v = values_.find(name);
        return v != values_.end() ? v->second : find(name)->fallback;
    }
    std::string required(const std::string &name) const {
        if (!has(name)) {
            const Option *o = find(name);
            std::string shown;
            for (const auto &n : o->names) shown += (shown.empty() ? "'" : " / '") + n + "'";
            throw Usage{"Missing option " + shown + "."};
        }
        return get(name);
    }
    int64_t integer(const std::string &name, std::optional<int64_t> min = std::nullopt) const {
        const std::string text = get(name);
        char *end = nullptr;
        errno = 0;
        const long long v = std::strtoll(text.c_str(), &end, 10);
        if (text.empty() || *end || errno)
            throw Usage{"Invalid value for '" + name + "': '" + text + "' is not a valid integer."};
        if (min && v < *min)  // click.IntRange(min=...)
            throw Usage{"Invalid value for '" + name + "': " + std::to_string(v) + " is not in the range x>=" +
                        std::to_string(*min) + "."};
        return v;
    }
    std::optional<double> number(const std::string &name) const {
        if (!has(name)) return std::nullopt;
        const std::string text = get(name);
        char *end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || *end || text.find_first_of("xX") != std::string::npos)
            throw Usage{"Invalid value for '" + name + "': '" + text + "' is not a valid float."};
        return v;
    }
    std::string help() const {
        std::string out;
        for (const auto &o : options_) {
            std::string names;
            for (const auto &n : o.names) names += (names.empty() ? "" : ", ") + n;
            out += "  " + names + std::string(names.size() < 22 ? 22 - names.size() : 1, ' ') + o.help + "\n";
        }
        return out;
    }

  private:
    static bool is_number(const std::string &a) { return a.size() > 1 && (std::isdigit(a[1]) || a[1] == '.'); }
    const Option *find(const std::string &name) const {
        for (const auto &o : options_)
            for (const auto &n : o.names)
                if (n == name) return &o;
        return nullptr;
    }
    std::vector<Option> options_;
    std::vector<std::string> positional_names_, positional_;
    std::map<std::string, std::string> values_;
};

inline std::string py_repr(const std::string &text) {  // repr() of a plain command-line word
    const bool dq = text.find('\'') != std::string::npos && text.find('"') == std::string::npos;
    std::string out(1, dq ? '"' : '\'');
    for (char c : text) {
        if (c == '\\' || (!dq && c == '\'')) out += '\\';
        out += c;
    }
    return out + (dq ? '"' : '\'');
}

// A seed as `bld` parses it: decimal digits (spaces around allowed), a value in [0, 2^64).
inline uint64_t parse_seed(const std::string &text) {
    const size_t a = text.find_first_not_of(" \t\n\r\f\v"), b = text.find_last_not_of(" \t\n\r\f\v");
    const std::string digits = a == std::string::npos ? "" : text.substr(a, b - a + 1);
    bool ok = !digits.empty() && digits.size() <= 20 &&
              digits.find_first_not_of("0123456789") == std::string::npos;
    unsigned __int128 v = 0;
    for (size_t i = 0; ok && i < digits.size(); ++i) v = v * 10 + unsigned(digits[i] - '0');
    if (!ok || v > UINT64_MAX)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST, "--seed must be an integer in [0, 2^64), got " + py_repr(text));
    return static_cast<uint64_t>(v);
}

// --class as `bld` parses it: an index, 'all' (image i gets i % classes) or 'none'.
inline std::vector<int64_t> parse_classes(const std::string &text, int64_t count, int64_t num_classes) {
    if (text == "none") return {};
    if (text == "all") {
        if (num_classes == 0)
            throw bld::Error(BLD_ERROR_INVALID_REQUEST, "--class all: this bundle is unconditional (no classes)");
        std::vector<int64_t> out;
        for (int64_t i = 0; i < count; ++i) out.push_back(i % num_classes);
        return out;
    }
    const bool negative = !text.empty() && text[0] == '-';
    std::string digits = negative ? text.substr(1) : text;
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST,
                         "--class must be a class index, 'all' or 'none', got " + py_repr(text));
    digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));  // int("007") is 7
    const bool fits = digits.size() < 18;
    const int64_t v = fits ? (negative ? -1 : 1) * std::stoll(digits) : 0;
    if (!fits || v < 0 || v >= num_classes)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST,
                         "class " + std::string(negative && digits != "0" ? "-" : "") + digits +
                             " is out of range: this bundle has " +
                             (num_classes ? "classes 0.." + std::to_string(num_classes - 1) : std::string("no classes")) +
                             " (--class none samples unconditionally)");
    return {v};
}

}  // namespace app
