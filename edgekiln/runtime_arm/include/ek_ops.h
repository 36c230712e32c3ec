/*
 * The numbers of the edgekiln model blob, written once.
 *
 * This header is the single source of truth for every code the blob carries: the Python
 * writer (edgekiln/backends/arm_cpu/op_codes.py) parses the `#define EK_<GROUP>_<NAME> <int>`
 * lines below at import, so C and Python cannot disagree.  Keep every line in that form
 * (one define, one decimal integer, optional comment); a code, once released, never changes
 * meaning: add new ones at the end of their group and bump EK_BLOB_VERSION when the layout
 * of a section changes.  See ../BLOB_FORMAT.md for the layout itself.
 */
#ifndef EK_OPS_H
#define EK_OPS_H

/* -- format ------------------------------------------------------------------------------ */
#define EK_BLOB_VERSION 3        /* 3: base-3 ternary packing; 2: compact weight-kernel operands (BLOB_FORMAT.md, Versioning) */
#define EK_BLOB_HEADER_BYTES 192 /* fixed prefix (32) + counts (32) + 8 section entries (128) */
#define EK_BLOB_PREFIX_BYTES 32  /* magic, version, header size, total size, crc, flags */
#define EK_BLOB_TENSOR_BYTES 88  /* one tensor table entry */
#define EK_BLOB_CALL_BYTES 24    /* one call table entry */
#define EK_BLOB_ATTR_BYTES 12    /* one attribute entry */
#define EK_BLOB_SECTIONS 8
#define EK_BLOB_ALIGN 64         /* every section and every constant starts on this */
#define EK_MAX_RANK 6

/* sections, in file order */
#define EK_SECTION_TENSORS 0
#define EK_SECTION_IO 1          /* uint32 tensor ids: the inputs, then the outputs */
#define EK_SECTION_CALLS 2
#define EK_SECTION_CALL_IO 3     /* int32 tensor ids of every call's operands; -1 = absent */
#define EK_SECTION_ATTRS 4
#define EK_SECTION_ATTR_DATA 5   /* 8-byte values: int64, or float64 bits */
#define EK_SECTION_STRINGS 6     /* NUL-terminated names */
#define EK_SECTION_CONSTANTS 7

/* -- tensors ----------------------------------------------------------------------------- */
#define EK_DT_FLOAT32 1
#define EK_DT_INT8 2
#define EK_DT_UINT8 3
#define EK_DT_INT32 4
#define EK_DT_INT64 5
#define EK_DT_BOOL 6             /* one byte, 0 or 1 */
#define EK_DT_INT16 7
#define EK_DT_UINT16 8           /* constants only: 16-bit group ratios */

#define EK_STORE_ARENA 1         /* offset = byte offset in the activation arena */
#define EK_STORE_CONST 2         /* offset = byte offset in the constants section */
#define EK_STORE_INPUT 3         /* offset = input slot */
#define EK_STORE_OUTPUT 4        /* offset = output slot */

#define EK_PACK_NONE 0
#define EK_PACK_INT4 1           /* two's-complement nibbles, even flat index in the low nibble */
#define EK_PACK_INT2 2           /* ternary: four 2-bit values per byte, lowest bits first */
#define EK_PACK_INT4_K32 3       /* GEMM weights, int4: per row (dim 0) K-blocks of 32 in 16 bytes (ek_gemm.h) */
#define EK_PACK_INT2_K64 4       /* GEMM weights, ternary: per row (dim 0) K-blocks of 64 in 16 bytes (ek_gemm.h) */
#define EK_PACK_I8_PAIRS8 5      /* GEMM weights, int8, for smmla: row pairs interleaved per 8 bytes of K (ek_gemm.h) */
#define EK_PACK_INT2_B3 6        /* ternary, --weight-layout compact: five values per byte, base 3 (src/ternary_base3.h) */

/* -- attributes -------------------------------------------------------------------------- */
#define EK_ATYPE_INT 1           /* values are int64 */
#define EK_ATYPE_FLOAT 2         /* values are float64 */

