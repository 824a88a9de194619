/* comm.c — the dispatch half of comm.h: argument checks shared by every implementation, then a call
 * through the rank's table. Owns no state. */
#include "dist/comm.h"

#include "core/status.h"

dsv4_status dsv4_comm_allreduce_sum(dsv4_comm *c, void *buf, size_t count, dsv4_comm_dtype dt, void *stream,
                                    dsv4_err *err) {
    if (!c || (!buf && count) || (dt != DSV4_COMM_F32 && dt != DSV4_COMM_BF16))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "comm: all-reduce: bad arguments");
    /* world 1 still goes to the implementation: over NCCL a one-rank all-reduce is a real (capturable) call,
     * which is how the single-GPU test exercises every collective site of the CUDA forward. */
    if (count == 0) return DSV4_OK;
    return c->ops->allreduce_sum(c, buf, count, dt, stream, err);
}

dsv4_status dsv4_comm_allgather(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                                dsv4_err *err) {
    if (!c || ((!send || !recv) && bytes))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "comm: all-gather: bad arguments");
    return c->ops->allgather(c, send, recv, bytes, stream, err);
}

dsv4_status dsv4_comm_alltoall(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                               dsv4_err *err) {
    if (!c || ((!send || !recv) && bytes))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "comm: all-to-all: bad arguments");
    return c->ops->alltoall(c, send, recv, bytes, stream, err);
}

dsv4_status dsv4_comm_barrier(dsv4_comm *c, void *stream, dsv4_err *err) {
    if (!c) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "comm: barrier: no communicator");
    return c->ops->barrier(c, stream, err);
}

void dsv4_comm_abort(dsv4_comm *c) {
    if (c) c->ops->abort(c);
}

void dsv4_comm_destroy(dsv4_comm *c) {
    if (c) c->ops->destroy(c);
}
