/*
 * dlpack.h - the subset of the DLPack C ABI (v1.x) that AutoSteer reads.
 *
 * Written from the published specification; only the declarations the core
 * needs.  DLPack is a frozen C99 ABI: field order and sizes must match it
 * exactly, so do not reorder anything below.
 */
#ifndef AUTOSTEER_DLPACK_H
#define AUTOSTEER_DLPACK_H

#include <stdint.h>

enum { AS_DL_CPU = 1, AS_DL_CUDA = 2 };                 /* DLDeviceType */
enum { AS_DL_INT = 0, AS_DL_UINT = 1, AS_DL_FLOAT = 2,  /* DLDataTypeCode */
       AS_DL_BFLOAT = 4, AS_DL_BOOL = 6 };

typedef struct { uint32_t major; uint32_t minor; } as_dl_version;
typedef struct { int32_t device_type; int32_t device_id; } as_dl_device;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } as_dl_dtype;

typedef struct {
    void *data;
    as_dl_device device;
    int32_t ndim;
    as_dl_dtype dtype;
    int64_t *shape;
    int64_t *strides;      /* in elements; may be NULL (compact) before v1.2 */
    uint64_t byte_offset;
} as_dl_tensor;

/* Legacy managed tensor, found in capsules named "dltensor". */
typedef struct as_dl_managed {
    as_dl_tensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct as_dl_managed *self);
} as_dl_managed;

/* Versioned managed tensor (capsule "dltensor_versioned"); the exchange
 * table's allocating entry points use it. */
typedef struct as_dl_managed_v {
    as_dl_version version;
    void *manager_ctx;
    void (*deleter)(struct as_dl_managed_v *self);
    uint64_t flags;
    as_dl_tensor dl_tensor;
} as_dl_managed_v;

/* The C function table a framework publishes on its tensor type as
 * `__dlpack_c_exchange_api__` (capsule "dlpack_exchange_api"). */
typedef struct as_dl_api_header {
    as_dl_version version;
    struct as_dl_api_header *prev_api;
} as_dl_api_header;

typedef struct {
    as_dl_api_header header;
    int (*managed_tensor_allocator)(as_dl_tensor *, as_dl_managed_v **, void *,
                                    void (*)(void *, const char *, const char *));
    int (*managed_tensor_from_py_object_no_sync)(void *, as_dl_managed_v **);
    int (*managed_tensor_to_py_object_no_sync)(as_dl_managed_v *, void **);
    /* fills a caller-owned DLTensor without allocating; may be NULL */
    int (*dltensor_from_py_object_no_sync)(void *, as_dl_tensor *);
    int (*current_work_stream)(int32_t, int32_t, void **);
} as_dl_exchange_api;

#endif /* AUTOSTEER_DLPACK_H */
