/* chat.c — DeepSeek V4 prompt rendering (see dsv4_chat.h): the reference renderer's pre-processing (tool
 * messages merged into user turns, tool results ordered by call, earlier reasoning dropped) and per-message
 * templates with the transitions between turns. Owns nothing beyond one call; works on a private copy of
 * the messages. Python truthiness of the reference (`if tools:`, `content or ""`) is mirrored by truthy(). */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "dsv4_chat.h"
#include "tokenizer/pyjson.h"

/* ================================================================================================
 * Fixed texts (spec §7.4)
 * ================================================================================================ */

static const char EFFORT_MAX[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

static const char TOOLS_HEAD[] =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "
    "\"<｜DSML｜tool_calls>\" block like the following:\n\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, "
    "booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
    "<think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";

static const char TOOLS_TAIL[] =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";

static const char RESPONSE_FORMAT[] =
    "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

static const struct { const char *name, *token; } TASKS[] = {
    {"action", "<｜action｜>"}, {"query", "<｜query｜>"}, {"authority", "<｜authority｜>"},
    {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"}, {"read_url", "<｜read_url｜>"},
};

/* ================================================================================================
 * Helpers
 * ================================================================================================ */

void dsv4_chat_opts_default(dsv4_chat_opts *o) {
    memset(o, 0, sizeof *o);
    o->drop_thinking = true;
    o->add_bos = true;
}

/* Python truthiness of a JSON value (missing counts as falsy). */
static bool truthy(const json_t *v) {
    if (!v) return false;
    switch (json_typeof(v)) {
    case JSON_NULL: case JSON_FALSE: return false;
    case JSON_TRUE: return true;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0;
    case JSON_STRING: return json_string_length(v) != 0;
    case JSON_ARRAY: return json_array_size(v) != 0;
    case JSON_OBJECT: return json_object_size(v) != 0;
    }
    return false;
}

static const char *role_of(const json_t *m) { return json_string_value(json_object_get(m, "role")); }
static bool role_is(const json_t *m, const char *r) { const char *x = role_of(m); return x && !strcmp(x, r); }
static bool has_task(const json_t *m) { json_t *t = json_object_get(m, "task"); return t && !json_is_null(t); }

#define PUT(s, n) do { if (dsv4_tok_buf_append(out, (s), (n))) return DSV4_ERR_NOMEM; } while (0)
#define PUTS(s) PUT((s), strlen(s))

/* Appends the text of a content value: a string, null/missing (""), or an array of {"type":"text"} parts
 * (joined with nothing — an extension: the reference accepts strings only). */
static dsv4_status put_text(dsv4_tok_buf *out, const json_t *v, size_t idx, const char *what, dsv4_err *err) {
    if (!v || json_is_null(v)) return DSV4_OK;
    if (json_is_string(v)) { PUT(json_string_value(v), json_string_length(v)); return DSV4_OK; }
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *p = json_array_get(v, i), *t = json_object_get(p, "text");
            const char *type = json_string_value(json_object_get(p, "type"));
            if (!type || strcmp(type, "text") || (t && !json_is_string(t)))
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: %s: only text parts are supported", idx, what);
            if (t) PUT(json_string_value(t), json_string_length(t));
        }
        return DSV4_OK;
    }
    return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: %s must be a string, null or an array of text parts",
                        idx, what);
}

/* ================================================================================================
 * Pre-processing (merge tool messages, order tool results, drop earlier reasoning)
 * ================================================================================================ */

static json_t *merge_tool_messages(const json_t *msgs) {
    json_t *merged = json_array();
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        json_t *last = json_array_size(merged) ? json_array_get(merged, json_array_size(merged) - 1) : NULL;
        bool last_user_blocks = last && role_is(last, "user") && json_object_get(last, "content_blocks");
        if (role_is(m, "tool")) {
            json_t *id = json_object_get(m, "tool_call_id"), *c = json_object_get(m, "content");
            json_t *b = json_pack("{s:s,s:o,s:o}", "type", "tool_result", "tool_use_id",
                                  id ? json_incref(id) : json_string(""), "content", c ? json_incref(c) : json_string(""));
            if (last_user_blocks) json_array_append_new(json_object_get(last, "content_blocks"), b);
            else json_array_append_new(merged, json_pack("{s:s,s:[o]}", "role", "user", "content_blocks", b));
        } else if (role_is(m, "user")) {
            json_t *c = json_object_get(m, "content");
            json_t *cv = c ? json_incref(c) : json_string("");
            json_t *b = json_pack("{s:s,s:O}", "type", "text", "text", cv);
            if (last_user_blocks && !has_task(last)) {
                json_array_append_new(json_object_get(last, "content_blocks"), b);
            } else {
                json_t *n = json_pack("{s:s,s:O,s:[o]}", "role", "user", "content", cv, "content_blocks", b);
                static const char *keep[] = {"task", "wo_eos", "mask"};
                for (int k = 0; k < 3; k++)
                    if (json_object_get(m, keep[k])) json_object_set(n, keep[k], json_object_get(m, keep[k]));
                json_array_append_new(merged, n);
            }
            json_decref(cv);
        } else {
            json_array_append_new(merged, json_deep_copy(m));
        }
    }
    return merged;
}

