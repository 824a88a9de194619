/* api_openai.c — the OpenAI dialect of `dsv4 serve` (api.h): request parsing for /v1/chat/completions,
 * /v1/completions and /v1/responses (stateless: the whole conversation comes in each request), and their
 * response bodies and SSE streams. Responses' input items and flat tools are converted to chat messages
 * and function tools first, so one renderer (dsv4_chat_render) makes every prompt.
 *
 * Decisions (kept here, beside the code):
 * - thinking is on when the request says so in any dialect: reasoning_effort (other than "none"),
 *   thinking {"type":"enabled"}, chat_template_kwargs {"thinking"|"enable_thinking": true}, Responses'
 *   reasoning.effort. "max" / "xhigh" select the maximum-effort paragraph of the template.
 * - tool_choice "none" leaves the tools out of the prompt; "required" forces the DSML opening of a
 *   tool-call block where the content starts; a named function forces the opening of its invoke too.
 * - response_format json_object / json_schema is attached to the system message as the template's
 *   "## Response Format" section (the released template's mechanism; decoding is not constrained).
 * - /v1/completions: text prompts get BOS prepended (the tokenizer's add_bos_token), max_tokens defaults
 *   to 16 as OpenAI documents; token-id prompts are used as given. echo, suffix and best_of > 1 are
 *   refused (400), not ignored.
 * - max_tokens / max_completion_tokens / max_output_tokens are >= 1 when given (0 would mean "up to the
 *   context" inside, which no client means); reasoning_effort must be a known level.
 * - Responses streams end with response.completed also when the length limit cut the answer (its status
 *   says "incomplete"), so the SDK stream helpers' get_final_response() works; failures end response.failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "dsv4_chat.h"

#define FAIL(st, param, ...) return dsv4_api_fail(e, (st), (param), __VA_ARGS__)

/* ================================================================================================
 * Shared request parts
 * ================================================================================================ */

/* Reads the thinking switches of every dialect; *effort gets "max" or NULL. */
static int get_thinking(json_t *root, int *thinking, const char **effort, dsv4_api_error *e) {
    const char *re = NULL;
    if (dsv4_api_get_str(root, "reasoning_effort", &re, e)) return e->http_status;
    json_t *reasoning = json_object_get(root, "reasoning"); /* Responses: {"effort": ...} */
    if (reasoning && !json_is_null(reasoning)) {
        if (!json_is_object(reasoning)) FAIL(400, "reasoning", "'reasoning' must be an object");
        if (dsv4_api_get_str(reasoning, "effort", &re, e)) return e->http_status;
        if (!re) re = "medium";
    }
    if (re) {
        static const char *const efforts[] = {"none", "minimal", "low", "medium", "high", "xhigh", "max"};
        int known = 0;
        for (size_t i = 0; i < sizeof efforts / sizeof *efforts; i++) known |= !strcmp(re, efforts[i]);
        if (!known)
            FAIL(400, reasoning ? "reasoning.effort" : "reasoning_effort", "'%s' is '%.64s', not one of: none, minimal, "
                 "low, medium, high, xhigh, max", reasoning ? "reasoning.effort" : "reasoning_effort", re);
        *thinking = strcmp(re, "none") != 0;
        if (!strcmp(re, "max") || !strcmp(re, "xhigh")) *effort = "max";
    }
    json_t *th = json_object_get(root, "thinking");
    if (th && !json_is_null(th)) {
        const char *type = NULL;
        if (!json_is_object(th)) FAIL(400, "thinking", "'thinking' must be an object {\"type\": \"enabled\"}");
        if (dsv4_api_get_str(th, "type", &type, e)) return e->http_status;
        if (type) *thinking = !strcmp(type, "enabled") || !strcmp(type, "adaptive");
    }
    json_t *kw = json_object_get(root, "chat_template_kwargs");
    if (kw && !json_is_null(kw)) {
        if (!json_is_object(kw)) FAIL(400, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
        int t = -1;
        if (dsv4_api_get_bool(kw, "thinking", &t, e) || dsv4_api_get_bool(kw, "enable_thinking", &t, e))
            return e->http_status;
        if (t >= 0) *thinking = t;
        const char *kre = NULL;
        if (dsv4_api_get_str(kw, "reasoning_effort", &kre, e)) return e->http_status;
        if (kre && !strcmp(kre, "max")) *effort = "max";
    }
    return 0;
}

/* Checks tools (array of {"type":"function","function":{"name",...}}). */
static int check_tools(json_t *tools, dsv4_api_error *e) {
    if (!json_is_array(tools)) FAIL(400, "tools", "'tools' must be an array");
    for (size_t i = 0; i < json_array_size(tools); i++) {
        json_t *t = json_array_get(tools, i), *f = json_object_get(t, "function");
        char p[64];
        snprintf(p, sizeof p, "tools[%zu]", i);
        if (!json_is_object(t) || !json_is_object(f) || !json_is_string(json_object_get(f, "name")))
            FAIL(400, p, "'%s' must be {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": ...}}", p);
    }
    return 0;
}

static int has_tool(json_t *tools, const char *name) {
    for (size_t i = 0; i < json_array_size(tools); i++) {
        const char *n = json_string_value(json_object_get(json_object_get(json_array_get(tools, i), "function"), "name"));
        if (n && !strcmp(n, name)) return 1;
    }
    return 0;
}

