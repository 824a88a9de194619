/* pyjson.h — JSON text exactly as Python's json.dumps(value, ensure_ascii=False) writes it with default
 * separators (", " and ": "), object keys in their stored order, floats as Python repr. The chat template
 * embeds such text (tool schemas, tool-call arguments, response formats), so byte equality matters.
 * Internal to src/tokenizer. */
#ifndef DSV4_TOKENIZER_PYJSON_H
#define DSV4_TOKENIZER_PYJSON_H

#include <jansson.h>

#include "dsv4_tokenizer.h"

/* Appends the serialization of v to out. Fails only on allocation (DSV4_ERR_NOMEM). */
dsv4_status dsv4_pyjson_dump(const json_t *v, dsv4_tok_buf *out);
/* Appends Python's repr() of a finite or non-finite double ("1.0", "1e+16", "-0.0", "NaN", "Infinity"). */
dsv4_status dsv4_pyjson_float_repr(double x, dsv4_tok_buf *out);

#endif
