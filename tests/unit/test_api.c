/* test_api.c — the API dialects of `dsv4 serve` without an engine (src/server/api.h): requests of each
 * dialect render the same prompt as dsv4_chat_render on the equivalent OpenAI messages; thinking
 * switches; tool_choice forcing text; errors name the field (400) in each dialect's error shape; answers
 * and SSE streams built from hand-made scheduler events have the fields and event order clients expect;
 * the /metrics text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "server/http.h"
#include "test_util.h"
#include "dsv4_chat.h"

static int parse(dsv4_api_kind k, const char *body, dsv4_api_request *r, dsv4_api_error *e) {
    memset(e, 0, sizeof *e);
    return dsv4_api_parse(k, body, strlen(body), r, e);
}

/* dsv4_chat_render of a messages / tools JSON text (chat or thinking mode), as a malloc'ed string. */
static char *reference(const char *msgs, const char *tools, int thinking) {
    json_t *m = json_loads(msgs, 0, NULL), *t = tools ? json_loads(tools, 0, NULL) : NULL;
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = thinking;
    dsv4_tok_buf out = {0};
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_chat_render(m, t, &o, &out, &err);
    json_decref(m);
    json_decref(t);
    if (st) { fprintf(stderr, "reference render failed: %s\n", err.msg); dsv4_tok_buf_free(&out); return strdup("?"); }
    return out.data;
}

static int prompt_is(const dsv4_api_request *r, const char *want) {
    int ok = r->prompt.len == strlen(want) && !memcmp(r->prompt.data, want, r->prompt.len);
    if (!ok) fprintf(stderr, "  got:  %.*s\n  want: %s\n", (int)r->prompt.len, r->prompt.data ? r->prompt.data : "", want);
    return ok;
}

static void test_chat_basic(void) {
    dsv4_api_request r;
    dsv4_api_error e;
    int st = parse(DSV4_API_CHAT,
                   "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
                   "\"content\":\"hi\"}],\"max_tokens\":7,\"temperature\":0,\"stop\":[\"a\",\"bc\"],\"seed\":5,"
                   "\"unknown_field\":{\"x\":1},\"logprobs\":true,\"top_logprobs\":3}",
                   &r, &e);
    CHECK(st == 0, "parse: %s", e.message);
    char *want = reference("[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hi\"}]", NULL, 0);
    CHECK(prompt_is(&r, want), "prompt differs from dsv4_chat_render");
    CHECK(r.chat == 1 && r.thinking == 0, "chat %d thinking %d", r.chat, r.thinking);
    CHECK(r.max_tokens == 7 && r.sp.temperature == 0 && r.sp.seed == 5 && r.seed_given, "params");
    CHECK(r.n_stops == 2 && !strcmp(r.stops[1], "bc"), "stops");
    CHECK(r.logprobs && r.top_logprobs == 3 && r.sp.logprobs == 3, "logprobs");
    CHECK(!r.stream && !r.forced.len, "stream/forced");
    free(want);
    dsv4_api_request_free(&r);

    /* reasoning_content given back, role developer, max_completion_tokens wins */
    st = parse(DSV4_API_CHAT,
               "{\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},{\"role\":\"user\",\"content\":\"q\"},"
               "{\"role\":\"assistant\",\"content\":\"a\",\"reasoning_content\":\"r\"},{\"role\":\"user\",\"content\":\"q2\"}],"
               "\"max_tokens\":3,\"max_completion_tokens\":9,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
               &r, &e);
    CHECK(st == 0, "parse: %s", e.message);
    want = reference("[{\"role\":\"developer\",\"content\":\"d\"},{\"role\":\"user\",\"content\":\"q\"},{\"role\":"
                     "\"assistant\",\"content\":\"a\",\"reasoning_content\":\"r\"},{\"role\":\"user\",\"content\":\"q2\"}]",
                     NULL, 0);
    CHECK(prompt_is(&r, want), "developer/history prompt");
    CHECK(r.max_tokens == 9 && r.stream && r.include_usage, "max_completion_tokens / stream options");
    free(want);
    dsv4_api_request_free(&r);
}

