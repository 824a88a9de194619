/* api.h — the HTTP API dialects of `dsv4 serve` (issue 12 item 2), with no engine and no sockets:
 * request JSON -> a parsed request (the rendered prompt text, sampling parameters, stop strings, forced
 * tokens' text, output options), and scheduler events -> response JSON or SSE bytes, for
 *   OpenAI    POST /v1/chat/completions, /v1/completions, /v1/responses (stateless)   api_openai.c
 *   Anthropic POST /v1/messages, /v1/messages/count_tokens                             api_anthropic.c
 * Common parts (JSON loading, field readers with typed errors, error bodies, the answer accumulator):
 * api.c. The HTTP layer (http.c) tokenizes the prompt, submits to the scheduler and moves bytes.
 *
 * Conversions: every dialect's input becomes OpenAI-style messages + tools and is rendered by
 * dsv4_chat_render, so usage.prompt_tokens equals the token count of `dsv4 chat-template` on those
 * messages and tools. Thinking is off unless the request asks for it. Unknown fields are ignored; a field
 * of the wrong type is a 400 naming it. Nothing here keeps global state; every call is thread-safe. */
#ifndef DSV4_SERVER_API_H
#define DSV4_SERVER_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "server/scheduler.h"
#include "dsv4_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dsv4_api_kind {
    DSV4_API_CHAT = 0,          /* /v1/chat/completions */
    DSV4_API_COMPLETIONS,       /* /v1/completions */
    DSV4_API_RESPONSES,         /* /v1/responses */
    DSV4_API_MESSAGES,          /* /v1/messages */
    DSV4_API_COUNT_TOKENS,      /* /v1/messages/count_tokens */
} dsv4_api_kind;

/* An error for the client: HTTP status, the field at fault (may be empty) and a message. */
typedef struct dsv4_api_error {
    int http_status;            /* 400, 401, 404, 413, 429, 500, 503 */
    char param[128];            /* the request field at fault, e.g. "messages[2].role"; "" if none */
    char message[512];
} dsv4_api_error;

/* Returns a non-zero HTTP status from the enclosing function. */
#define DSV4_API_TRY(x) do { int st__ = (x); if (st__) return st__; } while (0)

