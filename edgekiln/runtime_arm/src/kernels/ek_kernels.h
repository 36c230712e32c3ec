/* prepare / run entry points of every kernel file (registered in ops_table.c). */
#ifndef EK_KERNELS_H
#define EK_KERNELS_H

#include "../ek_internal.h"

/* qconv.c */
int ek_prepare_qconv2d(ek_model *m, ek_call *c, ek_err *e);
int ek_prepare_qfully_connected(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qconv(ek_model *m, const ek_call *c, ek_err *e);
/* qconv_transpose.c, qmatmul.c */
int ek_prepare_qconv_transpose2d(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qconv_transpose2d(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_qmatmul(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qmatmul(ek_model *m, const ek_call *c, ek_err *e);
/* qelementwise.c */
int ek_prepare_qadd(ek_model *m, ek_call *c, ek_err *e);
int ek_prepare_qmul(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qbinary(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_qrequantize(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qrequantize(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_qlookup_table(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qlookup_table(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_quantize(ek_model *m, ek_call *c, ek_err *e);
int ek_run_quantize(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_dequantize(ek_model *m, ek_call *c, ek_err *e);
int ek_run_dequantize(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_dequantize_weight(ek_model *m, ek_call *c, ek_err *e);
int ek_run_dequantize_weight(ek_model *m, const ek_call *c, ek_err *e);
/* qinverted_residual.c */
int ek_prepare_qinverted_residual(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qinverted_residual(ek_model *m, const ek_call *c, ek_err *e);
/* qpool.c, qnorm.c */
int ek_prepare_qaverage_pool(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qaverage_pool(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_qmax_pool(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qmax_pool(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_qreduce_mean(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qreduce_mean(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_qsoftmax(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qsoftmax(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_qlayer_norm(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qlayer_norm(ek_model *m, const ek_call *c, ek_err *e);
/* movement.c, index_map.c */
int ek_prepare_copy(ek_model *m, ek_call *c, ek_err *e);
int ek_run_copy(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_transpose(ek_model *m, ek_call *c, ek_err *e);
int ek_run_transpose(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_concat(ek_model *m, ek_call *c, ek_err *e);
int ek_prepare_qconcat(ek_model *m, ek_call *c, ek_err *e);
int ek_run_concat(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_cast(ek_model *m, ek_call *c, ek_err *e);
int ek_run_cast(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_index_map(ek_model *m, ek_call *c, ek_err *e);
int ek_run_index_map(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_gather(ek_model *m, ek_call *c, ek_err *e);
int ek_run_gather(ek_model *m, const ek_call *c, ek_err *e);
/* fconv.c, fmatmul.c */
int ek_prepare_conv(ek_model *m, ek_call *c, ek_err *e);
int ek_run_conv(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_conv_transpose(ek_model *m, ek_call *c, ek_err *e);
int ek_run_conv_transpose(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_matmul(ek_model *m, ek_call *c, ek_err *e);
int ek_run_matmul(ek_model *m, const ek_call *c, ek_err *e);
/* felementwise.c */
int ek_prepare_unary(ek_model *m, ek_call *c, ek_err *e);
int ek_run_unary(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_binary(ek_model *m, ek_call *c, ek_err *e);
int ek_run_binary(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_where(ek_model *m, ek_call *c, ek_err *e);
int ek_run_where(ek_model *m, const ek_call *c, ek_err *e);
/* fnorm.c */
int ek_prepare_softmax(ek_model *m, ek_call *c, ek_err *e);
int ek_run_softmax(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_layer_norm(ek_model *m, ek_call *c, ek_err *e);
int ek_run_layer_norm(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_channel_affine(ek_model *m, ek_call *c, ek_err *e);
int ek_run_channel_affine(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_instance_norm(ek_model *m, ek_call *c, ek_err *e);
int ek_run_instance_norm(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_lp_norm(ek_model *m, ek_call *c, ek_err *e);
int ek_run_lp_norm(ek_model *m, const ek_call *c, ek_err *e);
/* fpool.c, fresize.c */
int ek_prepare_pool(ek_model *m, ek_call *c, ek_err *e);
int ek_run_pool(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_reduce(ek_model *m, ek_call *c, ek_err *e);
int ek_run_reduce(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_argmax(ek_model *m, ek_call *c, ek_err *e);
int ek_run_argmax(ek_model *m, const ek_call *c, ek_err *e);
int ek_prepare_resize(ek_model *m, ek_call *c, ek_err *e);
int ek_run_resize(ek_model *m, const ek_call *c, ek_err *e);
/* qresize_bilinear.c */
int ek_prepare_qresize_bilinear(ek_model *m, ek_call *c, ek_err *e);
int ek_run_qresize_bilinear(ek_model *m, const ek_call *c, ek_err *e);

#endif
