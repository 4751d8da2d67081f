// A small command-line parser for bld-cpp, reporting bad usage in the words of click (the
// parser behind `bld`), so that both tools print the same `error: ...` line.
#pragma once

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "bld/bld.hpp"
#include "pyfmt.hpp"  // the runtime's repr() and str(Path()), compiled into bld-cpp too

namespace app {

namespace py = bld::core::py;

// errors.describe(MemoryError()): what `bld` says when memory runs out
inline const char *const kOutOfMemory = "out of memory; ask for fewer images or a smaller batch";

struct Usage {  // bad usage: printed as `error: <message>`, exit 1
    std::string message;
};

struct Option {
    std::vector<std::string> names;  // e.g. {"-o", "--out"}
    bool flag = false;               // takes no value
    std::string fallback;            // default value ("" = none)
    std::string help;
};

// difflib.get_close_matches(word, possibilities) as click calls it to suggest an option: the
// possibilities whose SequenceMatcher ratio with `word` is at least 0.6, the best 3, sorted.
inline size_t matching_characters(const std::string &a, size_t alo, size_t ahi, const std::string &b, size_t blo,
                                  size_t bhi) {
    // SequenceMatcher.find_longest_match (no junk): the longest common block, earliest in a, then in b
    size_t best_i = alo, best_j = blo, best = 0;
    std::vector<size_t> run(b.size() + 1, 0), next(b.size() + 1, 0);  // run[j + 1]: block ending at a[i-1], b[j]
    for (size_t i = alo; i < ahi; ++i) {
        std::fill(next.begin(), next.end(), 0);
        for (size_t j = blo; j < bhi; ++j)
            if (a[i] == b[j] && (next[j + 1] = run[j] + 1) > best) best = next[j + 1], best_i = i + 1 - best, best_j = j + 1 - best;
        run.swap(next);
    }
    if (best == 0) return 0;
    return best + matching_characters(a, alo, best_i, b, blo, best_j) +
           matching_characters(a, best_i + best, ahi, b, best_j + best, bhi);
}

inline std::vector<std::string> close_matches(const std::string &word, const std::vector<std::string> &possibilities) {
    std::vector<std::pair<double, std::string>> scored;
    for (const auto &x : possibilities) {  // SequenceMatcher(a=x, b=word).ratio()
        const double ratio = 2.0 * double(matching_characters(x, 0, x.size(), word, 0, word.size())) /
                             double(x.size() + word.size());
        if (ratio >= 0.6) scored.emplace_back(ratio, x);
    }
    std::sort(scored.rbegin(), scored.rend());  // heapq.nlargest(3, (ratio, x))
    std::vector<std::string> out;
    for (size_t k = 0; k < scored.size() && k < 3; ++k) out.push_back(scored[k].second);
    std::sort(out.begin(), out.end());
    return out;
}

// click's NoSuchOption / NoSuchCommand message, with its suggestions.
inline std::string no_such(const std::string &what, const std::string &word, const std::vector<std::string> &possibilities) {
    const auto near = close_matches(word, possibilities);
    std::string message = "No such " + what + " " + py::repr(word) + ".", listed;
    for (const auto &p : near) listed += (listed.empty() ? "" : ", ") + py::repr(p);
    if (near.size() == 1) message += " Did you mean " + listed + "?";
    if (near.size() > 1) message += " (Did you mean one of: " + listed + "?)";
    return message;
}

// Python's int(text) of a command-line word: spaces around, a sign, digits with single
// underscores between them. Its value, saturated to int64 (Python's ints have no bound), and
// how Python prints it; nullopt if it is not an int.
struct PyInt {
    int64_t value;
    std::string text;
};
inline std::optional<PyInt> py_int(const std::string &text) {
    const size_t a = text.find_first_not_of(" \t\n\r\f\v"), b = text.find_last_not_of(" \t\n\r\f\v");
    if (a == std::string::npos) return std::nullopt;
    std::string digits;
    bool negative = false;
    for (size_t i = a; i <= b; ++i) {
        const char c = text[i];
        const bool sign = i == a && (c == '+' || c == '-');
        const bool between = c == '_' && i > a && i < b && std::isdigit((unsigned char)text[i - 1]) &&
                             std::isdigit((unsigned char)text[i + 1]);
        if (!sign && !between && !std::isdigit((unsigned char)c)) return std::nullopt;
        if (sign) negative = c == '-';
        else if (std::isdigit((unsigned char)c)) digits += c;
    }
    if (digits.empty()) return std::nullopt;
    digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));
    if (digits == "0") negative = false;
    const std::string shown = (negative ? "-" : "") + digits;
    const long long v = std::strtoll(shown.c_str(), nullptr, 10);  // saturates on overflow
    return PyInt{v, shown};
}

