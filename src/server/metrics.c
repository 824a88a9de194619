/* metrics.c — /metrics of `dsv4 serve`: the scheduler's counters (dsv4_sched_stats) and the HTTP layer's
 * as Prometheus text exposition format 0.0.4. Pure formatting; owns nothing. */
#include <stdarg.h>
#include <stdio.h>

#include "server/http.h"

static int put(dsv4_tok_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(dsv4_tok_buf *out, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    return dsv4_tok_buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) ? -1 : 0;
}

static int metric(dsv4_tok_buf *out, const char *name, const char *type, const char *help, double v) {
    return put(out, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static int histogram(dsv4_tok_buf *out, const char *name, const char *help, const long *bucket, double sum, long count) {
    int rc = put(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < DSV4_SCHED_HIST_N; i++)
        rc |= put(out, "%s_bucket{le=\"%g\"} %ld\n", name, dsv4_sched_hist_bounds[i], bucket[i]);
    rc |= put(out, "%s_bucket{le=\"+Inf\"} %ld\n%s_sum %.9g\n%s_count %ld\n", name, count, name, sum, name, count);
    return rc;
}

int dsv4_metrics_text(const dsv4_sched_stats *s, long http_requests, long http_errors, dsv4_tok_buf *out) {
    int rc = 0;
    rc |= metric(out, "dsv4_requests_running", "gauge", "Requests being generated.", s->requests_running);
    rc |= metric(out, "dsv4_requests_waiting", "gauge", "Requests queued for admission.", s->requests_waiting);
    rc |= metric(out, "dsv4_kv_blocks_used", "gauge", "KV cache blocks in use (resident prefixes included).",
                 (double)s->kv_blocks_used);
    rc |= metric(out, "dsv4_kv_blocks_free", "gauge", "KV cache blocks free.", (double)s->kv_blocks_free);
    rc |= metric(out, "dsv4_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.",
                 (double)s->prompt_tokens_total);
    rc |= metric(out, "dsv4_generation_tokens_total", "counter", "Generated tokens.", (double)s->generation_tokens_total);
    rc |= metric(out, "dsv4_prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from a resident prefix.",
                 (double)s->prefix_cache_hit_tokens_total);
    rc |= metric(out, "dsv4_requests_total", "counter", "Requests finished by the scheduler.", (double)s->requests_total);
    rc |= metric(out, "dsv4_requests_failed_total", "counter", "Requests the engine failed.",
                 (double)s->requests_failed_total);
    rc |= metric(out, "dsv4_requests_preempted_total", "counter",
                 "Running requests put back in the queue for lack of KV blocks (recomputed later).",
                 (double)s->requests_preempted_total);
    rc |= metric(out, "dsv4_http_requests_total", "counter", "HTTP requests answered.", (double)http_requests);
    rc |= metric(out, "dsv4_http_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx status.",
                 (double)http_errors);
    rc |= histogram(out, "dsv4_time_to_first_token_seconds", "Time from submission to the first generated token.",
                    s->ttft_bucket, s->ttft_sum, s->ttft_count);
    rc |= histogram(out, "dsv4_time_per_output_token_seconds", "Time per generated token after the first.",
                    s->tpot_bucket, s->tpot_sum, s->tpot_count);
    return rc;
}
