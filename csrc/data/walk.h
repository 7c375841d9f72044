// Directory listing in the order of Python's sorted os.walk, for the data pipeline's input
// enumeration (python/codegen_core/data/sources.py _walk_names is the definition):
//
//   for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
//       dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
//       for name in sorted(filenames): yield prefix_of(dirpath) + name
//
// os.walk's rules, kept here: an entry is a directory if it is one after following symlinks
// (a symlink to a directory is listed as a directory but not entered); an entry whose type
// cannot be read is a file; a directory that cannot be opened or read is skipped silently.
// Names sort by bytes, which is Python's code-point order for UTF-8 names; a name that is not
// valid UTF-8 (Python decodes it with surrogate escapes, which sort differently) makes
// WalkFiles return false so the caller can use Python instead.
#ifndef CODEGEN_DATA_WALK_H_
#define CODEGEN_DATA_WALK_H_

#include <string>
#include <vector>

namespace codegen::data {

// Appends to *paths the files under directory `root` in the order above, each as
// `prefix` + the path relative to root ("a/b.py"). Returns false (with *paths unspecified)
// if some name under root is not valid UTF-8.
bool WalkFiles(const std::string& root, const std::string& prefix,
               const std::vector<std::string>& exclude_dirs, std::vector<std::string>* paths);

}  // namespace codegen::data

#endif  // CODEGEN_DATA_WALK_H_