static void test_thinking_dialects(void) {
    static const char *bodies[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_effort\":\"high\"}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"thinking\":{\"type\":\"enabled\"}}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"thinking\":true}}",
    };
    char *want = reference("[{\"role\":\"user\",\"content\":\"x\"}]", NULL, 1);
    for (int i = 0; i < 3; i++) {
        dsv4_api_request r;
        dsv4_api_error e;
        CHECK(parse(DSV4_API_CHAT, bodies[i], &r, &e) == 0, "%s", e.message);
        CHECK(r.thinking == 1 && prompt_is(&r, want), "dialect %d", i);
        dsv4_api_request_free(&r);
    }
    free(want);
    dsv4_api_request r;
    dsv4_api_error e;
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_effort\":\"max\"}", &r,
                &e) == 0, "%s", e.message);
    CHECK(r.prompt.data && strstr(r.prompt.data, "Reasoning Effort: Absolute maximum"), "effort max paragraph");
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"thinking\":{\"type\":\"disabled\"}}",
                &r, &e) == 0 && r.thinking == 0, "disabled");
    dsv4_api_request_free(&r);
}

#define TOOLS "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"w\",\"parameters\":" \
              "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}]"

static void test_tool_choice(void) {
    dsv4_api_request r;
    dsv4_api_error e;
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":" TOOLS
                               ",\"tool_choice\":\"required\"}", &r, &e) == 0, "%s", e.message);
    CHECK(r.forced.len && !strcmp(r.forced.data, "\n\n<｜DSML｜tool_calls>\n"), "required forced text");
    char *want = reference("[{\"role\":\"user\",\"content\":\"x\"}]", TOOLS, 0);
    CHECK(prompt_is(&r, want), "tools prompt");
    free(want);
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":" TOOLS
                               ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}}", &r, &e) == 0,
          "%s", e.message);
    CHECK(r.forced.len && !strcmp(r.forced.data, "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"),
          "named forced text");
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":" TOOLS
                               ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}}", &r, &e) == 400 &&
          !strcmp(e.param, "tool_choice"), "unknown named tool: %s", e.message);
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":" TOOLS
                               ",\"tool_choice\":\"none\"}", &r, &e) == 0, "%s", e.message);
    CHECK(r.prompt.data && !strstr(r.prompt.data, "## Tools") && !r.forced.len, "none: no tools in the prompt");
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
                               "{\"type\":\"json_object\"}}", &r, &e) == 0, "%s", e.message);
    CHECK(r.prompt.data && strstr(r.prompt.data, "## Response Format"), "response_format section");
    dsv4_api_request_free(&r);
}

static void test_errors(void) {
    static const struct { dsv4_api_kind k; const char *body, *param, *msg; } cases[] = {
        {DSV4_API_CHAT, "{\"messages\":[", "", "malformed JSON"},
        {DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}", "", "UTF-8"},
        {DSV4_API_CHAT, "[1]", "", "object"},
        {DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}", "temperature", "number"},
        {DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":1.5}", "max_tokens", "integer"},
        {DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}", "stream", "boolean"},
        {DSV4_API_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "messages[0]", "wizard"},
        {DSV4_API_CHAT, "{\"messages\":\"hi\"}", "messages", "array"},
        {DSV4_API_CHAT, "{}", "messages", "required"},
        {DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", "n", "outside"},
        {DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", "stop", "string"},
        {DSV4_API_COMPLETIONS, "{\"prompt\":3}", "prompt", "string"},
        {DSV4_API_RESPONSES, "{\"input\":\"x\",\"previous_response_id\":\"r\"}", "previous_response_id", "stateless"},
        {DSV4_API_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "max_tokens", "required"},
        {DSV4_API_MESSAGES, "{\"max_tokens\":5,\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", "messages[0]", "role"},
        {DSV4_API_MESSAGES, "{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\"}]}]}",
         "messages[0]", "image"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dsv4_api_request r;
        dsv4_api_error e;
        int st = parse(cases[i].k, cases[i].body, &r, &e);
        CHECK(st == 400 && e.http_status == 400, "case %zu: status %d", i, st);
        CHECK(!strcmp(e.param, cases[i].param), "case %zu: param '%s', want '%s'", i, e.param, cases[i].param);
        CHECK(strstr(e.message, cases[i].msg), "case %zu: message '%s' lacks '%s'", i, e.message, cases[i].msg);
        CHECK(r.prompt.len == 0 && r.n_stops == 0, "case %zu: request not left empty", i);
        dsv4_api_request_free(&r);
    }
    dsv4_api_error e;
    dsv4_api_fail(&e, 400, "temperature", "bad");
    json_t *o = dsv4_api_error_json(DSV4_API_CHAT, &e), *a = dsv4_api_error_json(DSV4_API_MESSAGES, &e);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(o, "error"), "param")), "temperature") &&
          !strcmp(json_string_value(json_object_get(json_object_get(o, "error"), "type")), "invalid_request_error"),
          "OpenAI error shape");
    CHECK(!strcmp(json_string_value(json_object_get(a, "type")), "error") &&
          !strcmp(json_string_value(json_object_get(json_object_get(a, "error"), "message")), "bad"), "Anthropic shape");
    json_decref(o);
    json_decref(a);
}