/* tool_choice -> *mode 0 auto, 1 none, 2 required, 3 named (*name). flat: Responses' {"type":"function","name"}. */
static int get_tool_choice(json_t *root, int *mode, const char **name, dsv4_api_error *e) {
    json_t *tc = json_object_get(root, "tool_choice");
    *mode = 0;
    if (!tc || json_is_null(tc)) return 0;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (!strcmp(s, "auto")) *mode = 0;
        else if (!strcmp(s, "none")) *mode = 1;
        else if (!strcmp(s, "required")) *mode = 2;
        else FAIL(400, "tool_choice", "'tool_choice' is '%.64s', not one of: auto, none, required, or a function", s);
        return 0;
    }
    if (json_is_object(tc)) {
        json_t *f = json_object_get(tc, "function");
        const char *n = json_string_value(json_object_get(json_is_object(f) ? f : tc, "name"));
        if (!n) FAIL(400, "tool_choice", "'tool_choice' object needs {\"type\": \"function\", \"function\": {\"name\": ...}}");
        *mode = 3;
        *name = n;
        return 0;
    }
    FAIL(400, "tool_choice", "'tool_choice' must be a string or an object");
}

/* Builds the forced text of tool_choice required / named. */
static int set_forced(dsv4_api_request *r, int mode, const char *name, dsv4_api_error *e) {
    if (mode < 2) return 0;
    const char *open = "\n\n<" DSV4_CHAT_DSML "tool_calls>\n";
    if (dsv4_api_puts(&r->forced, open)) FAIL(500, NULL, "out of memory");
    if (mode == 3 && (dsv4_api_puts(&r->forced, "<" DSV4_CHAT_DSML "invoke name=\"") ||
                      dsv4_api_puts(&r->forced, name) || dsv4_api_puts(&r->forced, "\">\n")))
        FAIL(500, NULL, "out of memory");
    return 0;
}

/* Attaches response_format (json_object / json_schema) to the first system message of msgs. */
static int attach_response_format(json_t *msgs, json_t *rf, const char *param, dsv4_api_error *e) {
    if (!rf || json_is_null(rf)) return 0;
    if (!json_is_object(rf)) FAIL(400, param, "'%s' must be an object", param);
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!type) FAIL(400, param, "'%s' needs a string \"type\"", param);
    json_t *schema;
    if (!strcmp(type, "text")) return 0;
    if (!strcmp(type, "json_object")) schema = json_pack("{s:s}", "type", "json_object");
    else if (!strcmp(type, "json_schema")) {
        json_t *js = json_object_get(rf, "json_schema"), *s = json_object_get(js ? js : rf, "schema");
        if (!json_is_object(s)) FAIL(400, param, "'%s' of type json_schema needs a \"schema\" object", param);
        schema = json_incref(s);
    } else FAIL(400, param, "'%s' type '%.64s' is not one of: text, json_object, json_schema", param, type);
    json_t *first = json_array_get(msgs, 0);
    const char *role = json_string_value(json_object_get(first, "role"));
    if (!first || !role || strcmp(role, "system"))
        json_array_insert_new(msgs, 0, json_pack("{s:s,s:s}", "role", "system", "content", ""));
    json_object_set_new(json_array_get(msgs, 0), "response_format", schema);
    return 0;
}

/* The fields every chat-like request shares, then rendering. msgs is owned by the caller (modified). */
static int finish_chat(json_t *root, json_t *msgs, json_t *tools, json_t *response_format, const char *rf_param,
                       dsv4_api_request *r, dsv4_api_error *e) {
    int thinking = 0, mode = 0;
    const char *effort = NULL, *forced_name = NULL;
    if (get_thinking(root, &thinking, &effort, e) || get_tool_choice(root, &mode, &forced_name, e) ||
        dsv4_api_get_sampling(root, r, e) || dsv4_api_get_bool(root, "parallel_tool_calls", &r->parallel_tool_calls, e) ||
        dsv4_api_get_bool(root, "ignore_eos", &r->ignore_eos, e))
        return e->http_status;
    if (tools && !json_is_null(tools)) DSV4_API_TRY(check_tools(tools, e));
    else tools = NULL;
    if (tools && !json_array_size(tools)) tools = NULL;
    if (mode >= 2 && !tools) FAIL(400, "tool_choice", "'tool_choice' asks for a tool call but no tools are given");
    if (mode == 3 && !has_tool(tools, forced_name))
        FAIL(400, "tool_choice", "'tool_choice' names '%.64s', which is not among the tools", forced_name);
    if (mode == 1) tools = NULL;
    r->tools_given = tools != NULL;
    DSV4_API_TRY(attach_response_format(msgs, response_format, rf_param, e));
    DSV4_API_TRY(dsv4_api_render(msgs, tools, thinking, effort, r, e));
    return set_forced(r, mode, forced_name, e);
}

static int get_stream(json_t *root, dsv4_api_request *r, dsv4_api_error *e) {
    if (dsv4_api_get_bool(root, "stream", &r->stream, e)) return e->http_status;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) FAIL(400, "stream_options", "'stream_options' must be an object");
        if (dsv4_api_get_bool(so, "include_usage", &r->include_usage, e)) return e->http_status;
    }
    long n = 1;
    if (dsv4_api_get_int(root, "n", 1, 1, &n, e)) return e->http_status;
    return 0;
}

/* ================================================================================================
 * /v1/chat/completions
 * ================================================================================================ */

