// The output folder of `bld-cpp sample`, as bld_runtime/outputs.py keeps it for `bld sample`:
// written by one process at a time (an flock on `.NAME.lock` beside it, the lock file `bld`
// uses), new or empty or holding an earlier run's output (replaced only with --force), and a
// samples.json that records the request and how far the run got, after every chunk.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "bld/bld.hpp"

namespace app {

class OutputFolder {
  public:
    using Json = nlohmann::ordered_json;

    OutputFolder(const std::string &shown, bool force) : shown_(shown), path_(shown) {
        namespace fs = std::filesystem;
        const fs::path lock = (path_.has_parent_path() ? path_.parent_path() : fs::path(".")) /
                              ("." + path_.filename().string() + ".lock");
        fs::create_directories(lock.parent_path());
        fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT, 0644);
        if (fd_ < 0) throw bld::Error(BLD_ERROR_IO, std::string(std::strerror(errno)) + ": " + lock.string());
        if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
            char holder[33] = {0};
            const ssize_t n = ::pread(fd_, holder, 32, 0);
            std::string pid = n > 0 ? std::string(holder, size_t(n)) : "";
            pid.erase(pid.find_last_not_of(" \n") + 1);
            ::close(fd_);
            fd_ = -1;
            throw bld::Error(BLD_ERROR_IO, "output folder " + shown_ + " is being written by another bld process (pid " +
                                               (pid.empty() ? "unknown" : pid) + "); wait for it to finish or choose another path");
        }
        const std::string pid = std::to_string(::getpid()) + "\n";
        if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) { /* the pid is informational */ }
        prepare(force);
    }
    ~OutputFolder() {
        if (fd_ >= 0) {
            if (::ftruncate(fd_, 0) != 0) { /* released all the same */ }
            ::close(fd_);  // closing releases the lock
        }
    }
    OutputFolder(const OutputFolder &) = delete;
    OutputFolder &operator=(const OutputFolder &) = delete;

    void start(Json request, int64_t total) {
        record_ = {{"format", "bld-samples/1"}, {"command", "sample"}, {"request", std::move(request)},
                   {"requested", total}, {"written", 0}, {"status", "running"}};
        save();
    }
    void progress(int64_t written) {
        record_["written"] = written;
        save();
    }
    void finish() {
        record_["status"] = "complete";
        save();
    }
    std::filesystem::path file(const std::string &name) const { return path_ / name; }

  private:
    void prepare(bool force) {
        namespace fs = std::filesystem;
        std::error_code ec;
        if (fs::exists(path_, ec) && !fs::is_directory(path_, ec))
            throw bld::Error(BLD_ERROR_IO, shown_ + " exists and is not a folder");
        if (fs::is_directory(path_, ec)) {
            static const std::regex ours("(\\d{5,}\\.png|bits\\.bldz|grid\\.png|samples\\.json)");
            std::vector<fs::path> entries;
            bool all_ours = fs::is_regular_file(path_ / "samples.json", ec);
            for (const auto &entry : fs::directory_iterator(path_)) {
                entries.push_back(entry.path());
                all_ours = all_ours && std::regex_match(entry.path().filename().string(), ours);
            }
            if (!entries.empty()) {
                if (!all_ours)
                    throw bld::Error(BLD_ERROR_IO, "output folder " + shown_ + " is not empty and holds files bld did not "
                                                   "write there; choose a new or empty folder");
                if (!force)
                    throw bld::Error(BLD_ERROR_IO, "output folder " + shown_ + " holds an earlier run's output; pass "
                                                   "--force to replace it or choose another folder");
                for (const auto &entry : entries) fs::remove(entry);
            }
        }
        fs::create_directories(path_);
    }
    void save() {
        const std::string text = record_.dump(2, ' ', true) + "\n";
        const std::string tmp = (path_ / ".samples.json.tmp").string();
        {
            std::ofstream out(tmp, std::ios::binary);
            out << text;
            if (!out) throw bld::Error(BLD_ERROR_IO, "cannot write " + tmp);
        }
        std::filesystem::rename(tmp, path_ / "samples.json");
    }

    std::string shown_;
    std::filesystem::path path_;
    int fd_ = -1;
    Json record_;
};

}  // namespace app
