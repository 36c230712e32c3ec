/*
 * ek_model_load: parse and validate a model blob (layout: ../BLOB_FORMAT.md).
 *
 * Nothing in the blob is trusted.  The order of checks is the order of dependence: the fixed
 * prefix (magic, version, sizes) before the CRC32, the CRC before any table, every section's
 * bounds before reading it, every tensor's storage before a call names it, and finally each
 * call's own `prepare`, which checks its operands against its op.  Every read goes through
 * the rd_* helpers below with an offset already proven inside the blob.  On any failure the
 * partly built model is freed and the message says what was wrong where.
 */
/* posix_memalign */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ek_internal.h"
#include "ternary_base3.h"

static const uint8_t MAGIC[8] = {0x89, 'E', 'K', 'B', 'L', 'O', 'B', '\n'};

static uint16_t rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd_u64(const uint8_t *p) { return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32; }
static float rd_f32(const uint8_t *p) {
    uint32_t u = rd_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct {
    uint64_t offset, size;
} section;

static const char *SECTION_NAMES[EK_BLOB_SECTIONS] = {"tensors", "io", "calls", "call_io",
                                                      "attrs", "attr_data", "strings", "constants"};

static int check_header(const uint8_t *b, size_t size, section *sec, ek_err *e) {
    if (size < EK_BLOB_PREFIX_BYTES)
        return ek_fail(e, EK_STATUS_TRUNCATED, "blob is %zu bytes, shorter than its %d-byte header",
                       size, EK_BLOB_PREFIX_BYTES);
    if (memcmp(b, MAGIC, 8) != 0)
        return ek_fail(e, EK_STATUS_MAGIC, "not an edgekiln model blob (bad magic bytes)");
    uint32_t version = rd_u32(b + 8);
    if (version != EK_BLOB_VERSION)
        return ek_fail(e, EK_STATUS_VERSION,
                       "blob format version %u; this runtime reads version %d: recompile the model "
                       "with a matching edgekiln",
                       version, EK_BLOB_VERSION);
    if (rd_u32(b + 12) != EK_BLOB_HEADER_BYTES)
        return ek_fail(e, EK_STATUS_CORRUPT, "header size %u, expected %d", rd_u32(b + 12),
                       EK_BLOB_HEADER_BYTES);
    uint64_t total = rd_u64(b + 16);
    if (total > size)
        return ek_fail(e, EK_STATUS_TRUNCATED, "blob truncated: %zu bytes of %llu", size,
                       (unsigned long long)total);
    if (total < size)
        return ek_fail(e, EK_STATUS_CORRUPT, "blob has %llu trailing bytes after its end",
                       (unsigned long long)(size - total));
    if (size < EK_BLOB_HEADER_BYTES)
        return ek_fail(e, EK_STATUS_TRUNCATED, "blob is %zu bytes, shorter than its header", size);
    uint32_t crc = ek_crc32(b + EK_BLOB_PREFIX_BYTES, size - EK_BLOB_PREFIX_BYTES);
    if (crc != rd_u32(b + 24))
        return ek_fail(e, EK_STATUS_CHECKSUM, "blob checksum mismatch (CRC32 %08x, header says %08x): "
                       "the file is corrupted", crc, rd_u32(b + 24));
    if (rd_u32(b + 28) != 0)
        return ek_fail(e, EK_STATUS_UNSUPPORTED, "blob flags %08x unknown to this runtime", rd_u32(b + 28));
    uint64_t end_prev = EK_BLOB_HEADER_BYTES;
    for (int i = 0; i < EK_BLOB_SECTIONS; i++) {
        const uint8_t *p = b + 64 + 16 * i;
        sec[i].offset = rd_u64(p);
        sec[i].size = rd_u64(p + 8);
        if (sec[i].offset % EK_BLOB_ALIGN || sec[i].offset < end_prev || sec[i].offset > size ||
            sec[i].size > size - sec[i].offset)
            return ek_fail(e, EK_STATUS_CORRUPT, "section %s at %llu+%llu is out of order or outside the "
                           "%zu-byte blob", SECTION_NAMES[i], (unsigned long long)sec[i].offset,
                           (unsigned long long)sec[i].size, size);
        end_prev = sec[i].offset + sec[i].size;
    }
    /* Every name is read as a C string: the last one must end inside its section. */
    const section *st = &sec[EK_SECTION_STRINGS];
    if (st->size == 0 || b[st->offset + st->size - 1] != 0)
        return ek_fail(e, EK_STATUS_CORRUPT, "string table is empty or does not end with a NUL byte");
    return EK_STATUS_OK;
}

static int string_at(const ek_model *m, const section *strings, uint32_t off, const char **out, ek_err *e) {
    if (off >= strings->size)
        return ek_fail(e, EK_STATUS_CORRUPT, "string offset %u outside the %llu-byte string table", off,
                       (unsigned long long)strings->size);
    *out = (const char *)m->blob + strings->offset + off;
    return EK_STATUS_OK;
}

static int parse_tensors(ek_model *m, const section *sec, uint64_t arena_bytes, ek_err *e) {
    const section *ts = &sec[EK_SECTION_TENSORS];
    if (ts->size != (uint64_t)m->n_tensors * EK_BLOB_TENSOR_BYTES)
        return ek_fail(e, EK_STATUS_CORRUPT, "tensor table is %llu bytes for %u tensors",
                       (unsigned long long)ts->size, m->n_tensors);
    m->tensors = calloc(m->n_tensors ? m->n_tensors : 1, sizeof(ek_tensor));
    if (!m->tensors) return ek_fail(e, EK_STATUS_NOMEM, "out of memory for %u tensors", m->n_tensors);
    const section *cs = &sec[EK_SECTION_CONSTANTS];
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const uint8_t *p = m->blob + ts->offset + (uint64_t)i * EK_BLOB_TENSOR_BYTES;
        ek_tensor *t = &m->tensors[i];
        t->dtype = p[0];
        t->rank = p[1];
        t->storage = p[2];
        t->packing = p[3];
        int rc = string_at(m, &sec[EK_SECTION_STRINGS], rd_u32(p + 4), &t->name, e);
        if (rc) return rc;
        t->elem_size = ek_dtype_size(t->dtype);
        if (!t->elem_size) return ek_fail(e, EK_STATUS_UNSUPPORTED, "tensor %u '%s': unknown dtype %u", i, t->name, t->dtype);
        if (t->rank > EK_MAX_RANK)
            return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': rank %u above %d", i, t->name, t->rank, EK_MAX_RANK);
        t->count = 1;
        for (int d = 0; d < EK_MAX_RANK; d++) {
            int64_t dim = (int64_t)rd_u64(p + 8 + 8 * d);
            if (d >= t->rank) {
                if (dim != 0) return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': dims past its rank are not 0", i, t->name);
                continue;
            }
            if (dim < 0 || dim > EK_MAX_ELEMENTS)
                return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': dimension %d is %lld", i, t->name, d, (long long)dim);
            t->dims[d] = dim;
            if (dim && t->count > EK_MAX_ELEMENTS / dim)
                return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': more than 2^40 elements", i, t->name);
            t->count *= dim;
        }
        t->offset = rd_u64(p + 56);
        const uint64_t nbytes = rd_u64(p + 64);
        if (nbytes > SIZE_MAX / 2) /* a 32-bit runtime: (size_t) would wrap and pass the checks below */
            return ek_fail(e, EK_STATUS_NOMEM, "tensor %u '%s': %llu bytes do not fit this %d-bit runtime's "
                           "address space", i, t->name, (unsigned long long)nbytes, (int)(8 * sizeof(size_t)));
        t->nbytes = (size_t)nbytes;
        t->scale = rd_f32(p + 72);
        t->zero_point = (int32_t)rd_u32(p + 76);
        if (rd_u32(p + 80) || rd_u32(p + 84))
            return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': reserved fields are not 0", i, t->name);
        uint64_t expect = (uint64_t)t->count * t->elem_size;
        if (t->packing == EK_PACK_INT4) expect = ((uint64_t)t->count + 1) / 2;
        else if (t->packing == EK_PACK_INT2) expect = ((uint64_t)t->count + 3) / 4;
        else if (t->packing == EK_PACK_INT2_B3) expect = ek_base3_bytes((uint64_t)t->count);
        else if (t->packing == EK_PACK_INT4_K32 || t->packing == EK_PACK_INT2_K64) {
            /* K-blocked GEMM rows (ek_gemm.h): dims[0] rows of ceil(K / per-block) 16-byte blocks */
            const int64_t rows = t->rank ? t->dims[0] : 1, k = rows ? t->count / rows : 0;
            expect = (uint64_t)rows * (uint64_t)ek_lowbit_row_bytes(ek_packing_bits(t->packing), k);
        } else if (t->packing == EK_PACK_I8_PAIRS8) {
            /* int8 GEMM rows pre-paired for smmla (ek_gemm.h): ceil(rows / 2) pairs */
            const int64_t rows = t->rank ? t->dims[0] : 1, k = rows ? t->count / rows : 0;
            expect = (uint64_t)((rows + 1) / 2) * (uint64_t)ek_pairs_pair_bytes(k);
        }
        else if (t->packing != EK_PACK_NONE)
            return ek_fail(e, EK_STATUS_UNSUPPORTED, "tensor %u '%s': unknown packing %u", i, t->name, t->packing);
        if (t->packing != EK_PACK_NONE && (t->storage != EK_STORE_CONST || t->dtype != EK_DT_INT8))
            return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': only int8 constants are packed", i, t->name);
        if (t->nbytes != expect)
            return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': %zu bytes, its shape and dtype need %llu",
                           i, t->name, t->nbytes, (unsigned long long)expect);
        switch (t->storage) {
        case EK_STORE_ARENA:
            if (t->offset % t->elem_size || t->offset > arena_bytes || t->nbytes > arena_bytes - t->offset)
                return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': arena range %llu+%zu outside the "
                               "%llu-byte arena or misaligned", i, t->name, (unsigned long long)t->offset,
                               t->nbytes, (unsigned long long)arena_bytes);
            break;
        case EK_STORE_CONST:
            if (t->offset % 8 || t->offset > cs->size || t->nbytes > cs->size - t->offset)
                return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': constant range %llu+%zu outside the "
                               "%llu-byte constants section or misaligned", i, t->name,
                               (unsigned long long)t->offset, t->nbytes, (unsigned long long)cs->size);
            t->cdata = m->blob + cs->offset + t->offset;
            if (t->packing == EK_PACK_INT2_B3) {
                /* a byte above 242 is no five base-3 digits: checking every byte once here (O(n))
                 * lets the per-task decode index its 243-row table without a branch */
                const int64_t bad = ek_base3_first_invalid(t->cdata, t->nbytes);
                if (bad >= 0)
                    return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': base-3 packed byte %lld is %u, above %d",
                                   i, t->name, (long long)bad, t->cdata[bad], EK_BASE3_MAX_BYTE);
            }
            break;
        case EK_STORE_INPUT:
        case EK_STORE_OUTPUT: {
            uint32_t slots = t->storage == EK_STORE_INPUT ? m->n_inputs : m->n_outputs;
            if (t->offset >= slots)
                return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': I/O slot %llu of %u", i, t->name,
                               (unsigned long long)t->offset, slots);
            break;
        }
        default:
            return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s': unknown storage %u", i, t->name, t->storage);
        }
    }
    return EK_STATUS_OK;
}

static int parse_io(ek_model *m, const section *sec, ek_err *e) {
    const section *io = &sec[EK_SECTION_IO];
    uint64_t n = (uint64_t)m->n_inputs + m->n_outputs;
    if (io->size != n * 4)
        return ek_fail(e, EK_STATUS_CORRUPT, "I/O table is %llu bytes for %llu entries",
                       (unsigned long long)io->size, (unsigned long long)n);
    m->inputs = calloc(m->n_inputs + 1, sizeof(uint32_t));
    m->outputs = calloc(m->n_outputs + 1, sizeof(uint32_t));
    if (!m->inputs || !m->outputs) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
    for (uint64_t k = 0; k < n; k++) {
        uint32_t id = rd_u32(m->blob + io->offset + 4 * k);
        int is_out = k >= m->n_inputs;
        uint32_t slot = (uint32_t)(is_out ? k - m->n_inputs : k);
        if (id >= m->n_tensors)
            return ek_fail(e, EK_STATUS_CORRUPT, "%s %u: tensor id %u of %u", is_out ? "output" : "input",
                           slot, id, m->n_tensors);
        const ek_tensor *t = &m->tensors[id];
        if (t->storage != (is_out ? EK_STORE_OUTPUT : EK_STORE_INPUT) || t->offset != slot)
            return ek_fail(e, EK_STATUS_CORRUPT, "%s %u: tensor '%s' is not stored in that slot",
                           is_out ? "output" : "input", slot, t->name);
        (is_out ? m->outputs : m->inputs)[slot] = id;
    }
    /* The caller's buffers have the sizes of the listed tensors: no other tensor may claim a slot. */
    for (uint32_t i = 0; i < m->n_tensors; i++) {
        const ek_tensor *t = &m->tensors[i];
        if ((t->storage == EK_STORE_INPUT && m->inputs[t->offset] != i) ||
            (t->storage == EK_STORE_OUTPUT && m->outputs[t->offset] != i))
            return ek_fail(e, EK_STATUS_CORRUPT, "tensor %u '%s' claims an I/O slot the I/O table gives another tensor",
                           i, t->name);
    }
    return EK_STATUS_OK;
}