static int parse_chat(json_t *root, dsv4_api_request *r, dsv4_api_error *e) {
    json_t *m = json_object_get(root, "messages");
    if (!m) FAIL(400, "messages", "'messages' is required");
    if (!json_is_array(m)) FAIL(400, "messages", "'messages' must be an array");
    if (!json_array_size(m)) FAIL(400, "messages", "'messages' is empty");
    long mt = 0, mct = 0, top = 0;
    if (dsv4_api_get_int(root, "max_tokens", 1, 1L << 30, &mt, e) ||
        dsv4_api_get_int(root, "max_completion_tokens", 1, 1L << 30, &mct, e) ||
        dsv4_api_get_bool(root, "logprobs", &r->logprobs, e) ||
        dsv4_api_get_int(root, "top_logprobs", 0, DSV4_SAMPLER_MAX_LOGPROBS, &top, e) || get_stream(root, r, e) ||
        dsv4_api_get_stops(root, "stop", r, e))
        return e->http_status;
    r->max_tokens = (int)(mct ? mct : mt);
    r->top_logprobs = (int)top;
    if (r->logprobs) r->sp.logprobs = top > 0 ? (int)top : 1;
    json_t *msgs = json_deep_copy(m);
    if (!msgs) FAIL(500, NULL, "out of memory");
    int st = 0;
    for (size_t i = 0; i < json_array_size(msgs) && !st; i++) {
        json_t *x = json_array_get(msgs, i);
        char p[64];
        snprintf(p, sizeof p, "messages[%zu]", i);
        json_t *role = json_object_get(x, "role");
        const char *rs = json_string_value(role);
        if (!json_is_object(x)) st = dsv4_api_fail(e, 400, p, "'%s' must be an object", p);
        else if (!rs) st = dsv4_api_fail(e, 400, p, "'%s.role' must be a string", p);
        else if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool") &&
                 strcmp(rs, "developer"))
            st = dsv4_api_fail(e, 400, p, "'%s.role' is '%.64s', not one of: system, developer, user, assistant, tool",
                               p, rs);
        if (st) break;
        /* reasoning given back under the other common name */
        json_t *rc = json_object_get(x, "reasoning_content"), *rz = json_object_get(x, "reasoning");
        if ((!rc || json_is_null(rc)) && json_is_string(rz)) json_object_set(x, "reasoning_content", rz);
    }
    if (st) {
        json_decref(msgs);
        return st;
    }
    st = finish_chat(root, msgs, json_object_get(root, "tools"), json_object_get(root, "response_format"),
                         "response_format", r, e);
    json_decref(msgs);
    return st;
}

/* ================================================================================================
 * /v1/completions
 * ================================================================================================ */

static int parse_completions(json_t *root, dsv4_api_request *r, dsv4_api_error *e) {
    json_t *p = json_object_get(root, "prompt");
    if (!p) FAIL(400, "prompt", "'prompt' is required");
    if (json_is_array(p) && json_array_size(p) == 1 && !json_is_integer(json_array_get(p, 0)))
        p = json_array_get(p, 0); /* a batch of one */
    if (json_is_string(p)) {
        const char *s = json_string_value(p);
        size_t bl = strlen(DSV4_CHAT_BOS);
        if ((json_string_length(p) < bl || memcmp(s, DSV4_CHAT_BOS, bl)) && dsv4_api_puts(&r->prompt, DSV4_CHAT_BOS))
            FAIL(500, NULL, "out of memory");
        if (dsv4_tok_buf_append(&r->prompt, s, json_string_length(p))) FAIL(500, NULL, "out of memory");
    } else if (json_is_array(p)) {
        size_t n = json_array_size(p);
        if (!n) FAIL(400, "prompt", "'prompt' is empty");
        if (!(r->prompt_ids = malloc(n * sizeof *r->prompt_ids))) FAIL(500, NULL, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(p, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
                FAIL(400, "prompt", "'prompt' must be a string, or an array of token ids (non-negative integers); "
                     "one prompt per request");
            r->prompt_ids[i] = (int32_t)json_integer_value(v);
        }
        r->n_prompt_ids = n;
    } else {
        FAIL(400, "prompt", "'prompt' must be a string or an array of token ids");
    }
    long mt = 16, lp = -1;
    if (dsv4_api_get_int(root, "max_tokens", 1, 1L << 30, &mt, e) ||
        dsv4_api_get_int(root, "logprobs", 0, DSV4_SAMPLER_MAX_LOGPROBS, &lp, e) || get_stream(root, r, e) ||
        dsv4_api_get_stops(root, "stop", r, e) || dsv4_api_get_sampling(root, r, e) ||
        dsv4_api_get_bool(root, "ignore_eos", &r->ignore_eos, e))
        return e->http_status;
    /* fields this server cannot honour are refused rather than silently ignored: the answer would not be
       what the client asked for */
    int echo = 0;
    long best_of = 1;
    const char *suffix = NULL;
    if (dsv4_api_get_bool(root, "echo", &echo, e) || dsv4_api_get_str(root, "suffix", &suffix, e) ||
        dsv4_api_get_int(root, "best_of", 1, 1, &best_of, e))
        return e->http_status;
    if (echo) FAIL(400, "echo", "'echo' is not supported (the answer holds the completion only)");
    if (suffix && suffix[0]) FAIL(400, "suffix", "'suffix' (fill-in-the-middle) is not supported");
    r->max_tokens = (int)mt;
    if (lp >= 0) {
        r->logprobs = 1;
        r->top_logprobs = (int)lp;
        r->sp.logprobs = lp > 0 ? (int)lp : 1;
    }
    r->chat = 0;
    return 0;
}

/* ================================================================================================
 * /v1/responses (stateless)
 * ================================================================================================ */

/* Text of a Responses content value: a string or an array of {"type": input_text|output_text|text, "text"}. */
static int responses_text(json_t *c, const char *p, dsv4_tok_buf *out, dsv4_api_error *e) {
    if (!c || json_is_null(c)) return 0;
    if (json_is_string(c)) return dsv4_tok_buf_append(out, json_string_value(c), json_string_length(c)) ? 500 : 0;
    if (!json_is_array(c)) FAIL(400, p, "'%s' must be a string or an array of text parts", p);
    for (size_t i = 0; i < json_array_size(c); i++) {
        json_t *part = json_array_get(c, i), *t = json_object_get(part, "text");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!type || (strcmp(type, "input_text") && strcmp(type, "output_text") && strcmp(type, "text") &&
                      strcmp(type, "summary_text") && strcmp(type, "reasoning_text")))
            FAIL(400, p, "'%s[%zu]' has type '%.64s'; only text parts are supported", p, i, type ? type : "(none)");
        if (!json_is_string(t)) FAIL(400, p, "'%s[%zu].text' must be a string", p, i);
        if (dsv4_tok_buf_append(out, json_string_value(t), json_string_length(t))) FAIL(500, NULL, "out of memory");
    }
    return 0;
}

