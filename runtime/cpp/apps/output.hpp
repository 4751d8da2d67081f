// The output folder of `bld-cpp sample`, as bld_runtime/outputs.py keeps it for `bld sample`:
// written by one process at a time (an flock on `.NAME.lock` beside it, the lock file `bld`
// uses), new or empty or holding an earlier run's output (replaced only with --force), and a
// samples.json that records the request and how far the run got, after every chunk.
//
// --force keeps the earlier output intact until the new one is complete: the run writes into
// `.NAME.partial-*` beside it, and `publish` swaps it in by renames (files.replace_directory:
// staged -> .NAME.new, NAME -> .NAME.old, .NAME.new -> NAME, .NAME.old removed); a folder whose
// old entries could not be removed, or whose parent cannot take the renames, is refused before
// anything is written (files.check_replaceable), so no `.NAME.old` is left behind. A run that
// stops early removes its staging folder; one killed outright leaves it, and the next run of
// either tool finishes or undoes the swap and removes it (files.recover_directory), with the
// same names.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

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
        // What a replacement renames: the folder itself, not a symlink to it.
        target_ = fs::weakly_canonical(fs::absolute(path_));
        directory_ = path_;
        recover();
        prepare(force);
    }
    ~OutputFolder() {
        if (staged_ && !published_) {  // stopped early: the earlier output stays as it was
            std::error_code ec;
            std::filesystem::remove_all(directory_, ec);
        }
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
    void finish(const std::string &status = "complete", const std::string &detail = "") {
        record_["status"] = status;
        if (!detail.empty()) record_["detail"] = detail;
        save();
    }
    // The run is complete: a staged folder takes the earlier output's place.
    void publish() {
        if (staged_ && !published_) {
            std::filesystem::rename(directory_, sibling(".new"));
            swap_in();
            directory_ = path_;
        }
        published_ = true;
    }
    // The stop path, once none of its writes is in flight: remove their temporaries
    // (`.NAME.*.tmp`, files.sweep_temporaries; we hold the lock, so they are ours).
    void sweep_temporaries() const {
        namespace fs = std::filesystem;
        static const std::regex temporary("\\..*\\.tmp");
        std::error_code ec;
        for (fs::directory_iterator it(directory_, ec), end; !ec && it != end; it.increment(ec))
            if (std::error_code skip; std::regex_match(it->path().filename().string(), temporary) &&
                                      it->is_regular_file(skip) && !it->is_symlink(skip))
                fs::remove(it->path(), skip);
    }
    // Writing into a staging folder that has not replaced the earlier output (yet).
    bool staged() const { return staged_ && !published_; }
    std::filesystem::path file(const std::string &name) const { return directory_ / name; }

  private:
    std::filesystem::path sibling(const std::string &suffix) const {
        return target_.parent_path() / ("." + target_.filename().string() + suffix);
    }
    // .NAME.old aside, .NAME.new in, .NAME.old removed (files._finish): all or nothing where the
    // OS allows it, a failed second rename puts the old folder back.
    void swap_in() {
        namespace fs = std::filesystem;
        const fs::path fresh = sibling(".new"), old = sibling(".old");
        std::error_code ec;
        if (fs::exists(old, ec)) remove_old(old);
        bool moved = false;
        if (fs::exists(target_, ec)) fs::rename(target_, old), moved = true;
        try {
            fs::rename(fresh, target_);
        } catch (...) {
            if (moved) fs::rename(old, target_);  // roll back: the target is the old folder again
            throw;
        }
        if (fs::exists(old, ec)) remove_old(old);
    }
    // The old folder moved aside removed, or one sentence why it cannot be (files._remove_old).
    void remove_old(const std::filesystem::path &old) const {
        std::error_code ec;
        std::filesystem::remove_all(old, ec);
        if (ec)
            throw bld::Error(BLD_ERROR_IO, target_.string() + " was replaced, but its earlier contents moved aside to " +
                                               old.string() + " cannot be removed (" + ec.message() + "); remove " +
                                               old.string() + " by hand");
    }
    // --force replaces the folder whole or not at all (files.check_replaceable): refused before
    // anything is written when the swap could not finish. Its parent must let us rename entries,
    // and every folder in it must let us remove its entries (a read-only folder can be renamed
    // aside but never emptied).
    void check_replaceable() const {
        namespace fs = std::filesystem;
        const std::string what = "output folder " + shown_;
        const fs::path parent = target_.parent_path();
        if (::access(parent.c_str(), W_OK | X_OK) != 0)
            throw bld::Error(BLD_ERROR_IO, what + " cannot be replaced: its parent folder " + parent.string() +
                                               " is not writable; nothing was written");
        std::vector<fs::path> folders = {target_};  // os.walk(target), top down: folders, no symlinks
        for (size_t i = 0; i < folders.size(); ++i) {
            const fs::path directory = folders[i];
            if (::access(directory.c_str(), W_OK | X_OK) != 0)
                throw bld::Error(BLD_ERROR_IO, what + " cannot be replaced: " +
                                                   (i == 0 ? "it" : "its folder " + directory.string()) +
                                                   " is read-only, so the earlier files in it cannot be removed; "
                                                   "nothing was written");
            std::error_code ec;
            for (fs::directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec))
                if (std::error_code skip; it->is_directory(skip) && !it->is_symlink(skip)) folders.push_back(it->path());
        }
    }
    // Finish or undo a swap a killed run left half done; remove its staging folders.
    void recover() {
        namespace fs = std::filesystem;
        std::error_code ec;
        const fs::path old = sibling(".old");
        if (fs::is_directory(sibling(".new"), ec)) {
            swap_in();
        } else if (fs::is_directory(old, ec)) {
            if (fs::is_directory(target_, ec)) remove_old(old);
            else fs::rename(old, target_);
        }
        const std::string partial = "." + target_.filename().string() + ".partial-";
        if (fs::is_directory(target_.parent_path(), ec))
            for (const auto &entry : fs::directory_iterator(target_.parent_path()))
                if (entry.path().filename().string().rfind(partial, 0) == 0) fs::remove_all(entry.path(), ec);
    }
    void prepare(bool force) {
        namespace fs = std::filesystem;
        std::error_code ec;
        if (fs::exists(path_, ec) && !fs::is_directory(path_, ec))
            throw bld::Error(BLD_ERROR_IO, shown_ + " exists and is not a folder");
        if (fs::is_directory(path_, ec)) {
            static const std::regex ours("(\\d{5,}(\\.step\\d+)?\\.png|bits\\.bldz|grid\\.png|samples\\.json)");
            static const std::regex temporary("\\..*\\.tmp");  // a killed run's (files.sweep_temporaries)
            std::vector<fs::path> entries;
            bool all_ours = fs::is_regular_file(path_ / "samples.json", ec);
            for (const auto &entry : fs::directory_iterator(path_)) {
                const std::string name = entry.path().filename().string();
                if (std::regex_match(name, temporary) && entry.is_regular_file(ec) && !entry.is_symlink(ec)) {
                    fs::remove(entry.path(), ec);
                    continue;
                }
                entries.push_back(entry.path());
                all_ours = all_ours && std::regex_match(name, ours) && entry.is_regular_file(ec) && !entry.is_symlink(ec);
            }
            if (!entries.empty()) {
                if (!all_ours)
                    throw bld::Error(BLD_ERROR_IO, "output folder " + shown_ + " is not empty and holds files bld did not "
                                                   "write there; choose a new or empty folder");
                if (!force)
                    throw bld::Error(BLD_ERROR_IO, "output folder " + shown_ + " holds an earlier run's output; pass "
                                                   "--force to replace it or choose another folder");
                // All or nothing: refused now, before anything is written, if the swap that
                // publishes the new output could not finish.
                check_replaceable();
                // files.staging_directory: a fresh folder beside it, as mkdtemp makes one
                std::string dir = sibling(".partial-XXXXXX").string();
                if (::mkdtemp(dir.data()) == nullptr)
                    throw bld::Error(BLD_ERROR_IO, std::string(std::strerror(errno)) + ": " + dir);
                ::chmod(dir.c_str(), 0755);
                directory_ = dir;
                staged_ = true;
                return;
            }
        }
        fs::create_directories(path_);
    }
    void save() {
        const std::string text = record_.dump(2, ' ', true) + "\n";
        const std::string tmp = (directory_ / ".samples.json.tmp").string();
        {
            std::ofstream out(tmp, std::ios::binary);
            out << text;
            if (!out) throw bld::Error(BLD_ERROR_IO, "cannot write " + tmp);
        }
        std::filesystem::rename(tmp, directory_ / "samples.json");
    }

    std::string shown_;
    std::filesystem::path path_, target_, directory_;  // as given, its real path, where files go
    bool staged_ = false, published_ = false;
    int fd_ = -1;
    Json record_;
};

}  // namespace app
