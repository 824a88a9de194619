/* test_harden_quadratic.c — issue 13, class "quadratic work on input": chat rendering of many assistant
 * turns in a row (30k took 36 s: every message rescanned the conversation for the last user turn) and of
 * many tool results in one turn (an insertion sort) must grow linearly. Checked by the ratio of times for
 * n and 4n messages (linear: ~4, quadratic: ~16; the bound 8 leaves room for a loaded machine) and by an
 * absolute ceiling for 30k turns that the quadratic code missed by an order of magnitude. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "test_util.h"
#include "dsv4_chat.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* One user message followed by n assistant turns. */
static json_t *assistant_run(int n) {
    json_t *m = json_array();
    json_array_append_new(m, json_pack("{s:s,s:s}", "role", "user", "content", "hello"));
    for (int i = 0; i < n; i++)
        json_array_append_new(m, json_pack("{s:s,s:s,s:s}", "role", "assistant", "content", "ok",
                                           "reasoning_content", "hm"));
    return m;
}

/* An assistant turn with n tool calls, then n tool results in reverse id order (all sorted into one turn). */
static json_t *tool_run(int n) {
    json_t *m = json_array(), *calls = json_array();
    json_array_append_new(m, json_pack("{s:s,s:s}", "role", "user", "content", "go"));
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "c%d", i);
        json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id, "type", "function", "function",
                                               "name", "f", "arguments", "{}"));
    }
    json_array_append_new(m, json_pack("{s:s,s:s,s:o}", "role", "assistant", "content", "", "tool_calls", calls));
    for (int i = n - 1; i >= 0; i--) {
        snprintf(id, sizeof id, "c%d", i);
        json_array_append_new(m, json_pack("{s:s,s:s,s:s}", "role", "tool", "tool_call_id", id, "content", "r"));
    }
    return m;
}

static double render_time(json_t *msgs, int thinking) {
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = thinking;
    dsv4_tok_buf out = {0};
    dsv4_err err = {{0}};
    double t0 = now();
    dsv4_status st = dsv4_chat_render(msgs, NULL, &o, &out, &err);
    double t = now() - t0;
    CHECK(st == DSV4_OK, "render: %s", err.msg);
    dsv4_tok_buf_free(&out);
    return t;
}

static void test_assistant_turns_linear(void) {
    for (int thinking = 0; thinking <= 1; thinking++) {
        json_t *a = assistant_run(5000), *b = assistant_run(20000);
        double ta = render_time(a, thinking), tb = render_time(b, thinking);
        fprintf(stderr, "    thinking=%d: 5000 turns %.3f s, 20000 turns %.3f s (ratio %.1f)\n", thinking, ta, tb,
                tb / ta);
        CHECK(tb / ta < 8.0 || tb < 0.05, "4x the turns took %.1fx the time (quadratic?)", tb / ta);
        json_decref(a);
        json_decref(b);
    }
    json_t *c = assistant_run(30000);
    double tc = render_time(c, 1);
    fprintf(stderr, "    30000 turns: %.3f s\n", tc);
    CHECK(tc < 4.0, "30000 assistant turns took %.1f s", tc);
    json_decref(c);
}

static void test_tool_results_linear(void) {
    json_t *a = tool_run(2000), *b = tool_run(8000);
    double ta = render_time(a, 0), tb = render_time(b, 0);
    fprintf(stderr, "    2000 tool results %.3f s, 8000 %.3f s (ratio %.1f)\n", ta, tb, tb / ta);
    CHECK(tb / ta < 8.0 || tb < 0.05, "4x the tool results took %.1fx the time (quadratic?)", tb / ta);
    json_decref(a);
    json_decref(b);
}

int main(void) {
    RUN(test_assistant_turns_linear);
    RUN(test_tool_results_linear);
    return test_finish();
}
