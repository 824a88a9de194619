/* kv_rollback.h — undo of the last few tokens of a sequence's KV state, for speculative decoding
 * (docs/ARCHITECTURE.md, issue 15): before a step that adds n tokens at positions pos0 .. pos0+n-1 to
 * some layers of one sequence, save() copies every byte that step can change (ring records of those
 * positions, the compressor rows they land on, the overlap half-window, the at most one compressed entry
 * and indexer key each compressed layer can complete); after the step, restore(n_keep) writes back the
 * bytes of the positions pos0+n_keep .. pos0+n-1, so the cache holds exactly what a run that only ever saw
 * the first n_keep tokens holds (bitwise, stale bytes included). Positions and blocks are the manager's
 * (dsv4_kv_manager_truncate); this module only copies bytes.
 *
 * Limits: n <= window and n <= the smallest compress ratio of the layers (every position then lands on its
 * own ring record and compressor row, and each compressed layer completes at most one entry). Device arenas
 * go through the memory hook's copy (kv_pool.h; one synchronous copy per region: the caller makes sure no
 * device work on the cache is in flight). Owns its buffers (sized at init, no allocation after). */
#ifndef DSV4_KV_ROLLBACK_H
#define DSV4_KV_ROLLBACK_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "kv/kv_manager.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_kv_rollback {
    int max_tokens;       /* n of a save, at most */
    uint8_t *buf;         /* owned [cap] saved bytes, in save order */
    size_t cap, used;
    int slot, layer0, layer1; /* the saved range: layers [layer0, layer1) of slot */
    int64_t pos0;
    int n;                /* tokens the saved step adds; 0 = nothing saved */
    dsv4_status copy_st;  /* device arenas: the first failed copy of a restore (DSV4_OK otherwise); the next
                             save returns it */
} dsv4_kv_rollback;

/* Sizes the buffer for steps of up to max_tokens tokens over every layer of m's schema. INVALID_ARG if
 * max_tokens is out of the limits above or the arenas are neither host memory nor have a copy hook, NOMEM. */
dsv4_status dsv4_kv_rollback_init(dsv4_kv_rollback *rb, const dsv4_kv_manager *m, int max_tokens, dsv4_err *err);
void dsv4_kv_rollback_free(dsv4_kv_rollback *rb);

/* Saves what a step of n tokens at positions pos0 .. pos0+n-1 can change in layers [layer0, layer1) of
 * slot. The blocks the step needs must already be held (prepare_step first). INVALID_ARG on bad input
 * (nothing saved). */
dsv4_status dsv4_kv_rollback_save(dsv4_kv_rollback *rb, const dsv4_kv_manager *m, int slot, int layer0, int layer1,
                                  int64_t pos0, int n, dsv4_err *err);

/* Writes back the saved bytes of positions pos0+n_keep .. pos0+n-1 (0 <= n_keep <= n) and forgets the
 * save. Call before truncating the manager (the blocks the step acquired must still be held). */
void dsv4_kv_rollback_restore(dsv4_kv_rollback *rb, const dsv4_kv_manager *m, int n_keep);

#ifdef __cplusplus
}
#endif
#endif
