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
    const fs::path real = resolved(path);
    if (real.empty()) integrity_error(where + " cannot be resolved (a symlink loop?)");
    if (!inside(real, resolved(b.dir)))
        integrity_error(where + " resolves (through a symlink) to " + real.string() +
                        ", outside the bundle directory");
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
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
    const bool manifest_given = fs::path(shown).filename() == kManifestName &&
                                fs::is_regular_file(shown, ec);
    b.shown = manifest_given ? parent_shown(shown) : shown;
    b.dir = b.shown;
    if (!fs::is_directory(b.dir, ec))
        integrity_error("bundle directory " + b.shown + " does not exist");
    const fs::path manifest_path = b.dir / kManifestName;
    if (!fs::is_regular_file(manifest_path, ec))
        integrity_error(b.shown + " is not a bundle: it has no " + kManifestName);
    const auto size = fs::file_size(manifest_path, ec);
    if (!ec && size > kMaxManifestBytes)
        manifest_error(py::path(b.shown + "/" + kManifestName) + " is " + std::to_string(size) +
                       " bytes, far larger than any bundle manifest (at most " + std::to_string(kMaxManifestBytes) + ")");
    const std::vector<char> text = read_file(manifest_path);
    b.manifest = parse_manifest(std::string(text.begin(), text.end()));
    for (const auto &[name, graph] : b.manifest.graphs) checked_graph_path(b, name, graph);
    return b;
}

std::vector<char> read_graph(const Bundle &b, const std::string &name, bool verify) {
    const GraphSpec *g = b.manifest.graph(name);
    if (!g) fail(BLD_ERROR_MANIFEST, "bundle " + b.shown + " has no graph " + py::repr(name));
    std::vector<char> bytes = read_file(checked_graph_path(b, name, *g));
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
