#include "bundle.hpp"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.hpp"
#include "pyfmt.hpp"

namespace fs = std::filesystem;

namespace bld::core {
namespace {

[[noreturn]] void io_error(int err, const fs::path &path) {
    fail(BLD_ERROR_IO, std::string(std::strerror(err)) + ": " + path.string());
}

// str(Path(p).parent), pathlib style
std::string parent_shown(const std::string &shown) {
    const size_t slash = shown.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : shown.substr(0, slash);
}

// Path.resolve(strict=False); empty for a path that cannot be resolved (a symlink loop).
fs::path resolved(const fs::path &p) {
    std::error_code ec;
    fs::path r = fs::weakly_canonical(fs::absolute(p), ec);
    return ec ? fs::path() : r;
}

bool inside(const fs::path &p, const fs::path &dir) {
    auto d = dir.begin(), q = p.begin();
    for (; d != dir.end(); ++d, ++q)
        if (q == p.end() || *d != *q) return false;
    return true;
}

bool has_dotdot(const std::string &file, bool windows) {
    size_t start = 0;
    while (start <= file.size()) {
        size_t end = file.find_first_of(windows ? "/\\" : "/", start);
        if (end == std::string::npos) end = file.size();
        if (file.compare(start, end - start, "..") == 0 && end - start == 2) return true;
        start = end + 1;
    }
    return false;
}

// Mirrors manifest._check_bundle_path's last rule, the one for every file of a bundle (bld.json
// and the graphs): the path, symlinks resolved, stays inside the bundle directory.
void check_inside(const Bundle &b, const fs::path &path, const std::string &where) {
    const fs::path real = resolved(path);
    if (real.empty()) integrity_error(where + " cannot be resolved (a symlink loop?)");
    if (!inside(real, resolved(b.dir)))
        integrity_error(where + " resolves (through a symlink) to " + real.string() +
                        ", outside the bundle directory");
}

// files.read_input: opened without blocking (a FIFO with no writer would hang in open()),
// refused unless the very descriptor read is a regular file ("WHAT PATH is a FIFO (named pipe),
// not a regular file", as `error`), its size checked before it is read. `shown` is the path as
// Python prints it; the OS's own errors (missing, permissions) are BLD_ERROR_IO.
std::vector<char> read_input(const fs::path &path, const std::string &shown, const std::string &what,
                             void (*error)(const std::string &), uint64_t max_bytes,
                             void (*size_error)(const std::string &) = nullptr,
                             const std::string &too_large = "") {
    auto not_regular = [&](mode_t mode) {
        const char *kind = S_ISDIR(mode)    ? "a folder"
                           : S_ISFIFO(mode) ? "a FIFO (named pipe)"
                           : S_ISSOCK(mode) ? "a socket"
                           : S_ISCHR(mode) || S_ISBLK(mode) ? "a device"
                                                            : "not a regular file";
        error(what + " " + shown + " is " + kind + ", not a regular file");
    };
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        struct stat st {};  // a socket cannot be opened at all (ENXIO): refused by what it is
        if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) not_regular(st.st_mode);
        io_error(err, path);
    }
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) io_error(errno, path);
    if (!S_ISREG(st.st_mode)) not_regular(st.st_mode);
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);  // a regular file: ordinary reads
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size > max_bytes) {
        if (size_error) size_error(shown + " is " + std::to_string(size) + too_large);
        error(what + " " + shown + " is " + std::to_string(size) + " bytes, more than any " + what +
              " (at most " + std::to_string(max_bytes) + "); refusing to read it");
    }
    std::vector<char> data(size);  // what it held when checked; hashes catch a file that changed
    size_t got = 0;
    while (got < size) {
        const ssize_t n = ::read(fd, data.data() + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) io_error(errno, path);
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    data.resize(got);
    return data;
}

[[noreturn]] void integrity(const std::string &message) { integrity_error(message); }
[[noreturn]] void manifest(const std::string &message) { manifest_error(message); }

