/* api_anthropic.c — the Anthropic Messages dialect of `dsv4 serve` (api.h): /v1/messages and
 * /v1/messages/count_tokens requests converted to OpenAI-style messages for dsv4_chat_render (system
 * prompt -> system message; text / thinking / tool_use blocks of assistant turns -> content,
 * reasoning_content, tool_calls; tool_result blocks -> tool messages), and the answer as a Message or as
 * the exact SSE sequence message_start, (content_block_start, content_block_delta..., content_block_stop)
 * per block, message_delta, message_stop — thinking blocks with thinking_delta, tool_use blocks with one
 * input_json_delta holding the whole arguments object (a call is only known once its DSML closes).
 *
 * usage.input_tokens counts the prompt tokens that were computed; cache_read_input_tokens those reused
 * from a resident prefix (their sum is the prompt's length), as Anthropic reports prompt caching.
 * Thinking signatures are empty strings: the reasoning is given back verbatim and needs no signature. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "dsv4_chat.h"

#define FAIL(st, param, ...) return dsv4_api_fail(e, (st), (param), __VA_ARGS__)

/* ================================================================================================
 * Requests
 * ================================================================================================ */

static int append_text(dsv4_tok_buf *b, json_t *t) {
    return dsv4_tok_buf_append(b, json_string_value(t), json_string_length(t)) ? -1 : 0;
}

static json_t *buf_json(const dsv4_tok_buf *b) { return json_stringn(b->data ? b->data : "", b->len); }

/* system: a string or an array of {"type":"text","text"} blocks. */
static int get_system(json_t *root, json_t *msgs, dsv4_api_error *e) {
    json_t *s = json_object_get(root, "system");
    if (!s || json_is_null(s)) return 0;
    dsv4_tok_buf b = {0};
    if (json_is_string(s)) {
        append_text(&b, s);
    } else if (json_is_array(s)) {
        for (size_t i = 0; i < json_array_size(s); i++) {
            json_t *blk = json_array_get(s, i), *t = json_object_get(blk, "text");
            if (!json_is_string(t)) {
                dsv4_tok_buf_free(&b);
                FAIL(400, "system", "'system[%zu]' must be a text block {\"type\": \"text\", \"text\": ...}", i);
            }
            if (i && dsv4_tok_buf_append(&b, "\n\n", 2)) break;
            append_text(&b, t);
        }
    } else {
        FAIL(400, "system", "'system' must be a string or an array of text blocks");
    }
    json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "system", "content", buf_json(&b)));
    dsv4_tok_buf_free(&b);
    return 0;
}

static int convert_user(json_t *content, const char *p, json_t *msgs, dsv4_api_error *e) {
    if (json_is_string(content)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", content));
        return 0;
    }
    for (size_t k = 0; k < json_array_size(content); k++) {
        json_t *b = json_array_get(content, k);
        const char *type = json_string_value(json_object_get(b, "type"));
        if (!type) FAIL(400, p, "'%s.content[%zu]' has no string \"type\"", p, k);
        if (!strcmp(type, "text")) {
            json_t *t = json_object_get(b, "text");
            if (!json_is_string(t)) FAIL(400, p, "'%s.content[%zu].text' must be a string", p, k);
            json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", t));
        } else if (!strcmp(type, "tool_result")) {
            json_t *id = json_object_get(b, "tool_use_id"), *c = json_object_get(b, "content");
            if (!json_is_string(id)) FAIL(400, p, "'%s.content[%zu].tool_use_id' must be a string", p, k);
            if (c && !json_is_null(c) && !json_is_string(c) && !json_is_array(c))
                FAIL(400, p, "'%s.content[%zu].content' must be a string or an array of blocks", p, k);
            json_array_append_new(msgs, json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id", id, "content",
                                                  c && !json_is_null(c) ? json_incref(c) : json_string("")));
        } else {
            FAIL(400, p, "'%s.content[%zu]' has type '%.64s'; supported: text, tool_result (user), text, thinking, "
                         "tool_use (assistant)", p, k, type);
        }
    }
    return 0;
}