static int parse_calls(ek_model *m, const section *sec, ek_err *e) {
    const section *cs = &sec[EK_SECTION_CALLS], *ios = &sec[EK_SECTION_CALL_IO];
    const section *as = &sec[EK_SECTION_ATTRS], *ds = &sec[EK_SECTION_ATTR_DATA];
    if (cs->size != (uint64_t)m->n_calls * EK_BLOB_CALL_BYTES || ios->size % 4 ||
        as->size % EK_BLOB_ATTR_BYTES || ds->size % 8)
        return ek_fail(e, EK_STATUS_CORRUPT, "call tables have inconsistent sizes");
    uint64_t n_io = ios->size / 4, n_attr = as->size / EK_BLOB_ATTR_BYTES, n_data = ds->size / 8;
    m->calls = calloc(m->n_calls ? m->n_calls : 1, sizeof(ek_call));
    if (!m->calls) return ek_fail(e, EK_STATUS_NOMEM, "out of memory for %u calls", m->n_calls);
    for (uint32_t i = 0; i < m->n_calls; i++) {
        const uint8_t *p = m->blob + cs->offset + (uint64_t)i * EK_BLOB_CALL_BYTES;
        ek_call *c = &m->calls[i];
        c->op = rd_u16(p);
        c->n_in = p[2];
        c->n_out = p[3];
        uint32_t io_index = rd_u32(p + 4), attr_index = rd_u32(p + 8);
        c->n_attrs = rd_u16(p + 12);
        int rc = string_at(m, &sec[EK_SECTION_STRINGS], rd_u32(p + 16), &c->name, e);
        if (rc) return rc;
        if (rd_u16(p + 14) || rd_u32(p + 20))
            return ek_fail(e, EK_STATUS_CORRUPT, "call %u '%s': reserved fields are not 0", i, c->name);
        c->def = ek_find_op(c->op);
        if (!c->def)
            return ek_fail(e, EK_STATUS_UNSUPPORTED, "call %u '%s': op code %u is not known to this runtime "
                           "(a newer edgekiln wrote the blob?)", i, c->name, c->op);
        if ((uint64_t)io_index + c->n_in + c->n_out > n_io)
            return ek_fail(e, EK_STATUS_CORRUPT, "call %u '%s': operand list outside the table", i, c->name);
        if ((uint64_t)attr_index + c->n_attrs > n_attr)
            return ek_fail(e, EK_STATUS_CORRUPT, "call %u '%s': attribute list outside the table", i, c->name);
        c->in = calloc((size_t)c->n_in + c->n_out + 1, sizeof(int32_t));
        c->attrs = calloc((size_t)c->n_attrs + 1, sizeof(ek_attr));
        if (!c->in || !c->attrs) return ek_fail(e, EK_STATUS_NOMEM, "out of memory");
        c->out = c->in + c->n_in;
        for (int k = 0; k < c->n_in + c->n_out; k++) {
            int32_t id = (int32_t)rd_u32(m->blob + ios->offset + 4 * ((uint64_t)io_index + k));
            if (id < -1 || (id >= 0 && (uint32_t)id >= m->n_tensors))
                return ek_fail(e, EK_STATUS_CORRUPT, "call %u '%s': operand %d is tensor id %d of %u", i,
                               c->name, k, id, m->n_tensors);
            c->in[k] = id;
            if (k >= c->n_in && id >= 0) {
                int st = m->tensors[id].storage;
                if (st != EK_STORE_ARENA && st != EK_STORE_OUTPUT)
                    return ek_fail(e, EK_STATUS_CORRUPT, "call %u '%s': writes tensor '%s', which is %s", i,
                                   c->name, m->tensors[id].name, st == EK_STORE_CONST ? "a constant" : "an input");
            }
        }
        for (int k = 0; k < c->n_attrs; k++) {
            const uint8_t *a = m->blob + as->offset + ((uint64_t)attr_index + k) * EK_BLOB_ATTR_BYTES;
            ek_attr *at = &c->attrs[k];
            at->key = rd_u16(a);
            at->type = a[2];
            at->count = rd_u32(a + 4);
            uint32_t data_index = rd_u32(a + 8);
            if (at->key == 0 || at->key > EK_ATTR_MAX || (at->type != EK_ATYPE_INT && at->type != EK_ATYPE_FLOAT) || a[3])
                return ek_fail(e, EK_STATUS_UNSUPPORTED, "call %u '%s': attribute %d has unknown key %u or type %u",
                               i, c->name, k, at->key, at->type);
            for (int j = 0; j < k; j++)
                if (c->attrs[j].key == at->key)
                    return ek_fail(e, EK_STATUS_CORRUPT, "call %u '%s': attribute key %u twice", i, c->name, at->key);
            if ((uint64_t)data_index + at->count > n_data)
                return ek_fail(e, EK_STATUS_CORRUPT, "call %u '%s': attribute %u values outside the data table", i,
                               c->name, at->key);
            at->data = m->blob + ds->offset + 8 * (uint64_t)data_index;
        }
    }
    return EK_STATUS_OK;
}