/* Stable merge sort of tool[0..n) by key (as Python's sorted; O(n log n), where an insertion sort made
 * many tool results in one turn quadratic). Returns 0 when out of memory (nothing changed). */
static int stable_sort(json_t **tool, json_int_t *key, size_t n) {
    json_t **t2 = malloc(n * sizeof *t2);
    json_int_t *k2 = malloc(n * sizeof *k2);
    if (!t2 || !k2) { free(t2); free(k2); return 0; }
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, a = lo, b = mid, o = lo;
            while (a < mid || b < hi) {
                int take_a = a < mid && (b >= hi || key[a] <= key[b]);
                size_t src = take_a ? a++ : b++;
                t2[o] = tool[src];
                k2[o++] = key[src];
            }
        }
        memcpy(tool, t2, n * sizeof *t2);
        memcpy(key, k2, n * sizeof *k2);
    }
    free(t2);
    free(k2);
    return 1;
}

static void sort_tool_results(json_t *msgs) {
    json_t *order = json_object(); /* tool-call id -> index in the last assistant's tool_calls */
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i), *tcs = json_object_get(m, "tool_calls");
        if (role_is(m, "assistant") && truthy(tcs)) {
            json_object_clear(order);
            for (size_t k = 0; k < json_array_size(tcs); k++) {
                json_t *tc = json_array_get(tcs, k), *id = json_object_get(tc, "id");
                if (!truthy(id)) id = json_object_get(json_object_get(tc, "function"), "id");
                if (json_is_string(id) && json_string_length(id))
                    json_object_set_new(order, json_string_value(id), json_integer((json_int_t)k));
            }
            continue;
        }
        json_t *blocks = json_object_get(m, "content_blocks");
        if (!role_is(m, "user") || !truthy(blocks) || !json_object_size(order)) continue;
        size_t nb = json_array_size(blocks), nt = 0;
        json_t **tool = malloc(nb * sizeof *tool);
        json_int_t *key = malloc(nb * sizeof *key);
        if (!tool || !key) { free(tool); free(key); continue; } /* cannot sort: keep the given order */
        for (size_t k = 0; k < nb; k++) {
            json_t *b = json_array_get(blocks, k);
            const char *type = json_string_value(json_object_get(b, "type"));
            if (type && !strcmp(type, "tool_result")) {
                const char *uid = json_string_value(json_object_get(b, "tool_use_id"));
                json_t *o = json_object_get(order, uid ? uid : "");
                tool[nt] = json_incref(b);
                key[nt++] = o ? json_integer_value(o) : 0;
            }
        }
        if (nt < 2) {
            for (size_t k = 0; k < nt; k++) json_decref(tool[k]);
            free(tool);
            free(key);
            continue;
        }
        if (!stable_sort(tool, key, nt)) { /* cannot sort: keep the given order */
            for (size_t k = 0; k < nt; k++) json_decref(tool[k]);
            free(tool);
            free(key);
            continue;
        }
        size_t ti = 0;
        for (size_t k = 0; k < nb; k++) {
            json_t *b = json_array_get(blocks, k);
            const char *type = json_string_value(json_object_get(b, "type"));
            if (type && !strcmp(type, "tool_result") && ti < nt) json_array_set_new(blocks, k, tool[ti++]);
        }
        free(tool);
        free(key);
    }
    json_decref(order);
}

static long last_user_index(const json_t *msgs) {
    for (size_t i = json_array_size(msgs); i-- > 0;)
        if (role_is(json_array_get(msgs, i), "user") || role_is(json_array_get(msgs, i), "developer")) return (long)i;
    return -1;
}

