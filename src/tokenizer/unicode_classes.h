/* unicode_classes.h — code-point ranges of the Unicode classes the pre-tokenizer regexes use (L, M, N, P,
 * S and 's' for \s), as Hugging Face tokenizers classifies them. Data generated into unicode_classes.c by
 * tools/tokenizer/make_unicode_classes.py; internal to src/tokenizer. */
#ifndef DSV4_TOKENIZER_UNICODE_CLASSES_H
#define DSV4_TOKENIZER_UNICODE_CLASSES_H

#include <stddef.h>
#include <stdint.h>

typedef struct { uint32_t lo, hi; } dsv4_uc_range; /* inclusive */

/* Sorted, disjoint ranges of class cls ('L','M','N','P','S','s'); NULL and *n = 0 for any other. */
const dsv4_uc_range *dsv4_unicode_class_ranges(char cls, size_t *n);

#endif