/* Sets e (printf-style message) and returns status; param may be NULL. */
int dsv4_api_fail(dsv4_api_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The error body in the dialect of kind: OpenAI {"error":{"message","type","param","code"}} or Anthropic
 * {"type":"error","error":{"type","message"}}. Returns a new reference (NULL only without memory). */
json_t *dsv4_api_error_json(dsv4_api_kind kind, const dsv4_api_error *e);

#define DSV4_API_MAX_STOPS 16

/* One parsed request. Owned strings and buffers; free with dsv4_api_request_free. */
typedef struct dsv4_api_request {
    dsv4_api_kind kind;
    dsv4_tok_buf prompt;        /* owned: the rendered prompt text (BOS included for chat kinds) */
    int32_t *prompt_ids;        /* owned or NULL: /v1/completions given token ids instead of text */
    size_t n_prompt_ids;
    int chat;                   /* 1: output is an assistant turn (reasoning / content / tool calls) */
    int thinking;               /* chat: the prompt ends in thinking mode */
    int stream;                 /* SSE */
    int include_usage;          /* OpenAI stream_options.include_usage */
    int max_tokens;             /* <= 0: up to the context limit */
    dsv4_sampling_params sp;    /* temperature, top_p, top_k, min_p, seed, penalties, logprobs (n) */
    int seed_given;             /* else http.c picks one */
    int logprobs;               /* 1: return logprobs */
    int top_logprobs;           /* how many alternatives per token to return (0..20) */
    char *stops[DSV4_API_MAX_STOPS];   /* owned */
    int n_stops;
    dsv4_tok_buf forced;        /* owned: text forced where the content starts (tool_choice required/named);
                                   empty when none */
    int tools_given;            /* the request declares tools */
    int parallel_tool_calls;    /* 0: only the first tool call of the answer is returned */
    int ignore_eos;             /* extension (benchmarks): EOS does not end the answer */
} dsv4_api_request;

void dsv4_api_request_free(dsv4_api_request *r);

/* Parses a request body of kind. Errors: 400 (malformed JSON with line/column, invalid UTF-8, not an
 * object, a wrong type or value naming the field, an unknown role, an unsupported content block), with
 * r left empty. On success r is filled (free it either way). */
int dsv4_api_parse(dsv4_api_kind kind, const char *body, size_t len, dsv4_api_request *r, dsv4_api_error *e);

/* ---- answers -------------------------------------------------------------------------------------- */

/* Everything the HTTP layer needs to turn events into an answer. */
typedef struct dsv4_api_ctx {
    const char *id;             /* borrowed: request id ("chatcmpl-...", "msg_...", ...) */
    const char *model;          /* borrowed: the served model's name */
    long created;               /* unix seconds */
    const dsv4_tokenizer *tok;  /* borrowed: token strings of logprobs */
} dsv4_api_ctx;

/* The whole answer, accumulated from events (non-streamed answers; streams keep one for their state). */
typedef struct dsv4_api_answer {
    dsv4_tok_buf reasoning, content;   /* owned */
    json_t *tool_calls;         /* owned: array of {"id","name","arguments"} */
    json_t *logprobs;           /* owned: array of {"token","logprob","bytes","top_logprobs"} (OpenAI chat shape) */
    dsv4_finish finish;
    int stop_string;            /* finish STOP by stop string k of the request: k + 1; else 0 */
    char error[256];
    long prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens;
    double ttft_s;              /* submit -> first token, from the events (log line) */
    /* streaming state */
    int started;                /* the opening events were sent */
    int block;                  /* Anthropic / Responses: kind of the open block (0 none, 1 thinking, 2 text) */
    int block_index;            /* Anthropic: index of the open block; Responses: output index */
    long seq;                   /* Responses: sequence_number of the next event */
} dsv4_api_answer;

void dsv4_api_answer_init(dsv4_api_answer *a);
void dsv4_api_answer_free(dsv4_api_answer *a);

/* Adds an event to the answer (text, tool calls with fresh ids, logprobs, usage, finish). */
int dsv4_api_answer_add(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                        const dsv4_sched_event *ev);

/* The non-streamed response body of a finished answer (new reference). */
json_t *dsv4_api_answer_json(const dsv4_api_request *r, const dsv4_api_ctx *c, const dsv4_api_answer *a);

/* Streams: appends to out the SSE bytes for one event (the opening events before the first, the closing
 * ones, usage and [DONE] with the last). Also accumulates the event into a. 0, or -1 without memory. */
int dsv4_api_stream_event(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                          const dsv4_sched_event *ev, dsv4_tok_buf *out);

/* Names of finish reasons per dialect. Anthropic's: stop_string (the answer's) turns STOP into
 * "stop_sequence"; every value is one the Messages API defines. */
const char *dsv4_api_finish_openai(dsv4_finish f);
const char *dsv4_api_finish_anthropic(dsv4_finish f, int stop_string);

/* ---- internals shared by api*.c ------------------------------------------------------------------ */
int dsv4_api_parse_openai(dsv4_api_kind kind, json_t *root, dsv4_api_request *r, dsv4_api_error *e);
int dsv4_api_parse_anthropic(dsv4_api_kind kind, json_t *root, dsv4_api_request *r, dsv4_api_error *e);
json_t *dsv4_api_openai_json(const dsv4_api_request *r, const dsv4_api_ctx *c, const dsv4_api_answer *a);
json_t *dsv4_api_anthropic_json(const dsv4_api_request *r, const dsv4_api_ctx *c, const dsv4_api_answer *a);
int dsv4_api_openai_stream(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                           const dsv4_sched_event *ev, dsv4_tok_buf *out);
int dsv4_api_anthropic_stream(const dsv4_api_request *r, const dsv4_api_ctx *c, dsv4_api_answer *a,
                              const dsv4_sched_event *ev, dsv4_tok_buf *out);

/* Typed field readers: absent or null -> 0 and *out untouched; wrong type -> 400 naming the field. */
int dsv4_api_get_bool(json_t *o, const char *key, int *out, dsv4_api_error *e);
int dsv4_api_get_int(json_t *o, const char *key, long lo, long hi, long *out, dsv4_api_error *e);
int dsv4_api_get_num(json_t *o, const char *key, double lo, double hi, double *out, dsv4_api_error *e);
int dsv4_api_get_str(json_t *o, const char *key, const char **out, dsv4_api_error *e);
/* Common sampling fields of every dialect: temperature, top_p, top_k, min_p, seed, presence_penalty,
 * frequency_penalty, repetition_penalty. */
int dsv4_api_get_sampling(json_t *root, dsv4_api_request *r, dsv4_api_error *e);
/* stop: a string or an array of strings (key names the field). */
int dsv4_api_get_stops(json_t *root, const char *key, dsv4_api_request *r, dsv4_api_error *e);
/* Renders messages + tools (OpenAI style) into r->prompt; errors are 400 naming the message. */
int dsv4_api_render(json_t *messages, json_t *tools, int thinking, const char *effort, dsv4_api_request *r,
                    dsv4_api_error *e);
/* Appends an SSE event ("event: NAME\n" when name, "data: JSON\n\n") and frees j. */
int dsv4_api_sse(dsv4_tok_buf *out, const char *name, json_t *j);
/* Appends a C string. */
int dsv4_api_puts(dsv4_tok_buf *out, const char *s);

#ifdef __cplusplus
}
#endif
#endif
