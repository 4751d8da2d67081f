// A bundle directory: its manifest and its graph files, checked as bld_runtime/manifest.py's
// load_bundle checks them (paths confined to the bundle, symlinks included; files present;
// sha256). Graph bytes are read once: the hash is taken over the very bytes that the backend
// then loads, so a file swapped after the check is never run.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace bld::core {

struct Bundle {
    std::filesystem::path dir;
    std::string shown;  // the directory as Python's str(Path(...)) prints it
    Manifest manifest;
};

// Read and check the manifest of a bundle directory (or of its bld.json) and the path, the
// presence and the confinement of every graph file.
Bundle load_bundle(const std::string &path);

// The bytes of graph `name`, checked against the manifest's sha256 when verify is set.
std::vector<char> read_graph(const Bundle &bundle, const std::string &name, bool verify);

// Lowercase hex sha256 of a buffer (OpenSSL EVP).
std::string sha256_hex(const char *data, size_t size);

// A file's whole content; a missing or unreadable file is BLD_ERROR_IO ("<reason>: <path>").
std::vector<char> read_file(const std::filesystem::path &path);

// Write a file through a temporary name in the same directory and a rename, so that readers
// see the old file or the new one, never a partial one (bld_runtime's atomic_write).
void atomic_write(const std::filesystem::path &path, const void *data, size_t size);

}  // namespace bld::core
