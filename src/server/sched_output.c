/* sched_output.c — the per-request output pipeline of sched_output.h: detokenizer -> chat parser -> stop
 * strings -> event deltas. Decisions:
 *  - The raw completion text is kept whole. The parser's consumed offset (dsv4_chat_parser_consumed) marks
 *    what it delivered; on malformed DSML everything after that mark comes back as content, verbatim.
 *  - The turn ends as soon as the DSML tool block closes (the reference grammar allows only EOS after it),
 *    so the EOS step is saved and a model that rambles after its calls cannot turn them into MALFORMED.
 *  - LENGTH inside a tool block drops the unfinished call: content never holds DSML, and a half call
 *    cannot be executed; error says what was dropped.
 *  - Stop strings apply to content only (not reasoning, not tool arguments), as the other engines do. */
#include "server/sched_output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

#define TOOLS_END "</｜DSML｜tool_calls>"

/* ==== parser callbacks ================================================================================== */

static dsv4_status on_text(dsv4_out *o, dsv4_tok_buf *dst, const char *t, size_t n) {
    o->raw_done = dsv4_chat_parser_consumed(o->parser) + n;
    if (dsv4_tok_buf_append(dst, t, n)) return o->oom = DSV4_ERR_NOMEM;
    return DSV4_OK;
}
static dsv4_status cb_reasoning(void *ud, const char *t, size_t n) {
    dsv4_out *o = ud;
    return on_text(o, &o->reasoning, t, n);
}
static dsv4_status cb_content(void *ud, const char *t, size_t n) {
    dsv4_out *o = ud;
    return on_text(o, &o->content, t, n);
}
static dsv4_status cb_tool_call(void *ud, const char *name, const char *args) {
    dsv4_out *o = ud;
    o->raw_done = dsv4_chat_parser_consumed(o->parser);
    if (o->n_calls == o->cap_calls) {
        int cap = o->cap_calls ? 2 * o->cap_calls : 4;
        dsv4_sched_tool_call *c = realloc(o->calls, sizeof *c * (size_t)cap);
        if (!c) return o->oom = DSV4_ERR_NOMEM;
        o->calls = c;
        o->cap_calls = cap;
    }
    char *nm = strdup(name), *ar = strdup(args);
    if (!nm || !ar) {
        free(nm);
        free(ar);
        return o->oom = DSV4_ERR_NOMEM;
    }
    o->calls[o->n_calls++] = (dsv4_sched_tool_call){nm, ar};
    o->calls_total++;
    return DSV4_OK;
}

/* ==== life ============================================================================================== */

dsv4_status dsv4_out_init(dsv4_out *o, const dsv4_tokenizer *tok, int chat, int thinking, const char *const *stops,
                          int n_stops, dsv4_err *err) {
    memset(o, 0, sizeof *o);
    if (!tok && chat) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "chat output needs a tokenizer (none loaded)");
    if (!tok && n_stops > 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "stop strings need a tokenizer (none loaded)");
    o->tok = tok;
    o->chat = chat != 0;
    o->thinking = chat && thinking;
    o->stops = stops;
    o->n_stops = n_stops > 0 ? n_stops : 0;
    if (tok) dsv4_detok_init(&o->detok, tok);
    if (o->chat) {
        dsv4_chat_parse_cb cb = {o, cb_reasoning, cb_content, cb_tool_call};
        if (dsv4_chat_parser_create(o->thinking, &cb, &o->parser) != DSV4_OK)
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory (chat parser)");
    }
    return DSV4_OK;
}

static void free_calls(dsv4_sched_tool_call *c, int n) {
    for (int i = 0; i < n; i++) {
        free(c[i].name);
        free(c[i].arguments);
    }
    free(c);
}

void dsv4_out_free(dsv4_out *o) {
    dsv4_chat_parser_destroy(o->parser);
    dsv4_tok_buf_free(&o->raw);
    dsv4_tok_buf_free(&o->content);
    dsv4_tok_buf_free(&o->reasoning);
    free_calls(o->calls, o->n_calls);
    memset(o, 0, sizeof *o);
}

/* ==== feeding =========================================================================================== */

static void set_malformed(dsv4_out *o, const char *msg) {
    o->state = DSV4_OUT_MALFORMED;
    snprintf(o->error, sizeof o->error, "%s", msg);
    /* Hand back what the parser had not delivered, verbatim (a "</think>" already passed is not repeated). */
    size_t from = o->raw_done > o->think_end ? o->raw_done : o->think_end;
    if (from < o->raw.len && dsv4_tok_buf_append(&o->content, o->raw.data + from, o->raw.len - from))
        snprintf(o->error, sizeof o->error, "out of memory while handing back malformed output");
    o->stop_scan = o->content.len; /* raw text is not subject to stop strings */
}

/* Stop strings over content; truncates at a match. */
static void check_stops(dsv4_out *o, int final) {
    if (o->state == DSV4_OUT_MALFORMED) return;
    if (!o->n_stops) {
        o->stop_scan = o->content.len;
        return;
    }
    dsv4_stop_match m;
    dsv4_stop_strings_check(o->content.data ? o->content.data : "", o->content.len, o->stops, o->n_stops,
                            o->stop_scan, &m);
    if (m.matched) {
        o->content.len = m.pos;
        if (o->content.data) o->content.data[m.pos] = 0;
        o->stop_scan = m.pos;
        o->state = DSV4_OUT_STOP_STRING;
        o->stop_index = m.which;
    } else {
        o->stop_scan = final ? o->content.len : m.emit_len;
    }
}