static json_t *drop_thinking_messages(json_t *msgs) {
    long lu = last_user_index(msgs);
    json_t *r = json_array();
    static const char *keep[] = {"user", "system", "tool", "latest_reminder", "direct_search_results"};
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        bool k = (long)i >= lu;
        for (int j = 0; j < 5 && !k; j++) k = role_is(m, keep[j]);
        if (k) json_array_append(r, m);
        else if (role_is(m, "assistant")) {
            json_t *c = json_copy(m);
            json_object_del(c, "reasoning_content");
            json_array_append_new(r, c);
        }
    }
    return r;
}

/* ================================================================================================
 * Rendering
 * ================================================================================================ */

static dsv4_status put_tools(dsv4_tok_buf *out, const json_t *tools, size_t idx, dsv4_err *err) {
    PUT("\n\n", 2);
    PUTS(TOOLS_HEAD);
    for (size_t i = 0; i < json_array_size(tools); i++) {
        json_t *f = json_object_get(json_array_get(tools, i), "function");
        if (!json_is_object(f))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: tools[%zu] has no \"function\" object", idx, i);
        if (i) PUT("\n", 1);
        DSV4_TRY(dsv4_pyjson_dump(f, out));
    }
    PUTS(TOOLS_TAIL);
    return DSV4_OK;
}

