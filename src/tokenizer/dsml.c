/* dsml.c — the completion push parser of chat.h: reasoning / content / DSML tool calls, fed in chunks of
 * any size, calling back with deltas as soon as they are certain. Owns its pending-text buffer and the
 * tool call being assembled. The grammar and error cases follow the reference parser
 * (parse_message_from_completion_text / parse_tool_calls in encoding_dsv4.py); where it deviates,
 * chat.h says so. Text is only held back while it could still be the start of a marker (or is an
 * incomplete UTF-8 sequence), so deltas never split a character. */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "dsv4_chat.h"
#include "tokenizer/pyjson.h"

#define TOOLS_START "\n\n<｜DSML｜tool_calls"
#define TOOLS_END "</｜DSML｜tool_calls>"
#define INVOKE_OPEN "<｜DSML｜invoke"
#define INVOKE_CLOSE "</｜DSML｜invoke"
#define PARAM_OPEN "<｜DSML｜parameter"
#define PARAM_CLOSE "/｜DSML｜parameter"

enum { ST_REASONING, ST_CONTENT, ST_TOOLS, ST_AFTER_TOOLS, ST_DONE, ST_FAILED };
enum { T_SEP, T_NAME, T_PARAM, T_AFTER_PARAM };

struct dsv4_chat_parser {
    bool thinking;
    dsv4_chat_parse_cb cb;
    int state, tstate;
    dsv4_tok_buf buf;    /* owned: text received and not yet consumed, from pos */
    size_t pos;
    size_t base;         /* input bytes dropped from the front of buf by compaction */
    dsv4_tok_buf name;   /* owned: tool name being assembled */
    dsv4_tok_buf args;   /* owned: arguments JSON being assembled ("{" ...) */
    json_t *seen;        /* owned: parameter names of the current invoke (duplicate check) */
};

dsv4_status dsv4_chat_parser_create(bool thinking, const dsv4_chat_parse_cb *cb, dsv4_chat_parser **out) {
    dsv4_chat_parser *p = calloc(1, sizeof *p);
    if (!p) return DSV4_ERR_NOMEM;
    p->thinking = thinking;
    p->cb = *cb;
    p->state = thinking ? ST_REASONING : ST_CONTENT;
    p->seen = json_object();
    *out = p;
    return DSV4_OK;
}

void dsv4_chat_parser_destroy(dsv4_chat_parser *p) {
    if (!p) return;
    dsv4_tok_buf_free(&p->buf);
    dsv4_tok_buf_free(&p->name);
    dsv4_tok_buf_free(&p->args);
    json_decref(p->seen);
    free(p);
}

static dsv4_status fail(dsv4_chat_parser *p, dsv4_err *err, const char *fmt, const char *a) {
    p->state = ST_FAILED;
    return dsv4_err_set(err, DSV4_ERR_FORMAT, fmt, a);
}

static const char *memfind(const char *h, size_t hn, const char *n, size_t nn) {
    return nn <= hn ? memmem(h, hn, n, nn) : NULL;
}

/* Start of an incomplete UTF-8 sequence at the end of s[0..n), or n. */
static size_t utf8_tail(const char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > k ? n - k : n;
    }
    return n;
}

/* ================================================================================================
 * Free text (reasoning, content): stop markers end the section, forbidden markers are errors
 * ================================================================================================ */

typedef struct { const char *s; int stop; } marker;

static const marker REASONING_MARKERS[] = {
    {DSV4_CHAT_THINK_END, 1}, {DSV4_CHAT_BOS, 0}, {DSV4_CHAT_EOS, 0}, {DSV4_CHAT_THINK, 0}, {DSV4_CHAT_DSML, 0}, {NULL, 0}};
static const marker CONTENT_MARKERS[] = {
    {DSV4_CHAT_EOS, 1}, {TOOLS_START, 2}, {DSV4_CHAT_BOS, 0}, {DSV4_CHAT_THINK, 0}, {DSV4_CHAT_THINK_END, 0},
    {DSV4_CHAT_DSML, 0}, {NULL, 0}};

/* Emits what is certain of the free text at pos; on a stop marker returns its kind (1/2) in *hit with
 * pos past it; 0 when more input is needed. */
static dsv4_status scan_text(dsv4_chat_parser *p, const marker *mk, bool final, int *hit, dsv4_err *err) {
    const char *s = p->buf.data + p->pos;
    size_t n = p->buf.len - p->pos, m = n, q = n;
    const marker *found = NULL;
    for (const marker *k = mk; k->s; k++) {
        const char *f = memfind(s, n, k->s, strlen(k->s));
        if (f && (size_t)(f - s) < m) { m = (size_t)(f - s); found = k; }
    }
    if (!final) { /* earliest start of a proper prefix of any marker running to the end */
        for (size_t i = n > 32 ? n - 32 : 0; i < n && i < q; i++)
            for (const marker *k = mk; k->s; k++) {
                size_t kl = strlen(k->s);
                if (n - i < kl && !memcmp(s + i, k->s, n - i)) { q = i; break; }
            }
        size_t t = utf8_tail(s, n);
        if (t < q) q = t;
    }
    size_t emit = found && m <= q ? m : q;
    if (emit) {
        dsv4_status (*fn)(void *, const char *, size_t) = p->state == ST_REASONING ? p->cb.on_reasoning : p->cb.on_content;
        if (fn) DSV4_TRY(fn(p->cb.ud, s, emit));
    }
    p->pos += emit;
    *hit = 0;
    if (!found || m > q) return DSV4_OK;
    if (!found->stop)
        return fail(p, err, p->state == ST_REASONING ? "unexpected special token %s in reasoning (missing </think>?)"
                                                     : "unexpected special token %s in content", found->s);
    p->pos += strlen(found->s);
    *hit = found->stop;
    return DSV4_OK;
}

/* ================================================================================================
 * DSML tool-call block
 * ================================================================================================ */

/* Earliest of two markers in the pending text; returns its index (0/1) or -1, with its offset in *at. */
static int find2(const dsv4_chat_parser *p, const char *a, const char *b, size_t *at) {
    const char *s = p->buf.data + p->pos;
    size_t n = p->buf.len - p->pos;
    const char *fa = memfind(s, n, a, strlen(a)), *fb = b ? memfind(s, n, b, strlen(b)) : NULL;
    if (fa && (!fb || fa < fb)) { *at = (size_t)(fa - s); return 0; }
    if (fb) { *at = (size_t)(fb - s); return 1; }
    return -1;
}

/* The pending text must be ">\n" followed by a prefix of a or b; reports a mismatch early. */
static bool sep_could_match(const dsv4_chat_parser *p, const char *a, const char *b) {
    const char *s = p->buf.data + p->pos;
    size_t n = p->buf.len - p->pos;
    if (n && s[0] != '>') return false;
    if (n > 1 && s[1] != '\n') return false;
    if (n <= 2) return true;
    size_t r = n - 2, la = strlen(a), lb = strlen(b);
    return (!memcmp(s + 2, a, r < la ? r : la)) || (!memcmp(s + 2, b, r < lb ? r : lb));
}

static dsv4_status emit_tool_call(dsv4_chat_parser *p, dsv4_err *err) {
    if (dsv4_tok_buf_append(&p->args, "}", 1) || dsv4_tok_buf_append(&p->name, "", 0)) return DSV4_ERR_NOMEM;
    if (p->cb.on_tool_call) DSV4_TRY(p->cb.on_tool_call(p->cb.ud, p->name.data ? p->name.data : "", p->args.data));
    p->name.len = p->args.len = 0;
    json_object_clear(p->seen);
    return DSV4_OK;
}

/* ` name="NAME">\n` (leading whitespace allowed) -> NAME */
static dsv4_status parse_invoke_name(dsv4_chat_parser *p, const char *s, size_t n, dsv4_err *err) {
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    if (n - i < 9 || memcmp(s + i, "name=\"", 6) || memcmp(s + n - 3, "\">\n", 3))
        return fail(p, err, "malformed tool call: expected ' name=\"...\">\\n' after <｜DSML｜invoke%s", "");
    const char *nm = s + i + 6;
    size_t nl = n - 3 - (i + 6);
    /* The name is handed on as a C string and put into JSON: it must be UTF-8 without NUL bytes. */
    if (dsv4_utf8_valid_prefix(nm, nl) != nl || memchr(nm, 0, nl))
        return fail(p, err, "malformed tool call: the tool name is not UTF-8 text%s", "");
    p->name.len = p->args.len = 0;
    json_object_clear(p->seen);
    if (dsv4_tok_buf_append(&p->name, nm, nl) || dsv4_tok_buf_append(&p->args, "{", 1))
        return DSV4_ERR_NOMEM;
    return DSV4_OK;
}

/* ` name="K" string="true|false">VALUE<` -> one "key": value entry of the arguments JSON */
static dsv4_status parse_param(dsv4_chat_parser *p, const char *s, size_t n, dsv4_err *err) {
    static const char T[] = "\" string=\"true\">", F[] = "\" string=\"false\">";
    if (n < 8 || memcmp(s, " name=\"", 7) || s[n - 1] != '<')
        return fail(p, err, "malformed tool parameter: expected ' name=\"...\" string=\"true|false\">...<'%s", "");
    const char *ft = memfind(s + 7, n - 8, T, sizeof T - 1), *ff = memfind(s + 7, n - 8, F, sizeof F - 1);
    const char *at = ft && (!ff || ft < ff) ? ft : ff;
    if (!at) return fail(p, err, "malformed tool parameter: missing string=\"true|false\"%s", "");
    bool is_str = at == ft;
    size_t klen = (size_t)(at - (s + 7));
    const char *val = at + (is_str ? sizeof T - 1 : sizeof F - 1);
    size_t vlen = (size_t)(s + n - 1 - val);
    /* strndup stops at a NUL, and key[0..klen) is read below: a NUL in the name would read past the copy. */
    if (memchr(s + 7, 0, klen)) return fail(p, err, "malformed tool parameter: the name contains a NUL byte%s", "");
    char *key = strndup(s + 7, klen);
    if (!key) return DSV4_ERR_NOMEM;
    if (json_object_get(p->seen, key)) {
        dsv4_status st = fail(p, err, "duplicate tool parameter name '%.200s'", key);
        free(key);
        return st;
    }
    json_object_set_new(p->seen, key, json_true());
    if (!is_str) { /* stricter than the reference: a non-string value must be JSON */
        json_t *v = json_loadb(val, vlen, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!v) {
            dsv4_status st = fail(p, err, "tool parameter '%.200s' has string=\"false\" but its value is not JSON", key);
            free(key);
            return st;
        }
        json_decref(v);
    }
    json_t *k = json_stringn(key, klen);
    free(key);
    dsv4_status st = DSV4_OK;
    if (!k) return fail(p, err, "tool parameter name is not UTF-8%s", "");
    if (p->args.len > 1 && dsv4_tok_buf_append(&p->args, ", ", 2)) st = DSV4_ERR_NOMEM;
    if (!st) st = dsv4_pyjson_dump(k, &p->args);
    if (!st) st = dsv4_tok_buf_append(&p->args, ": ", 2);
    json_decref(k);
    if (st) return st;
    if (is_str) {
        json_t *v = json_stringn(val, vlen);
        if (!v) return fail(p, err, "tool parameter value is not UTF-8%s", "");
        st = dsv4_pyjson_dump(v, &p->args);
        json_decref(v);
        return st;
    }
    return dsv4_tok_buf_append(&p->args, val, vlen);
}

/* Advances through the tool block as far as the pending text allows. */
static dsv4_status scan_tools(dsv4_chat_parser *p, dsv4_err *err) {
    for (;;) {
        size_t at;
        int w;
        const char *s = p->buf.data + p->pos;
        switch (p->tstate) {
        case T_SEP:
        case T_AFTER_PARAM: {
            const char *a = p->tstate == T_SEP ? INVOKE_OPEN : PARAM_OPEN, *b = p->tstate == T_SEP ? TOOLS_END : INVOKE_CLOSE;
            w = find2(p, a, b, &at);
            if (w < 0) {
                if (!sep_could_match(p, a, b)) return fail(p, err, "malformed tool call block: expected '>\\n' then %s", a);
                return DSV4_OK;
            }
            if (at != 2 || memcmp(s, ">\n", 2)) return fail(p, err, "malformed tool call block: expected '>\\n' before %s", w ? b : a);
            p->pos += at + strlen(w ? b : a);
            if (p->tstate == T_SEP) {
                if (w) { p->state = ST_AFTER_TOOLS; return DSV4_OK; }
                p->tstate = T_NAME;
            } else if (w) {
                DSV4_TRY(emit_tool_call(p, err));
                p->tstate = T_SEP;
            } else {
                p->tstate = T_PARAM;
            }
            break;
        }
        case T_NAME:
            w = find2(p, PARAM_OPEN, INVOKE_CLOSE, &at);
            if (w < 0) return DSV4_OK;
            DSV4_TRY(parse_invoke_name(p, s, at, err));
            p->pos += at + strlen(w ? INVOKE_CLOSE : PARAM_OPEN);
            if (w) { DSV4_TRY(emit_tool_call(p, err)); p->tstate = T_SEP; }
            else p->tstate = T_PARAM;
            break;
        case T_PARAM:
            w = find2(p, PARAM_CLOSE, NULL, &at);
            if (w < 0) return DSV4_OK;
            DSV4_TRY(parse_param(p, s, at, err));
            p->pos += at + strlen(PARAM_CLOSE);
            p->tstate = T_AFTER_PARAM;
            break;
        }
    }
}

/* ================================================================================================
 * Driver
 * ================================================================================================ */