static int prepare_calls(ek_model *m, uint64_t scratch_bytes, ek_err *e) {
    size_t need = 0;
    for (uint32_t i = 0; i < m->n_calls; i++) {
        ek_call *c = &m->calls[i];
        int rc = c->def->prepare(m, c, e);
        if (rc) return rc;
        if (c->scratch > need) need = c->scratch;
    }
    if (need > scratch_bytes)
        return ek_fail(e, EK_STATUS_CORRUPT, "blob reserves %llu scratch bytes per thread; its calls need %zu",
                       (unsigned long long)scratch_bytes, need);
    m->scratch_per_thread = ek_align64((size_t)scratch_bytes);
    return EK_STATUS_OK;
}

/* 64-byte aligned and not zeroed: a valid program writes every arena tensor before reading
 * it, and pages of a large arena are not touched before they are used. */
static void *alloc64(size_t n) {
    void *p = NULL;
    /* aligned_alloc is C11; posix_memalign is what every libc the runtime targets has. */
    if (posix_memalign(&p, 64, n ? n : 64)) return NULL;
    return p;
}

int ek_model_load(const void *blob, size_t size, ek_model **out, char *err, size_t errlen) {
    ek_err e = {err, errlen};
    if (err && errlen) err[0] = 0;
    if (!out || !blob) return ek_fail(&e, EK_STATUS_ARG, "ek_model_load: NULL blob or output pointer");
    *out = NULL;
    section sec[EK_BLOB_SECTIONS];
    int rc = check_header(blob, size, sec, &e);
    if (rc) return rc;
    ek_model *m = calloc(1, sizeof *m);
    if (!m) return ek_fail(&e, EK_STATUS_NOMEM, "out of memory");
    m->blob = blob;
    m->size = size;
    if ((uintptr_t)blob % 64) { /* typed kernels read constants in place: give them alignment */
        m->blob_copy = alloc64(size);
        if (!m->blob_copy) {
            free(m);
            return ek_fail(&e, EK_STATUS_NOMEM, "out of memory copying the %zu-byte blob", size);
        }
        memcpy(m->blob_copy, blob, size);
        m->blob = m->blob_copy;
    }
    const uint8_t *b = m->blob;
    m->n_tensors = rd_u32(b + 32);
    m->n_calls = rd_u32(b + 36);
    m->n_inputs = rd_u32(b + 40);
    m->n_outputs = rd_u32(b + 44);
    uint64_t arena_bytes = rd_u64(b + 48), scratch_bytes = rd_u64(b + 56);
    if (m->n_tensors > (1u << 24) || m->n_calls > (1u << 24) || m->n_inputs > 4096 || m->n_outputs > 4096)
        rc = ek_fail(&e, EK_STATUS_CORRUPT, "implausible counts: %u tensors, %u calls, %u inputs, %u outputs",
                     m->n_tensors, m->n_calls, m->n_inputs, m->n_outputs);
    else if (arena_bytes > ((uint64_t)1 << 40) || scratch_bytes > ((uint64_t)1 << 40))
        rc = ek_fail(&e, EK_STATUS_CORRUPT, "implausible arena (%llu) or scratch (%llu) size",
                     (unsigned long long)arena_bytes, (unsigned long long)scratch_bytes);
    else if (arena_bytes > SIZE_MAX / 2 || scratch_bytes > SIZE_MAX / 4) /* 32-bit: (size_t) would wrap */
        rc = ek_fail(&e, EK_STATUS_NOMEM, "the %llu-byte arena or %llu-byte scratch does not fit this %d-bit "
                     "runtime's address space", (unsigned long long)arena_bytes, (unsigned long long)scratch_bytes,
                     (int)(8 * sizeof(size_t)));
    if (!rc) rc = parse_tensors(m, sec, arena_bytes, &e);
    if (!rc) rc = parse_io(m, sec, &e);
    if (!rc) rc = parse_calls(m, sec, &e);
    if (!rc) rc = prepare_calls(m, scratch_bytes, &e);
    if (!rc) {
        m->arena_bytes = (size_t)arena_bytes;
        m->arena = alloc64(m->arena_bytes);
        m->scratch = alloc64(m->scratch_per_thread);
        m->threads = 1;
        if (!m->arena || !m->scratch)
            rc = ek_fail(&e, EK_STATUS_NOMEM, "out of memory for the %zu-byte arena and %zu-byte scratch",
                         m->arena_bytes, m->scratch_per_thread);
    }
    if (!rc) rc = ek_model_set_isa(m, "auto", err, errlen);
    if (rc) {
        ek_model_free(m);
        return rc;
    }
    *out = m;
    return EK_STATUS_OK;
}
