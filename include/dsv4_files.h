/* dsv4_files.h — the one place dsv4 touches the file system for untrusted paths: a bounded reader of regular
 * files (a FIFO, device or directory given where a file is expected is an error at once, never a blocking
 * open), a regular-file open for mmap, an atomic "write to a temporary name, then rename" helper, and tree
 * removal with the C library (no shell; symlinks are unlinked, never followed). Must not: run a shell
 * (system, popen), follow a symlink out of a tree it removes, or read more than the caller's bound.
 * Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in src/core/files.c. */
#ifndef DSV4_FILES_H
#define DSV4_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opens path read-only (O_NONBLOCK, so a FIFO cannot block the open) and checks with fstat that it is a
 * regular file of at most max_bytes. On success *fd is open (blocking mode restored) and *size is its
 * length; on failure nothing stays open and err names the path: "not a regular file (a FIFO)", "is a
 * directory", "is N bytes, more than the limit M", or the errno text. */
dsv4_status dsv4_file_open_regular(const char *path, uint64_t max_bytes, int *fd, uint64_t *size, dsv4_err *err);

/* Reads the whole regular file path (at most max_bytes) into a malloc'ed buffer with a NUL appended
 * (*len excludes it). A short read (file shrunk) or a read error fails. On failure *data is NULL. */
dsv4_status dsv4_file_read_all(const char *path, uint64_t max_bytes, char **data, size_t *len, dsv4_err *err);

/* For inputs a user may pipe in (a prompt file, `--messages <(...)`): like dsv4_file_read_all, but a FIFO
 * (or a pipe reached through /dev/fd) is read to end of file with the same bound. The open never blocks
 * (O_NONBLOCK); a FIFO nobody has open for writing reads as empty at once. Directories, devices and
 * sockets are errors. */
dsv4_status dsv4_file_read_text(const char *path, uint64_t max_bytes, char **data, size_t *len, dsv4_err *err);

/* Same for an already open descriptor that may be a pipe or terminal (e.g. stdin): reads until EOF, failing
 * once more than max_bytes arrive. label names it in errors. */
dsv4_status dsv4_fd_read_all(int fd, const char *label, uint64_t max_bytes, char **data, size_t *len,
                             dsv4_err *err);

/* Removes path and, if it is a directory, everything under it, bottom-up (nftw with FTW_PHYS | FTW_DEPTH |
 * FTW_MOUNT): a symlink inside is removed as a link, its target untouched; other file systems mounted
 * below are not entered. A missing path is success. Fails (with the first path that could not be removed)
 * but keeps removing what it can. */
dsv4_status dsv4_remove_tree(const char *path, dsv4_err *err);

/* Writes data[len] to path atomically: into "<path>.tmp.<pid>.XXXXXX" in the same directory, fsync'ed,
 * then renamed over path. A reader that has path open or mapped keeps the old contents (no SIGBUS). */
dsv4_status dsv4_file_write_atomic(const char *path, const void *data, size_t len, dsv4_err *err);

/* For writers that stream: creates a temporary sibling of path ("<path>.tmp.<pid>.XXXXXX", written into
 * tmp[cap]) and returns its descriptor in *fd; dsv4_file_commit fsyncs, closes and renames it over path
 * (ok = 1) or closes and unlinks it (ok = 0). */
dsv4_status dsv4_file_create_temp(const char *path, char *tmp, size_t cap, int *fd, dsv4_err *err);
dsv4_status dsv4_file_commit(int fd, const char *tmp, const char *path, int ok, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif
