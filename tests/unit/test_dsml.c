/* test_dsml.c — the completion push parser (chat.h): reasoning / content / DSML tool calls parsed whole
 * and fed in two chunks split at every byte offset and byte by byte (same result each way, deltas never
 * split a UTF-8 character), round trip with the renderer's tool-call block, and malformed-DSML errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "dsv4_chat.h"

typedef struct {
    dsv4_tok_buf reasoning, content, calls; /* calls: "name|args\n" per call */
    int broken_utf8;
} result;

static dsv4_status on_r(void *ud, const char *t, size_t n) {
    result *r = ud;
    if (dsv4_utf8_valid_prefix(t, n) != n) r->broken_utf8++;
    return dsv4_tok_buf_append(&r->reasoning, t, n);
}
static dsv4_status on_c(void *ud, const char *t, size_t n) {
    result *r = ud;
    if (dsv4_utf8_valid_prefix(t, n) != n) r->broken_utf8++;
    return dsv4_tok_buf_append(&r->content, t, n);
}
static dsv4_status on_t(void *ud, const char *name, const char *args) {
    result *r = ud;
    dsv4_tok_buf_append(&r->calls, name, strlen(name));
    dsv4_tok_buf_append(&r->calls, "|", 1);
    dsv4_tok_buf_append(&r->calls, args, strlen(args));
    return dsv4_tok_buf_append(&r->calls, "\n", 1);
}

static void result_free(result *r) {
    dsv4_tok_buf_free(&r->reasoning);
    dsv4_tok_buf_free(&r->content);
    dsv4_tok_buf_free(&r->calls);
}

static const char *s_(const dsv4_tok_buf *b) { return b->data ? b->data : ""; }

/* Feeds text split at the given offsets (cuts sorted, ncut of them); returns the status of the run. */
static dsv4_status run(const char *text, bool thinking, const size_t *cuts, int ncut, result *r, dsv4_err *e) {
    memset(r, 0, sizeof *r);
    dsv4_chat_parse_cb cb = {r, on_r, on_c, on_t};
    dsv4_chat_parser *p;
    dsv4_chat_parser_create(thinking, &cb, &p);
    size_t n = strlen(text), at = 0;
    dsv4_status st = DSV4_OK;
    for (int i = 0; i <= ncut && !st; i++) {
        size_t end = i < ncut ? cuts[i] : n;
        st = dsv4_chat_parser_feed(p, text + at, end - at, e);
        at = end;
    }
    if (!st) st = dsv4_chat_parser_finish(p, e);
    dsv4_chat_parser_destroy(p);
    return st;
}

/* Checks whole-text parsing gives the expected parts and that every split (and byte-by-byte) agrees. */
static void check_parse(const char *text, bool thinking, const char *reasoning, const char *content, const char *calls) {
    result w;
    dsv4_err e = {{0}};
    dsv4_status st = run(text, thinking, NULL, 0, &w, &e);
    CHECK(st == DSV4_OK, "parse failed: %s\n    text: %s", e.msg, text);
    CHECK(!strcmp(s_(&w.reasoning), reasoning), "reasoning '%s' want '%s'", s_(&w.reasoning), reasoning);
    CHECK(!strcmp(s_(&w.content), content), "content '%s' want '%s'", s_(&w.content), content);
    CHECK(!strcmp(s_(&w.calls), calls), "calls '%s' want '%s'", s_(&w.calls), calls);
    size_t n = strlen(text);
    int bad = 0;
    for (size_t k = 0; k <= n; k++) {
        result r;
        st = run(text, thinking, &k, 1, &r, &e);
        if (st || strcmp(s_(&r.reasoning), reasoning) || strcmp(s_(&r.content), content) || strcmp(s_(&r.calls), calls)) {
            if (!bad++) fprintf(stderr, "  split at %zu differs (%s)\n", k, st ? e.msg : "different parts");
        }
        result_free(&r);
    }
    size_t *all = malloc((n + 1) * sizeof *all);
    for (size_t k = 0; k < n; k++) all[k] = k + 1;
    result r;
    st = run(text, thinking, all, (int)(n ? n - 1 : 0), &r, &e);
    CHECK(!st && !strcmp(s_(&r.reasoning), reasoning) && !strcmp(s_(&r.content), content) && !strcmp(s_(&r.calls), calls),
          "byte-by-byte differs");
    CHECK(r.broken_utf8 == 0, "byte-by-byte deltas split a UTF-8 character %d times", r.broken_utf8);
    result_free(&r);
    free(all);
    CHECK(bad == 0, "%d split points differ", bad);
    result_free(&w);
}

static void test_plain(void) {
    check_parse("推理过程</think>答案。<｜end▁of▁sentence｜>", true, "推理过程", "答案。", "");
    check_parse("Hello <world> & </thin k>", false, "", "Hello <world> & </thin k>", ""); /* no EOS: accepted */
    check_parse("</think>only content<｜end▁of▁sentence｜>", true, "", "only content", "");
    check_parse("a\n\nb <｜end▁of▁sentence｜>", false, "", "a\n\nb ", "");
}

