/* files.c — bounded reading of regular files, atomic writes and tree removal (see dsv4_files.h). Owns no global
 * state. Tree removal walks with openat(O_NOFOLLOW | O_DIRECTORY) + unlinkat rather than nftw, so it needs
 * no global callback state and a symlink swapped in for a directory mid-walk is never followed. */
#include "dsv4_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"

static const char *kind_of(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

dsv4_status dsv4_file_open_regular(const char *path, uint64_t max_bytes, int *fd, uint64_t *size, dsv4_err *err) {
    *fd = -1;
    *size = 0;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. */
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: is %s, not a regular file", path, kind_of(sb.st_mode));
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > max_bytes) {
        close(f);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: is %lld bytes, more than the limit of %llu", path,
                            (long long)sb.st_size, (unsigned long long)max_bytes);
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) (void)fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    *size = (uint64_t)sb.st_size;
    return DSV4_OK;
}

dsv4_status dsv4_file_read_all(const char *path, uint64_t max_bytes, char **data, size_t *len, dsv4_err *err) {
    *data = NULL;
    *len = 0;
    int fd;
    uint64_t size;
    DSV4_TRY(dsv4_file_open_regular(path, max_bytes, &fd, &size, err));
    char *buf = malloc((size_t)size + 1);
    if (!buf) {
        close(fd);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory for %llu bytes", path, (unsigned long long)size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t k = read(fd, buf + got, (size_t)size - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return dsv4_err_set(err, DSV4_ERR_IO, "%s: read failed: %s", path, strerror(e));
        }
        if (k == 0) {
            close(fd);
            free(buf);
            return dsv4_err_set(err, DSV4_ERR_IO, "%s: file shrank while reading (%zu of %llu bytes)", path, got,
                                (unsigned long long)size);
        }
        got += (size_t)k;
    }
    close(fd);
    buf[got] = 0;
    *data = buf;
    *len = got;
    return DSV4_OK;
}

dsv4_status dsv4_file_read_text(const char *path, uint64_t max_bytes, char **data, size_t *len, dsv4_err *err) {
    *data = NULL;
    *len = 0;
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int e = errno;
        close(f);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISREG(sb.st_mode)) {
        close(f);
        return dsv4_file_read_all(path, max_bytes, data, len, err);
    }
    if (!S_ISFIFO(sb.st_mode)) {
        close(f);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: is %s, not a regular file or a pipe", path, kind_of(sb.st_mode));
    }
    /* Blocking reads from here: with no writer a FIFO reads as end of file at once; a writer that holds it
     * open is waited for, as with stdin. */
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) (void)fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    dsv4_status st = dsv4_fd_read_all(f, path, max_bytes, data, len, err);
    close(f);
    return st;
}

dsv4_status dsv4_fd_read_all(int fd, const char *label, uint64_t max_bytes, char **data, size_t *len,
                             dsv4_err *err) {
    *data = NULL;
    *len = 0;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", label);
    for (;;) {
        if (n == cap) {
            if ((uint64_t)cap > max_bytes) break;
            size_t nc = cap * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                free(buf);
                return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", label);
            }
            buf = nb;
            cap = nc;
        }
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            free(buf);
            return dsv4_err_set(err, DSV4_ERR_IO, "%s: read failed: %s", label, strerror(e));
        }
        if (k == 0) break;
        n += (size_t)k;
        if ((uint64_t)n > max_bytes) break;
    }
    if ((uint64_t)n > max_bytes) {
        free(buf);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: more than the limit of %llu bytes", label,
                            (unsigned long long)max_bytes);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return DSV4_OK;
}

/* ---- tree removal --------------------------------------------------------------------------------- */

/* Deepest directory nesting removed; deeper trees are not made by dsv4 and are refused, not recursed. */
#define REMOVE_MAX_DEPTH 64

typedef struct {
    dsv4_err *err;
    dsv4_status st;
    dev_t dev;
} remover;

