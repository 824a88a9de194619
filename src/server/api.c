/* api.c — the parts of the API dialects (api.h) they all share: loading the body as JSON with errors a
 * client can act on, typed field readers that name the field at fault, the sampling fields, rendering the
 * prompt, error bodies, the answer accumulator (text, tool calls with ids, logprobs, usage) and SSE
 * framing. Owns nothing beyond one call or one answer; no global state. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "dsv4_chat.h"

/* ================================================================================================
 * Errors
 * ================================================================================================ */

int dsv4_api_fail(dsv4_api_error *e, int status, const char *param, const char *fmt, ...) {
    e->http_status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    /* messages quote the request (jansson's error text, names): keep them valid UTF-8 for the JSON body */
    for (char *m = e->message, *p = e->param; m; m = p, p = NULL) {
        size_t n = strlen(m), i = 0;
        while ((i += dsv4_utf8_valid_prefix(m + i, n - i)) < n) m[i++] = '?';
    }
    return status;
}

static const char *openai_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *anthropic_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

json_t *dsv4_api_error_json(dsv4_api_kind kind, const dsv4_api_error *e) {
    if (kind == DSV4_API_MESSAGES || kind == DSV4_API_COUNT_TOKENS)
        return json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", anthropic_type(e->http_status),
                         "message", e->message);
    return json_pack("{s:{s:s,s:s,s:o,s:i}}", "error", "message", e->message, "type", openai_type(e->http_status),
                     "param", e->param[0] ? json_string(e->param) : json_null(), "code", e->http_status);
}

/* ================================================================================================
 * Requests
 * ================================================================================================ */

void dsv4_api_request_free(dsv4_api_request *r) {
    dsv4_tok_buf_free(&r->prompt);
    dsv4_tok_buf_free(&r->forced);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stops; i++) free(r->stops[i]);
    memset(r, 0, sizeof *r);
}

int dsv4_api_parse(dsv4_api_kind kind, const char *body, size_t len, dsv4_api_request *r, dsv4_api_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->parallel_tool_calls = 1;
    dsv4_sampling_params_default(&r->sp);
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", len, 0, &je); /* duplicate keys: the last wins, as in Python */
    if (!root) {
        if (json_error_code(&je) == json_error_invalid_utf8)
            return dsv4_api_fail(e, 400, NULL, "the request body is not valid UTF-8 (byte %d)", je.position);
        if (json_error_code(&je) == json_error_null_character)
            return dsv4_api_fail(e, 400, NULL, "the request body holds a NUL character in a string (byte %d)",
                                 je.position);
        return dsv4_api_fail(e, 400, NULL, "malformed JSON at line %d, column %d: %s", je.line, je.column, je.text);
    }
    int st;
    if (!json_is_object(root)) st = dsv4_api_fail(e, 400, NULL, "the request body must be a JSON object");
    else if (kind == DSV4_API_MESSAGES || kind == DSV4_API_COUNT_TOKENS) st = dsv4_api_parse_anthropic(kind, root, r, e);
    else st = dsv4_api_parse_openai(kind, root, r, e);
    json_decref(root);
    if (st) {
        dsv4_api_request_free(r);
        r->kind = kind;
    }
    return st;
}

/* ---- typed field readers ---------------------------------------------------------------------- */

int dsv4_api_get_bool(json_t *o, const char *key, int *out, dsv4_api_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return dsv4_api_fail(e, 400, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

int dsv4_api_get_int(json_t *o, const char *key, long lo, long hi, long *out, dsv4_api_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v))) d = json_real_value(v);
    else return dsv4_api_fail(e, 400, key, "'%s' must be an integer", key);
    if (d < (double)lo || d > (double)hi)
        return dsv4_api_fail(e, 400, key, "'%s' is %.15g, outside [%ld, %ld]", key, d, lo, hi);
    *out = json_is_integer(v) ? (long)json_integer_value(v) : (long)d;
    return 0;
}

int dsv4_api_get_num(json_t *o, const char *key, double lo, double hi, double *out, dsv4_api_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return dsv4_api_fail(e, 400, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) return dsv4_api_fail(e, 400, key, "'%s' is %g, outside [%g, %g]", key, d, lo, hi);
    *out = d;
    return 0;
}

int dsv4_api_get_str(json_t *o, const char *key, const char **out, dsv4_api_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return dsv4_api_fail(e, 400, key, "'%s' must be a string", key);
    *out = json_string_value(v);
    return 0;
}

int dsv4_api_get_sampling(json_t *root, dsv4_api_request *r, dsv4_api_error *e) {
    double t = r->sp.temperature, p = r->sp.top_p, mp = r->sp.min_p, pp = 0, fp = 0, rp = 1;
    long k = 0, seed = 0;
    int has_seed = json_object_get(root, "seed") && !json_is_null(json_object_get(root, "seed"));
    if (dsv4_api_get_num(root, "temperature", 0, 100, &t, e) || dsv4_api_get_num(root, "top_p", 0, 1, &p, e) ||
        dsv4_api_get_num(root, "min_p", 0, 1, &mp, e) || dsv4_api_get_int(root, "top_k", -1, 1L << 30, &k, e) ||
        dsv4_api_get_int(root, "seed", -(1L << 62), 1L << 62, &seed, e) ||
        dsv4_api_get_num(root, "presence_penalty", -2, 2, &pp, e) ||
        dsv4_api_get_num(root, "frequency_penalty", -2, 2, &fp, e) ||
        dsv4_api_get_num(root, "repetition_penalty", 1e-3, 100, &rp, e))
        return e->http_status;
    if (p <= 0) return dsv4_api_fail(e, 400, "top_p", "'top_p' must be in (0, 1]");
    r->sp.temperature = (float)t;
    r->sp.top_p = (float)p;
    r->sp.min_p = (float)mp;
    r->sp.top_k = k < 0 ? 0 : (int)k;
    r->sp.presence_penalty = (float)pp;
    r->sp.frequency_penalty = (float)fp;
    r->sp.repetition_penalty = (float)rp;
    if (has_seed) {
        r->sp.seed = (uint64_t)seed;
        r->seed_given = 1;
    }
    return 0;
}

static int add_stop(dsv4_api_request *r, const char *key, json_t *s, dsv4_api_error *e) {
    if (!json_is_string(s)) return dsv4_api_fail(e, 400, key, "'%s' must be a string or an array of strings", key);
    if (!json_string_length(s)) return 0; /* an empty stop string would end every answer at once: ignored */
    if (r->n_stops == DSV4_API_MAX_STOPS)
        return dsv4_api_fail(e, 400, key, "'%s' holds more than %d strings", key, DSV4_API_MAX_STOPS);
    if (!(r->stops[r->n_stops] = strdup(json_string_value(s)))) return dsv4_api_fail(e, 500, NULL, "out of memory");
    r->n_stops++;
    return 0;
}

int dsv4_api_get_stops(json_t *root, const char *key, dsv4_api_request *r, dsv4_api_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) DSV4_API_TRY(add_stop(r, key, json_array_get(v, i), e));
        return 0;
    }
    return add_stop(r, key, v, e);
}

/* The text of a final assistant message that is a prefill: no tool calls, no reasoning, content a string or
 * text parts. Appends it to out and returns 1; 0 (out untouched) when the message is not one. */
static int prefill_text(json_t *m, dsv4_tok_buf *out) {
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *tc = json_object_get(m, "tool_calls"), *c = json_object_get(m, "content");
    json_t *rc = json_object_get(m, "reasoning_content");
    if (!role || strcmp(role, "assistant") || json_array_size(tc) || (json_is_string(rc) && json_string_length(rc)))
        return 0;
    if (json_is_string(c)) return !dsv4_tok_buf_append(out, json_string_value(c), json_string_length(c));
    if (!json_is_array(c)) return 0;
    for (size_t i = 0; i < json_array_size(c); i++) {
        json_t *p = json_array_get(c, i);
        const char *type = json_string_value(json_object_get(p, "type"));
        if (!type || strcmp(type, "text") || !json_is_string(json_object_get(p, "text"))) return 0;
    }
    for (size_t i = 0; i < json_array_size(c); i++) {
        json_t *t = json_object_get(json_array_get(c, i), "text");
        if (dsv4_tok_buf_append(out, json_string_value(t), json_string_length(t))) return 0;
    }
    return 1;
}

