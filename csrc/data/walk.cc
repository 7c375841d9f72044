#include "data/walk.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "data/filters.h"

namespace codegen::data {
namespace {

bool IsDirFollowing(const std::string& path) {  // DirEntry.is_dir(); errors mean "no"
  struct stat info;
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool IsLink(const std::string& path) {  // os.path.islink; errors mean "no"
  struct stat info;
  return ::lstat(path.c_str(), &info) == 0 && S_ISLNK(info.st_mode);
}

// dir: the path to open; prefix: what output paths start with ("" or ends in "/").
bool Walk(const std::string& dir, const std::string& prefix,
          const std::vector<std::string>& exclude, std::vector<std::string>* paths) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return true;  // os.walk: a directory it cannot list is skipped
  enum LinkState { kNotLink, kMaybeLink };
  std::vector<std::string> files;
  std::vector<std::pair<std::string, LinkState>> dirs;
  const std::string base = dir == "/" ? dir : dir + "/";
  bool ok = true;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) {  // os.walk: an error while listing drops the whole directory
        ::closedir(d);
        return true;
      }
      break;
    }
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (!IsValidUtf8(name)) ok = false;
    bool is_dir;
    if (e->d_type == DT_DIR) {
      is_dir = true;
    } else if (e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) {
      is_dir = IsDirFollowing(base + name);
    } else {
      is_dir = false;
    }
    if (is_dir) {
      dirs.push_back({name, e->d_type == DT_DIR ? kNotLink : kMaybeLink});
    } else {
      files.push_back(name);
    }
  }
  ::closedir(d);
  if (!ok) return false;
  std::sort(files.begin(), files.end());
  for (const auto& f : files) paths->push_back(prefix + f);
  std::sort(dirs.begin(), dirs.end());
  for (const auto& [sub, link] : dirs) {
    if (std::find(exclude.begin(), exclude.end(), sub) != exclude.end()) continue;
    const std::string path = base + sub;
    // followlinks=False; d_type DT_DIR already says "not a link" (os.walk asks lstat)
    if (link == kMaybeLink && IsLink(path)) continue;
    if (!Walk(path, prefix + sub + "/", exclude, paths)) return false;
  }
  return true;
}

}  // namespace

bool WalkFiles(const std::string& root, const std::string& prefix,
               const std::vector<std::string>& exclude_dirs, std::vector<std::string>* paths) {
  return Walk(root, prefix, exclude_dirs, paths);
}

}  // namespace codegen::data