static dsv4_status step(dsv4_chat_parser *p, bool final, dsv4_err *err) {
    for (;;) {
        size_t before = p->pos;
        int st0 = p->state, hit = 0;
        switch (p->state) {
        case ST_REASONING:
            DSV4_TRY(scan_text(p, REASONING_MARKERS, final, &hit, err));
            if (hit) p->state = ST_CONTENT;
            break;
        case ST_CONTENT:
            DSV4_TRY(scan_text(p, CONTENT_MARKERS, final, &hit, err));
            if (hit == 1) p->state = ST_DONE;
            if (hit == 2) { p->state = ST_TOOLS; p->tstate = T_SEP; }
            break;
        case ST_TOOLS:
            DSV4_TRY(scan_tools(p, err));
            break;
        case ST_AFTER_TOOLS: {
            size_t n = p->buf.len - p->pos, el = strlen(DSV4_CHAT_EOS);
            if (memcmp(p->buf.data + p->pos, DSV4_CHAT_EOS, n < el ? n : el))
                return fail(p, err, "unexpected text after the tool call block%s", "");
            if (n >= el) { p->pos += el; p->state = ST_DONE; }
            break;
        }
        case ST_DONE:
            if (p->pos < p->buf.len) return fail(p, err, "unexpected text after %s", DSV4_CHAT_EOS);
            break;
        default:
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "parser already failed");
        }
        if (p->pos == before && p->state == st0) return DSV4_OK;
    }
}

dsv4_status dsv4_chat_parser_feed(dsv4_chat_parser *p, const char *text, size_t len, dsv4_err *err) {
    if (p->state == ST_FAILED) return dsv4_err_set(err, DSV4_ERR_FORMAT, "parser already failed");
    if (p->pos > 4096 && p->pos * 2 > p->buf.len) { /* compact */
        memmove(p->buf.data, p->buf.data + p->pos, p->buf.len - p->pos);
        p->buf.len -= p->pos;
        p->base += p->pos;
        p->pos = 0;
    }
    if (dsv4_tok_buf_append(&p->buf, text, len)) return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    return step(p, false, err);
}

size_t dsv4_chat_parser_consumed(const dsv4_chat_parser *p) { return p->base + p->pos; }

dsv4_status dsv4_chat_parser_finish(dsv4_chat_parser *p, dsv4_err *err) {
    if (p->state == ST_FAILED) return dsv4_err_set(err, DSV4_ERR_FORMAT, "parser already failed");
    if (dsv4_tok_buf_append(&p->buf, "", 0)) return DSV4_ERR_NOMEM;
    DSV4_TRY(step(p, true, err));
    switch (p->state) {
    case ST_REASONING: return fail(p, err, "completion ended inside reasoning (no %s)", DSV4_CHAT_THINK_END);
    case ST_TOOLS: return fail(p, err, "completion ended inside the tool call block%s", "");
    case ST_AFTER_TOOLS:
        if (p->pos < p->buf.len) return fail(p, err, "completion ended inside %s", DSV4_CHAT_EOS);
        break;
    }
    return DSV4_OK;
}

/* ---- whole-completion convenience ---------------------------------------------------------------- */

typedef struct { dsv4_tok_buf content, reasoning; json_t *calls; } collect;

static dsv4_status col_reasoning(void *ud, const char *t, size_t n) { return dsv4_tok_buf_append(&((collect *)ud)->reasoning, t, n); }
static dsv4_status col_content(void *ud, const char *t, size_t n) { return dsv4_tok_buf_append(&((collect *)ud)->content, t, n); }
static dsv4_status col_call(void *ud, const char *name, const char *args) {
    json_t *c = json_pack("{s:s,s:{s:s,s:s}}", "type", "function", "function", "name", name, "arguments", args);
    if (!c) return DSV4_ERR_FORMAT;
    return json_array_append_new(((collect *)ud)->calls, c) ? DSV4_ERR_NOMEM : DSV4_OK;
}

dsv4_status dsv4_chat_parse_completion(const char *text, size_t len, bool thinking, json_t **msg, dsv4_err *err) {
    collect c = {{0}, {0}, json_array()};
    dsv4_chat_parse_cb cb = {&c, col_reasoning, col_content, col_call};
    dsv4_chat_parser *p = NULL;
    dsv4_status st = dsv4_chat_parser_create(thinking, &cb, &p);
    if (!st) st = dsv4_chat_parser_feed(p, text, len, err);
    if (!st) st = dsv4_chat_parser_finish(p, err);
    dsv4_chat_parser_destroy(p);
    if (!st) {
        *msg = json_pack("{s:s,s:s%,s:s%,s:O}", "role", "assistant", "content", c.content.data ? c.content.data : "",
                         c.content.len, "reasoning_content", c.reasoning.data ? c.reasoning.data : "", c.reasoning.len,
                         "tool_calls", c.calls);
        if (!*msg) st = dsv4_err_set(err, DSV4_ERR_FORMAT, "completion is not valid UTF-8");
    }
    dsv4_tok_buf_free(&c.content);
    dsv4_tok_buf_free(&c.reasoning);
    json_decref(c.calls);
    return st;
}
