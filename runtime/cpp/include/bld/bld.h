/* bld.h: the C ABI of the bld runtime (Binary Latent Diffusion bundles, bld.json format v1).
 *
 * Stable and small: opaque handles, plain C types, no exceptions. A function that can fail
 * returns a bld_status*: NULL on success, else an error the caller reads (kind + one-sentence
 * message, the same sentence the Python runtime raises) and frees with bld_status_free.
 * Outputs are written only on success. Every handle is freed by its own *_free (NULL is fine).
 *
 * Threads: one bld_pipeline may be used from several threads at once (generate, encode,
 * decode); each call takes its own preallocated loop state from the pipeline's pool. Requests,
 * options and results belong to one thread at a time.
 *
 * Arrays: images are uint8 (N, H, W, channels); bits are uint8 0/1 (N, L, C) with L = H*W
 * latent tokens in row-major order (SAMPLING_CONTRACT.md, section 1).
 */
#ifndef BLD_H
#define BLD_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define BLD_API __declspec(dllexport)
#else
#define BLD_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define BLD_ABI_VERSION 1

/* What went wrong; mirrors bld_runtime.errors (BUNDLE_INTEGRITY is a kind of MANIFEST). */
typedef enum bld_error_kind {
    BLD_ERROR_CONTRACT = 1,            /* ContractError */
    BLD_ERROR_MANIFEST = 2,            /* ManifestError */
    BLD_ERROR_BUNDLE_INTEGRITY = 3,    /* BundleIntegrityError: missing/altered/escaping files */
    BLD_ERROR_INVALID_REQUEST = 4,     /* InvalidRequestError */
    BLD_ERROR_BACKEND_UNAVAILABLE = 5, /* BackendUnavailableError */
    BLD_ERROR_PACKED_BITS = 6,         /* PackedBitsError */
    BLD_ERROR_CANCELLED = 7,           /* CancelledError: the step callback returned 0 */
    BLD_ERROR_IO = 8,                  /* a file that cannot be read or written */
    BLD_ERROR_INTERNAL = 9             /* a bug or an allocation failure */
} bld_error_kind;

typedef struct bld_status bld_status;
typedef struct bld_options bld_options;
typedef struct bld_pipeline bld_pipeline;
typedef struct bld_request bld_request;
typedef struct bld_generation bld_generation;
typedef struct bld_buffer bld_buffer;

BLD_API int bld_abi_version(void);
BLD_API const char *bld_version(void);

BLD_API bld_error_kind bld_status_kind(const bld_status *status);
BLD_API const char *bld_status_message(const bld_status *status);
BLD_API void bld_status_free(bld_status *status);

/* --- options: key/value settings, checked when set ----------------------------------------
 * backend          cpu (default) | cuda | tensorrt-ep (onnxruntime providers) | tensorrt
 *                  (native, when built with BLD_WITH_TENSORRT)
 * precision        fp32 (default) | fp16 (the bundle's *_fp16 graphs)
 * intra_op_threads, inter_op_threads   integers >= 0 (0: onnxruntime's default)
 * graph_optimization   disable | basic | extended | all (default)
 * device_id        CUDA device, integer >= 0
 * trt_cache_dir    engine cache folder (tensorrt-ep, tensorrt)
 * trt_fp16         true | false
 * stop_spinning    true (default) | false: park onnxruntime's threads after each call
 * verify_hashes    true (default) | false */
BLD_API bld_status *bld_options_create(bld_options **out);
BLD_API bld_status *bld_options_set(bld_options *options, const char *key, const char *value);
BLD_API void bld_options_free(bld_options *options);

/* --- pipeline ---------------------------------------------------------------------------- */
/* Load a bundle directory (or its bld.json): manifest, paths, hashes, then the graphs of the
 * chosen precision onto the backend. options may be NULL (defaults). */
BLD_API bld_status *bld_pipeline_load(const char *bundle, const bld_options *options,
                                      bld_pipeline **out);
BLD_API void bld_pipeline_free(bld_pipeline *pipeline);

typedef struct bld_pipeline_info {
    int64_t image_height, image_width, image_channels;
    int64_t latent_height, latent_width, latent_bits; /* L = height * width tokens of bits */
    int64_t num_classes;  /* the null class (unconditional) is num_classes */
    int64_t num_steps;    /* K */
    int64_t max_batch;
    double default_guidance, default_temperature;
} bld_pipeline_info;

BLD_API void bld_pipeline_get_info(const bld_pipeline *pipeline, bld_pipeline_info *out);

/* --- generation requests ----------------------------------------------------------------- */
BLD_API bld_status *bld_request_create(bld_request **out);
BLD_API void bld_request_free(bld_request *request);
/* n images with seeds base, base + 1, ... (mod 2^64). The default is one image, seed 0. */
BLD_API bld_status *bld_request_set_seed_range(bld_request *request, uint64_t base, size_t n);
/* One seed per image. */
BLD_API bld_status *bld_request_set_seeds(bld_request *request, const uint64_t *seeds, size_t n);
/* count 0: unconditional (default); 1: one class for all; else one per image. */
BLD_API bld_status *bld_request_set_classes(bld_request *request, const int64_t *classes,
                                            size_t count);
/* count 0: the bundle's default; 1: one for all; else one per image. */
BLD_API bld_status *bld_request_set_guidance(bld_request *request, const double *guidance,
                                             size_t count);
BLD_API bld_status *bld_request_set_temperature(bld_request *request, const double *temperature,
                                                size_t count);
/* Inpainting in latent space: where mask is 1 the known bit is kept. Both are uint8 0/1 of
 * shape (rows, tokens, bits), rows 1 (all images) or one per image; NULL clears. */
BLD_API bld_status *bld_request_set_mask(bld_request *request, const uint8_t *mask,
                                         const uint8_t *known_bits, size_t rows, size_t tokens,
                                         size_t bits);
/* chunk != 0 (default): batches above max_batch run in chunks; 0 makes them an error. */
BLD_API bld_status *bld_request_set_chunk(bld_request *request, int chunk);
/* trace != 0: record every step's input bits and output probabilities. */
BLD_API bld_status *bld_request_set_trace(bld_request *request, int trace);
/* Called after each step (1..num_steps) of each chunk with the chunk's current bits
 * (batch x L x C, valid during the call); returning 0 cancels (BLD_ERROR_CANCELLED). */
typedef int (*bld_step_callback)(void *user, int64_t step, int64_t num_steps,
                                 const uint8_t *bits, size_t batch);
BLD_API bld_status *bld_request_set_callback(bld_request *request, bld_step_callback callback,
                                             void *user);
/* profile != 0: time the stages of the generation (bld_generation_get_profile). */
BLD_API bld_status *bld_request_set_profile(bld_request *request, int profile);

BLD_API bld_status *bld_pipeline_generate(bld_pipeline *pipeline, const bld_request *request,
                                          bld_generation **out);
BLD_API void bld_generation_free(bld_generation *generation);
BLD_API size_t bld_generation_count(const bld_generation *generation);
/* uint8 (N, H, W, channels) */
BLD_API const uint8_t *bld_generation_images(const bld_generation *generation, size_t *size);
/* uint8 0/1 (N, L, C) */
BLD_API const uint8_t *bld_generation_bits(const bld_generation *generation, size_t *size);
BLD_API const uint64_t *bld_generation_seeds(const bld_generation *generation);
BLD_API const int64_t *bld_generation_classes(const bld_generation *generation);
/* With trace: uint8 (K, N, L, C) bits fed to each step, float (K, N, L, C) what it returned;
 * NULL without trace. */
BLD_API const uint8_t *bld_generation_trace_states(const bld_generation *generation,
                                                   size_t *size);