/* The same conversation in the three chat dialects renders one prompt. */
#define HISTORY_OPENAI                                                                                        \
    "[{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"weather?\"},"                \
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":" \
    "{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"                           \
    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"sunny\"},{\"role\":\"user\",\"content\":\"thanks\"}]"

static void test_dialects_agree(void) {
    char *want = reference(HISTORY_OPENAI, TOOLS, 0);
    dsv4_api_request r;
    dsv4_api_error e;
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":" HISTORY_OPENAI ",\"tools\":" TOOLS "}", &r, &e) == 0, "%s", e.message);
    CHECK(prompt_is(&r, want), "chat");
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_MESSAGES,
                "{\"max_tokens\":5,\"system\":[{\"type\":\"text\",\"text\":\"sys\"}],\"tools\":[{\"name\":\"get_weather\","
                "\"description\":\"w\",\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}],"
                "\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"},{\"role\":\"assistant\",\"content\":[{\"type\":"
                "\"tool_use\",\"id\":\"c1\",\"name\":\"get_weather\",\"input\":{\"city\":\"Paris\"}}]},{\"role\":\"user\","
                "\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"c1\",\"content\":\"sunny\"},{\"type\":\"text\","
                "\"text\":\"thanks\"}]}]}",
                &r, &e) == 0, "%s", e.message);
    CHECK(prompt_is(&r, want), "anthropic");
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_RESPONSES,
                "{\"instructions\":\"sys\",\"tools\":[{\"type\":\"function\",\"name\":\"get_weather\",\"description\":\"w\","
                "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}},{\"type\":\"web_search\"}],"
                "\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"weather?\"}]},{\"type\":"
                "\"function_call\",\"call_id\":\"c1\",\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"},"
                "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"sunny\"},{\"role\":\"user\",\"content\":"
                "\"thanks\"}]}",
                &r, &e) == 0, "%s", e.message);
    CHECK(prompt_is(&r, want), "responses");
    dsv4_api_request_free(&r);
    free(want);
    /* completions: BOS prepended once; token ids kept */
    CHECK(parse(DSV4_API_COMPLETIONS, "{\"prompt\":\"abc\",\"logprobs\":2}", &r, &e) == 0, "%s", e.message);
    CHECK(prompt_is(&r, DSV4_CHAT_BOS "abc") && r.chat == 0 && r.max_tokens == 16 && r.top_logprobs == 2, "completions");
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_COMPLETIONS, "{\"prompt\":[0,5,7]}", &r, &e) == 0 && r.n_prompt_ids == 3 && r.prompt_ids[2] == 7,
          "completions ids");
    dsv4_api_request_free(&r);
}

/* ---- answers -------------------------------------------------------------------------------------- */