static int convert_assistant(json_t *content, const char *p, json_t *msgs, dsv4_api_error *e) {
    if (json_is_string(content)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "assistant", "content", content));
        return 0;
    }
    dsv4_tok_buf text = {0}, thinking = {0};
    json_t *tcs = json_array();
    int st = 0;
    for (size_t k = 0; k < json_array_size(content) && !st; k++) {
        json_t *b = json_array_get(content, k);
        const char *type = json_string_value(json_object_get(b, "type"));
        if (type && !strcmp(type, "text") && json_is_string(json_object_get(b, "text"))) {
            append_text(&text, json_object_get(b, "text"));
        } else if (type && !strcmp(type, "thinking") && json_is_string(json_object_get(b, "thinking"))) {
            append_text(&thinking, json_object_get(b, "thinking"));
        } else if (type && !strcmp(type, "redacted_thinking")) {
            /* opaque to us: nothing to give back to the model */
        } else if (type && !strcmp(type, "tool_use")) {
            json_t *id = json_object_get(b, "id"), *name = json_object_get(b, "name"), *in = json_object_get(b, "input");
            if (!json_is_string(id) || !json_is_string(name) || (in && !json_is_object(in))) {
                st = dsv4_api_fail(e, 400, p, "'%s.content[%zu]' (tool_use) needs string id and name and an object "
                                              "input", p, k);
                break;
            }
            json_t *empty = json_object();
            char *args = json_dumps(in ? in : empty, JSON_COMPACT);
            json_decref(empty);
            json_array_append_new(tcs, json_pack("{s:O,s:s,s:{s:O,s:s}}", "id", id, "type", "function", "function",
                                                 "name", name, "arguments", args ? args : "{}"));
            free(args);
        } else {
            st = dsv4_api_fail(e, 400, p, "'%s.content[%zu]' has type '%.64s' or lacks its text; supported in "
                                          "assistant turns: text, thinking, redacted_thinking, tool_use", p, k,
                               type ? type : "(none)");
        }
    }
    if (!st) {
        json_t *m = json_pack("{s:s,s:o}", "role", "assistant", "content", buf_json(&text));
        if (thinking.len) json_object_set_new(m, "reasoning_content", buf_json(&thinking));
        if (json_array_size(tcs)) json_object_set(m, "tool_calls", tcs);
        json_array_append_new(msgs, m);
    }
    json_decref(tcs);
    dsv4_tok_buf_free(&text);
    dsv4_tok_buf_free(&thinking);
    return st;
}

