/* fuzz_request.c — libFuzzer target for the request parser of `dsv4 serve` (server/api.c, api_openai.c,
 * api_anthropic.c, with tokenizer/chat.c rendering the prompt): an HTTP request body -> rendered prompt and
 * parameters, no engine. Input: one byte choosing the endpoint (b % 5: chat/completions, completions,
 * responses, messages, count_tokens), then the body bytes as received.
 * Checked: a refusal has a 4xx/5xx status, a non-empty message and an error body in its dialect, and leaves
 * the request empty; an accepted request has a valid UTF-8 prompt (checked by fuzz_util.h's independent
 * validator) and forced text, at most 16 stop strings, sampling parameters the sampler accepts, and a
 * non-negative max_tokens; its answer renders (whole and as a stream) from a synthetic event sequence.
 * Build: make fuzz; run:  build/fuzz/fuzz_request -max_total_time=60 DIR tests/fuzz/corpus_request */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4_sampler.h"
#include "fuzz_util.h"
#include "server/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    dsv4_api_kind kind = (dsv4_api_kind)(data[0] % 5);
    dsv4_api_request r;
    dsv4_api_error e;
    memset(&e, 0, sizeof e);
    int st = dsv4_api_parse(kind, (const char *)data + 1, size - 1, &r, &e);
    if (st) {
        if (st < 400 || st > 599 || e.http_status != st || !e.message[0]) abort();
        if (r.prompt.len || r.n_stops || r.forced.len || r.prompt_ids) abort();
        json_t *j = dsv4_api_error_json(kind, &e);
        if (!j) abort();
        json_decref(j);
        dsv4_api_request_free(&r);
        return 0;
    }
    if (!utf8_ok((const unsigned char *)(r.prompt.data ? r.prompt.data : ""), r.prompt.len)) abort();
    if (!utf8_ok((const unsigned char *)(r.forced.data ? r.forced.data : ""), r.forced.len)) abort();
    if (r.n_stops < 0 || r.n_stops > DSV4_API_MAX_STOPS || r.max_tokens < 0) abort();
    for (int i = 0; i < r.n_stops; i++)
        if (!r.stops[i] || !r.stops[i][0]) abort();
    if (!r.prompt.len && !r.n_prompt_ids) abort(); /* every dialect needs something to complete */
    dsv4_err err = {{0}};
    if (dsv4_sampling_params_check(&r.sp, &err)) abort();

    /* the answer renders, whole and streamed */
    dsv4_api_ctx c = {.id = "x1", .model = "m", .created = 1, .tok = NULL};
    dsv4_sched_tool_call tc = {(char *)"f", (char *)"{\"a\": 1}"};
    dsv4_sched_event ev[3];
    memset(ev, 0, sizeof ev);
    ev[0].reasoning = (char *)"r";
    ev[0].reasoning_len = 1;
    ev[1].content = (char *)"c";
    ev[1].content_len = 1;
    ev[2].tool_calls = &tc;
    ev[2].n_tool_calls = 1;
    ev[2].finish = (dsv4_finish)(1 + size % 6);
    ev[2].stop_string = (int)(size % (DSV4_API_MAX_STOPS + 2)); /* any stop string index, in range or not */
    for (int s = 0; s < 2; s++) {
        dsv4_api_answer a;
        dsv4_api_answer_init(&a);
        dsv4_tok_buf out = {0};
        for (int i = 0; i < 3; i++)
            if ((s ? dsv4_api_stream_event(&r, &c, &a, &ev[i], &out) : dsv4_api_answer_add(&r, &c, &a, &ev[i])) != 0)
                abort();
        if (s && !utf8_ok((const unsigned char *)(out.data ? out.data : ""), out.len)) abort();
        json_t *j = dsv4_api_answer_json(&r, &c, &a);
        if (!j) abort();
        json_decref(j);
        dsv4_tok_buf_free(&out);
        dsv4_api_answer_free(&a);
    }
    dsv4_api_request_free(&r);
    return 0;
}