static dsv4_sched_event ev_text(const char *reasoning, const char *content, dsv4_finish fin) {
    dsv4_sched_event ev;
    memset(&ev, 0, sizeof ev);
    ev.reasoning = (char *)reasoning;
    ev.reasoning_len = reasoning ? strlen(reasoning) : 0;
    ev.content = (char *)content;
    ev.content_len = content ? strlen(content) : 0;
    ev.n_tokens = 1;
    ev.finish = fin;
    ev.prompt_tokens = 10;
    ev.cached_tokens = 4;
    ev.completion_tokens = 3;
    return ev;
}

static void feed(dsv4_api_request *r, dsv4_api_ctx *c, dsv4_api_answer *a, dsv4_tok_buf *sse) {
    dsv4_sched_tool_call tc = {(char *)"get_weather", (char *)"{\"city\": \"Paris\"}"};
    dsv4_sched_event evs[3] = {ev_text("think", NULL, 0), ev_text(NULL, "Hi", 0), ev_text(NULL, NULL, DSV4_FINISH_TOOL_CALLS)};
    evs[2].tool_calls = &tc;
    evs[2].n_tool_calls = 1;
    for (int i = 0; i < 3; i++) {
        if (sse) CHECK(dsv4_api_stream_event(r, c, a, &evs[i], sse) == 0, "stream event %d", i);
        else CHECK(dsv4_api_answer_add(r, c, a, &evs[i]) == 0, "add %d", i);
    }
}

