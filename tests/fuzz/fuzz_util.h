/* fuzz_util.h — helpers shared by the fuzz targets: a strict UTF-8 validator written independently of
 * src/tokenizer/utf8.c, so the targets check the engine's output against a second opinion. */
#ifndef DSV4_FUZZ_UTIL_H
#define DSV4_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

static inline int utf8_ok(const unsigned char *s, size_t n) { /* strict, independent of utf8.c */
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t need;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; }
        else return 0;
        if (need >= n - i) return 0;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[need] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += need + 1;
    }
    return 1;
}

#endif