#define EK_ATTR_STRIDES 1
#define EK_ATTR_PADS 2            /* conv / pool: top, left, bottom, right */
#define EK_ATTR_DILATIONS 3
#define EK_ATTR_KERNEL 4
#define EK_ATTR_GROUP 5
#define EK_ATTR_INPUT_ZP 6
#define EK_ATTR_OUTPUT_ZP 7
#define EK_ATTR_ACT_MIN 8
#define EK_ATTR_ACT_MAX 9
#define EK_ATTR_GROUP_SIZE 10     /* 0: one weight scale per output channel */
#define EK_ATTR_ACC_FRAC_BITS 11
#define EK_ATTR_A_ZP 12
#define EK_ATTR_B_ZP 13
#define EK_ATTR_MULTIPLIER 14
#define EK_ATTR_SHIFT 15
#define EK_ATTR_A_MULTIPLIER 16
#define EK_ATTR_A_SHIFT 17
#define EK_ATTR_B_MULTIPLIER 18
#define EK_ATTR_B_SHIFT 19
#define EK_ATTR_LEFT_SHIFT 20
#define EK_ATTR_SUBTRACT 21
#define EK_ATTR_COUNT_INCLUDE_PAD 22
#define EK_ATTR_AXIS 23           /* always non-negative in a blob */
#define EK_ATTR_AXES 24           /* sorted, non-negative */
#define EK_ATTR_INPUT_ZPS 25      /* QConcat, one per input */
#define EK_ATTR_REQ_FLAGS 26      /* QConcat: 1 = requantize input i, 0 = copy it */
#define EK_ATTR_REQ_MULTIPLIERS 27
#define EK_ATTR_REQ_SHIFTS 28
#define EK_ATTR_SCALE 29          /* float */
#define EK_ATTR_ZERO_POINT 30
#define EK_ATTR_EPS_TERM 31
#define EK_ATTR_FRAC_BITS 32
#define EK_ATTR_OUT_SHIFT 33
#define EK_ATTR_TRANSPOSE 34
#define EK_ATTR_OUTPUT_PADDING 35
#define EK_ATTR_FUNC 36           /* an EK_FN_* (unary, binary) or EK_REDUCE_* code */
#define EK_ATTR_EPILOGUE 37       /* steps: EK_STEP_ADD or an EK_FN_* activation */
#define EK_ATTR_FILL 38           /* float: the value of index -1 in an index map */
#define EK_ATTR_PERM 39
#define EK_ATTR_DIMS 40           /* a view of the output (index map) or input (transpose) */
#define EK_ATTR_TRANS_A 41
#define EK_ATTR_TRANS_B 42
#define EK_ATTR_ALPHA 43          /* float */
#define EK_ATTR_BETA 44           /* float */
#define EK_ATTR_EPSILON 45        /* float */
#define EK_ATTR_MODE 46           /* pool: EK_POOL_* */
#define EK_ATTR_SELECT_LAST 47
#define EK_ATTR_KEEPDIMS 48
#define EK_ATTR_FMIN 49           /* float */
#define EK_ATTR_FMAX 50           /* float */
#define EK_ATTR_P 51
#define EK_ATTR_ACT_ALPHA 52      /* float: epilogue activation parameters */
#define EK_ATTR_ACT_BETA 53
#define EK_ATTR_ACT_FMIN 54
#define EK_ATTR_ACT_FMAX 55
#define EK_ATTR_LOG 56
#define EK_ATTR_IN_DIMS 57        /* index map: a view of the input */
#define EK_ATTR_TAPS 58           /* separable resize: taps per output position */
#define EK_ATTR_MAX 58

/* -- ops --------------------------------------------------------------------------------- */
/* integer kernels (compiler/integer_kernels.py) */
#define EK_OP_QCONV2D 1
#define EK_OP_QDEPTHWISE_CONV2D 2
#define EK_OP_QCONV_TRANSPOSE2D 3
#define EK_OP_QFULLY_CONNECTED 4
#define EK_OP_QMATMUL 5
#define EK_OP_QADD 6
#define EK_OP_QMUL 7
#define EK_OP_QREQUANTIZE 8
#define EK_OP_QLOOKUP_TABLE 9
#define EK_OP_QAVERAGE_POOL 10
#define EK_OP_QREDUCE_MEAN 11     /* also QGlobalAveragePool (axes 2..) */
#define EK_OP_QMAX_POOL 12
#define EK_OP_QCONCAT 13
#define EK_OP_QSOFTMAX 14
#define EK_OP_QLAYER_NORM 15
#define EK_OP_QUANTIZE 16
#define EK_OP_DEQUANTIZE 17
#define EK_OP_DEQUANTIZE_WEIGHT 18
#define EK_OP_QSPARSE_GEMM 19       /* sparse 1x1 QConv2D / QFullyConnected (src/sparse/, compiler: encode_sparse.py) */
#define EK_OP_QINVERTED_RESIDUAL 24 /* fused expand 1x1 -> depthwise -> project 1x1 (compiler/fused_block_lowering.py) */
#define EK_OP_QRESIZE_BILINEAR 25   /* bilinear resize of H, W by 10-bit tap tables (kernels/qresize_bilinear.c) */
/* data movement, any dtype */
#define EK_OP_COPY 40             /* Reshape, Flatten, Squeeze, Unsqueeze, Identity */
#define EK_OP_TRANSPOSE 41        /* Transpose, DepthToSpace, SpaceToDepth */
#define EK_OP_INDEX_MAP 42        /* Slice, Pad, Split, nearest Resize, Tile, Expand, Gather by constant */
#define EK_OP_CONCAT 43
#define EK_OP_GATHER 44           /* Gather by run-time indices */
#define EK_OP_CAST 45
/* float kernels */
#define EK_OP_CONV 60             /* Conv, FusedConv */
#define EK_OP_CONV_TRANSPOSE 61
#define EK_OP_MATMUL 62           /* MatMul, Gemm, FusedMatMul, FusedGemm */
#define EK_OP_BINARY 63
#define EK_OP_UNARY 64
#define EK_OP_WHERE 65
#define EK_OP_SOFTMAX 66          /* Softmax, LogSoftmax */
#define EK_OP_LAYER_NORM 67
#define EK_OP_CHANNEL_AFFINE 68   /* BatchNormalization folded to scale and shift */
#define EK_OP_INSTANCE_NORM 69
#define EK_OP_LP_NORM 70
#define EK_OP_POOL 71             /* MaxPool, AveragePool */
#define EK_OP_REDUCE 72           /* Reduce*, GlobalAveragePool, GlobalMaxPool */
#define EK_OP_ARGMAX 73
#define EK_OP_RESIZE 74           /* (bi)linear resize by per-axis tap tables */
#define EK_OP_SPARSE_GEMM 75       /* sparse 1x1 Conv / FusedConv / MatMul with a constant weight */

