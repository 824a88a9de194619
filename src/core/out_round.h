/* out_round.h — whether a linear layer rounds its output to BF16 or keeps FP32: one selector shared by the
 * CPU reference (backend/cpu/linear.h, dsv4_cpu_linear_bf16) and its CUDA twin (backend/cuda/cuda_linear.h),
 * so the two backends take the same argument. Plain C. */
#ifndef DSV4_CORE_OUT_ROUND_H
#define DSV4_CORE_OUT_ROUND_H

typedef enum dsv4_out_round { DSV4_OUT_BF16 = 0, DSV4_OUT_F32 = 1 } dsv4_out_round;

#endif