static json_t *text_of(dsv4_tok_buf *b) { return json_stringn(b->data ? b->data : "", b->len); }

/* Converts Responses input items to chat messages (appended to msgs). */
static int responses_items(json_t *input, json_t *msgs, dsv4_api_error *e) {
    dsv4_tok_buf reasoning = {0};   /* a reasoning item, waiting for its assistant message */
    int st = 0;
    for (size_t i = 0; i < json_array_size(input) && !st; i++) {
        json_t *it = json_array_get(input, i);
        char p[64];
        snprintf(p, sizeof p, "input[%zu]", i);
        if (!json_is_object(it)) { st = dsv4_api_fail(e, 400, p, "'%s' must be an object", p); break; }
        const char *type = json_string_value(json_object_get(it, "type"));
        const char *role = json_string_value(json_object_get(it, "role"));
        json_t *last = json_array_size(msgs) ? json_array_get(msgs, json_array_size(msgs) - 1) : NULL;
        const char *last_role = last ? json_string_value(json_object_get(last, "role")) : NULL;
        if (!type || !strcmp(type, "message")) {
            if (!role || (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "system") &&
                          strcmp(role, "developer"))) {
                st = dsv4_api_fail(e, 400, p, "'%s.role' is '%.64s', not one of: system, developer, user, assistant",
                                   p, role ? role : "(none)");
                break;
            }
            dsv4_tok_buf text = {0};
            char cp[80];
            snprintf(cp, sizeof cp, "%s.content", p);
            if (!(st = responses_text(json_object_get(it, "content"), cp, &text, e))) {
                json_t *m = json_pack("{s:s,s:o}", "role", role, "content", text_of(&text));
                if (!strcmp(role, "assistant") && reasoning.len) {
                    json_object_set_new(m, "reasoning_content", text_of(&reasoning));
                    reasoning.len = 0;
                }
                json_array_append_new(msgs, m);
            }
            dsv4_tok_buf_free(&text);
        } else if (!strcmp(type, "reasoning")) {
            char cp[80];
            snprintf(cp, sizeof cp, "%s.content", p);
            json_t *c = json_object_get(it, "content");
            if (!json_array_size(c)) { c = json_object_get(it, "summary"); snprintf(cp, sizeof cp, "%s.summary", p); }
            st = responses_text(c, cp, &reasoning, e);
        } else if (!strcmp(type, "function_call")) {
            json_t *name = json_object_get(it, "name"), *args = json_object_get(it, "arguments");
            json_t *cid = json_object_get(it, "call_id");
            if (!json_is_string(name) || !json_is_string(args) || !json_is_string(cid)) {
                st = dsv4_api_fail(e, 400, p, "'%s' (function_call) needs string name, arguments and call_id", p);
                break;
            }
            if (!last_role || strcmp(last_role, "assistant")) {
                last = json_pack("{s:s,s:s,s:[]}", "role", "assistant", "content", "", "tool_calls");
                if (reasoning.len) {
                    json_object_set_new(last, "reasoning_content", text_of(&reasoning));
                    reasoning.len = 0;
                }
                json_array_append_new(msgs, last);
            }
            json_t *tcs = json_object_get(last, "tool_calls");
            if (!json_is_array(tcs)) json_object_set_new(last, "tool_calls", tcs = json_array());
            json_array_append_new(tcs, json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", cid, "type", "function", "function",
                                                 "name", name, "arguments", args));
        } else if (!strcmp(type, "function_call_output")) {
            json_t *cid = json_object_get(it, "call_id"), *out = json_object_get(it, "output");
            if (!json_is_string(cid)) { st = dsv4_api_fail(e, 400, p, "'%s.call_id' must be a string", p); break; }
            dsv4_tok_buf text = {0};
            char cp[80];
            snprintf(cp, sizeof cp, "%s.output", p);
            if (!(st = responses_text(out, cp, &text, e)))
                json_array_append_new(msgs, json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id", cid, "content",
                                                      text_of(&text)));
            dsv4_tok_buf_free(&text);
        } else {
            st = dsv4_api_fail(e, 400, p, "'%s.type' '%.64s' is not supported (message, reasoning, function_call, "
                                          "function_call_output)", p, type);
        }
    }
    dsv4_tok_buf_free(&reasoning);
    return st;
}

