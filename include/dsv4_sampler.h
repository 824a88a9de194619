/* dsv4_sampler.h — per-request token selection: penalties, greedy, temperature / top-k / top-p / min-p sampling,
 * top-n logprobs and stop-string matching (issue 4 item 3; conventions in docs/SAMPLING.md).
 *
 * Owns: the per-request sampling parameters and state (RNG position, generated-token counts, the set of
 * tokens seen for the repetition penalty). Does not own logits: callers pass the model's FP32 logits
 * [vocab] for one request. No global state; one dsv4_sampler per request, one dsv4_sampler_ws per thread.
 *
 * Reproducibility: the random draw of step n is a pure function of (seed, n) (counter-based splitmix64,
 * one uniform per step), so a request samples the same tokens whatever else is in the batch and whatever
 * thread runs it. Ties between equal logits always go to the lowest token id.
 * Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in src/engine/sampler.c. */
#ifndef DSV4_SAMPLER_H
#define DSV4_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_SAMPLER_MAX_STOP_IDS 16
#define DSV4_SAMPLER_MAX_LOGPROBS 20   /* OpenAI's top_logprobs limit */

/* Per-request parameters. dsv4_sampling_params_default() gives the neutral values noted per field. */
typedef struct dsv4_sampling_params {
    float temperature;        /* 1.0; <= 0 (or < 1e-5) selects greedy argmax */
    int top_k;                /* 0 = off; keeps exactly k tokens (ties at the boundary -> lowest ids) */
    float top_p;              /* 1.0 = off; (0, 1]: smallest prefix (by logit, desc) with mass >= top_p */
    float min_p;              /* 0 = off; keeps tokens with p >= min_p * p_max */
    uint64_t seed;            /* RNG seed; draw n uses (seed, n) only */
    float repetition_penalty; /* 1.0 = off; HF/CTRL style on tokens of the prompt and the output:
                                 logit > 0 -> logit / rp, logit <= 0 -> logit * rp */
    float presence_penalty;   /* 0 = off; OpenAI style on output tokens: logit -= pp if count > 0 */
    float frequency_penalty;  /* 0 = off; OpenAI style on output tokens: logit -= fp * count */
    int32_t stop_ids[DSV4_SAMPLER_MAX_STOP_IDS]; /* token ids that end the request (EOS is added by callers) */
    int n_stop_ids;
    int logprobs;             /* 0 = off; n in [1, 20]: return the n most likely tokens' logprobs */
} dsv4_sampling_params;

void dsv4_sampling_params_default(dsv4_sampling_params *p);
/* Checks ranges (temperature finite >= 0, top_k >= 0, top_p in (0,1], min_p in [0,1], repetition_penalty
 * > 0, presence/frequency finite, n_stop_ids and logprobs within their limits). */
dsv4_status dsv4_sampling_params_check(const dsv4_sampling_params *p, dsv4_err *err);

/* Scratch for one sampling call, sized for a vocabulary; one per thread, reusable across requests. */
typedef struct dsv4_sampler_ws {
    int vocab;
    int32_t *idx;             /* [vocab] owned: candidate ids, permuted by the selections */
    float *p;                 /* [vocab] owned: unnormalized probabilities exp((l - l_max) / T) */
    float *l;                 /* [vocab] owned: penalized copy of the logits (dsv4_sampler_next) */
    uint16_t *bin;            /* [vocab] owned: histogram bin of each token (top-k / top-p pre-selection) */
} dsv4_sampler_ws;

dsv4_status dsv4_sampler_ws_init(dsv4_sampler_ws *ws, int vocab, dsv4_err *err);
void dsv4_sampler_ws_free(dsv4_sampler_ws *ws);

/* Per-request state. Memory for the penalty bookkeeping is allocated only if a penalty is enabled. */
typedef struct dsv4_sampler {
    dsv4_sampling_params params;
    int vocab;
    uint64_t step;            /* tokens accepted so far = index of the next random draw */
    uint64_t *seen;           /* [ceil(vocab/64)] owned bitset: prompt + output tokens (rep. penalty); or NULL */
    int32_t *cnt_ids;         /* [cnt_cap] owned open-addressing table keys (-1 = empty); or NULL */
    uint32_t *cnt_vals;       /* [cnt_cap] owned: output-token counts */
    int cnt_cap, cnt_n;       /* capacity (power of two) and number of distinct output tokens */
} dsv4_sampler;

/* Validates params and sets up s (borrowing nothing). On failure s is left zeroed (safe to free). */
dsv4_status dsv4_sampler_init(dsv4_sampler *s, const dsv4_sampling_params *params, int vocab, dsv4_err *err);
void dsv4_sampler_free(dsv4_sampler *s);
/* Makes dst a deep copy of src (parameters, step, penalty bookkeeping); dst must be zeroed or a sampler
 * (its old contents are freed; dst != src). Allocates only when src has a penalty enabled. NOMEM leaves dst as it was.
 * Speculative sampling drafts with a copy, so that a draft sees the penalties of the drafts before it. */