/* -- function codes ---------------------------------------------------------------------- */
#define EK_FN_IDENTITY 0
#define EK_FN_RELU 1
#define EK_FN_CLIP 2
#define EK_FN_SIGMOID 3
#define EK_FN_HARD_SIGMOID 4
#define EK_FN_HARD_SWISH 5
#define EK_FN_TANH 6
#define EK_FN_ERF 7
#define EK_FN_GELU 8
#define EK_FN_GELU_TANH 9
#define EK_FN_LEAKY_RELU 10
#define EK_FN_ELU 11
#define EK_FN_SELU 12
#define EK_FN_SOFTPLUS 13
#define EK_FN_MISH 14
#define EK_FN_SILU 15
#define EK_FN_SQRT 16
#define EK_FN_RECIPROCAL 17
#define EK_FN_NEG 18
#define EK_FN_ABS 19
#define EK_FN_EXP 20
#define EK_FN_LOG 21
#define EK_FN_FLOOR 22
#define EK_FN_CEIL 23
#define EK_FN_ROUND 24
#define EK_FN_SIGN 25
#define EK_FN_NOT 26
#define EK_FN_UNARY_MAX 26

#define EK_FN_ADD 40
#define EK_FN_SUB 41
#define EK_FN_MUL 42
#define EK_FN_DIV 43
#define EK_FN_POW 44
#define EK_FN_MAX 45
#define EK_FN_MIN 46
#define EK_FN_PRELU 47
#define EK_FN_EQUAL 48
#define EK_FN_LESS 49
#define EK_FN_GREATER 50
#define EK_FN_AND 51
#define EK_FN_OR 52
#define EK_FN_BINARY_MAX 52

#define EK_STEP_ADD 100           /* epilogue: add the residual operand */

#define EK_REDUCE_MEAN 1
#define EK_REDUCE_SUM 2
#define EK_REDUCE_MAX 3
#define EK_REDUCE_MIN 4
#define EK_REDUCE_L2 5

#define EK_POOL_MAX 1
#define EK_POOL_AVG 2

/* sparse weight formats (EK_ATTR_MODE of the sparse ops; src/sparse/ek_sparse.h has the layout) */
#define EK_SPARSE_FORMAT_BLOCK 1  /* blocks of B output channels x 1 input channel, CSR by block row */
#define EK_SPARSE_FORMAT_NM 2     /* N of every M along the input channel, 2-bit in-group indices */
#define EK_SPARSE_PIXELS 32       /* output pixels (rows of x) per sparse task */

/* -- blocking (the Python writer sizes scratch with the same numbers) -------------------- */
#define EK_BLOCK_ROWS 64          /* output pixels (GEMM rows) per conv / FC task */
#define EK_BLOCK_COLS 64          /* output channels (GEMM columns) per conv / FC task */

/* -- status codes (ek_runtime.h) --------------------------------------------------------- */
#define EK_STATUS_OK 0
#define EK_STATUS_ARG 1           /* a bad argument to an API call */
#define EK_STATUS_TRUNCATED 2     /* the blob is shorter than it says */
#define EK_STATUS_MAGIC 3         /* not an edgekiln blob */
#define EK_STATUS_VERSION 4       /* a format version this runtime does not read */
#define EK_STATUS_CHECKSUM 5      /* the CRC32 does not match: corrupted */
#define EK_STATUS_CORRUPT 6       /* a size, offset, id or count out of bounds */
#define EK_STATUS_UNSUPPORTED 7   /* an op code or attribute this runtime does not know */
#define EK_STATUS_INVALID 8       /* operands that do not fit their op (shape, dtype, attribute) */
#define EK_STATUS_NOMEM 9
#define EK_STATUS_RUNTIME 10      /* a run-time failure (index out of range, thread start) */
#define EK_STATUS_ISA 11          /* the requested ISA path is not available */

#endif /* EK_OPS_H */