static void note(remover *r, dsv4_status st, const char *path, const char *what, int e) {
    if (r->st != DSV4_OK) return;
    r->st = st;
    dsv4_err_set(r->err, st, "%s: %s: %s", path, what, strerror(e));
}

/* Empties the directory open as dfd (path names it in errors); closes dfd. */
static void empty_dir(remover *r, int dfd, const char *path, int depth) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        note(r, DSV4_ERR_IO, path, "cannot list", errno);
        close(dfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
        char child[4096];
        snprintf(child, sizeof child, "%s/%s", path, n);
        struct stat sb;
        if (fstatat(dfd, n, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) note(r, DSV4_ERR_IO, child, "cannot stat", errno);
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            if (sb.st_dev != r->dev) {
                note(r, DSV4_ERR_IO, child, "is another file system; not removed", EXDEV);
                continue;
            }
            if (depth >= REMOVE_MAX_DEPTH) {
                note(r, DSV4_ERR_IO, child, "nested too deeply; not removed", ELOOP);
                continue;
            }
            int cfd = openat(dfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd < 0) {
                note(r, DSV4_ERR_IO, child, "cannot open", errno);
                continue;
            }
            empty_dir(r, cfd, child, depth + 1);
            if (unlinkat(dfd, n, AT_REMOVEDIR) != 0 && errno != ENOENT)
                note(r, DSV4_ERR_IO, child, "cannot remove", errno);
        } else if (unlinkat(dfd, n, 0) != 0 && errno != ENOENT) {
            note(r, DSV4_ERR_IO, child, "cannot remove", errno);
        }
    }
    closedir(d);   /* closes dfd */
}

dsv4_status dsv4_remove_tree(const char *path, dsv4_err *err) {
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT) return DSV4_OK;
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode)) {   /* a file or a symlink (to anything): remove the name itself */
        if (unlink(path) != 0 && errno != ENOENT)
            return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
        return DSV4_OK;
    }
    remover r = {err, DSV4_OK, sb.st_dev};
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    empty_dir(&r, dfd, path, 1);
    if (rmdir(path) != 0 && errno != ENOENT) note(&r, DSV4_ERR_IO, path, "cannot remove", errno);
    return r.st;
}

/* ---- atomic writes -------------------------------------------------------------------------------- */

dsv4_status dsv4_file_create_temp(const char *path, char *tmp, size_t cap, int *fd, dsv4_err *err) {
    *fd = -1;
    if (snprintf(tmp, cap, "%s.tmp.%ld.XXXXXX", path, (long)getpid()) >= (int)cap)
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: path too long", path);
    int f = mkostemp(tmp, O_CLOEXEC);
    if (f < 0) return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot create a temporary file: %s", path, strerror(errno));
    (void)fchmod(f, 0644);   /* mkostemp makes 0600; checkpoints are ordinary readable files */
    *fd = f;
    return DSV4_OK;
}

dsv4_status dsv4_file_commit(int fd, const char *tmp, const char *path, int ok, dsv4_err *err) {
    if (ok && fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: fsync failed: %s", tmp, strerror(e));
    }
    if (close(fd) != 0 && ok) {
        int e = errno;
        unlink(tmp);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: close failed: %s", tmp, strerror(e));
    }
    if (!ok) {
        unlink(tmp);
        return DSV4_OK;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot rename into place: %s", path, strerror(e));
    }
    return DSV4_OK;
}

dsv4_status dsv4_file_write_atomic(const char *path, const void *data, size_t len, dsv4_err *err) {
    char tmp[4200];
    int fd;
    DSV4_TRY(dsv4_file_create_temp(path, tmp, sizeof tmp, &fd, err));
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t k = write(fd, p + done, len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            dsv4_file_commit(fd, tmp, path, 0, NULL);
            return dsv4_err_set(err, DSV4_ERR_IO, "%s: write failed: %s", tmp, strerror(e));
        }
        done += (size_t)k;
    }
    return dsv4_file_commit(fd, tmp, path, 1, err);
}
