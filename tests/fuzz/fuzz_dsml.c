/* fuzz_dsml.c — libFuzzer target for the completion / DSML push parser (tokenizer/dsml.c). Input: byte 0
 * (bit 0 thinking mode, bits 1-3 a count k), then k chunk-size bytes, then the completion text. The text is
 * parsed whole (dsv4_chat_parse_completion) and streamed in chunks whose sizes cycle through the k bytes
 * (b % 17, 0 = an empty feed; b >= 0xF0 = the rest at once; k = 0 = byte by byte). Checked: the two agree
 * (same outcome, same reasoning, content and tool calls; the whole parse may additionally refuse text
 * that is not UTF-8, since it returns JSON), every error has a message, a failed parser stays failed, and
 * on valid UTF-8 input no delta splits a character. Build: make fuzz; run:
 *   build/fuzz/fuzz_dsml -max_total_time=60 DIR tests/fuzz/corpus_dsml */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4_chat.h"
#include "fuzz_util.h"


typedef struct {
    dsv4_tok_buf reasoning, content;
    json_t *calls; /* [[name, arguments]...], strings kept as raw bytes via json_stringn_nocheck */
    int check_utf8, split_char;
} sink;

static dsv4_status on_text(dsv4_tok_buf *b, sink *s, const char *t, size_t n) {
    if (!n) abort(); /* empty deltas are never sent */
    if (s->check_utf8 && !utf8_ok((const unsigned char *)t, n)) s->split_char = 1;
    return dsv4_tok_buf_append(b, t, n);
}
static dsv4_status on_reasoning(void *ud, const char *t, size_t n) { return on_text(&((sink *)ud)->reasoning, ud, t, n); }
static dsv4_status on_content(void *ud, const char *t, size_t n) { return on_text(&((sink *)ud)->content, ud, t, n); }
static dsv4_status on_call(void *ud, const char *name, const char *args) {
    json_t *c = json_pack("[oo]", json_stringn_nocheck(name, strlen(name)), json_stringn_nocheck(args, strlen(args)));
    if (!c || json_array_append_new(((sink *)ud)->calls, c)) abort();
    return DSV4_OK;
}

static int same(const dsv4_tok_buf *b, const json_t *s) {
    return json_is_string(s) && json_string_length(s) == b->len && (!b->len || !memcmp(json_string_value(s), b->data, b->len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    bool thinking = data[0] & 1;
    size_t k = (data[0] >> 1) & 7;
    if (size < 1 + k) return 0;
    const uint8_t *sizes = data + 1;
    size_t n = size - 1 - k;
    char *text = malloc(n ? n : 1); /* exact-size copy: overreads hit the redzone */
    if (!text) abort();
    memcpy(text, data + 1 + k, n);

    /* streamed */
    sink s = {{0}, {0}, json_array(), utf8_ok((const unsigned char *)text, n), 0};
    dsv4_chat_parse_cb cb = {&s, on_reasoning, on_content, on_call};
    dsv4_chat_parser *p = NULL;
    if (dsv4_chat_parser_create(thinking, &cb, &p) != DSV4_OK) abort();
    dsv4_err err = {{0}};
    dsv4_status st = DSV4_OK;
    size_t off = 0, empties = 0;
    for (size_t i = 0; off < n; i++) {
        size_t c = 1;
        if (k) c = sizes[i % k] >= 0xF0 ? n - off : sizes[i % k] % 17;
        if (c > n - off) c = n - off;
        empties = c ? 0 : empties + 1;
        if (empties > k) c = 1; /* all sizes 0: still make progress */
        st = dsv4_chat_parser_feed(p, text + off, c, &err);
        off += c;
        if (st) break;
    }
    if (!st) st = dsv4_chat_parser_finish(p, &err);
    if (st) {
        if (!err.msg[0]) abort();
        dsv4_err e2 = {{0}};
        if (dsv4_chat_parser_feed(p, "x", 1, &e2) == DSV4_OK || !e2.msg[0]) abort(); /* stays failed */
    }
    dsv4_chat_parser_destroy(p);
    if (s.split_char) abort();

    /* whole */
    json_t *msg = NULL;
    dsv4_err werr = {{0}};
    dsv4_status wst = dsv4_chat_parse_completion(text, n, thinking, &msg, &werr);
    if (wst) {
        if (!werr.msg[0] || msg) abort();
        if (!st) { /* only allowed when the parts are not UTF-8 */
            int all_utf8 = utf8_ok((const unsigned char *)s.reasoning.data, s.reasoning.len) &&
                           utf8_ok((const unsigned char *)s.content.data, s.content.len);
            size_t i;
            json_t *c;
            json_array_foreach(s.calls, i, c) {
                for (size_t j = 0; j < 2; j++) {
                    json_t *x = json_array_get(c, j);
                    all_utf8 &= utf8_ok((const unsigned char *)json_string_value(x), json_string_length(x));
                }
            }
            if (all_utf8) abort();
        }
    } else {
        if (st) abort(); /* the whole parse accepted what the streamed one refused */
        if (!same(&s.reasoning, json_object_get(msg, "reasoning_content")) || !same(&s.content, json_object_get(msg, "content")))
            abort();
        json_t *calls = json_object_get(msg, "tool_calls");
        if (json_array_size(calls) != json_array_size(s.calls)) abort();
        for (size_t i = 0; i < json_array_size(calls); i++) {
            json_t *f = json_object_get(json_array_get(calls, i), "function"), *c = json_array_get(s.calls, i);
            if (!json_equal(json_object_get(f, "name"), json_array_get(c, 0)) ||
                !json_equal(json_object_get(f, "arguments"), json_array_get(c, 1)))
                abort();
            /* the arguments are a JSON object */
            json_t *a = json_loads(json_string_value(json_object_get(f, "arguments")), JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            if (!json_is_object(a)) abort();
            json_decref(a);
        }
        json_decref(msg);
    }
    dsv4_tok_buf_free(&s.reasoning);
    dsv4_tok_buf_free(&s.content);
    json_decref(s.calls);
    free(text);
    return 0;
}
