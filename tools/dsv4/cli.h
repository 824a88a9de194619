/* cli.h — the dsv4 command-line tool: one function per subcommand, each in its own cmd_<name>.c file.
 * A subcommand gets argv starting at its own name, prints its errors to stderr as one line
 * ("dsv4 <cmd>: <what is wrong>") and returns the process exit code (0 ok, 1 failure, 2 usage). */
#ifndef DSV4_TOOLS_CLI_H
#define DSV4_TOOLS_CLI_H

int dsv4_cmd_inspect(int argc, char **argv);        /* cmd_inspect.c   — checkpoint summary */
int dsv4_cmd_logits(int argc, char **argv);         /* cmd_logits.c    — teacher-forced logits to .npy */
int dsv4_cmd_generate(int argc, char **argv);       /* cmd_generate.c  — greedy/sampled generation */
int dsv4_cmd_chat(int argc, char **argv);           /* cmd_chat.c      — interactive chat */
int dsv4_cmd_tokenize(int argc, char **argv);       /* cmd_tokenize.c  — text -> ids */
int dsv4_cmd_chat_template(int argc, char **argv);  /* cmd_chat_template.c — messages JSON -> prompt */
int dsv4_cmd_bench(int argc, char **argv);          /* cmd_bench.c     — prefill/decode benchmark */
int dsv4_cmd_synth(int argc, char **argv);          /* cmd_synth.c     — random-weight checkpoint */
int dsv4_cmd_serve(int argc, char **argv);          /* cmd_serve.c     — OpenAI/Anthropic HTTP server */

#endif