int dsv4_api_parse_anthropic(dsv4_api_kind kind, json_t *root, dsv4_api_request *r, dsv4_api_error *e) {
    json_t *m = json_object_get(root, "messages");
    if (!m) FAIL(400, "messages", "'messages' is required");
    if (!json_is_array(m)) FAIL(400, "messages", "'messages' must be an array");
    if (!json_array_size(m)) FAIL(400, "messages", "'messages' is empty");
    long mt = -1;
    if (dsv4_api_get_int(root, "max_tokens", 1, 1L << 30, &mt, e)) return e->http_status;
    if (kind == DSV4_API_MESSAGES && mt < 0) FAIL(400, "max_tokens", "'max_tokens' is required");
    r->max_tokens = (int)(mt > 0 ? mt : 0);
    if (dsv4_api_get_bool(root, "stream", &r->stream, e) || dsv4_api_get_stops(root, "stop_sequences", r, e) ||
        dsv4_api_get_sampling(root, r, e))
        return e->http_status;

    json_t *msgs = json_array();
    int st = get_system(root, msgs, e);
    for (size_t i = 0; !st && i < json_array_size(m); i++) {
        json_t *x = json_array_get(m, i);
        char p[64];
        snprintf(p, sizeof p, "messages[%zu]", i);
        const char *role = json_string_value(json_object_get(x, "role"));
        json_t *content = json_object_get(x, "content");
        if (!json_is_object(x) || !role) st = dsv4_api_fail(e, 400, p, "'%s' must be an object with a string role", p);
        else if (!json_is_string(content) && !json_is_array(content))
            st = dsv4_api_fail(e, 400, p, "'%s.content' must be a string or an array of blocks", p);
        else if (!strcmp(role, "user")) st = convert_user(content, p, msgs, e);
        else if (!strcmp(role, "assistant")) st = convert_assistant(content, p, msgs, e);
        else st = dsv4_api_fail(e, 400, p, "'%s.role' is '%.64s', not one of: user, assistant", p, role);
    }

    /* tools: {"name","description","input_schema"} -> function tools; server tools (typed) are skipped */
    json_t *tools = NULL, *t = json_object_get(root, "tools");
    if (!st && t && !json_is_null(t)) {
        if (!json_is_array(t)) st = dsv4_api_fail(e, 400, "tools", "'tools' must be an array");
        tools = json_array();
        for (size_t i = 0; !st && i < json_array_size(t); i++) {
            json_t *x = json_array_get(t, i);
            const char *type = json_string_value(json_object_get(x, "type"));
            if (type && strcmp(type, "custom")) continue;
            json_t *name = json_object_get(x, "name"), *schema = json_object_get(x, "input_schema");
            if (!json_is_string(name)) { st = dsv4_api_fail(e, 400, "tools", "'tools[%zu].name' must be a string", i); break; }
            json_t *f = json_pack("{s:O}", "name", name);
            if (json_is_string(json_object_get(x, "description")))
                json_object_set(f, "description", json_object_get(x, "description"));
            json_object_set_new(f, "parameters", schema ? json_incref(schema) : json_object());
            json_array_append_new(tools, json_pack("{s:s,s:o}", "type", "function", "function", f));
        }
        if (!json_array_size(tools)) { json_decref(tools); tools = NULL; }
    }

    /* tool_choice {"type": auto|any|tool|none, "name", "disable_parallel_tool_use"} */
    int mode = 0;
    const char *forced_name = NULL;
    json_t *tc = json_object_get(root, "tool_choice");
    if (!st && tc && !json_is_null(tc)) {
        const char *type = json_string_value(json_object_get(tc, "type"));
        int dp = 0;
        if (!json_is_object(tc) || !type) st = dsv4_api_fail(e, 400, "tool_choice", "'tool_choice' must be {\"type\": ...}");
        else if (!strcmp(type, "auto")) mode = 0;
        else if (!strcmp(type, "any")) mode = 2;
        else if (!strcmp(type, "none")) mode = 1;
        else if (!strcmp(type, "tool")) {
            mode = 3;
            forced_name = json_string_value(json_object_get(tc, "name"));
            if (!forced_name) st = dsv4_api_fail(e, 400, "tool_choice", "'tool_choice' of type tool needs a string name");
        } else st = dsv4_api_fail(e, 400, "tool_choice", "'tool_choice.type' '%.64s' is not one of: auto, any, tool, none", type);
        if (!st && !(st = dsv4_api_get_bool(tc, "disable_parallel_tool_use", &dp, e))) r->parallel_tool_calls = !dp;
    }
    if (!st && mode >= 2 && !tools) st = dsv4_api_fail(e, 400, "tool_choice", "'tool_choice' asks for a tool but no tools are given");
    if (!st && mode == 3) {
        int found = 0;
        for (size_t i = 0; i < json_array_size(tools); i++) {
            const char *n = json_string_value(json_object_get(json_object_get(json_array_get(tools, i), "function"), "name"));
            found |= n && !strcmp(n, forced_name);
        }
        if (!found) st = dsv4_api_fail(e, 400, "tool_choice", "'tool_choice' names '%.64s', which is not among the tools",
                                       forced_name);
    }

    /* thinking {"type": "enabled", "budget_tokens"} */
    int thinking = 0;
    json_t *th = json_object_get(root, "thinking");
    if (!st && th && !json_is_null(th)) {
        const char *type = json_string_value(json_object_get(th, "type"));
        if (!json_is_object(th) || !type) st = dsv4_api_fail(e, 400, "thinking", "'thinking' must be {\"type\": \"enabled\"}");
        else thinking = !strcmp(type, "enabled") || !strcmp(type, "adaptive");
    }
    if (!st) {
        r->tools_given = tools && mode != 1;
        st = dsv4_api_render(msgs, mode == 1 ? NULL : tools, thinking, NULL, r, e);
    }
    if (!st && mode >= 2) {
        if (dsv4_api_puts(&r->forced, "\n\n<" DSV4_CHAT_DSML "tool_calls>\n") ||
            (mode == 3 && (dsv4_api_puts(&r->forced, "<" DSV4_CHAT_DSML "invoke name=\"") ||
                           dsv4_api_puts(&r->forced, forced_name) || dsv4_api_puts(&r->forced, "\">\n"))))
            st = dsv4_api_fail(e, 500, NULL, "out of memory");
    }
    json_decref(tools);
    json_decref(msgs);
    return st;
}

