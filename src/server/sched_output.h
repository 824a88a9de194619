/* sched_output.h — the output pipeline of one request (issue 12 item 4), internal to src/server: generated
 * token ids -> incremental detokenizer -> (chat requests) the DSV4 push parser (reasoning / content / DSML
 * tool calls) -> stop strings on content -> the text deltas of the next event.
 *
 * Guarantees: no DSML markup is ever handed out as content, except when the model's DSML is malformed: then
 * the raw text the parser had not delivered comes back as content and the request ends MALFORMED (message
 * in error). Text is valid UTF-8 (the detokenizer never splits a character). Stop strings are matched on
 * content (the whole completion text for raw requests); content that could be the start of a stop string
 * is held back until it cannot; the match itself is never returned.
 *
 * Owns: the raw completion text, the parser, pending deltas and tool calls. Borrows the tokenizer and the
 * stop strings. Used by the scheduler thread only (not thread-safe). Without a tokenizer it produces no
 * text (ids only) and accepts no chat parsing or stop strings. */
#ifndef DSV4_SERVER_SCHED_OUTPUT_H
#define DSV4_SERVER_SCHED_OUTPUT_H

#include "server/scheduler.h"
#include "dsv4_chat.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dsv4_out_state {
    DSV4_OUT_GOING = 0,      /* keep generating */
    DSV4_OUT_STOP_STRING,    /* a stop string matched in content: finish STOP */
    DSV4_OUT_TOOLS_DONE,     /* the DSML tool block closed: the turn is over (finish TOOL_CALLS) */
    DSV4_OUT_MALFORMED       /* the parser failed: finish MALFORMED (message in error) */
} dsv4_out_state;

typedef struct dsv4_out {
    const dsv4_tokenizer *tok;   /* borrowed; NULL: ids only */
    int chat, thinking;
    const char *const *stops;    /* borrowed [n_stops] */
    int n_stops;
    dsv4_detok detok;
    dsv4_chat_parser *parser;    /* owned; chat only */
    dsv4_tok_buf raw;            /* owned: the whole completion text so far */
    size_t raw_done;             /* chat: raw bytes the parser delivered (reasoning, content, closed calls) */
    size_t think_end;            /* thinking: raw offset just past "</think>"; 0 while reasoning */
    dsv4_tok_buf content;        /* owned: all content text (chat: parser deliveries; raw: = raw text) */
    size_t content_sent;         /* content bytes already handed to events */
    size_t stop_scan;            /* content bytes known to hold no complete stop string */
    dsv4_tok_buf reasoning;      /* owned: reasoning delta not yet handed out */
    dsv4_sched_tool_call *calls; /* owned [n_calls]: calls completed, not yet handed out */
    int n_calls, cap_calls;
    int calls_total;             /* calls completed over the request */
    dsv4_out_state state;
    int stop_index;              /* STOP_STRING: index in stops of the string that matched */
    dsv4_status oom;             /* NOMEM seen inside a parser callback */
    char error[256];             /* MALFORMED: the parser's message */
} dsv4_out;

/* thinking is ignored unless chat. Errors: INVALID_ARG (chat or stops without a tokenizer), NOMEM. */
dsv4_status dsv4_out_init(dsv4_out *o, const dsv4_tokenizer *tok, int chat, int thinking, const char *const *stops,
                          int n_stops, dsv4_err *err);
void dsv4_out_free(dsv4_out *o);

/* Appends one generated token's text. Returns the state after it (sticky once not GOING: later pushes are
 * ignored). NOMEM is reported as MALFORMED with a message. */
dsv4_out_state dsv4_out_push(dsv4_out *o, int32_t id);

/* 1 when the next token is the first of the answer's content (chat: not thinking, or "</think>" passed):
 * where forced tokens go. */
int dsv4_out_at_content(const dsv4_out *o);

/* End of the request for `reason` (the scheduler's view: STOP at EOS / stop id, LENGTH, CANCELLED, ERROR):
 * flushes the detokenizer and the parser and returns the finish to report: EOS after tool calls ->
 * TOOL_CALLS, a parser failure at EOS -> MALFORMED; LENGTH inside a tool block drops the partial block
 * (never content) and says so in error. The current state decides when it is not GOING (stop string,
 * tools done, malformed). */
dsv4_finish dsv4_out_finish(dsv4_out *o, dsv4_finish reason);

/* Moves the pending deltas into ev (reasoning, content up to what stop strings allow, tool calls).
 * final: everything that remains is handed out (no stop-string hold-back). NOMEM leaves ev's text empty. */
dsv4_status dsv4_out_take(dsv4_out *o, dsv4_sched_event *ev, int final);

#ifdef __cplusplus
}
#endif
#endif