static int parse_responses(json_t *root, dsv4_api_request *r, dsv4_api_error *e) {
    if (json_object_get(root, "previous_response_id") && !json_is_null(json_object_get(root, "previous_response_id")))
        FAIL(400, "previous_response_id", "this server is stateless: send the whole conversation in 'input' "
             "instead of 'previous_response_id'");
    json_t *input = json_object_get(root, "input");
    if (!input) FAIL(400, "input", "'input' is required");
    json_t *msgs = json_array();
    const char *instr = NULL;
    int st = dsv4_api_get_str(root, "instructions", &instr, e);
    if (!st && instr) json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", instr));
    if (st) {
    } else if (json_is_string(input)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", input));
    } else if (json_is_array(input)) {
        st = responses_items(input, msgs, e);
    } else {
        st = dsv4_api_fail(e, 400, "input", "'input' must be a string or an array of items");
    }
    /* tools: flat {"type":"function","name",...} -> {"type":"function","function":{...}}; other kinds skipped */
    json_t *tools = NULL, *t = json_object_get(root, "tools");
    if (!st && t && !json_is_null(t)) {
        if (!json_is_array(t)) st = dsv4_api_fail(e, 400, "tools", "'tools' must be an array");
        tools = json_array();
        for (size_t i = 0; !st && i < json_array_size(t); i++) {
            json_t *x = json_array_get(t, i);
            const char *type = json_string_value(json_object_get(x, "type"));
            if (!type || strcmp(type, "function")) continue;
            if (!json_is_string(json_object_get(x, "name"))) {
                st = dsv4_api_fail(e, 400, "tools", "'tools[%zu].name' must be a string", i);
                break;
            }
            json_t *f = json_object();
            static const char *keys[] = {"name", "description", "parameters", "strict"};
            for (int k = 0; k < 4; k++)
                if (json_object_get(x, keys[k]) && (k != 3)) json_object_set(f, keys[k], json_object_get(x, keys[k]));
            json_array_append_new(tools, json_pack("{s:s,s:o}", "type", "function", "function", f));
        }
    }
    long mt = 0;
    json_t *text = json_object_get(root, "text"), *rf = NULL;
    if (!st && text && !json_is_null(text)) {
        if (!json_is_object(text)) st = dsv4_api_fail(e, 400, "text", "'text' must be an object");
        else rf = json_object_get(text, "format");
    }
    if (!st && !(st = dsv4_api_get_int(root, "max_output_tokens", 1, 1L << 30, &mt, e)) &&
        !(st = dsv4_api_get_bool(root, "stream", &r->stream, e))) {
        r->max_tokens = (int)mt;
        st = finish_chat(root, msgs, tools, rf, "text.format", r, e);
    }
    json_decref(tools);
    json_decref(msgs);
    return st;
}

int dsv4_api_parse_openai(dsv4_api_kind kind, json_t *root, dsv4_api_request *r, dsv4_api_error *e) {
    switch (kind) {
    case DSV4_API_CHAT: return parse_chat(root, r, e);
    case DSV4_API_COMPLETIONS: return parse_completions(root, r, e);
    case DSV4_API_RESPONSES: return parse_responses(root, r, e);
    default: FAIL(500, NULL, "not an OpenAI endpoint");
    }
}

/* ================================================================================================
 * Response bodies
 * ================================================================================================ */

static json_t *buf_json(const dsv4_tok_buf *b) { return json_stringn(b->data ? b->data : "", b->len); }

static json_t *chat_usage(const dsv4_api_answer *a) {
    return json_pack("{s:I,s:I,s:I,s:{s:I},s:{s:I}}", "prompt_tokens", (json_int_t)a->prompt_tokens,
                     "completion_tokens", (json_int_t)a->completion_tokens, "total_tokens",
                     (json_int_t)(a->prompt_tokens + a->completion_tokens), "prompt_tokens_details", "cached_tokens",
                     (json_int_t)a->cached_tokens, "completion_tokens_details", "reasoning_tokens",
                     (json_int_t)a->reasoning_tokens);
}

static json_t *chat_tool_calls(json_t *tcs, size_t from, int with_index) {
    json_t *arr = json_array();
    for (size_t i = from; i < json_array_size(tcs); i++) {
        json_t *t = json_array_get(tcs, i);
        json_t *x = json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", json_object_get(t, "id"), "type", "function", "function",
                              "name", json_object_get(t, "name"), "arguments", json_object_get(t, "arguments"));
        if (with_index) json_object_set_new(x, "index", json_integer((json_int_t)i));
        json_array_append_new(arr, x);
    }
    return arr;
}