static void test_tool_calls(void) {
    check_parse("Need weather.</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
                "<｜DSML｜parameter name=\"location\" string=\"true\">Beijing</｜DSML｜parameter>\n"
                "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"
                "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>",
                true, "Need weather.", "", "get_weather|{\"location\": \"Beijing\", \"days\": 3}\n");
    check_parse("Let me check.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"a\">\n"
                "<｜DSML｜parameter name=\"q\" string=\"true\">x \"y\" 中\n</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
                "<｜DSML｜invoke name=\"b\">\n</｜DSML｜invoke>\n"
                "<｜DSML｜invoke name=\"c\">\n<｜DSML｜parameter name=\"o\" string=\"false\">{\"k\": [1, 2]}</｜DSML｜parameter>\n"
                "</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
                false, "", "Let me check.", "a|{\"q\": \"x \\\"y\\\" 中\\n\"}\nb|{}\nc|{\"o\": {\"k\": [1, 2]}}\n");
}

/* The renderer's tool-call block parses back to the same calls. */
static void test_round_trip_with_renderer(void) {
    json_t *m = json_loads("[{\"role\":\"user\",\"content\":\"u\"},{\"role\":\"assistant\",\"reasoning_content\":\"r\","
                           "\"content\":\"c\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":"
                           "\"{\\\"a\\\": \\\"s\\\", \\\"b\\\": [1, 2.5], \\\"c\\\": null}\"}}]}]", 0, NULL);
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = true;
    dsv4_tok_buf out = {0};
    dsv4_err e = {{0}};
    CHECK(dsv4_chat_render(m, NULL, &o, &out, &e) == DSV4_OK, "render: %s", e.msg);
    const char *start = strstr(out.data, "<｜Assistant｜><think>");
    CHECK(start != NULL, "assistant turn present");
    if (start) {
        start += strlen("<｜Assistant｜><think>");
        check_parse(start, true, "r", "c", "f|{\"a\": \"s\", \"b\": [1, 2.5], \"c\": null}\n");
        json_t *msg = NULL;
        CHECK(dsv4_chat_parse_completion(start, strlen(start), true, &msg, &e) == DSV4_OK, "whole parse: %s", e.msg);
        json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
        CHECK(tc && !strcmp(json_string_value(json_object_get(json_object_get(tc, "function"), "name")), "f"), "tool call name");
        json_decref(msg);
    }
    dsv4_tok_buf_free(&out);
    json_decref(m);
}

static void check_error(const char *text, bool thinking, const char *want) {
    result r;
    dsv4_err e = {{0}};
    dsv4_status st = run(text, thinking, NULL, 0, &r, &e);
    CHECK(st == DSV4_ERR_FORMAT && strstr(e.msg, want), "want error containing '%s', got %d '%s'\n    text: %s", want, st,
          e.msg, text);
    result_free(&r);
    /* also when fed byte by byte */
    size_t n = strlen(text);
    size_t *all = malloc((n + 1) * sizeof *all);
    for (size_t k = 0; k < n; k++) all[k] = k + 1;
    st = run(text, thinking, all, (int)(n ? n - 1 : 0), &r, &e);
    CHECK(st == DSV4_ERR_FORMAT, "byte-by-byte: want FORMAT error for: %s", text);
    result_free(&r);
    free(all);
}

static void test_errors(void) {
    check_error("no end of thinking", true, "no </think>");
    check_error("a<think>b</think>c", true, "<think> in reasoning");
    check_error("r</think>c</think>", true, "</think> in content");
    check_error("done<｜end▁of▁sentence｜>more", false, "after");
    check_error("x ｜DSML｜ y", false, "｜DSML｜ in content");
    check_error("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n", false, "inside the tool call block");
    check_error("\n\n<｜DSML｜tool_calls>\nX<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", false, ">\\n");
    check_error("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", false,
                "name=");
    check_error("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"maybe\">1"
                "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", false, "string=");
    check_error("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">1"
                "</｜DSML｜parameter>\n<｜DSML｜parameter name=\"a\" string=\"true\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
                "</｜DSML｜tool_calls>", false, "duplicate");
    check_error("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"false\">{oops"
                "</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", false, "not JSON");
    check_error("\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls> trailing", false, "after the tool call block");
    /* fuzz_dsml finding: a tool name that is not UTF-8 failed the whole parse with an empty message */
    check_error("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\xff\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", false,
                "tool name is not UTF-8");
}

/* fuzz_dsml finding: a NUL byte in a parameter name made the parser read past its copy of the name (ASan
 * heap-buffer-overflow); it is now a FORMAT error. Whole text with an explicit length (strlen would stop). */
static void test_nul_in_param_name(void) {
    static const char t[] = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\0b\" "
                            "string=\"true\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    json_t *m = NULL;
    dsv4_err e = {{0}};
    dsv4_status st = dsv4_chat_parse_completion(t, sizeof t - 1, false, &m, &e);
    CHECK(st == DSV4_ERR_FORMAT && strstr(e.msg, "NUL"), "want a FORMAT error naming the NUL byte, got %d '%s'", st, e.msg);
    json_decref(m);
}

int main(void) {
    RUN(test_plain);
    RUN(test_tool_calls);
    RUN(test_round_trip_with_renderer);
    RUN(test_errors);
    RUN(test_nul_in_param_name);
    return test_finish();
}