/* A conversation ending with an assistant message of plain text is a prefill (Anthropic's documented
 * feature, DeepSeek's prefix completion): the prompt is the conversation before it, with the generation
 * prompt, followed by that text, and the answer continues it. Rendered whole, the message would be a
 * closed turn (EOS) with no new assistant turn after it: the model would write past the end of the chat. */
int dsv4_api_render(json_t *messages, json_t *tools, int thinking, const char *effort, dsv4_api_request *r,
                    dsv4_api_error *e) {
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = thinking != 0;
    o.reasoning_effort = thinking ? effort : NULL;
    dsv4_err err = {{0}};
    size_t n = json_array_size(messages);
    dsv4_tok_buf prefill = {0};
    json_t *head = NULL;
    if (n >= 2 && prefill_text(json_array_get(messages, n - 1), &prefill)) {
        if (thinking) {
            dsv4_tok_buf_free(&prefill);
            return dsv4_api_fail(e, 400, "messages", "a final assistant message (a prefill) cannot be combined with "
                                                     "thinking: the answer would start inside the reasoning");
        }
        if (!(head = json_array())) { dsv4_tok_buf_free(&prefill); return dsv4_api_fail(e, 500, NULL, "out of memory"); }
        for (size_t i = 0; i + 1 < n; i++) json_array_append(head, json_array_get(messages, i));
    }
    int st = 0;
    if (dsv4_chat_render(head ? head : messages, tools, &o, &r->prompt, &err))
        st = dsv4_api_fail(e, 400, "messages", "%s", err.msg);
    else if (prefill.len && dsv4_tok_buf_append(&r->prompt, prefill.data, prefill.len))
        st = dsv4_api_fail(e, 500, NULL, "out of memory");
    json_decref(head);
    dsv4_tok_buf_free(&prefill);
    if (st) return st;
    r->chat = 1;
    r->thinking = thinking != 0;
    return 0;
}

/* ================================================================================================
 * Answers
 * ================================================================================================ */

void dsv4_api_answer_init(dsv4_api_answer *a) {
    memset(a, 0, sizeof *a);
    a->tool_calls = json_array();
    a->logprobs = json_array();
}

void dsv4_api_answer_free(dsv4_api_answer *a) {
    dsv4_tok_buf_free(&a->reasoning);
    dsv4_tok_buf_free(&a->content);
    json_decref(a->tool_calls);
    json_decref(a->logprobs);
    memset(a, 0, sizeof *a);
}

/* The text of one token as JSON: the token's bytes (invalid UTF-8 replaced) and the raw bytes array. */
static json_t *token_entry(const dsv4_tokenizer *tok, int32_t id, float lp) {
    size_t n = 0;
    const char *b = tok ? dsv4_tokenizer_token_bytes(tok, id, &n) : NULL;
    dsv4_tok_buf s = {0};
    json_t *bytes = json_array();
    if (b) {
        dsv4_utf8_append_lossy(&s, b, n);
        for (size_t i = 0; i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)b[i]));
    }
    json_t *j = json_pack("{s:s%,s:f,s:o}", "token", s.data ? s.data : "", s.len, "logprob", (double)lp, "bytes", bytes);
    dsv4_tok_buf_free(&s);
    return j;
}

int dsv4_api_answer_add(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                        const dsv4_sched_event *ev) {
    if (ev->reasoning_len && dsv4_tok_buf_append(&a->reasoning, ev->reasoning, ev->reasoning_len)) return -1;
    if (ev->content_len && dsv4_tok_buf_append(&a->content, ev->content, ev->content_len)) return -1;
    if (ev->reasoning_len && !ev->content_len && !ev->n_tool_calls) a->reasoning_tokens += ev->n_tokens;
    for (int i = 0; i < ev->n_tool_calls; i++) {
        if (!r->parallel_tool_calls && json_array_size(a->tool_calls) >= 1) break;
        char full[192]; /* unique across requests: the request id carries a counter */
        snprintf(full, sizeof full, "%s_%s_%zu", r->kind == DSV4_API_MESSAGES ? "toolu" : "call", c->id ? c->id : "0",
                 json_array_size(a->tool_calls));
        json_array_append_new(a->tool_calls, json_pack("{s:s,s:s,s:s}", "id", full, "name", ev->tool_calls[i].name,
                                                       "arguments", ev->tool_calls[i].arguments));
    }
    if (r->logprobs && ev->logprobs) {
        for (int i = 0; i < ev->n_tokens; i++) {
            const dsv4_logprobs *lp = &ev->logprobs[i];
            json_t *t = token_entry(c->tok, ev->tokens[i], lp->token_logprob), *top = json_array();
            for (int k = 0; k < lp->n && k < r->top_logprobs; k++)
                json_array_append_new(top, token_entry(c->tok, lp->ids[k], lp->logprobs[k]));
            json_object_set_new(t, "top_logprobs", top);
            json_array_append_new(a->logprobs, t);
        }
    }
    if (ev->ttft_s > 0) a->ttft_s = ev->ttft_s;
    a->prompt_tokens = ev->prompt_tokens;
    a->cached_tokens = ev->cached_tokens;
    a->completion_tokens = ev->completion_tokens;
    if (ev->finish != DSV4_FINISH_NONE) {
        a->finish = ev->finish;
        a->stop_string = ev->stop_string;
        snprintf(a->error, sizeof a->error, "%s", ev->error);
    }
    return 0;
}

json_t *dsv4_api_answer_json(const dsv4_api_request *r, const dsv4_api_ctx *c, const dsv4_api_answer *a) {
    if (r->kind == DSV4_API_MESSAGES) return dsv4_api_anthropic_json(r, c, a);
    return dsv4_api_openai_json(r, c, a);
}

int dsv4_api_stream_event(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                          const dsv4_sched_event *ev, dsv4_tok_buf *out) {
    if (r->kind == DSV4_API_MESSAGES) return dsv4_api_anthropic_stream(r, c, a, ev, out);
    return dsv4_api_openai_stream(r, c, a, ev, out);
}

const char *dsv4_api_finish_openai(dsv4_finish f) {
    switch (f) {
    case DSV4_FINISH_LENGTH: return "length";
    case DSV4_FINISH_TOOL_CALLS: return "tool_calls";
    case DSV4_FINISH_MALFORMED: return "malformed_tool_call";
    case DSV4_FINISH_CANCELLED: return "cancelled";
    case DSV4_FINISH_ERROR: return "error";
    default: return "stop";
    }
}

/* Anthropic clients switch on stop_reason, and the SDKs type it as one of end_turn, max_tokens,
 * stop_sequence, tool_use (, pause_turn, refusal): malformed DSML is a turn that ended with its raw text
 * as content (end_turn); cancelled and failed requests never reach a stop_reason (an error event). */
const char *dsv4_api_finish_anthropic(dsv4_finish f, int stop_string) {
    switch (f) {
    case DSV4_FINISH_LENGTH: return "max_tokens";
    case DSV4_FINISH_TOOL_CALLS: return "tool_use";
    case DSV4_FINISH_STOP: return stop_string > 0 ? "stop_sequence" : "end_turn";
    default: return "end_turn";
    }
}

/* ================================================================================================
 * SSE framing
 * ================================================================================================ */

int dsv4_api_puts(dsv4_tok_buf *out, const char *s) { return dsv4_tok_buf_append(out, s, strlen(s)) ? -1 : 0; }

int dsv4_api_sse(dsv4_tok_buf *out, const char *name, json_t *j) {
    if (!j) return -1;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) return -1;
    int rc = 0;
    if (name) rc |= dsv4_api_puts(out, "event: ") | dsv4_api_puts(out, name) | dsv4_api_puts(out, "\n");
    rc |= dsv4_api_puts(out, "data: ") | dsv4_api_puts(out, s) | dsv4_api_puts(out, "\n\n");
    free(s);
    return rc;
}