// Python's float(text): the same spaces and underscores, decimal or exponent notation, inf,
// infinity and nan in any case (no hexadecimal, no nan(...)).
inline std::optional<double> py_float(const std::string &text) {
    static const std::regex grammar("[+-]?(((\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?)|inf|infinity|nan)", std::regex::icase);
    const size_t a = text.find_first_not_of(" \t\n\r\f\v"), b = text.find_last_not_of(" \t\n\r\f\v");
    if (a == std::string::npos) return std::nullopt;
    std::string plain;
    for (size_t i = a; i <= b; ++i) {
        if (text[i] != '_') plain += text[i];
        else if (!(i > a && i < b && std::isdigit((unsigned char)text[i - 1]) && std::isdigit((unsigned char)text[i + 1])))
            return std::nullopt;
    }
    if (!std::regex_match(plain, grammar)) return std::nullopt;
    return std::strtod(plain.c_str(), nullptr);
}

class Args {
  public:
    Args(std::vector<Option> options, std::vector<std::string> positional)
        : options_(std::move(options)), positional_names_(std::move(positional)) {}

    // As click parses: "--" ends the options; "--name=value"; a word starting with "-" is an
    // option (even "-1"); short options may be grouped ("-fn5"); an option's value is the next
    // word, whatever it looks like.
    void parse(int argc, char **argv, int first) {
        bool options_done = false;
        for (int i = first; i < argc; ++i) {
            const std::string a = argv[i];
            if (options_done || a.size() < 2 || a[0] != '-') {
                positional_.push_back(a);
                continue;
            }
            if (a == "--") {
                options_done = true;
                continue;
            }
            const size_t eq = a.find('=');
            const std::string name = a.substr(0, eq);
            if (const Option *o = find(name); o && name.rfind("--", 0) == 0) {
                if (o->flag && eq != std::string::npos)
                    throw Usage{"Option " + py::repr(name) + " does not take a value."};
                if (o->flag) set(*o, "1");
                else set(*o, eq != std::string::npos ? a.substr(eq + 1) : next(argc, argv, i, name));
                continue;
            }
            if (a.rfind("--", 0) == 0) throw Usage{no_such_option(name)};
            for (size_t c = 1; c < a.size(); ++c) {  // a group of short options
                const std::string letter = std::string("-") + a[c];
                const Option *o = find(letter);
                if (!o) throw Usage{"No such option " + py::repr(letter) + "."};
                if (o->flag) {
                    set(*o, "1");
                    continue;
                }
                set(*o, c + 1 < a.size() ? a.substr(c + 1) : next(argc, argv, i, letter));
                break;
            }
        }
    }

    // Converts and checks the options in click's order: those given, in the order first given,
    // then the others; `steps` maps an option's last name to its check.
    void convert(const std::map<std::string, std::function<void()>> &steps) const {
        std::vector<std::string> order = given_;
        for (const auto &o : options_)
            if (std::find(order.begin(), order.end(), o.names.back()) == order.end()) order.push_back(o.names.back());
        for (const auto &name : order)
            if (auto step = steps.find(name); step != steps.end()) step->second();
    }

    // After the options, as click does: too many or too few positional arguments.
    void check_positionals() const {
        if (positional_.size() > positional_names_.size()) {
            std::string extra;
            for (size_t k = positional_names_.size(); k < positional_.size(); ++k) extra += (extra.empty() ? "" : " ") + positional_[k];
            throw Usage{std::string("Got unexpected extra argument") + (positional_.size() - positional_names_.size() > 1 ? "s" : "") +
                        " (" + extra + ")"};
        }
        if (positional_.size() < positional_names_.size())
            throw Usage{"Missing argument '" + positional_names_[positional_.size()] + "'."};
    }

