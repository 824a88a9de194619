/* fuzz_chat.c — libFuzzer target for the chat renderer (tokenizer/chat.c, pyjson.c). Input: one option byte,
 * then JSON text. The JSON is either a messages array or an object {"messages": ..., "tools": ...} (the
 * CLI's file shape); any other value goes in as messages too, which must be refused. Option byte: bit 0
 * thinking, bits 1-2 reasoning effort (none / "high" / "max" / "bogus"), bit 3 drop_thinking, bit 4
 * add_bos. Checked: an error has a message and leaves the output buffer as it was; success appends valid
 * UTF-8 text (inputs are jansson strings, so UTF-8); messages and tools are not modified; rendering is
 * deterministic. Build: make fuzz; run:
 *   build/fuzz/fuzz_chat -max_total_time=60 DIR tests/fuzz/corpus_chat */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4_chat.h"
#include "fuzz_util.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned flags = data[0];
    json_t *root = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!root) return 0;
    json_t *messages = root, *tools = NULL;
    if (json_is_object(root) && json_object_get(root, "messages")) {
        messages = json_object_get(root, "messages");
        tools = json_object_get(root, "tools");
    }
    json_t *before = json_deep_copy(root);
    if (!before) abort();

    static const char *const efforts[] = {NULL, "high", "max", "bogus"};
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = flags & 1;
    o.reasoning_effort = efforts[(flags >> 1) & 3];
    o.drop_thinking = (flags >> 3) & 1;
    o.add_bos = (flags >> 4) & 1;

    static const char prefix[] = "prefix";
    dsv4_tok_buf out = {0}, again = {0};
    if (dsv4_tok_buf_append(&out, prefix, sizeof prefix - 1)) abort();
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_chat_render(messages, tools, &o, &out, &err);
    if (st != DSV4_OK) {
        if (!err.msg[0]) abort(); /* every refusal says why */
        if (out.len != sizeof prefix - 1 || memcmp(out.data, prefix, out.len) || out.data[out.len]) abort();
    } else {
        if (memcmp(out.data, prefix, sizeof prefix - 1)) abort();
        if (!utf8_ok((const unsigned char *)out.data, out.len)) abort();
        if (o.reasoning_effort && !strcmp(o.reasoning_effort, "bogus")) abort(); /* must be refused */
        dsv4_err err2 = {{0}};
        if (dsv4_chat_render(messages, tools, &o, &again, &err2) != DSV4_OK) abort();
        if (again.len + sizeof prefix - 1 != out.len || (again.len && memcmp(again.data, out.data + sizeof prefix - 1, again.len)))
            abort();
    }
    if (!json_equal(root, before)) abort(); /* the input is not modified */
    dsv4_tok_buf_free(&out);
    dsv4_tok_buf_free(&again);
    json_decref(before);
    json_decref(root);
    return 0;
}