/* Completions' logprobs shape from the chat-shaped entries [from, end). */
static json_t *completion_logprobs(json_t *lps, size_t from) {
    json_t *tokens = json_array(), *tlp = json_array(), *top = json_array(), *off = json_array();
    for (size_t i = from; i < json_array_size(lps); i++) {
        json_t *x = json_array_get(lps, i), *t = json_object();
        json_array_append(tokens, json_object_get(x, "token"));
        json_array_append(tlp, json_object_get(x, "logprob"));
        json_t *alts = json_object_get(x, "top_logprobs");
        for (size_t k = 0; k < json_array_size(alts); k++) {
            json_t *alt = json_array_get(alts, k);
            const char *tok = json_string_value(json_object_get(alt, "token"));
            if (!json_object_get(t, tok)) json_object_set(t, tok, json_object_get(alt, "logprob"));
        }
        json_array_append_new(top, t);
        json_array_append_new(off, json_integer(0));
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", tlp, "top_logprobs", top, "text_offset", off);
}

static json_t *slice(json_t *arr, size_t from) {
    json_t *s = json_array();
    for (size_t i = from; i < json_array_size(arr); i++) json_array_append(s, json_array_get(arr, i));
    return s;
}

static json_t *responses_usage(const dsv4_api_answer *a) {
    return json_pack("{s:I,s:{s:I},s:I,s:{s:I},s:I}", "input_tokens", (json_int_t)a->prompt_tokens,
                     "input_tokens_details", "cached_tokens", (json_int_t)a->cached_tokens, "output_tokens",
                     (json_int_t)a->completion_tokens, "output_tokens_details", "reasoning_tokens",
                     (json_int_t)a->reasoning_tokens, "total_tokens", (json_int_t)(a->prompt_tokens + a->completion_tokens));
}

static json_t *responses_reasoning_item(const dsv4_api_ctx *c, const dsv4_api_answer *a, const char *status) {
    char id[160];
    snprintf(id, sizeof id, "rs_%s", c->id);
    return json_pack("{s:s,s:s,s:[],s:[{s:s,s:o}],s:s}", "type", "reasoning", "id", id, "summary", "content", "type",
                     "reasoning_text", "text", buf_json(&a->reasoning), "status", status);
}

static json_t *responses_message_item(const dsv4_api_ctx *c, const dsv4_api_answer *a, const char *status) {
    char id[160];
    snprintf(id, sizeof id, "msg_%s", c->id);
    return json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:o,s:[]}]}", "type", "message", "id", id, "role", "assistant", "status",
                     status, "content", "type", "output_text", "text", buf_json(&a->content), "annotations");
}

static json_t *responses_call_item(const dsv4_api_ctx *c, json_t *t, size_t k, const char *status, int with_args) {
    char id[160];
    snprintf(id, sizeof id, "fc_%s_%zu", c->id, k);
    return json_pack("{s:s,s:s,s:O,s:O,s:o,s:s}", "type", "function_call", "id", id, "call_id", json_object_get(t, "id"),
                     "name", json_object_get(t, "name"), "arguments",
                     with_args ? json_incref(json_object_get(t, "arguments")) : json_string(""), "status", status);
}

/* Whether the answer has a message item: with content, or when nothing else came (an empty answer is
 * still a message); the stream announces the same items as the body lists. */
static int has_message_item(const dsv4_api_answer *a) {
    return a->content.len || (!a->reasoning.len && !json_array_size(a->tool_calls));
}

/* The Response object; done = 0 while streaming (status in_progress, output empty). */
static json_t *responses_object(const dsv4_api_request *r, const dsv4_api_ctx *c, const dsv4_api_answer *a, int done) {
    json_t *out = json_array();
    const char *status = "in_progress";
    json_t *incomplete = json_null();
    if (done) {
        status = a->finish == DSV4_FINISH_LENGTH ? "incomplete"
                 : a->finish == DSV4_FINISH_ERROR || a->finish == DSV4_FINISH_CANCELLED ? "failed" : "completed";
        if (a->finish == DSV4_FINISH_LENGTH) incomplete = json_pack("{s:s}", "reason", "max_output_tokens");
        if (a->reasoning.len) json_array_append_new(out, responses_reasoning_item(c, a, "completed"));
        if (has_message_item(a)) json_array_append_new(out, responses_message_item(c, a, "completed"));
        for (size_t k = 0; k < json_array_size(a->tool_calls); k++)
            json_array_append_new(out, responses_call_item(c, json_array_get(a->tool_calls, k), k, "completed", 1));
    }
    char id[160];
    snprintf(id, sizeof id, "resp_%s", c->id);
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o,s:b,s:[],s:s,s:o}", "id", id, "object", "response", "created_at",
                          (json_int_t)c->created, "status", status, "model", c->model, "output", out, "incomplete_details",
                          incomplete, "parallel_tool_calls", r->parallel_tool_calls, "tools", "tool_choice", "auto",
                          "usage", done ? responses_usage(a) : json_null());
    if (done && a->finish == DSV4_FINISH_ERROR)
        json_object_set_new(o, "error", json_pack("{s:s,s:s}", "code", "server_error", "message", a->error));
    return o;
}

json_t *dsv4_api_openai_json(const dsv4_api_request *r, const dsv4_api_ctx *c, const dsv4_api_answer *a) {
    if (r->kind == DSV4_API_RESPONSES) return responses_object(r, c, a, 1);
    json_t *usage = chat_usage(a), *choice;
    const char *fin = dsv4_api_finish_openai(a->finish);
    if (r->kind == DSV4_API_COMPLETIONS) {
        choice = json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "text", buf_json(&a->content), "logprobs",
                           r->logprobs ? completion_logprobs(a->logprobs, 0) : json_null(), "finish_reason", fin);
        return json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o}", "id", c->id, "object", "text_completion", "created",
                         (json_int_t)c->created, "model", c->model, "choices", choice, "usage", usage);
    }
    int has_tc = json_array_size(a->tool_calls) > 0;
    json_t *msg = json_pack("{s:s,s:o}", "role", "assistant", "content",
                            a->content.len || !has_tc ? buf_json(&a->content) : json_null());
    if (r->thinking || a->reasoning.len) json_object_set_new(msg, "reasoning_content", buf_json(&a->reasoning));
    if (has_tc) json_object_set_new(msg, "tool_calls", chat_tool_calls(a->tool_calls, 0, 0));
    choice = json_pack("{s:i,s:o,s:o,s:s}", "index", 0, "message", msg, "logprobs",
                       r->logprobs ? json_pack("{s:O}", "content", a->logprobs) : json_null(), "finish_reason", fin);
    return json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o}", "id", c->id, "object", "chat.completion", "created",
                     (json_int_t)c->created, "model", c->model, "choices", choice, "usage", usage);
}