BLD_API const float *bld_generation_trace_probs(const bld_generation *generation, size_t *size);

/* Seconds spent in each stage of a profiled generation: initial (request and initial draw),
 * per step call the step graph (step_model) and the draw (step_sampling), decode (the decoder
 * graphs), total (the whole call, checks and uint8 conversion included). With chunks, steps =
 * K * chunks. The arrays live as long as the generation. Returns 0 if it was not profiled. */
typedef struct bld_profile {
    double total, initial, decode;
    size_t steps;
    const double *step_model, *step_sampling;
} bld_profile;
BLD_API int bld_generation_get_profile(const bld_generation *generation, bld_profile *out);

/* --- autoencoder ------------------------------------------------------------------------- */
/* uint8 images (n, H, W, ch) -> float (n, L, C) bit probabilities. */
BLD_API bld_status *bld_pipeline_encode_probs(bld_pipeline *pipeline, const uint8_t *images,
                                              size_t n, float *probs_out);
/* Deterministic: bits = p > 0.5. */
BLD_API bld_status *bld_pipeline_encode(bld_pipeline *pipeline, const uint8_t *images, size_t n,
                                        uint8_t *bits_out);
/* Seeded: each bit drawn from p with Philox subsequence 0 of its image's seed. */
BLD_API bld_status *bld_pipeline_encode_seeded(bld_pipeline *pipeline, const uint8_t *images,
                                               size_t n, const uint64_t *seeds,
                                               uint8_t *bits_out);
/* bits (n, L, C) 0/1 -> uint8 images (n, H, W, ch). */
BLD_API bld_status *bld_pipeline_decode(bld_pipeline *pipeline, const uint8_t *bits, size_t n,
                                        uint8_t *images_out);

/* --- packed bits (numpy.packbits(..., bitorder="little") per image) and .bldz files ------ */
BLD_API size_t bld_packed_bytes(size_t tokens, size_t bits);
BLD_API bld_status *bld_pack_bits(const uint8_t *bits, size_t batch, size_t tokens, size_t bits_per_token,
                                  uint8_t *packed_out);
BLD_API bld_status *bld_unpack_bits(const uint8_t *packed, size_t batch, size_t tokens,
                                    size_t bits_per_token, uint8_t *bits_out);
/* Write (batch, H*W, C) bits as a .bldz file, atomically. */
BLD_API bld_status *bld_save_bits(const char *path, const uint8_t *bits, size_t batch,
                                  size_t latent_height, size_t latent_width,
                                  size_t latent_bits);
/* Read a .bldz file that must hold latents of the given shape; *batch_out gets its count. */
BLD_API bld_status *bld_load_bits(const char *path, size_t latent_height, size_t latent_width,
                                  size_t latent_bits, bld_buffer **bits_out, size_t *batch_out);

/* --- images: PNG files and grids (bld_runtime/images.py) --------------------------------- */
/* Write one uint8 image (H, W, 1 or 3) as an 8-bit grayscale or RGB PNG, atomically. */
BLD_API bld_status *bld_save_png(const char *path, const uint8_t *image, size_t height, size_t width,
                                 size_t channels);
/* Read an 8-bit grayscale or RGB PNG that must be exactly H x W x channels (no conversion). */
BLD_API bld_status *bld_load_png(const char *path, size_t height, size_t width, size_t channels,
                                 uint8_t *image_out);
/* Tile n images in rows of cols (0: ceil(sqrt(n))) with 2 black pixels between and around. */
BLD_API bld_status *bld_make_grid(const uint8_t *images, size_t n, size_t height, size_t width,
                                  size_t channels, size_t cols, bld_buffer **grid_out,
                                  size_t *grid_height, size_t *grid_width);

BLD_API const uint8_t *bld_buffer_data(const bld_buffer *buffer, size_t *size);
BLD_API void bld_buffer_free(bld_buffer *buffer);

#ifdef __cplusplus
}
#endif
#endif /* BLD_H */
