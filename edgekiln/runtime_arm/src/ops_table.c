/* Every op code the runtime runs, its name for messages and profiles, and its functions. */
#include "ek_internal.h"
#include "kernels/ek_kernels.h"
#include "sparse/ek_sparse.h"

static const ek_op_def OPS[] = {
    {EK_OP_QCONV2D, "QConv2D", ek_prepare_qconv2d, ek_run_qconv},
    {EK_OP_QDEPTHWISE_CONV2D, "QDepthwiseConv2D", ek_prepare_qconv2d, ek_run_qconv},
    {EK_OP_QCONV_TRANSPOSE2D, "QConvTranspose2D", ek_prepare_qconv_transpose2d, ek_run_qconv_transpose2d},
    {EK_OP_QFULLY_CONNECTED, "QFullyConnected", ek_prepare_qfully_connected, ek_run_qconv},
    {EK_OP_QMATMUL, "QMatMul", ek_prepare_qmatmul, ek_run_qmatmul},
    {EK_OP_QADD, "QAdd", ek_prepare_qadd, ek_run_qbinary},
    {EK_OP_QMUL, "QMul", ek_prepare_qmul, ek_run_qbinary},
    {EK_OP_QREQUANTIZE, "QRequantize", ek_prepare_qrequantize, ek_run_qrequantize},
    {EK_OP_QLOOKUP_TABLE, "QLookupTable", ek_prepare_qlookup_table, ek_run_qlookup_table},
    {EK_OP_QAVERAGE_POOL, "QAveragePool", ek_prepare_qaverage_pool, ek_run_qaverage_pool},
    {EK_OP_QREDUCE_MEAN, "QReduceMean", ek_prepare_qreduce_mean, ek_run_qreduce_mean},
    {EK_OP_QMAX_POOL, "QMaxPool", ek_prepare_qmax_pool, ek_run_qmax_pool},
    {EK_OP_QCONCAT, "QConcat", ek_prepare_qconcat, ek_run_concat},
    {EK_OP_QSOFTMAX, "QSoftmax", ek_prepare_qsoftmax, ek_run_qsoftmax},
    {EK_OP_QLAYER_NORM, "QLayerNorm", ek_prepare_qlayer_norm, ek_run_qlayer_norm},
    {EK_OP_QUANTIZE, "Quantize", ek_prepare_quantize, ek_run_quantize},
    {EK_OP_DEQUANTIZE, "Dequantize", ek_prepare_dequantize, ek_run_dequantize},
    {EK_OP_DEQUANTIZE_WEIGHT, "DequantizeWeight", ek_prepare_dequantize_weight, ek_run_dequantize_weight},
    {EK_OP_QSPARSE_GEMM, "QSparseGemm", ek_prepare_qsparse_gemm, ek_run_qsparse_gemm},
    {EK_OP_COPY, "Copy", ek_prepare_copy, ek_run_copy},
    {EK_OP_TRANSPOSE, "Transpose", ek_prepare_transpose, ek_run_transpose},
    {EK_OP_INDEX_MAP, "IndexMap", ek_prepare_index_map, ek_run_index_map},
    {EK_OP_CONCAT, "Concat", ek_prepare_concat, ek_run_concat},
    {EK_OP_GATHER, "Gather", ek_prepare_gather, ek_run_gather},
    {EK_OP_CAST, "Cast", ek_prepare_cast, ek_run_cast},
    {EK_OP_CONV, "Conv", ek_prepare_conv, ek_run_conv},
    {EK_OP_CONV_TRANSPOSE, "ConvTranspose", ek_prepare_conv_transpose, ek_run_conv_transpose},
    {EK_OP_MATMUL, "MatMul", ek_prepare_matmul, ek_run_matmul},
    {EK_OP_BINARY, "Binary", ek_prepare_binary, ek_run_binary},
    {EK_OP_UNARY, "Unary", ek_prepare_unary, ek_run_unary},
    {EK_OP_WHERE, "Where", ek_prepare_where, ek_run_where},
    {EK_OP_SOFTMAX, "Softmax", ek_prepare_softmax, ek_run_softmax},
    {EK_OP_LAYER_NORM, "LayerNorm", ek_prepare_layer_norm, ek_run_layer_norm},
    {EK_OP_CHANNEL_AFFINE, "ChannelAffine", ek_prepare_channel_affine, ek_run_channel_affine},
    {EK_OP_INSTANCE_NORM, "InstanceNorm", ek_prepare_instance_norm, ek_run_instance_norm},
    {EK_OP_LP_NORM, "LpNorm", ek_prepare_lp_norm, ek_run_lp_norm},
    {EK_OP_POOL, "Pool", ek_prepare_pool, ek_run_pool},
    {EK_OP_REDUCE, "Reduce", ek_prepare_reduce, ek_run_reduce},
    {EK_OP_ARGMAX, "ArgMax", ek_prepare_argmax, ek_run_argmax},
    {EK_OP_RESIZE, "Resize", ek_prepare_resize, ek_run_resize},
    {EK_OP_SPARSE_GEMM, "SparseGemm", ek_prepare_sparse_gemm, ek_run_sparse_gemm},
    {EK_OP_QINVERTED_RESIDUAL, "QInvertedResidual", ek_prepare_qinverted_residual, ek_run_qinverted_residual},
    {EK_OP_QRESIZE_BILINEAR, "QResizeBilinear", ek_prepare_qresize_bilinear, ek_run_qresize_bilinear},
};

const ek_op_def *ek_find_op(int op) {
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (OPS[i].op == op) return &OPS[i];
    return NULL;
}