static void test_answers(void) {
    dsv4_api_ctx c = {.id = "chatcmpl-1", .model = "m", .created = 1, .tok = NULL};
    dsv4_api_request r;
    dsv4_api_error e;
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_effort\":\"high\"}", &r,
                &e) == 0, "%s", e.message);
    dsv4_api_answer a;
    dsv4_api_answer_init(&a);
    feed(&r, &c, &a, NULL);
    json_t *j = dsv4_api_answer_json(&r, &c, &a);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0), *msg = json_object_get(ch, "message");
    CHECK(!strcmp(json_string_value(json_object_get(msg, "content")), "Hi"), "content");
    CHECK(!strcmp(json_string_value(json_object_get(msg, "reasoning_content")), "think"), "reasoning_content");
    json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")), "{\"city\": \"Paris\"}"),
          "tool call arguments");
    CHECK(!strcmp(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls"), "finish_reason");
    json_t *u = json_object_get(j, "usage");
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == 10 &&
          json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens")) == 4, "usage");
    json_decref(j);
    dsv4_api_answer_free(&a);

    /* chat stream: role first, deltas, finish, [DONE] */
    dsv4_tok_buf sse = {0};
    dsv4_api_answer_init(&a);
    feed(&r, &c, &a, &sse);
    CHECK(sse.data && strstr(sse.data, "\"role\":\"assistant\"") && strstr(sse.data, "\"reasoning_content\":\"think\"") &&
          strstr(sse.data, "\"tool_calls\":[{") && strstr(sse.data, "\"finish_reason\":\"tool_calls\""), "chat stream");
    CHECK(sse.len > 14 && !memcmp(sse.data + sse.len - 14, "data: [DONE]\n\n", 14), "ends with [DONE]");
    dsv4_api_answer_free(&a);
    dsv4_tok_buf_free(&sse);
    dsv4_api_request_free(&r);

    /* Anthropic stream: the exact event sequence */
    c.id = "msg_1";
    CHECK(parse(DSV4_API_MESSAGES, "{\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true,"
                                   "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1024}}", &r, &e) == 0, "%s", e.message);
    dsv4_api_answer_init(&a);
    feed(&r, &c, &a, &sse);
    static const char *want[] = {"message_start", "content_block_start", "content_block_delta", "content_block_delta",
                                 "content_block_stop", "content_block_start", "content_block_delta", "content_block_stop",
                                 "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
                                 "message_stop"};
    const char *p = sse.data;
    size_t n = 0;
    int order_ok = 1;
    while (p && (p = strstr(p, "event: "))) {
        p += 7;
        size_t l = strcspn(p, "\n");
        if (n >= sizeof want / sizeof *want || strlen(want[n]) != l || memcmp(p, want[n], l)) order_ok = 0;
        n++;
    }
    CHECK(order_ok && n == sizeof want / sizeof *want, "anthropic event sequence (%zu events)", n);
    CHECK(strstr(sse.data, "\"thinking_delta\"") && strstr(sse.data, "\"input_json_delta\"") &&
          strstr(sse.data, "\"stop_reason\":\"tool_use\""), "anthropic deltas");
    json_t *m = dsv4_api_answer_json(&r, &c, &a);
    json_t *blocks = json_object_get(m, "content");
    CHECK(json_array_size(blocks) == 3 &&
          !strcmp(json_string_value(json_object_get(json_array_get(blocks, 2), "type")), "tool_use") &&
          !strcmp(json_string_value(json_object_get(json_object_get(json_array_get(blocks, 2), "input"), "city")), "Paris"),
          "anthropic message blocks");
    CHECK(json_integer_value(json_object_get(json_object_get(m, "usage"), "input_tokens")) == 6 &&
          json_integer_value(json_object_get(json_object_get(m, "usage"), "cache_read_input_tokens")) == 4,
          "anthropic usage");
    json_decref(m);
    dsv4_api_answer_free(&a);
    dsv4_tok_buf_free(&sse);
    dsv4_api_request_free(&r);

    /* Responses stream: created first, completed last, items in order */
    c.id = "1";
    CHECK(parse(DSV4_API_RESPONSES, "{\"input\":\"x\",\"stream\":true,\"reasoning\":{\"effort\":\"low\"}}", &r, &e) == 0,
          "%s", e.message);
    dsv4_api_answer_init(&a);
    feed(&r, &c, &a, &sse);
    const char *cr = strstr(sse.data, "event: response.created"), *rt = strstr(sse.data, "response.reasoning_text.delta"),
               *ot = strstr(sse.data, "response.output_text.delta"),
               *fc = strstr(sse.data, "response.function_call_arguments.done"),
               *done = strstr(sse.data, "event: response.completed");
    CHECK(cr && rt && ot && fc && done && cr < rt && rt < ot && ot < fc && fc < done, "responses event order");
    m = dsv4_api_answer_json(&r, &c, &a);
    CHECK(json_array_size(json_object_get(m, "output")) == 3, "responses output items");
    json_decref(m);
    dsv4_api_answer_free(&a);
    dsv4_tok_buf_free(&sse);
    dsv4_api_request_free(&r);
}

/* /metrics text: every metric of the issue, cumulative histogram buckets ending in +Inf == count. */
/* A final assistant message of text is a prefill: the prompt is the conversation before it with the
 * generation prompt, then that text (it used to be rendered as a closed turn, EOS and no new turn). */
static void test_prefill(void) {
    char *head = reference("[{\"role\":\"user\",\"content\":\"q\"}]", NULL, 0);
    size_t n = strlen(head);
    char *want = malloc(n + 8);
    memcpy(want, head, n);
    memcpy(want + n, "Sure,", 6);
    dsv4_api_request r;
    dsv4_api_error e;
    CHECK(parse(DSV4_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
                "\"content\":\"Sure,\"}]}", &r, &e) == 0, "%s", e.message);
    CHECK(prompt_is(&r, want), "chat prefill");
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_MESSAGES, "{\"max_tokens\":3,\"messages\":[{\"role\":\"user\",\"content\":\"q\"},"
                "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Sure,\"}]}]}", &r, &e) == 0,
          "%s", e.message);
    CHECK(prompt_is(&r, want), "anthropic prefill");
    dsv4_api_request_free(&r);
    CHECK(parse(DSV4_API_MESSAGES, "{\"max_tokens\":3,\"thinking\":{\"type\":\"enabled\"},\"messages\":[{\"role\":"
                "\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"Sure,\"}]}", &r, &e) == 400 &&
          strstr(e.message, "prefill"), "prefill with thinking: %s", e.message);
    dsv4_api_request_free(&r);
    free(want);
    free(head);
}