static dsv4_status put_system_extras(dsv4_tok_buf *out, const json_t *m, size_t idx, dsv4_err *err) {
    json_t *tools = json_object_get(m, "tools"), *rf = json_object_get(m, "response_format");
    if (truthy(tools)) {
        if (!json_is_array(tools)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: tools must be an array", idx);
        DSV4_TRY(put_tools(out, tools, idx, err));
    }
    if (truthy(rf)) {
        PUTS(RESPONSE_FORMAT);
        DSV4_TRY(dsv4_pyjson_dump(rf, out));
    }
    return DSV4_OK;
}

/* One tool call: <｜DSML｜invoke name="N">\n PARAMS \n</｜DSML｜invoke>, PARAMS from the arguments JSON. */
static dsv4_status put_tool_call(dsv4_tok_buf *out, const json_t *tc, size_t idx, dsv4_err *err) {
    json_t *f = json_object_get(tc, "function");
    json_t *name = json_object_get(f, "name"), *args = json_object_get(f, "arguments");
    if (!json_is_string(name) || !args)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: tool call without function.name/arguments", idx);
    if (strlen(json_string_value(name)) != json_string_length(name))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: tool call name contains a NUL byte", idx);
    PUTS("<｜DSML｜invoke name=\"");
    PUT(json_string_value(name), json_string_length(name));
    PUT("\">\n", 3);
    json_t *obj = NULL;
    if (json_is_string(args)) obj = json_loadb(json_string_value(args), json_string_length(args),
                                               JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: tool call arguments are JSON but not an object", idx);
    }
    if (!obj) obj = json_pack("{s:O}", "arguments", args); /* the reference's fallback for unparsable arguments */
    const char *k;
    size_t kl;
    json_t *v;
    int first = 1;
    dsv4_status st = DSV4_OK;
    json_object_keylen_foreach(obj, k, kl, v) {
        if (!first && dsv4_tok_buf_append(out, "\n", 1)) { st = DSV4_ERR_NOMEM; break; }
        first = 0;
        bool is_str = json_is_string(v);
        if (dsv4_tok_buf_append(out, "<｜DSML｜parameter name=\"", strlen("<｜DSML｜parameter name=\"")) ||
            dsv4_tok_buf_append(out, k, kl) ||
            dsv4_tok_buf_append(out, is_str ? "\" string=\"true\">" : "\" string=\"false\">", is_str ? 16 : 17)) {
            st = DSV4_ERR_NOMEM;
            break;
        }
        st = is_str ? dsv4_tok_buf_append(out, json_string_value(v), json_string_length(v)) : dsv4_pyjson_dump(v, out);
        if (st || dsv4_tok_buf_append(out, "</｜DSML｜parameter>", strlen("</｜DSML｜parameter>"))) { st = DSV4_ERR_NOMEM; break; }
    }
    json_decref(obj);
    if (st) return st;
    PUTS("\n</｜DSML｜invoke>");
    return DSV4_OK;
}

/* lu: index of the last user/developer message, computed once per render (a scan per message made long
 * runs of assistant turns quadratic). */
static dsv4_status render_message(const json_t *msgs, size_t i, long lu, const dsv4_chat_opts *o, bool drop,
                                  dsv4_tok_buf *out, dsv4_err *err) {
    const json_t *m = json_array_get(msgs, i);
    const char *role = role_of(m);
    json_t *content = json_object_get(m, "content");
    if (i == 0 && o->thinking && o->reasoning_effort && !strcmp(o->reasoning_effort, "max")) PUTS(EFFORT_MAX);

    if (!strcmp(role, "system")) {
        DSV4_TRY(put_text(out, content, i, "content", err));
        DSV4_TRY(put_system_extras(out, m, i, err));
    } else if (!strcmp(role, "developer")) {
        if (!truthy(content))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: developer message needs non-empty content", i);
        PUTS(DSV4_CHAT_USER);
        DSV4_TRY(put_text(out, content, i, "content", err));
        DSV4_TRY(put_system_extras(out, m, i, err));
    } else if (!strcmp(role, "user")) {
        PUTS(DSV4_CHAT_USER);
        json_t *blocks = json_object_get(m, "content_blocks");
        for (size_t k = 0; k < json_array_size(blocks); k++) {
            json_t *b = json_array_get(blocks, k);
            const char *type = json_string_value(json_object_get(b, "type"));
            if (k) PUT("\n\n", 2);
            if (type && !strcmp(type, "text")) {
                DSV4_TRY(put_text(out, json_object_get(b, "text"), i, "content", err));
            } else if (type && !strcmp(type, "tool_result")) {
                json_t *tcn = json_object_get(b, "content");
                PUTS("<tool_result>");
                if (json_is_array(tcn)) {
                    for (size_t j = 0; j < json_array_size(tcn); j++) {
                        json_t *p = json_array_get(tcn, j);
                        const char *pt = json_string_value(json_object_get(p, "type"));
                        if (j) PUT("\n\n", 2);
                        if (pt && !strcmp(pt, "text")) DSV4_TRY(put_text(out, json_object_get(p, "text"), i, "tool text", err));
                        else {
                            PUTS("[Unsupported ");
                            PUTS(pt ? pt : "None");
                            PUT("]", 1);
                        }
                    }
                } else {
                    DSV4_TRY(put_text(out, tcn, i, "tool content", err));
                }
                PUTS("</tool_result>");
            }
        }
    } else if (!strcmp(role, "latest_reminder")) {
        PUTS("<｜latest_reminder｜>");
        DSV4_TRY(put_text(out, content, i, "content", err));
    } else if (!strcmp(role, "assistant")) {
        json_t *tcs = json_object_get(m, "tool_calls");
        bool prev_task = i > 0 && has_task(json_array_get(msgs, i - 1));
        if (o->thinking && !prev_task && (!drop || (long)i > lu)) {
            DSV4_TRY(put_text(out, json_object_get(m, "reasoning_content"), i, "reasoning_content", err));
            PUTS(DSV4_CHAT_THINK_END);
        }
        DSV4_TRY(put_text(out, content, i, "content", err));
        if (truthy(tcs)) {
            if (!json_is_array(tcs)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: tool_calls must be an array", i);
            PUTS("\n\n<｜DSML｜tool_calls>\n");
            for (size_t k = 0; k < json_array_size(tcs); k++) {
                if (k) PUT("\n", 1);
                DSV4_TRY(put_tool_call(out, json_array_get(tcs, k), i, err));
            }
            PUTS("\n</｜DSML｜tool_calls>");
        }
        if (!truthy(json_object_get(m, "wo_eos"))) PUTS(DSV4_CHAT_EOS);
    }

    /* transition: only before an assistant / latest_reminder message, or after the last one */
    if (i + 1 < json_array_size(msgs)) {
        const json_t *nx = json_array_get(msgs, i + 1);
        if (!role_is(nx, "assistant") && !role_is(nx, "latest_reminder")) return DSV4_OK;
    }
    json_t *task = json_object_get(m, "task");
    if (task && !json_is_null(task)) {
        const char *tn = json_string_value(task), *tok = NULL;
        for (size_t k = 0; tn && k < sizeof TASKS / sizeof *TASKS; k++)
            if (!strcmp(tn, TASKS[k].name)) tok = TASKS[k].token;
        if (!tok)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                                "message %zu: invalid task (valid: action, query, authority, domain, title, read_url)", i);
        if (strcmp(tn, "action")) {
            PUTS(tok);
        } else {
            PUTS(DSV4_CHAT_ASSISTANT);
            PUTS(o->thinking ? DSV4_CHAT_THINK : DSV4_CHAT_THINK_END);
            PUTS(tok);
        }
    } else if (!strcmp(role, "user") || !strcmp(role, "developer")) {
        PUTS(DSV4_CHAT_ASSISTANT);
        bool think = o->thinking && (!drop || (long)i >= lu);
        PUTS(think ? DSV4_CHAT_THINK : DSV4_CHAT_THINK_END);
    }
    return DSV4_OK;
}

/* Returns a non-NULL pointer when some tools[k].function.name of a tools array holds a NUL byte. */
static const char *nul_tool_name(const json_t *tools) {
    for (size_t k = 0; k < json_array_size(tools); k++) {
        json_t *n = json_object_get(json_object_get(json_array_get(tools, k), "function"), "name");
        if (json_is_string(n) && strlen(json_string_value(n)) != json_string_length(n)) return json_string_value(n);
    }
    return NULL;
}

static dsv4_status validate(const json_t *msgs, const json_t *tools, const dsv4_chat_opts *o, dsv4_err *err) {
    static const char *roles[] = {"system", "user", "assistant", "tool", "developer", "latest_reminder"};
    if (!json_is_array(msgs)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "messages must be a JSON array");
    if (tools && !json_is_null(tools) && !json_is_array(tools))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "tools must be a JSON array");
    if (nul_tool_name(tools)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "tools: a tool name contains a NUL byte");
    if (o->reasoning_effort && strcmp(o->reasoning_effort, "max") && strcmp(o->reasoning_effort, "high"))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "reasoning_effort '%s' is not one of: max, high", o->reasoning_effort);
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu is not an object", i);
        const char *r = role_of(m);
        if (!r) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu has no string \"role\"", i);
        if (strlen(r) != json_string_length(json_object_get(m, "role")))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: the role contains a NUL byte", i);
        if ((r = nul_tool_name(json_object_get(m, "tools"))) != NULL)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "message %zu: a tool name contains a NUL byte", i);
        r = role_of(m);
        bool known = false;
        for (int k = 0; k < 6; k++) known |= !strcmp(r, roles[k]);
        if (!known)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                                "message %zu: unknown role '%.64s' (known: system, user, assistant, tool, developer, "
                                "latest_reminder)", i, r);
    }
    return DSV4_OK;
}