dsv4_status dsv4_sampler_copy(dsv4_sampler *dst, const dsv4_sampler *src, dsv4_err *err);

/* Records prompt tokens for the repetition penalty (no effect on counts or the RNG position).
 * Ids outside [0, vocab) are rejected with DSV4_ERR_INVALID_ARG and nothing is recorded. */
dsv4_status dsv4_sampler_add_prompt(dsv4_sampler *s, const int32_t *ids, size_t n, dsv4_err *err);

/* Records an output token: count++, seen, step++. Must be called once per generated token, whether it
 * came from dsv4_sampler_pick or elsewhere (e.g. a forced token), so that the draw index stays aligned. */
dsv4_status dsv4_sampler_accept(dsv4_sampler *s, int32_t tok, dsv4_err *err);

/* Applies repetition, then presence and frequency penalties to logits[vocab] in place. Touches only
 * tokens seen / generated (O(vocab/64 + distinct output tokens)). No-op when all penalties are off. */
void dsv4_sampler_apply_penalties(const dsv4_sampler *s, float *logits);

/* Argmax with ties to the lowest id; NaN entries are never chosen (all NaN -> 0). */
int32_t dsv4_sample_greedy(const float *logits, int vocab);

/* The uniform in [0, 1) used for draw `step` of a request with this seed (53-bit resolution). */
double dsv4_sampler_uniform(uint64_t seed, uint64_t step);

/* Selects a token from (already penalized) logits[vocab] with params' temperature / top_k / top_p / min_p
 * and the draw dsv4_sampler_uniform(seed, s->step). Does not advance the state (call accept).
 * Order (Hugging Face warper order): temperature, top-k, top-p on the renormalized top-k set, min-p on
 * the renormalized survivors; then inverse-CDF over the kept tokens in ascending id order.
 * Greedy when temperature <= 1e-5 or top_k == 1. Expected O(vocab). ws->vocab must equal s->vocab. */
int32_t dsv4_sampler_pick(const dsv4_sampler *s, dsv4_sampler_ws *ws, const float *logits);

/* The exact distribution dsv4_sampler_pick draws from, as probabilities out[vocab] (0 for dropped tokens).
 * For tests and debugging; same selection code as pick. */
void dsv4_sampler_probs(const dsv4_sampler *s, dsv4_sampler_ws *ws, const float *logits, double *out);

/* ---- logprobs ---------------------------------------------------------------------------------------- */
typedef struct dsv4_logprobs {
    float token_logprob;                        /* log-softmax of the chosen token */
    int n;                                      /* entries filled below */
    int32_t ids[DSV4_SAMPLER_MAX_LOGPROBS];     /* most likely first; ties -> lowest id first */
    float logprobs[DSV4_SAMPLER_MAX_LOGPROBS];
} dsv4_logprobs;

/* Log-softmax of logits[vocab] (the raw model logits: no penalty, no temperature — vLLM's default,
 * see docs/SAMPLING.md) for token `tok` and the top n (0 <= n <= 20). Sum in fp64. */
void dsv4_logprobs_compute(const float *logits, int vocab, int32_t tok, int n, dsv4_logprobs *out);

/* ---- one step ---------------------------------------------------------------------------------------- */
typedef struct dsv4_sample_out {
    int32_t token;
    int is_stop;              /* token is one of params.stop_ids */
    dsv4_logprobs lp;         /* filled when params.logprobs > 0 (lp.n = 0 otherwise) */
} dsv4_sample_out;

/* One decode step for one request: penalties (on a copy in ws), pick, logprobs of the raw logits (if
 * asked), accept. logits[vocab] is not modified. On error (only an allocation failure in accept) the
 * state is unchanged. */
dsv4_status dsv4_sampler_next(dsv4_sampler *s, dsv4_sampler_ws *ws, const float *logits,
                              dsv4_sample_out *out, dsv4_err *err);

int dsv4_sampler_is_stop_id(const dsv4_sampler *s, int32_t tok);

/* ---- stop strings ------------------------------------------------------------------------------------ */
typedef struct dsv4_stop_match {
    int matched;              /* 1 if a stop string occurs in text */
    int which;                /* index into stops of the match (earliest position; ties -> lower index) */
    size_t pos;               /* byte offset of the match */
    size_t emit_len;          /* bytes of text that are final and may be streamed out now:
                                 matched -> pos (the stop string is not returned, as OpenAI does);
                                 else len minus the longest suffix that is a proper prefix of a stop string */
} dsv4_stop_match;

/* Scans text[0, len) (the whole detokenized output so far; need not be NUL-terminated) for stop strings.
 * scan_from: bytes before this offset are known to contain no complete match (pass the previous call's
 * emit_len; 0 to scan everything). Empty stop strings are ignored. O(len - scan_from + max stop length)
 * per stop string up to the naive search cost. */
void dsv4_stop_strings_check(const char *text, size_t len, const char *const *stops, int n_stops,
                             size_t scan_from, dsv4_stop_match *out);

#ifdef __cplusplus
}
#endif
#endif