/* Routes raw[from..len) (just decoded) through the parser or into content. */
static void route(dsv4_out *o, size_t from) {
    size_t n = o->raw.len - from;
    if (o->thinking && !o->think_end && o->raw.len >= 8) {
        size_t s = from >= 7 ? from - 7 : 0;
        const char *hit = memmem(o->raw.data + s, o->raw.len - s, "</think>", 8);
        if (hit) o->think_end = (size_t)(hit - o->raw.data) + 8;
    }
    if (!n) return;
    if (!o->chat) {
        if (dsv4_tok_buf_append(&o->content, o->raw.data + from, n)) { set_malformed(o, "out of memory"); return; }
        check_stops(o, 0);
        return;
    }
    dsv4_err err = {{0}};
    if (dsv4_chat_parser_feed(o->parser, o->raw.data + from, n, &err) != DSV4_OK) {
        set_malformed(o, o->oom ? "out of memory in the chat parser" : err.msg);
        return;
    }
    check_stops(o, 0);
    if (o->state != DSV4_OUT_GOING) return;
    size_t el = strlen(TOOLS_END);
    /* The block closed if the parser swallowed everything and the text ends with its end marker (inside an
     * unfinished parameter value the parser would still hold the text back). */
    if (dsv4_chat_parser_consumed(o->parser) == o->raw.len && o->raw.len >= el &&
        !memcmp(o->raw.data + o->raw.len - el, TOOLS_END, el))
        o->state = DSV4_OUT_TOOLS_DONE;
}

dsv4_out_state dsv4_out_push(dsv4_out *o, int32_t id) {
    if (o->state != DSV4_OUT_GOING || !o->tok) return o->state;
    size_t before = o->raw.len;
    dsv4_err err = {{0}};
    if (dsv4_detok_push(&o->detok, id, &o->raw, &err) != DSV4_OK) {
        set_malformed(o, err.msg);
        return o->state;
    }
    route(o, before);
    return o->state;
}

int dsv4_out_at_content(const dsv4_out *o) { return !o->thinking || o->think_end > 0; }

dsv4_finish dsv4_out_finish(dsv4_out *o, dsv4_finish reason) {
    if (!o->tok) return reason;
    if (o->state == DSV4_OUT_GOING) {
        size_t before = o->raw.len;
        if (dsv4_detok_finish(&o->detok, &o->raw) != DSV4_OK) set_malformed(o, "out of memory");
        else route(o, before);
    }
    switch (o->state) {
    case DSV4_OUT_STOP_STRING: return DSV4_FINISH_STOP;
    case DSV4_OUT_TOOLS_DONE: return o->calls_total ? DSV4_FINISH_TOOL_CALLS : DSV4_FINISH_STOP;
    case DSV4_OUT_MALFORMED: return DSV4_FINISH_MALFORMED;
    case DSV4_OUT_GOING: break;
    }
    if (o->chat) {
        dsv4_err err = {{0}};
        dsv4_status st = dsv4_chat_parser_finish(o->parser, &err);
        if (st != DSV4_OK && reason == DSV4_FINISH_STOP) {
            set_malformed(o, o->oom ? "out of memory in the chat parser" : err.msg);
            return DSV4_FINISH_MALFORMED;
        }
        size_t from = o->raw_done > o->think_end ? o->raw_done : o->think_end;
        if (st != DSV4_OK && reason == DSV4_FINISH_LENGTH && from < o->raw.len)
            snprintf(o->error, sizeof o->error,
                     "the length limit cut the output inside a tool call block; the unfinished call (%zu bytes of "
                     "DSML) is not returned", o->raw.len - from);
    }
    check_stops(o, 1);
    if (o->state == DSV4_OUT_STOP_STRING) return DSV4_FINISH_STOP;
    if (reason == DSV4_FINISH_STOP && o->calls_total) return DSV4_FINISH_TOOL_CALLS;
    return reason;
}

/* ==== events ============================================================================================ */

static char *copy_text(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

dsv4_status dsv4_out_take(dsv4_out *o, dsv4_sched_event *ev, int final) {
    size_t upto = final || o->state != DSV4_OUT_GOING ? o->content.len : o->stop_scan;
    if (upto < o->content_sent) upto = o->content_sent;
    char *r = copy_text(o->reasoning.data, o->reasoning.len);
    char *c = copy_text(o->content.data ? o->content.data + o->content_sent : "", upto - o->content_sent);
    if (!r || !c) {
        free(r);
        free(c);
        return DSV4_ERR_NOMEM;
    }
    ev->reasoning = r;
    ev->reasoning_len = o->reasoning.len;
    ev->content = c;
    ev->content_len = upto - o->content_sent;
    o->reasoning.len = 0;
    o->content_sent = upto;
    ev->tool_calls = o->n_calls ? o->calls : NULL;
    ev->n_tool_calls = o->n_calls;
    if (!o->n_calls) free(o->calls);
    o->calls = NULL;
    o->n_calls = o->cap_calls = 0;
    ev->stop_string = final && o->state == DSV4_OUT_STOP_STRING ? o->stop_index + 1 : 0;
    if (o->state == DSV4_OUT_MALFORMED && final)
        snprintf(ev->error, sizeof ev->error, "malformed model output, returned as content: %.200s", o->error);
    else if (final && o->error[0])
        snprintf(ev->error, sizeof ev->error, "%s", o->error);
    return DSV4_OK;
}