/* ================================================================================================
 * Streams
 * ================================================================================================ */

static json_t *chunk(const dsv4_api_request *r, const dsv4_api_ctx *c, json_t *choice) {
    int completions = r->kind == DSV4_API_COMPLETIONS;
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", c->id, "object",
                          completions ? "text_completion" : "chat.completion.chunk", "created", (json_int_t)c->created,
                          "model", c->model, "choices", choice);
    if (r->include_usage) json_object_set_new(j, "usage", json_null());
    return j;
}

static int stream_error(const dsv4_api_answer *a, dsv4_tok_buf *out) {
    return dsv4_api_sse(out, NULL, json_pack("{s:{s:s,s:s,s:n,s:i}}", "error", "message", a->error[0] ? a->error :
                                             "the request ended without an answer", "type", "server_error", "param",
                                             "code", 500));
}

static int chat_stream(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                       const dsv4_sched_event *ev, dsv4_tok_buf *out) {
    size_t tc0 = json_array_size(a->tool_calls), lp0 = json_array_size(a->logprobs);
    if (dsv4_api_answer_add(r, c, a, ev)) return -1;
    int rc = 0, completions = r->kind == DSV4_API_COMPLETIONS;
    if (!a->started && !completions) {
        a->started = 1;
        rc |= dsv4_api_sse(out, NULL, chunk(r, c, json_pack("{s:i,s:{s:s,s:s},s:n,s:n}", "index", 0, "delta", "role",
                                                            "assistant", "content", "", "logprobs", "finish_reason")));
    }
    int has_lp = r->logprobs && json_array_size(a->logprobs) > lp0;
    int has_tc = json_array_size(a->tool_calls) > tc0;
    if (ev->reasoning_len || ev->content_len || has_tc || has_lp) {
        json_t *choice;
        if (completions) {
            choice = json_pack("{s:i,s:s%,s:o,s:n}", "index", 0, "text", ev->content ? ev->content : "",
                               ev->content_len, "logprobs", has_lp ? completion_logprobs(a->logprobs, lp0) : json_null(),
                               "finish_reason");
        } else {
            json_t *delta = json_object();
            if (ev->reasoning_len) json_object_set_new(delta, "reasoning_content", json_stringn(ev->reasoning, ev->reasoning_len));
            if (ev->content_len) json_object_set_new(delta, "content", json_stringn(ev->content, ev->content_len));
            if (has_tc) json_object_set_new(delta, "tool_calls", chat_tool_calls(a->tool_calls, tc0, 1));
            choice = json_pack("{s:i,s:o,s:o,s:n}", "index", 0, "delta", delta, "logprobs",
                               has_lp ? json_pack("{s:o}", "content", slice(a->logprobs, lp0)) : json_null(),
                               "finish_reason");
        }
        rc |= dsv4_api_sse(out, NULL, chunk(r, c, choice));
    }
    if (ev->finish != DSV4_FINISH_NONE) {
        if (ev->finish == DSV4_FINISH_ERROR) rc |= stream_error(a, out);
        const char *fin = dsv4_api_finish_openai(ev->finish);
        json_t *choice = completions
                             ? json_pack("{s:i,s:s,s:n,s:s}", "index", 0, "text", "", "logprobs", "finish_reason", fin)
                             : json_pack("{s:i,s:{},s:n,s:s}", "index", 0, "delta", "logprobs", "finish_reason", fin);
        rc |= dsv4_api_sse(out, NULL, chunk(r, c, choice));
        if (r->include_usage) {
            json_t *u = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", c->id, "object",
                                  completions ? "text_completion" : "chat.completion.chunk", "created",
                                  (json_int_t)c->created, "model", c->model, "choices", "usage", chat_usage(a));
            rc |= dsv4_api_sse(out, NULL, u);
        }
        rc |= dsv4_api_puts(out, "data: [DONE]\n\n");
    }
    return rc;
}

/* Responses events carry their type in the body and a sequence number. */
static int rev(dsv4_api_answer *a, dsv4_tok_buf *out, const char *type, json_t *j) {
    if (!j) return -1;
    json_object_set_new(j, "type", json_string(type));
    json_object_set_new(j, "sequence_number", json_integer(a->seq++));
    return dsv4_api_sse(out, type, j);
}

/* Closes the open reasoning (1) or message (2) item. */
static int responses_close(const dsv4_api_ctx *c, dsv4_api_answer *a, dsv4_tok_buf *out) {
    int rc = 0, oi = a->block_index;
    char id[160];
    if (a->block == 1) {
        snprintf(id, sizeof id, "rs_%s", c->id);
        rc |= rev(a, out, "response.reasoning_text.done", json_pack("{s:s,s:i,s:i,s:o}", "item_id", id, "output_index",
                                                                    oi, "content_index", 0, "text", buf_json(&a->reasoning)));
        rc |= rev(a, out, "response.output_item.done", json_pack("{s:i,s:o}", "output_index", oi, "item",
                                                                 responses_reasoning_item(c, a, "completed")));
    } else if (a->block == 2) {
        snprintf(id, sizeof id, "msg_%s", c->id);
        rc |= rev(a, out, "response.output_text.done", json_pack("{s:s,s:i,s:i,s:o,s:[]}", "item_id", id, "output_index",
                                                                 oi, "content_index", 0, "text", buf_json(&a->content),
                                                                 "logprobs"));
        rc |= rev(a, out, "response.content_part.done",
                  json_pack("{s:s,s:i,s:i,s:{s:s,s:o,s:[]}}", "item_id", id, "output_index", oi, "content_index", 0, "part",
                            "type", "output_text", "text", buf_json(&a->content), "annotations"));
        rc |= rev(a, out, "response.output_item.done", json_pack("{s:i,s:o}", "output_index", oi, "item",
                                                                 responses_message_item(c, a, "completed")));
    }
    if (a->block) a->block_index++;
    a->block = 0;
    return rc;
}

