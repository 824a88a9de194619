/* dsv4_chat.h — DeepSeek V4 prompt rendering and completion parsing (spec §7.3, §7.4): OpenAI-style messages
 * (jansson) -> the exact prompt string of DeepSeek's reference renderer (encoding/encoding_dsv4.py), and
 * the reverse: a model completion -> reasoning, content and DSML tool calls, incrementally as text streams.
 * Plain text in and out; tokenization is the caller's (tokenizer.h). Decisions: docs/TOKENIZER.md.
 * Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in src/tokenizer/chat.c, dsml.c. */
#ifndef DSV4_CHAT_H
#define DSV4_CHAT_H

#include <jansson.h>
#include <stdbool.h>

#include "dsv4_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fixed strings of the V4 format. */
#define DSV4_CHAT_BOS "<｜begin▁of▁sentence｜>"
#define DSV4_CHAT_EOS "<｜end▁of▁sentence｜>"
#define DSV4_CHAT_USER "<｜User｜>"
#define DSV4_CHAT_ASSISTANT "<｜Assistant｜>"
#define DSV4_CHAT_THINK "<think>"
#define DSV4_CHAT_THINK_END "</think>"
#define DSV4_CHAT_DSML "｜DSML｜"

typedef struct dsv4_chat_opts {
    bool thinking;                /* thinking mode (else chat mode) */
    const char *reasoning_effort; /* NULL or "high" (adds nothing) or "max" (prefix paragraph, thinking only) */
    bool drop_thinking;           /* default true; turned off automatically when any message has tools */
    bool add_bos;                 /* default true */
} dsv4_chat_opts;

void dsv4_chat_opts_default(dsv4_chat_opts *o);

/* Renders messages (a JSON array of message objects) and appends the prompt to out. tools (NULL or an array
 * of OpenAI function tools) is attached to the first message when it is a system message, else to a new
 * empty system message put first — the golden cases attach request-level tools this way.
 * Errors (DSV4_ERR_INVALID_ARG, message names the message index): not an array / not objects, unknown role,
 * content of an unsupported type, empty developer content, invalid task, malformed tool_calls, invalid
 * reasoning_effort. out is left as it was on error. messages is not modified. */
dsv4_status dsv4_chat_render(const json_t *messages, const json_t *tools, const dsv4_chat_opts *o, dsv4_tok_buf *out,
                             dsv4_err *err);

/* ---- completion parsing (push parser) -----------------------------------------------------------
 * Feed the completion text (the text after the prompt) in chunks of any size; the parser calls back with
 * reasoning and content deltas as soon as they cannot be the start of a marker, and with each tool call
 * once its </｜DSML｜invoke> closes. Grammar of the reference parser:
 *   thinking mode: REASONING "</think>" CONTENT [TOOLS] [EOS]      chat mode: CONTENT [TOOLS] [EOS]
 *   TOOLS = "\n\n<｜DSML｜tool_calls>\n" (INVOKE ">\n")... "</｜DSML｜tool_calls>"
 * Deviation: a missing final EOS is accepted (engines strip the stop token). Malformed DSML, a special token
 * inside reasoning/content, text after EOS or after the tool block, and an unterminated block at finish are
 * DSV4_ERR_FORMAT with a message; after an error the parser stays failed. */
typedef struct dsv4_chat_parse_cb {
    void *ud;
    dsv4_status (*on_reasoning)(void *ud, const char *text, size_t len);
    dsv4_status (*on_content)(void *ud, const char *text, size_t len);
    /* arguments_json: the JSON object text the reference builds ({"k": v, ...}), NUL-terminated */
    dsv4_status (*on_tool_call)(void *ud, const char *name, const char *arguments_json);
} dsv4_chat_parse_cb;

typedef struct dsv4_chat_parser dsv4_chat_parser;

dsv4_status dsv4_chat_parser_create(bool thinking, const dsv4_chat_parse_cb *cb, dsv4_chat_parser **out);
void dsv4_chat_parser_destroy(dsv4_chat_parser *p);
dsv4_status dsv4_chat_parser_feed(dsv4_chat_parser *p, const char *text, size_t len, dsv4_err *err);
/* Input bytes consumed so far (delivered, or swallowed as markup). Inside on_reasoning / on_content the
 * delta starts at this offset; inside on_tool_call it is the end of the call's </｜DSML｜invoke>. The
 * server uses it to hand back the raw text of malformed DSML. */
size_t dsv4_chat_parser_consumed(const dsv4_chat_parser *p);
/* End of the completion: flushes held-back text and checks the completion is complete. */
dsv4_status dsv4_chat_parser_finish(dsv4_chat_parser *p, dsv4_err *err);

/* Whole-completion convenience: returns {"role":"assistant","content","reasoning_content","tool_calls":[
 * {"type":"function","function":{"name","arguments"}}]} like the reference's
 * parse_message_from_completion_text. */
dsv4_status dsv4_chat_parse_completion(const char *text, size_t len, bool thinking, json_t **msg, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif
