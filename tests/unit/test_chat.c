/* test_chat.c — prompt rendering against DeepSeek's reference renderer: the four official golden cases
 * (../shared/testdata/encoding when present, else the committed copy tests/data/encoding) byte for byte,
 * the checked examples of spec §7.3 item 5, reasoning effort, drop_thinking, tool-call arguments, error
 * cases, and the Python-json.dumps-compatible serializer (float repr, escapes, separators). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "dsv4_chat.h"
#include "tokenizer/pyjson.h"

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

/* Renders a messages JSON text with opts; returns the prompt (caller frees) or NULL with err filled. */
static char *render(const char *json_text, const json_t *tools, const dsv4_chat_opts *o, dsv4_err *err) {
    json_t *m = json_loads(json_text, 0, NULL);
    if (!m) { snprintf(err->msg, sizeof err->msg, "bad test JSON"); return NULL; }
    dsv4_tok_buf out = {0};
    dsv4_status st = dsv4_chat_render(m, tools, o, &out, err);
    json_decref(m);
    if (st) { dsv4_tok_buf_free(&out); return NULL; }
    return out.data ? out.data : strdup("");
}

static void check_render(const char *msgs, bool thinking, const char *want) {
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = thinking;
    dsv4_err e = {{0}};
    char *got = render(msgs, NULL, &o, &e);
    CHECK(got && !strcmp(got, want), "%s\n    got:  %s\n    want: %s (%s)", msgs, got ? got : "(error)", want, e.msg);
    free(got);
}

static void check_golden(const char *dir, int i) {
    char pin[512], pout[512];
    snprintf(pin, sizeof pin, "%s/test_input_%d.json", dir, i);
    snprintf(pout, sizeof pout, "%s/test_output_%d.txt", dir, i);
    size_t nin, nout;
    char *in = read_all(pin, &nin), *want = read_all(pout, &nout);
    CHECK(in && want, "cannot read %s / %s", pin, pout);
    if (!in || !want) { free(in); free(want); return; }
    json_t *root = json_loads(in, 0, NULL);
    CHECK(root != NULL, "%s: bad JSON", pin);
    json_t *msgs = json_is_object(root) ? json_object_get(root, "messages") : root;
    json_t *tools = json_is_object(root) ? json_object_get(root, "tools") : NULL;
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = i != 4; /* README: case 4 is chat mode */
    dsv4_tok_buf out = {0};
    dsv4_err e = {{0}};
    CHECK(dsv4_chat_render(msgs, tools, &o, &out, &e) == DSV4_OK, "golden %d: %s", i, e.msg);
    int same = out.len == nout && !memcmp(out.data, want, nout);
    if (!same) {
        size_t k = 0;
        while (k < out.len && k < nout && out.data[k] == want[k]) k++;
        fprintf(stderr, "  golden %d differs at byte %zu: got \"%.60s\" want \"%.60s\"\n", i, k,
                out.data ? out.data + k : "", want + k);
    }
    CHECK(same, "golden %d (%s) byte-exact", i, dir);
    json_decref(root);
    dsv4_tok_buf_free(&out);
    free(in);
    free(want);
}

static void test_golden_cases(void) {
    int n = 0;
    FILE *f = fopen("../shared/testdata/encoding/test_input_1.json", "r");
    if (f) {
        fclose(f);
        for (int i = 1; i <= 4; i++) check_golden("../shared/testdata/encoding", i);
        n++;
    }
    for (int i = 1; i <= 4; i++) check_golden("tests/data/encoding", i);
    printf("goldens: 4 cases checked in %d director%s\n", n + 1, n ? "ies" : "y");
}

static void test_spec_examples(void) {
    check_render("[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]", false,
                 "<｜begin▁of▁sentence｜><｜User｜>a\n\nb<｜Assistant｜></think>");
    check_render("[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"latest_reminder\",\"content\":\"R\"}]", false,
                 "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜></think><｜latest_reminder｜>R");
    check_render("[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"hi\"}]", true,
                 "<｜begin▁of▁sentence｜>S<｜User｜>hi<｜Assistant｜><think>");
    /* generation prompts of spec §7.3 item 6 */
    check_render("[{\"role\":\"user\",\"content\":\"q\"}]", false, "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>");
    check_render("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"reasoning_content\":\"r\",\"content\":\"a\"},"
                 "{\"role\":\"user\",\"content\":\"q2\"}]", true,
                 "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>a<｜end▁of▁sentence｜><｜User｜>q2<｜Assistant｜><think>");
}

static void test_options_and_roles(void) {
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = true;
    o.reasoning_effort = "max";
    dsv4_err e = {{0}};
    char *got = render("[{\"role\":\"user\",\"content\":\"x\"}]", NULL, &o, &e);
    CHECK(got && strstr(got, "<｜begin▁of▁sentence｜>Reasoning Effort: Absolute maximum with no shortcuts permitted.\n") == got,
          "max effort prefix: %s", got ? got : e.msg);
    CHECK(got && strstr(got, "is left unchecked.\n\n<｜User｜>x<｜Assistant｜><think>"), "max effort paragraph end");
    free(got);
    o.thinking = false; /* chat mode: no prefix */
    got = render("[{\"role\":\"user\",\"content\":\"x\"}]", NULL, &o, &e);
    CHECK(got && !strcmp(got, "<｜begin▁of▁sentence｜><｜User｜>x<｜Assistant｜></think>"), "no prefix in chat mode");
    free(got);
    /* drop_thinking off keeps earlier reasoning; add_bos off */
    dsv4_chat_opts_default(&o);
    o.thinking = true;
    o.drop_thinking = false;
    o.add_bos = false;
    got = render("[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"reasoning_content\":\"r\",\"content\":\"a\"},"
                 "{\"role\":\"user\",\"content\":\"q2\"}]", NULL, &o, &e);
    CHECK(got && !strcmp(got, "<｜User｜>q<｜Assistant｜><think>r</think>a<｜end▁of▁sentence｜><｜User｜>q2<｜Assistant｜><think>"),
          "drop_thinking off: %s", got ? got : e.msg);
    free(got);
    /* developer before the last user is dropped in thinking mode; wo_eos; tasks */
    check_render("[{\"role\":\"developer\",\"content\":\"D\"},{\"role\":\"user\",\"content\":\"u\"}]", true,
                 "<｜begin▁of▁sentence｜><｜User｜>u<｜Assistant｜><think>");
    check_render("[{\"role\":\"user\",\"content\":\"u\"},{\"role\":\"assistant\",\"content\":\"a\",\"wo_eos\":true}]", false,
                 "<｜begin▁of▁sentence｜><｜User｜>u<｜Assistant｜></think>a");
    check_render("[{\"role\":\"user\",\"content\":\"u\",\"task\":\"query\"}]", false,
                 "<｜begin▁of▁sentence｜><｜User｜>u<｜query｜>");
    check_render("[{\"role\":\"user\",\"content\":\"u\",\"task\":\"action\"}]", true,
                 "<｜begin▁of▁sentence｜><｜User｜>u<｜Assistant｜><think><｜action｜>");
    /* tool results are reordered to follow the tool_calls order */
    check_render("[{\"role\":\"user\",\"content\":\"u\"},{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
                 "{\"id\":\"A\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\": 1.5, \\\"s\\\": \\\"é\\\"}\"}},"
                 "{\"id\":\"B\",\"function\":{\"name\":\"g\",\"arguments\":\"not json\"}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"B\",\"content\":\"rb\"},{\"role\":\"tool\",\"tool_call_id\":\"A\",\"content\":\"ra\"}]",
                 false,
                 "<｜begin▁of▁sentence｜><｜User｜>u<｜Assistant｜></think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
                 "<｜DSML｜parameter name=\"x\" string=\"false\">1.5</｜DSML｜parameter>\n"
                 "<｜DSML｜parameter name=\"s\" string=\"true\">é</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
                 "<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"arguments\" string=\"true\">not json</｜DSML｜parameter>\n"
                 "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜><｜User｜><tool_result>ra</tool_result>\n\n"
                 "<tool_result>rb</tool_result><｜Assistant｜></think>");
    /* response_format on a system message */
    check_render("[{\"role\":\"system\",\"content\":\"S\",\"response_format\":{\"type\":\"json\",\"n\":[1,2.0,null]}}]", false,
                 "<｜begin▁of▁sentence｜>S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
                 "{\"type\": \"json\", \"n\": [1, 2.0, null]}");
}

static void test_render_errors(void) {
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    struct { const char *json; const char *want; } c[] = {
        {"{\"role\":\"user\"}", "array"},
        {"[1]", "not an object"},
        {"[{\"content\":\"x\"}]", "role"},
        {"[{\"role\":\"wizard\",\"content\":\"x\"}]", "unknown role 'wizard'"},
        {"[{\"role\":\"developer\",\"content\":\"\"}]", "developer"},
        {"[{\"role\":\"user\",\"content\":\"x\",\"task\":\"dance\"}]", "invalid task"},
        {"[{\"role\":\"user\",\"content\":42}]", "content"},
        {"[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]",
         "not an object"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        dsv4_err e = {{0}};
        char *got = render(c[i].json, NULL, &o, &e);
        CHECK(!got && strstr(e.msg, c[i].want), "case %zu: want error '%s', got %s", i, c[i].want, got ? got : e.msg);
        free(got);
    }
    dsv4_err e = {{0}};
    o.reasoning_effort = "extreme";
    char *got = render("[]", NULL, &o, &e);
    CHECK(!got && strstr(e.msg, "reasoning_effort"), "bad effort: %s", e.msg);
    free(got);
}

static void check_repr(double x, const char *want) {
    dsv4_tok_buf b = {0};
    dsv4_pyjson_float_repr(x, &b);
    CHECK(b.data && !strcmp(b.data, want), "repr(%.17g) = %s, want %s", x, b.data, want);
    dsv4_tok_buf_free(&b);
}

static void test_pyjson(void) {
    check_repr(1.0, "1.0");
    check_repr(0.1, "0.1");
    check_repr(-0.0, "-0.0");
    check_repr(1e16, "1e+16");
    check_repr(1e15, "1000000000000000.0");
    check_repr(123456789012345680.0, "1.2345678901234568e+17");
    check_repr(0.0001, "0.0001");
    check_repr(0.00001, "1e-05");
    check_repr(1.5e-7, "1.5e-07");
    check_repr(3.141592653589793, "3.141592653589793");
    check_repr(1e300, "1e+300");
    check_repr(2.5e-308, "2.5e-308");
    check_repr(5e-324, "5e-324");
    check_repr(100.0, "100.0");
    check_repr(INFINITY, "Infinity");
    check_repr(NAN, "NaN");
    json_t *v = json_loads("{\"a\": [1, -2, 3.25, true, false, null, {}, []], \"s\": \"q\\\"\\\\\\n\\t\\u0001\\u001f/é\\u007f\","
                           " \"z\": {\"y\": 1e2}}", 0, NULL);
    dsv4_tok_buf b = {0};
    dsv4_pyjson_dump(v, &b);
    const char *want = "{\"a\": [1, -2, 3.25, true, false, null, {}, []], \"s\": \"q\\\"\\\\\\n\\t\\u0001\\u001f/é\x7f\", "
                       "\"z\": {\"y\": 100.0}}";
    CHECK(b.data && !strcmp(b.data, want), "dump: %s", b.data);
    dsv4_tok_buf_free(&b);
    json_decref(v);
}

int main(void) {
    RUN(test_golden_cases);
    RUN(test_spec_examples);
    RUN(test_options_and_roles);
    RUN(test_render_errors);
    RUN(test_pyjson);
    return test_finish();
}