/* ================================================================================================
 * Answers
 * ================================================================================================ */

static json_t *usage(const dsv4_api_answer *a) {
    return json_pack("{s:I,s:I,s:I,s:i}", "input_tokens", (json_int_t)(a->prompt_tokens - a->cached_tokens),
                     "output_tokens", (json_int_t)a->completion_tokens, "cache_read_input_tokens",
                     (json_int_t)a->cached_tokens, "cache_creation_input_tokens", 0);
}

/* The stop string that ended the answer (its text, as Anthropic reports it), or null. */
static json_t *stop_sequence(const dsv4_api_request *r, const dsv4_api_answer *a) {
    if (a->finish != DSV4_FINISH_STOP || a->stop_string <= 0 || a->stop_string > r->n_stops) return json_null();
    return json_string(r->stops[a->stop_string - 1]);
}

static json_t *tool_use_block(json_t *t, int with_input) {
    json_t *in = with_input ? json_loads(json_string_value(json_object_get(t, "arguments")), 0, NULL) : NULL;
    if (!in) in = json_object();
    return json_pack("{s:s,s:O,s:O,s:o}", "type", "tool_use", "id", json_object_get(t, "id"), "name",
                     json_object_get(t, "name"), "input", in);
}

json_t *dsv4_api_anthropic_json(const dsv4_api_request *r, const dsv4_api_ctx *c, const dsv4_api_answer *a) {
    json_t *content = json_array();
    if (a->reasoning.len) /* as the stream does: a thinking block only with thinking text */
        json_array_append_new(content, json_pack("{s:s,s:o,s:s}", "type", "thinking", "thinking", buf_json(&a->reasoning),
                                                 "signature", ""));
    if (a->content.len || (!json_array_size(content) && !json_array_size(a->tool_calls))) /* as the stream does */
        json_array_append_new(content, json_pack("{s:s,s:o}", "type", "text", "text", buf_json(&a->content)));
    for (size_t k = 0; k < json_array_size(a->tool_calls); k++)
        json_array_append_new(content, tool_use_block(json_array_get(a->tool_calls, k), 1));
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:o,s:o}", "id", c->id, "type", "message", "role", "assistant", "model",
                     c->model, "content", content, "stop_reason", dsv4_api_finish_anthropic(a->finish, a->stop_string),
                     "stop_sequence", stop_sequence(r, a), "usage", usage(a));
}

/* Anthropic events carry their type both as the SSE event name and in the body. */
static int aev(dsv4_tok_buf *out, const char *type, json_t *j) {
    if (!j) return -1;
    json_object_set_new(j, "type", json_string(type));
    return dsv4_api_sse(out, type, j);
}