static int responses_stream(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                            const dsv4_sched_event *ev, dsv4_tok_buf *out) {
    size_t tc0 = json_array_size(a->tool_calls);
    int rc = 0;
    if (!a->started) {
        a->started = 1;
        rc |= rev(a, out, "response.created", json_pack("{s:o}", "response", responses_object(r, c, a, 0)));
        rc |= rev(a, out, "response.in_progress", json_pack("{s:o}", "response", responses_object(r, c, a, 0)));
    }
    if (dsv4_api_answer_add(r, c, a, ev)) return -1;
    char id[160];
    if (ev->reasoning_len) {
        snprintf(id, sizeof id, "rs_%s", c->id);
        if (a->block != 1) {
            rc |= responses_close(c, a, out);
            a->block = 1;
            rc |= rev(a, out, "response.output_item.added",
                      json_pack("{s:i,s:{s:s,s:s,s:[],s:[],s:s}}", "output_index", a->block_index, "item", "type",
                                "reasoning", "id", id, "summary", "content", "status", "in_progress"));
        }
        rc |= rev(a, out, "response.reasoning_text.delta",
                  json_pack("{s:s,s:i,s:i,s:s%}", "item_id", id, "output_index", a->block_index, "content_index", 0,
                            "delta", ev->reasoning, ev->reasoning_len));
    }
    if (ev->content_len) {
        snprintf(id, sizeof id, "msg_%s", c->id);
        if (a->block != 2) {
            rc |= responses_close(c, a, out);
            a->block = 2;
            rc |= rev(a, out, "response.output_item.added",
                      json_pack("{s:i,s:{s:s,s:s,s:s,s:s,s:[]}}", "output_index", a->block_index, "item", "type",
                                "message", "id", id, "role", "assistant", "status", "in_progress", "content"));
            rc |= rev(a, out, "response.content_part.added",
                      json_pack("{s:s,s:i,s:i,s:{s:s,s:s,s:[]}}", "item_id", id, "output_index", a->block_index,
                                "content_index", 0, "part", "type", "output_text", "text", "", "annotations"));
        }
        rc |= rev(a, out, "response.output_text.delta",
                  json_pack("{s:s,s:i,s:i,s:s%,s:[]}", "item_id", id, "output_index", a->block_index, "content_index", 0,
                            "delta", ev->content, ev->content_len, "logprobs"));
    }
    for (size_t k = tc0; k < json_array_size(a->tool_calls); k++) {
        rc |= responses_close(c, a, out);
        json_t *t = json_array_get(a->tool_calls, k);
        snprintf(id, sizeof id, "fc_%s_%zu", c->id, k);
        int oi = a->block_index++;
        rc |= rev(a, out, "response.output_item.added",
                  json_pack("{s:i,s:o}", "output_index", oi, "item", responses_call_item(c, t, k, "in_progress", 0)));
        rc |= rev(a, out, "response.function_call_arguments.delta",
                  json_pack("{s:s,s:i,s:O}", "item_id", id, "output_index", oi, "delta", json_object_get(t, "arguments")));
        rc |= rev(a, out, "response.function_call_arguments.done",
                  json_pack("{s:s,s:i,s:O}", "item_id", id, "output_index", oi, "arguments", json_object_get(t, "arguments")));
        rc |= rev(a, out, "response.output_item.done",
                  json_pack("{s:i,s:o}", "output_index", oi, "item", responses_call_item(c, t, k, "completed", 1)));
    }
    if (ev->finish != DSV4_FINISH_NONE && !a->block && !a->block_index && has_message_item(a)) {
        /* nothing came: the empty message item the final response lists is announced and closed */
        snprintf(id, sizeof id, "msg_%s", c->id);
        a->block = 2;
        rc |= rev(a, out, "response.output_item.added",
                  json_pack("{s:i,s:{s:s,s:s,s:s,s:s,s:[]}}", "output_index", a->block_index, "item", "type",
                            "message", "id", id, "role", "assistant", "status", "in_progress", "content"));
        rc |= rev(a, out, "response.content_part.added",
                  json_pack("{s:s,s:i,s:i,s:{s:s,s:s,s:[]}}", "item_id", id, "output_index", a->block_index,
                            "content_index", 0, "part", "type", "output_text", "text", "", "annotations"));
    }
    if (ev->finish != DSV4_FINISH_NONE) {
        rc |= responses_close(c, a, out);
        /* A length-limited answer ends with response.completed too (its response says status "incomplete"
         * with incomplete_details): the SDKs' stream helpers (client.responses.stream(...).get_final_response())
         * only finish on response.completed, and a cut answer is still a whole answer to a client. */
        const char *type = ev->finish == DSV4_FINISH_ERROR || ev->finish == DSV4_FINISH_CANCELLED ? "response.failed"
                                                                                                  : "response.completed";
        rc |= rev(a, out, type, json_pack("{s:o}", "response", responses_object(r, c, a, 1)));
    }
    return rc;
}

int dsv4_api_openai_stream(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                           const dsv4_sched_event *ev, dsv4_tok_buf *out) {
    if (r->kind == DSV4_API_RESPONSES) return responses_stream(r, c, a, ev, out);
    return chat_stream(r, c, a, ev, out);
}