    const std::string &positional(size_t i) const { return positional_[i]; }
    size_t count_positional() const { return positional_.size(); }
    bool has(const std::string &name) const { return values_.count(name) > 0; }
    // When an option was last given, counted over the command line (-1: never): of a pair of
    // flags such as --pin-threads / --no-pin-threads the later one wins, as in click.
    int last_given(const std::string &name) const {
        auto at = last_.find(name);
        return at != last_.end() ? at->second : -1;
    }
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
    // click.INT, or click.IntRange when min is given (the words differ: "integer range")
    int64_t integer(const std::string &name, std::optional<int64_t> min = std::nullopt) const {
        return integer_as_python(name, min).value;
    }
    PyInt integer_as_python(const std::string &name, std::optional<int64_t> min = std::nullopt) const {
        const std::string text = get(name);
        const auto v = py_int(text);
        if (!v)
            throw Usage{"Invalid value for '" + name + "': " + py::repr(text) + " is not a valid integer" +
                        (min ? " range." : ".")};
        if (min && v->value < *min)
            throw Usage{"Invalid value for '" + name + "': " + v->text + " is not in the range x>=" +
                        std::to_string(*min) + "."};
        return *v;
    }
    std::optional<double> number(const std::string &name) const {  // click's FLOAT
        if (!has(name)) return std::nullopt;
        const std::string text = get(name);
        const auto v = py_float(text);
        if (!v) throw Usage{"Invalid value for '" + name + "': " + py::repr(text) + " is not a valid float."};
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
    void set(const Option &o, const std::string &value) {
        if (!values_.count(o.names.back())) given_.push_back(o.names.back());
        values_[o.names.back()] = value;
        last_[o.names.back()] = sets_++;
    }
    std::string next(int argc, char **argv, int &i, const std::string &name) const {
        if (i + 1 >= argc) throw Usage{"Option " + py::repr(name) + " requires an argument."};
        return argv[++i];
    }
    std::string no_such_option(const std::string &name) const {
        std::vector<std::string> long_names;  // click suggests among the long ones
        for (const auto &o : options_)
            for (const auto &n : o.names)
                if (n.rfind("--", 0) == 0) long_names.push_back(n);
        return no_such("option", name, long_names);
    }
    const Option *find(const std::string &name) const {
        for (const auto &o : options_)
            for (const auto &n : o.names)
                if (n == name) return &o;
        return nullptr;
    }
    std::vector<Option> options_;
    std::vector<std::string> positional_names_, positional_, given_;
    std::map<std::string, std::string> values_;
    std::map<std::string, int> last_;
    int sets_ = 0;
};

// A seed as `bld` parses it: decimal digits (spaces around allowed), a value in [0, 2^64).
inline uint64_t parse_seed(const std::string &text) {
    const size_t a = text.find_first_not_of(" \t\n\r\f\v"), b = text.find_last_not_of(" \t\n\r\f\v");
    const std::string digits = a == std::string::npos ? "" : text.substr(a, b - a + 1);
    bool ok = !digits.empty() && digits.size() <= 20 &&
              digits.find_first_not_of("0123456789") == std::string::npos;
    unsigned __int128 v = 0;
    for (size_t i = 0; ok && i < digits.size(); ++i) v = v * 10 + unsigned(digits[i] - '0');
    if (!ok || v > UINT64_MAX)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST, "--seed must be an integer in [0, 2^64), got " + py::repr(text));
    return static_cast<uint64_t>(v);
}

// --class as `bld` parses it: an index, 'all' (image i gets i % classes) or 'none' (both
// nullopt here: the caller tells them apart, and gives 'all' its classes chunk by chunk).
inline std::optional<int64_t> parse_class(const std::string &text, int64_t num_classes) {
    if (text == "none") return std::nullopt;
    if (text == "all") {
        if (num_classes == 0)
            throw bld::Error(BLD_ERROR_INVALID_REQUEST, "--class all: this bundle is unconditional (no classes)");
        return std::nullopt;
    }
    const bool negative = !text.empty() && text[0] == '-';
    std::string digits = negative ? text.substr(1) : text;
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST,
                         "--class must be a class index, 'all' or 'none', got " + py::repr(text));
    digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));  // int("007") is 7
    const bool fits = digits.size() < 18;
    const int64_t v = fits ? (negative ? -1 : 1) * std::stoll(digits) : 0;
    if (!fits || v < 0 || v >= num_classes)
        throw bld::Error(BLD_ERROR_INVALID_REQUEST,
                         "class " + std::string(negative && digits != "0" ? "-" : "") + digits +
                             " is out of range: this bundle has " +
                             (num_classes ? "classes 0.." + std::to_string(num_classes - 1) : std::string("no classes")) +
                             " (--class none samples unconditionally)");
    return v;
}

}  // namespace app