// Mirrors manifest._check_graph_file, without the hash.
fs::path checked_graph_path(const Bundle &b, const std::string &name, const GraphSpec &g) {
    const std::string where =
        std::string(kManifestName) + ": graphs." + name + ".file " + py::repr(g.file);
    if (g.file.find('\0') != std::string::npos) integrity_error(where + " contains a NUL character");
    // POSIX or Windows absolute, a drive ("C:x") or a root ("\x"): all refused
    if (g.file[0] == '/' || g.file[0] == '\\' || (g.file.size() >= 2 && g.file[1] == ':'))
        integrity_error(where + " is an absolute path; graph files must be relative to the "
                                "bundle directory");
    if (has_dotdot(g.file, false) || has_dotdot(g.file, true))
        integrity_error(where + " uses '..' to leave the bundle directory");
    const fs::path path = b.dir / g.file;
    check_inside(b, path, where);
    // Missing (or a dangling symlink); anything else that is not a regular file (a FIFO, a
    // folder, a socket) is refused by what it is when it is opened (read_input).
    std::error_code ec;
    if (!fs::exists(path, ec))
        integrity_error("graph file " + py::repr(g.file) + " (graphs." + name +
                        ") is missing from bundle " + b.shown);
    return path;
}

}  // namespace

std::string sha256_hex(const char *data, size_t size) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(ctx.get(), data, size) != 1 ||
        EVP_DigestFinal_ex(ctx.get(), digest, &length) != 1)
        fail(BLD_ERROR_INTERNAL, "OpenSSL could not compute a sha256");
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < length; ++i) out += hex[digest[i] >> 4], out += hex[digest[i] & 15];
    return out;
}

std::vector<char> read_file(const fs::path &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) io_error(errno ? errno : ENOENT, path);
    std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) io_error(errno ? errno : EIO, path);
    return data;
}

void atomic_write(const fs::path &path, const void *data, size_t size) {
    const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
    std::string tmpl = (dir / ("." + path.filename().string() + ".XXXXXX.tmp")).string();
    const int fd = mkstemps(tmpl.data(), 4);
    if (fd < 0) io_error(errno, path);
    const auto *p = static_cast<const char *>(data);
    size_t left = size;
    int err = 0;
    while (left > 0 && !err) {
        const ssize_t n = ::write(fd, p, left);
        if (n < 0 && errno != EINTR) err = errno;
        else if (n > 0) p += n, left -= static_cast<size_t>(n);
    }
    if (!err && ::fsync(fd) != 0) err = errno;
    if (!err && ::fchmod(fd, 0644) != 0) err = errno;  // mkstemps makes it private
    if (::close(fd) != 0 && !err) err = errno;
    if (!err && std::rename(tmpl.c_str(), path.c_str()) != 0) err = errno;
    if (err) {
        std::remove(tmpl.c_str());
        io_error(err, path);
    }
}

Bundle load_bundle(const std::string &path) {
    Bundle b;
    std::string shown = py::path(path);
    std::error_code ec;
    // BUNDLE/bld.json whatever it is (a FIFO, a folder: refused below by what it is)
    const bool manifest_given = fs::path(shown).filename() == kManifestName &&
                                fs::exists(fs::symlink_status(shown, ec));
    b.shown = manifest_given ? parent_shown(shown) : shown;
    b.dir = b.shown;
    if (!fs::is_directory(b.dir, ec))
        integrity_error("bundle directory " + b.shown + " does not exist");
    const fs::path manifest_path = b.dir / kManifestName;
    check_inside(b, manifest_path, kManifestName);  // the graphs' rule: a loop, a symlink outside
    if (!fs::exists(manifest_path, ec))  // a folder, a FIFO, a device: refused by what it is below
        integrity_error(b.shown + " is not a bundle: it has no " + kManifestName);
    // The size refusal is load_bundle's own sentence (a ManifestError), after the open's checks.
    const std::vector<char> text =
        read_input(manifest_path, py::path(b.shown + "/" + kManifestName), "bundle manifest", integrity,
                   kMaxManifestBytes, manifest, " bytes, far larger than any bundle manifest (at most " +
                                          std::to_string(kMaxManifestBytes) + ")");
    b.manifest = parse_manifest(std::string(text.begin(), text.end()));
    for (const auto &[name, graph] : b.manifest.graphs) checked_graph_path(b, name, graph);
    return b;
}

std::vector<char> read_graph(const Bundle &b, const std::string &name, bool verify) {
    const GraphSpec *g = b.manifest.graph(name);
    if (!g) fail(BLD_ERROR_MANIFEST, "bundle " + b.shown + " has no graph " + py::repr(name));
    const fs::path path = checked_graph_path(b, name, *g);
    std::vector<char> bytes = read_input(path, py::path(b.shown + "/" + g->file), "graph file", integrity,
                                         kMaxGraphBytes);
    if (verify) {
        const std::string actual = sha256_hex(bytes.data(), bytes.size());
        if (actual != g->sha256)
            integrity_error("graph file " + py::repr(g->file) + " (graphs." + name +
                            ") does not match the manifest: sha256 expected " + g->sha256 +
                            ", actual " + actual);
    }
    return bytes;
}

}  // namespace bld::core