/* A stop string's finish is Anthropic's stop_sequence, naming the string, in the body and the stream. */
static void test_stop_sequence(void) {
    dsv4_api_ctx c = {.id = "msg_1", .model = "m", .created = 1, .tok = NULL};
    dsv4_api_request r;
    dsv4_api_error e;
    CHECK(parse(DSV4_API_MESSAGES, "{\"max_tokens\":3,\"stop_sequences\":[\"aa\",\"END\"],\"messages\":[{\"role\":"
                "\"user\",\"content\":\"q\"}]}", &r, &e) == 0, "%s", e.message);
    dsv4_sched_event ev = ev_text(NULL, "Hi", DSV4_FINISH_STOP);
    ev.stop_string = 2;
    dsv4_api_answer a;
    dsv4_api_answer_init(&a);
    dsv4_tok_buf sse = {0};
    CHECK(dsv4_api_stream_event(&r, &c, &a, &ev, &sse) == 0, "stream");
    json_t *j = dsv4_api_answer_json(&r, &c, &a);
    CHECK(!strcmp(json_string_value(json_object_get(j, "stop_reason")), "stop_sequence") &&
          !strcmp(json_string_value(json_object_get(j, "stop_sequence")), "END"), "body stop_sequence");
    CHECK(sse.data && strstr(sse.data, "\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"END\""), "stream: %s",
          sse.data ? sse.data : "");
    json_decref(j);
    dsv4_api_answer_free(&a);
    dsv4_tok_buf_free(&sse);
    /* EOS: end_turn with a null stop_sequence; malformed DSML: end_turn too (a Messages API value) */
    CHECK(!strcmp(dsv4_api_finish_anthropic(DSV4_FINISH_STOP, 0), "end_turn") &&
          !strcmp(dsv4_api_finish_anthropic(DSV4_FINISH_MALFORMED, 0), "end_turn") &&
          !strcmp(dsv4_api_finish_anthropic(DSV4_FINISH_LENGTH, 0), "max_tokens"), "anthropic finish names");
    dsv4_api_request_free(&r);
}

static void test_metrics(void) {
    dsv4_sched_stats st;
    memset(&st, 0, sizeof st);
    st.requests_running = 2;
    st.kv_blocks_free = 7;
    for (int i = 0; i < DSV4_SCHED_HIST_N; i++) st.ttft_bucket[i] = i < 3 ? 1 : 4;
    st.ttft_count = 5;
    st.ttft_sum = 1.5;
    dsv4_tok_buf out = {0};
    CHECK(dsv4_metrics_text(&st, 10, 3, &out) == 0 && out.data, "render");
    static const char *want[] = {"dsv4_requests_running 2\n", "dsv4_requests_waiting 0\n", "dsv4_kv_blocks_used 0\n",
                                 "dsv4_kv_blocks_free 7\n", "dsv4_prompt_tokens_total 0\n",
                                 "dsv4_generation_tokens_total 0\n", "dsv4_prefix_cache_hit_tokens_total 0\n",
                                 "# TYPE dsv4_time_to_first_token_seconds histogram\n",
                                 "dsv4_time_to_first_token_seconds_bucket{le=\"+Inf\"} 5\n",
                                 "dsv4_time_to_first_token_seconds_sum 1.5\n", "dsv4_time_to_first_token_seconds_count 5\n",
                                 "# TYPE dsv4_time_per_output_token_seconds histogram\n", "dsv4_http_errors_total 3\n"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        CHECK(out.data && strstr(out.data, want[i]), "missing: %s", want[i]);
    dsv4_tok_buf_free(&out);
}

int main(void) {
    RUN(test_chat_basic);
    RUN(test_thinking_dialects);
    RUN(test_tool_choice);
    RUN(test_errors);
    RUN(test_dialects_agree);
    RUN(test_answers);
    RUN(test_prefill);
    RUN(test_stop_sequence);
    RUN(test_metrics);
    return test_finish();
}