dsv4_status dsv4_chat_render(const json_t *messages, const json_t *tools, const dsv4_chat_opts *o, dsv4_tok_buf *out,
                             dsv4_err *err) {
    DSV4_TRY(validate(messages, tools, o, err));
    json_t *src = json_deep_copy(messages);
    if (!src) return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    if (truthy(tools)) {
        json_t *first = json_array_get(src, 0);
        if (first && role_is(first, "system")) json_object_set(first, "tools", (json_t *)tools);
        else json_array_insert_new(src, 0, json_pack("{s:s,s:s,s:O}", "role", "system", "content", "", "tools", tools));
    }
    json_t *msgs = merge_tool_messages(src);
    json_decref(src);
    sort_tool_results(msgs);
    bool drop = o->drop_thinking;
    for (size_t i = 0; i < json_array_size(msgs); i++)
        if (truthy(json_object_get(json_array_get(msgs, i), "tools"))) drop = false;
    if (o->thinking && drop) {
        json_t *d = drop_thinking_messages(msgs);
        json_decref(msgs);
        msgs = d;
    }
    size_t before = out->len;
    dsv4_status st = DSV4_OK;
    if (o->add_bos) st = dsv4_tok_buf_append(out, DSV4_CHAT_BOS, strlen(DSV4_CHAT_BOS));
    const long lu = last_user_index(msgs);
    for (size_t i = 0; !st && i < json_array_size(msgs); i++) st = render_message(msgs, i, lu, o, drop, out, err);
    json_decref(msgs);
    if (st) {
        out->len = before;
        if (out->data) out->data[before] = 0;
        if (st == DSV4_ERR_NOMEM) dsv4_err_set(err, st, "out of memory");
    }
    return st;
}
