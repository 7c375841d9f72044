// The scanner is a header-only template (pretokenizer.h) so the per-piece callback inlines.
#include "bpe/pretokenizer.h"