static int close_block(dsv4_api_answer *a, dsv4_tok_buf *out) {
    if (!a->block) return 0;
    int rc = 0;
    if (a->block == 1)
        rc |= aev(out, "content_block_delta", json_pack("{s:i,s:{s:s,s:s}}", "index", a->block_index, "delta", "type",
                                                        "signature_delta", "signature", ""));
    rc |= aev(out, "content_block_stop", json_pack("{s:i}", "index", a->block_index));
    a->block = 0;
    a->block_index++;
    return rc;
}

static int open_block(dsv4_api_answer *a, dsv4_tok_buf *out, int kind) {
    if (a->block == kind) return 0;
    int rc = close_block(a, out);
    a->block = kind;
    json_t *cb = kind == 1 ? json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking", "", "signature", "")
                           : json_pack("{s:s,s:s}", "type", "text", "text", "");
    return rc | aev(out, "content_block_start", json_pack("{s:i,s:o}", "index", a->block_index, "content_block", cb));
}

int dsv4_api_anthropic_stream(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                              const dsv4_sched_event *ev, dsv4_tok_buf *out) {
    size_t tc0 = json_array_size(a->tool_calls);
    if (dsv4_api_answer_add(r, c, a, ev)) return -1;
    int rc = 0;
    if (!a->started) {
        a->started = 1;
        rc |= aev(out, "message_start",
                  json_pack("{s:{s:s,s:s,s:s,s:[],s:s,s:n,s:n,s:o}}", "message", "id", c->id, "type", "message", "role",
                            "assistant", "content", "model", c->model, "stop_reason", "stop_sequence", "usage", usage(a)));
    }
    if (ev->reasoning_len) {
        rc |= open_block(a, out, 1);
        rc |= aev(out, "content_block_delta", json_pack("{s:i,s:{s:s,s:s%}}", "index", a->block_index, "delta", "type",
                                                        "thinking_delta", "thinking", ev->reasoning, ev->reasoning_len));
    }
    if (ev->content_len) {
        rc |= open_block(a, out, 2);
        rc |= aev(out, "content_block_delta", json_pack("{s:i,s:{s:s,s:s%}}", "index", a->block_index, "delta", "type",
                                                        "text_delta", "text", ev->content, ev->content_len));
    }
    for (size_t k = tc0; k < json_array_size(a->tool_calls); k++) {
        json_t *t = json_array_get(a->tool_calls, k);
        rc |= close_block(a, out);
        rc |= aev(out, "content_block_start", json_pack("{s:i,s:o}", "index", a->block_index, "content_block",
                                                        tool_use_block(t, 0)));
        rc |= aev(out, "content_block_delta", json_pack("{s:i,s:{s:s,s:O}}", "index", a->block_index, "delta", "type",
                                                        "input_json_delta", "partial_json", json_object_get(t, "arguments")));
        rc |= aev(out, "content_block_stop", json_pack("{s:i}", "index", a->block_index));
        a->block_index++;
    }
    if (ev->finish != DSV4_FINISH_NONE) {
        if (!a->block_index && !a->block) rc |= open_block(a, out, 2); /* an empty answer still has a text block */
        rc |= close_block(a, out);
        if (ev->finish == DSV4_FINISH_ERROR || ev->finish == DSV4_FINISH_CANCELLED)
            return rc | aev(out, "error", json_pack("{s:{s:s,s:s}}", "error", "type", "api_error", "message",
                                                    a->error[0] ? a->error : "the request was cancelled"));
        rc |= aev(out, "message_delta", json_pack("{s:{s:s,s:o},s:o}", "delta", "stop_reason",
                                                  dsv4_api_finish_anthropic(ev->finish, a->stop_string), "stop_sequence",
                                                  stop_sequence(r, a), "usage", usage(a)));
        rc |= aev(out, "message_stop", json_object());
    }
    return rc;
}
