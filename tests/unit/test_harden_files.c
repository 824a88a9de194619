/* test_harden_files.c — issue 13, class "special files and absurd sizes" and "concurrency with files":
 * the one bounded reader (include/dsv4_files.h) refuses FIFOs, directories and oversized files at once (an alarm
 * turns a blocking open into a failure instead of a hang), every reader of checkpoint files goes through
 * it (config.json, the index, a shard as FIFO or directory), and dsv4_synth_write replaces files by
 * rename, so a reader that mapped the old shard keeps reading it (no SIGBUS). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsv4_files.h"
#include "core/status.h"
#include "model/checkpoint.h"
#include "dsv4_limits.h"
#include "dsv4_synth.h"
#include "test_util.h"

static char root[PATH_MAX];

static void on_alarm(int sig) {
    (void)sig;
    static const char m[] = "test_harden_files: an open blocked (alarm): FAIL\n";
    (void)!write(2, m, sizeof m - 1);
    _exit(3);
}

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", root, name); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); abort(); }
    fputs(text, f);
    fclose(f);
}

/* A checkpoint copy at root/<name>: symlinks to tests/data/tiny-flash's files. */
static void link_ckpt(const char *name, char *dir, size_t cap) {
    path_in(dir, cap, name);
    CHECK(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    static const char *files[] = {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                                  "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"};
    char abs[PATH_MAX], from[PATH_MAX * 2], to[PATH_MAX * 2];
    if (!realpath("tests/data/tiny-flash", abs)) { perror("realpath"); abort(); }
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(from, sizeof from, "%s/%s", abs, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        CHECK(symlink(from, to) == 0, "symlink %s", to);
    }
}

static void expect_open_fails(const char *dir, const char *needle) {
    dsv4_checkpoint ck;
    dsv4_err err = {{0}};
    alarm(20);
    dsv4_status st = dsv4_checkpoint_open(dir, &ck, &err);
    alarm(0);
    CHECK(st != DSV4_OK, "open of %s succeeded", dir);
    CHECK(strstr(err.msg, needle) != NULL, "message lacks \"%s\": %s", needle, err.msg);
    if (st == DSV4_OK) dsv4_checkpoint_close(&ck);
    fprintf(stderr, "    -> %s\n", err.msg);
}

static void test_reader_refuses_fifo_dir_and_size(void) {
    char p[PATH_MAX * 2];
    char *data;
    size_t len;
    dsv4_err err = {{0}};
    path_in(p, sizeof p, "fifo");
    CHECK(mkfifo(p, 0600) == 0, "mkfifo");
    alarm(20);
    dsv4_status st = dsv4_file_read_all(p, 1024, &data, &len, &err);
    alarm(0);
    CHECK(st == DSV4_ERR_IO && strstr(err.msg, "FIFO") && data == NULL, "fifo: %s", err.msg);
    st = dsv4_file_read_all(root, 1024, &data, &len, &err);
    CHECK(st == DSV4_ERR_IO && strstr(err.msg, "directory"), "dir: %s", err.msg);
    path_in(p, sizeof p, "ten");
    write_text(p, "0123456789");
    st = dsv4_file_read_all(p, 9, &data, &len, &err);
    CHECK(st == DSV4_ERR_IO && strstr(err.msg, "limit of 9"), "size: %s", err.msg);
    st = dsv4_file_read_all(p, 10, &data, &len, &err);
    CHECK(st == DSV4_OK && len == 10 && !memcmp(data, "0123456789", 11), "read: %s", err.msg);
    free(data);
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    CHECK(write(fds[1], "abcdef", 6) == 6, "write");
    close(fds[1]);
    st = dsv4_fd_read_all(fds[0], "pipe", 5, &data, &len, &err);
    CHECK(st == DSV4_ERR_IO && strstr(err.msg, "limit of 5"), "pipe limit: %s", err.msg);
    close(fds[0]);
}

static void test_checkpoint_special_files(void) {
    char dir[PATH_MAX * 2], p[PATH_MAX * 3];
    link_ckpt("fifo_config", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    CHECK(mkfifo(p, 0600) == 0, "mkfifo");
    expect_open_fails(dir, "config.json: is a FIFO");

    link_ckpt("fifo_index", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    unlink(p);
    CHECK(mkfifo(p, 0600) == 0, "mkfifo");
    expect_open_fails(dir, "index.json: is a FIFO");

    link_ckpt("fifo_shard", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model-00002-of-00003.safetensors", dir);
    unlink(p);
    CHECK(mkfifo(p, 0600) == 0, "mkfifo");
    expect_open_fails(dir, "model-00002-of-00003.safetensors: is a FIFO");

    link_ckpt("dir_config", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    CHECK(mkdir(p, 0755) == 0, "mkdir");
    expect_open_fails(dir, "config.json: is a directory");

    link_ckpt("dir_shard", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model-00001-of-00003.safetensors", dir);
    unlink(p);
    CHECK(mkdir(p, 0755) == 0, "mkdir");
    expect_open_fails(dir, "model-00001-of-00003.safetensors: is a directory");
}

/* A reader maps a shard; dsv4_synth_write rewrites the directory; the old mapping stays fully readable
 * (the old file was replaced by rename, not truncated in place). */
static void test_synth_rewrite_keeps_readers_mapping(void) {
    char dir[PATH_MAX * 2], p[PATH_MAX * 3];
    path_in(dir, sizeof dir, "synth");
    dsv4_config cfg;
    dsv4_err err = {{0}};
    CHECK(dsv4_synth_config_preset("tiny", 1, 2, &cfg, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_synth_write(&cfg, dir, 1, NULL, &err) == DSV4_OK, "%s", err.msg);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);   /* layers; MTP in 00002 */
    int fd = open(p, O_RDONLY);
    CHECK(fd >= 0, "open %s", p);
    if (fd < 0) return;
    struct stat sb;
    fstat(fd, &sb);
    const uint8_t *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    CHECK(map != MAP_FAILED, "mmap");
    if (map == MAP_FAILED) return;
    uint64_t before = 0;
    for (off_t i = 0; i < sb.st_size; i++) before += map[i];
    /* a different seed: every byte of the data changes; a smaller shard limit would truncate in place */
    CHECK(dsv4_synth_write(&cfg, dir, 2, NULL, &err) == DSV4_OK, "%s", err.msg);
    uint64_t after = 0;
    for (off_t i = 0; i < sb.st_size; i++) after += map[i];   /* SIGBUS here if truncated in place */
    CHECK(before == after, "the mapped old shard changed under its reader");
    munmap((void *)map, (size_t)sb.st_size);
    /* no temporary file is left behind */
    DIR *d = opendir(dir);
    struct dirent *de;
    int tmp_left = 0;
    while (d && (de = readdir(d)) != NULL) tmp_left += strstr(de->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    CHECK(tmp_left == 0, "%d temporary files left in %s", tmp_left, dir);
    dsv4_checkpoint ck;
    CHECK(dsv4_checkpoint_open(dir, &ck, &err) == DSV4_OK, "reopen: %s", err.msg);
    dsv4_checkpoint_close(&ck);
}

static void test_atomic_write(void) {
    char p[PATH_MAX * 2];
    dsv4_err err = {{0}};
    path_in(p, sizeof p, "atomic.txt");
    CHECK(dsv4_file_write_atomic(p, "first", 5, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_file_write_atomic(p, "second!", 7, &err) == DSV4_OK, "%s", err.msg);
    char *data;
    size_t len;
    CHECK(dsv4_file_read_all(p, 100, &data, &len, &err) == DSV4_OK && len == 7 && !memcmp(data, "second!", 7),
          "content");
    free(data);
    path_in(p, sizeof p, "no-such-dir/x");
    CHECK(dsv4_file_write_atomic(p, "x", 1, &err) == DSV4_ERR_IO && strstr(err.msg, "no-such-dir"), "%s", err.msg);
}

int main(void) {
    signal(SIGALRM, on_alarm);
    snprintf(root, sizeof root, "/tmp/dsv4_test_harden_files_XXXXXX");
    if (!mkdtemp(root)) { perror("mkdtemp"); return 1; }
    RUN(test_reader_refuses_fifo_dir_and_size);
    RUN(test_checkpoint_special_files);
    RUN(test_synth_rewrite_keeps_readers_mapping);
    RUN(test_atomic_write);
    dsv4_err err = {{0}};
    if (dsv4_remove_tree(root, &err) != DSV4_OK) fprintf(stderr, "cleanup: %s\n", err.msg);
    return test_finish();
}
