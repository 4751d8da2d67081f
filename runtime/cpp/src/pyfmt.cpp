#include "pyfmt.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace bld::core::py {

std::string repr(const std::string &s) {
    // Python prefers single quotes, and switches to double quotes for a ' without a ".
    const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
    const char quote = dq ? '"' : '\'';
    std::string out(1, quote);
    for (size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        char buf[8];
        if (c == '\\' || c == static_cast<unsigned char>(quote)) {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else if (c == 0xc2 && i + 1 < s.size() &&
                   static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
                   static_cast<unsigned char>(s[i + 1]) <= 0xa0) {
            // U+0080..U+00A0 (C1 controls and the no-break space) are not printable.
            std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(s[++i]));
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out + quote;
}

std::string repr(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    if (v == 0) return std::signbit(v) ? "-0.0" : "0.0";
    // The shortest digits that round-trip, then Python's layout: positional for decimal
    // exponents -4..15, scientific (at least two exponent digits) otherwise.
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
    std::string sci(buf, res.ptr);
    std::string sign;
    if (sci[0] == '-') {
        sign = "-";
        sci.erase(0, 1);
    }
    const size_t e = sci.find('e');
    std::string digits = sci.substr(0, 1) + (e > 2 ? sci.substr(2, e - 2) : "");
    const int exponent = std::atoi(sci.c_str() + e + 1);
    if (exponent < -4 || exponent >= 16) {
        std::string mant = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
        char ebuf[16];
        std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
        return sign + mant + ebuf;
    }
    const int point = exponent + 1;  // digits before the decimal point
    std::string out;
    if (point <= 0) {
        out = "0." + std::string(static_cast<size_t>(-point), '0') + digits;
    } else if (static_cast<size_t>(point) >= digits.size()) {
        out = digits + std::string(static_cast<size_t>(point) - digits.size(), '0') + ".0";
    } else {
        out = digits.substr(0, static_cast<size_t>(point)) + "." +
              digits.substr(static_cast<size_t>(point));
    }
    return sign + out;
}

std::string format_g(double v) {
    if (std::isnan(v)) return "nan";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

std::string path(const std::string &p) {
    if (p.empty()) return ".";
    std::vector<std::string> parts;
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find('/', start);
        if (end == std::string::npos) end = p.size();
        std::string part = p.substr(start, end - start);
        if (!part.empty() && part != ".") parts.push_back(part);
        start = end + 1;
    }
    // POSIX keeps exactly two leading slashes; pathlib does too.
    std::string root = p[0] != '/' ? "" : (p.rfind("//", 0) == 0 && p.rfind("///", 0) != 0 ? "//" : "/");
    std::string out = root + join(parts, "/");
    return out.empty() ? "." : out;
}

std::string join(const std::vector<std::string> &items, const std::string &sep) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
    return out;
}

}  // namespace bld::core::py
