/**
 * @file bld.h
 * @brief The C ABI of the bld runtime (Binary Latent Diffusion bundles, bld.json format v1).
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
 *
 * @code
 * bld_pipeline *pipe = NULL;
 * bld_status *status = bld_pipeline_load("runs/digits/bundle", NULL, &pipe);
 * if (status) {
 *     fprintf(stderr, "error: %s\n", bld_status_message(status));
 *     bld_status_free(status);
 *     return 1;
 * }
 * @endcode
 */
#ifndef BLD_H
#define BLD_H

#include <stddef.h>
#include <stdint.h>

/** Marks the exported symbols of the shared library. */
#if defined(_WIN32)
#define BLD_API __declspec(dllexport)
#else
#define BLD_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version this header declares; bld_abi_version() returns the library's. */
#define BLD_ABI_VERSION 1

/** What went wrong; mirrors bld_runtime.errors (BUNDLE_INTEGRITY is a kind of MANIFEST). */
typedef enum bld_error_kind {
    BLD_ERROR_CONTRACT = 1,            /**< ContractError */
    BLD_ERROR_MANIFEST = 2,            /**< ManifestError */
    BLD_ERROR_BUNDLE_INTEGRITY = 3,    /**< BundleIntegrityError: missing/altered/escaping files */
    BLD_ERROR_INVALID_REQUEST = 4,     /**< InvalidRequestError */
    BLD_ERROR_BACKEND_UNAVAILABLE = 5, /**< BackendUnavailableError */
    BLD_ERROR_PACKED_BITS = 6,         /**< PackedBitsError */
    BLD_ERROR_CANCELLED = 7,           /**< CancelledError: the step callback returned 0 */
    BLD_ERROR_IO = 8,                  /**< a file that cannot be read or written */
    BLD_ERROR_INTERNAL = 9             /**< a bug or an allocation failure */
} bld_error_kind;

/** An error: its kind and one sentence. NULL stands for success. */
typedef struct bld_status bld_status;
/** Key/value settings for bld_pipeline_load. */
typedef struct bld_options bld_options;
/** A loaded bundle on a backend; safe to share between threads. */
typedef struct bld_pipeline bld_pipeline;
/** What to generate: seeds, classes, guidance, temperature, mask, callbacks. */
typedef struct bld_request bld_request;
/** The result of bld_pipeline_generate: images, bits, seeds, classes, trace, profile. */
typedef struct bld_generation bld_generation;
/** A byte array the library allocated (loaded bits, a grid); freed by bld_buffer_free. */
typedef struct bld_buffer bld_buffer;

/**
 * @brief The library's ABI version.
 * @return BLD_ABI_VERSION as the library was built; compare it with the header's.
 */
BLD_API int bld_abi_version(void);
/**
 * @brief The library's version, the bld package version it was built with.
 * @return A static string, e.g. "0.1.0".
 */
BLD_API const char *bld_version(void);
/**
 * @brief The bundle format the library reads.
 * @return A static string, "bld-bundle v1" (bld.json's "format" and its version).
 */
BLD_API const char *bld_bundle_format(void);
/**
 * @brief The version of ONNX Runtime the library runs on (the loaded library's, not the
 * headers').
 * @return A static string, e.g. "1.21.0".
 */
BLD_API const char *bld_onnxruntime_version(void);

/**
 * @brief The kind of an error.
 * @param status A non-NULL status returned by a failing call.
 * @return Its kind; BLD_ERROR_INTERNAL for NULL.
 */
BLD_API bld_error_kind bld_status_kind(const bld_status *status);
/**
 * @brief The error's sentence, the one the Python runtime raises for the same input.
 * @param status A status returned by a failing call.
 * @return A string that lives as long as the status; "" for NULL.
 */
BLD_API const char *bld_status_message(const bld_status *status);
/**
 * @brief Free a status (NULL is fine).
 * @param status A status returned by any call.
 */
BLD_API void bld_status_free(bld_status *status);

/* --- options: key/value settings, checked when set ---------------------------------------- */
/**
 * @brief Create options holding the defaults.
 *
 * The keys bld_options_set takes:
 * - backend: cpu (default) | cuda | tensorrt-ep (onnxruntime providers) | tensorrt
 *   (openvino is the Python runtime's only: refused here in its sentence)
 *   (native, when built with BLD_WITH_TENSORRT)
 * - precision: fp32 (default) | fp16 (the bundle's *_fp16 graphs) | int8 (the bundle's *_int8
 *   step graphs; backend cpu, on CPUs with VNNI or AMX-INT8, or tensorrt, engines of them);
 *   bf16 is openvino's only
 * - intra_op_threads, inter_op_threads: integers >= 0 (0: onnxruntime's default)
 * - graph_optimization: disable | basic | extended | all (default)
 * - device_id: CUDA device, integer >= 0
 * - trt_cache_dir: engine cache folder (tensorrt-ep, tensorrt)
 * - trt_fp16: true | false
 * - stop_spinning: true (default) | false: park onnxruntime's threads after each call
 * - thread_pool: session (default; a pool per graph session) | shared: one onnxruntime pool for
 *   the process, shared by the step graphs and the decoder and spinning between steps (faster
 *   at small batches). onnxruntime makes that pool with its environment, which is one per
 *   process: the first pipeline loaded decides whether there is one and its size, so a shared
 *   pipeline after a session one, or with other thread counts than the first shared one, is
 *   refused (BLD_ERROR_INVALID_REQUEST); session pipelines after shared ones keep their own
 *   pools.
 * - pin_threads: false (default) | true, with thread_pool shared only (else refused): each of
 *   the shared pool's threads on a usable core of its own and the thread that calls
 *   bld_pipeline_generate on the first usable core for the call (its CPUs are given back after
 *   it; one call at a time holds that core, concurrent calls run unpinned; the on_step callback
 *   runs pinned, and threads it starts keep that mask). On a 2-core VM this kept the pool's
 *   spinning thread off the caller's core: batch-1 generations of the digits model no longer
 *   took twice their median (README, Speed). The first pipeline decides, as for the pool's
 *   size; more intra-op threads than usable cores is refused (BLD_ERROR_INVALID_REQUEST). The
 *   native tensorrt backend never pins.
 * - verify_hashes: true (default) | false
 *
 * @param[out] out The new options, to free with bld_options_free.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST when out is NULL.
 */
BLD_API bld_status *bld_options_create(bld_options **out);
/**
 * @brief Set one option (see bld_options_create for the keys), checked now.
 * @param options The options to change.
 * @param key An option's name.
 * @param value Its value as text ("4", "true", "fp16", ...).
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for an unknown key or a value it does not
 *         take (backend and precision are checked when the pipeline is loaded).
 */
BLD_API bld_status *bld_options_set(bld_options *options, const char *key, const char *value);
/**
 * @brief Free options (NULL is fine).
 * @param options Options from bld_options_create.
 */
BLD_API void bld_options_free(bld_options *options);

/* --- pipeline ---------------------------------------------------------------------------- */
/**
 * @brief Load a bundle directory (or its bld.json): manifest, paths, hashes, then the graphs
 * of the chosen precision onto the backend. options may be NULL (defaults).
 * @param bundle The bundle's folder, or its bld.json.
 * @param options Settings, or NULL for the defaults; the pipeline keeps a copy.
 * @param[out] out The loaded pipeline, to free with bld_pipeline_free.
 * @return NULL on success; else BLD_ERROR_MANIFEST or BLD_ERROR_BUNDLE_INTEGRITY (the bundle
 *         does not check), BLD_ERROR_BACKEND_UNAVAILABLE (the backend cannot run here),
 *         BLD_ERROR_INVALID_REQUEST (NULL arguments), BLD_ERROR_IO.
 */
BLD_API bld_status *bld_pipeline_load(const char *bundle, const bld_options *options,
                                      bld_pipeline **out);
/**
 * @brief Free a pipeline (NULL is fine); no call may still be using it.
 * @param pipeline A pipeline from bld_pipeline_load.
 */
BLD_API void bld_pipeline_free(bld_pipeline *pipeline);

/**
 * The bundle's shapes and defaults (bld.json), as bld_pipeline_get_info reports them.
 */
typedef struct bld_pipeline_info {
    /**
     * @var bld_pipeline_info::image_height
     * H, one image's height in pixels.
     * @var bld_pipeline_info::image_width
     * W, one image's width in pixels.
     * @var bld_pipeline_info::image_channels
     * 1 (grayscale) or 3 (RGB).
     * @var bld_pipeline_info::latent_height
     * The latent's height in tokens.
     * @var bld_pipeline_info::latent_width
     * The latent's width in tokens.
     * @var bld_pipeline_info::latent_bits
     * C, the bits per token; L = latent_height * latent_width tokens.
     * @var bld_pipeline_info::default_guidance
     * The guidance scale a request that gives none gets.
     * @var bld_pipeline_info::default_temperature
     * The temperature a request that gives none gets.
     */
    int64_t image_height, image_width, image_channels;
    int64_t latent_height, latent_width, latent_bits; /* L = height * width tokens of bits */
    int64_t num_classes;  /**< the null class (unconditional) is num_classes */
    int64_t num_steps;    /**< K */
    int64_t max_batch;    /**< the largest batch of one graph call */
    double default_guidance, default_temperature;
} bld_pipeline_info;

/**
 * @brief Read the bundle's shapes and defaults.
 * @param pipeline A loaded pipeline.
 * @param[out] out Filled in; nothing happens when either pointer is NULL.
 */
BLD_API void bld_pipeline_get_info(const bld_pipeline *pipeline, bld_pipeline_info *out);

/* --- generation requests ----------------------------------------------------------------- */
/**
 * @brief Create a request for one image, seed 0, unconditional, the bundle's defaults.
 * @param[out] out The new request, to free with bld_request_free.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST when out is NULL.
 */
BLD_API bld_status *bld_request_create(bld_request **out);
/**
 * @brief Free a request (NULL is fine).
 * @param request A request from bld_request_create.
 */
BLD_API void bld_request_free(bld_request *request);
/**
 * @brief n images with seeds base, base + 1, ... (mod 2^64). The default is one image, seed 0.
 * @param request The request.
 * @param base The first image's seed.
 * @param n How many images (0 is refused when generating).
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST when request is NULL.
 */
BLD_API bld_status *bld_request_set_seed_range(bld_request *request, uint64_t base, size_t n);
/**
 * @brief One seed per image.
 * @param request The request.
 * @param seeds n seeds, copied (NULL only when n is 0).
 * @param n How many images.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for NULL arguments.
 */
BLD_API bld_status *bld_request_set_seeds(bld_request *request, const uint64_t *seeds, size_t n);
/**
 * @brief The class of each image. count 0: unconditional (default); 1: one class for all;
 * else one per image. Each must be in [0, num_classes] (num_classes: unconditional); checked
 * when generating.
 * @param request The request.
 * @param classes count class indices, copied (NULL only when count is 0).
 * @param count 0, 1 or the number of images.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for NULL arguments.
 */
BLD_API bld_status *bld_request_set_classes(bld_request *request, const int64_t *classes,
                                            size_t count);
/**
 * @brief Classifier-free guidance scales (>= 0). count 0: the bundle's default; 1: one for
 * all; else one per image. Checked when generating.
 * @param request The request.
 * @param guidance count values, copied (NULL only when count is 0).
 * @param count 0, 1 or the number of images.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for NULL arguments.
 */
BLD_API bld_status *bld_request_set_guidance(bld_request *request, const double *guidance,
                                             size_t count);
/**
 * @brief Sampling temperatures (> 0), counted like guidance. Checked when generating.
 * @param request The request.
 * @param temperature count values, copied (NULL only when count is 0).
 * @param count 0 (the bundle's default), 1 (one for all) or the number of images.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for NULL arguments.
 */
BLD_API bld_status *bld_request_set_temperature(bld_request *request, const double *temperature,
                                                size_t count);
/**
 * @brief Inpainting in latent space: where mask is 1 the known bit is kept. Both are uint8 0/1
 * of shape (rows, tokens, bits), rows 1 (all images) or one per image; NULL clears. The
 * shapes and values are checked when generating.
 * @param request The request.
 * @param mask rows * tokens * bits values, copied; NULL for none.
 * @param known_bits As many values, copied; NULL for none (a mask needs them).
 * @param rows 1, or the number of images.
 * @param tokens L, the bundle's latent tokens.
 * @param bits C, the bundle's bits per token.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST when request is NULL.
 */
BLD_API bld_status *bld_request_set_mask(bld_request *request, const uint8_t *mask,
                                         const uint8_t *known_bits, size_t rows, size_t tokens,
                                         size_t bits);
/**
 * @brief chunk != 0 (default): batches above max_batch run in chunks; 0 makes them an error.
 * @param request The request.
 * @param chunk Nonzero to chunk.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST when request is NULL.
 */
BLD_API bld_status *bld_request_set_chunk(bld_request *request, int chunk);
/**
 * @brief trace != 0: record every step's input bits and output probabilities.
 * @param request The request.
 * @param trace Nonzero to trace (bld_generation_trace_states, bld_generation_trace_probs).
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST when request is NULL.
 */
BLD_API bld_status *bld_request_set_trace(bld_request *request, int trace);
/**
 * @brief Called after each step (1..num_steps) of each chunk with the chunk's current bits
 * (batch x L x C, valid during the call); returning 0 cancels (BLD_ERROR_CANCELLED).
 * @param user The pointer given to bld_request_set_callback.
 * @param step The step just taken, 1..num_steps.
 * @param num_steps K.
 * @param bits The chunk's bits, uint8 0/1 (batch, L, C); valid only during the call.
 * @param batch The chunk's images.
 * @return Nonzero to go on, 0 to cancel the generation.
 */
typedef int (*bld_step_callback)(void *user, int64_t step, int64_t num_steps,
                                 const uint8_t *bits, size_t batch);
/**
 * @brief Call callback after every step (see bld_step_callback).
 * @param request The request.
 * @param callback The function, or NULL for none.
 * @param user Passed to it as is.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST when request is NULL.
 */
BLD_API bld_status *bld_request_set_callback(bld_request *request, bld_step_callback callback,
                                             void *user);
/**
 * @brief profile != 0: time the stages of the generation (bld_generation_get_profile).
 * @param request The request.
 * @param profile Nonzero to time.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST when request is NULL.
 */
BLD_API bld_status *bld_request_set_profile(bld_request *request, int profile);

/**
 * @brief Generate the request's images: the same bits and pixels as the Python runtime for
 * the same bundle, backend and request.
 * @param pipeline A loaded pipeline (may be shared by threads).
 * @param request The request (read only; it may be reused).
 * @param[out] out The result, to free with bld_generation_free.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for a request out of range (the Python
 *         runtime's sentence), BLD_ERROR_CANCELLED when the callback returned 0, else the
 *         backend's error.
 */
BLD_API bld_status *bld_pipeline_generate(bld_pipeline *pipeline, const bld_request *request,
                                          bld_generation **out);
/**
 * @brief Free a generation (NULL is fine); its arrays go with it.
 * @param generation A result of bld_pipeline_generate.
 */
BLD_API void bld_generation_free(bld_generation *generation);
/**
 * @brief The number of images N.
 * @param generation A result of bld_pipeline_generate.
 * @return N; 0 for NULL.
 */
BLD_API size_t bld_generation_count(const bld_generation *generation);
/**
 * @brief The images, uint8 (N, H, W, channels).
 * @param generation A result of bld_pipeline_generate (not NULL).
 * @param[out] size Set to the number of bytes when not NULL.
 * @return The pixels, valid as long as the generation.
 */
BLD_API const uint8_t *bld_generation_images(const bld_generation *generation, size_t *size);
/**
 * @brief The final latent bits, uint8 0/1 (N, L, C).
 * @param generation A result of bld_pipeline_generate (not NULL).
 * @param[out] size Set to the number of bytes when not NULL.
 * @return The bits, valid as long as the generation.
 */
BLD_API const uint8_t *bld_generation_bits(const bld_generation *generation, size_t *size);
/**
 * @brief Each image's seed.
 * @param generation A result of bld_pipeline_generate (not NULL).
 * @return N seeds, valid as long as the generation.
 */
BLD_API const uint64_t *bld_generation_seeds(const bld_generation *generation);
/**
 * @brief Each image's class (num_classes for unconditional).
 * @param generation A result of bld_pipeline_generate (not NULL).
 * @return N classes, valid as long as the generation.
 */
BLD_API const int64_t *bld_generation_classes(const bld_generation *generation);
/**
 * @brief With trace: uint8 (K, N, L, C) bits fed to each step; NULL without trace.
 * @param generation A result of bld_pipeline_generate (not NULL).
 * @param[out] size Set to the number of bytes when not NULL (0 without trace).
 * @return The states, valid as long as the generation, or NULL.
 */
BLD_API const uint8_t *bld_generation_trace_states(const bld_generation *generation,
                                                   size_t *size);
/**
 * @brief With trace: float (K, N, L, C), what each step returned; NULL without trace.
 * @param generation A result of bld_pipeline_generate (not NULL).
 * @param[out] size Set to the number of floats when not NULL (0 without trace).
 * @return The probabilities, valid as long as the generation, or NULL.
 */
BLD_API const float *bld_generation_trace_probs(const bld_generation *generation, size_t *size);

/**
 * Seconds spent in each stage of a profiled generation: initial (request and initial draw),
 * per step call the step graph (step_model) and the draw (step_sampling), decode (the decoder
 * graphs), total (the whole call, checks and uint8 conversion included). With chunks, steps =
 * K * chunks. The arrays live as long as the generation.
 */
typedef struct bld_profile {
    /**
     * @var bld_profile::total
     * The whole call, checks and uint8 conversion included.
     * @var bld_profile::initial
     * The request's checks and the initial draw.
     * @var bld_profile::decode
     * The decoder graphs.
     * @var bld_profile::steps
     * Step calls: K per chunk.
     * @var bld_profile::step_model
     * steps values: the step graph of each call.
     * @var bld_profile::step_sampling
     * steps values: the draw after each call.
     */
    double total, initial, decode;
    size_t steps;
    const double *step_model, *step_sampling;
} bld_profile;
/**
 * @brief The stage timings of a generation requested with bld_request_set_profile.
 * @param generation A result of bld_pipeline_generate.
 * @param[out] out Filled in when the generation was profiled.
 * @return 1 when out was filled in; 0 if it was not profiled (or either pointer is NULL).
 */
BLD_API int bld_generation_get_profile(const bld_generation *generation, bld_profile *out);

/* --- autoencoder ------------------------------------------------------------------------- */
/**
 * @brief uint8 images (n, H, W, ch) -> float (n, L, C) bit probabilities.
 * @param pipeline A loaded pipeline.
 * @param images n images of the bundle's shape.
 * @param n How many.
 * @param[out] probs_out Room for n * L * C floats; written only on success.
 * @return NULL on success; else an error (NULL arguments, the backend's error).
 */
BLD_API bld_status *bld_pipeline_encode_probs(bld_pipeline *pipeline, const uint8_t *images,
                                              size_t n, float *probs_out);
/**
 * @brief Deterministic: bits = p > 0.5.
 * @param pipeline A loaded pipeline.
 * @param images n images of the bundle's shape.
 * @param n How many.
 * @param[out] bits_out Room for n * L * C bytes (0/1); written only on success.
 * @return NULL on success; else an error.
 */
BLD_API bld_status *bld_pipeline_encode(bld_pipeline *pipeline, const uint8_t *images, size_t n,
                                        uint8_t *bits_out);
/**
 * @brief Seeded: each bit drawn from p with Philox subsequence 0 of its image's seed.
 * @param pipeline A loaded pipeline.
 * @param images n images of the bundle's shape.
 * @param n How many.
 * @param seeds n seeds, one per image.
 * @param[out] bits_out Room for n * L * C bytes (0/1); written only on success.
 * @return NULL on success; else an error.
 */
BLD_API bld_status *bld_pipeline_encode_seeded(bld_pipeline *pipeline, const uint8_t *images,
                                               size_t n, const uint64_t *seeds,
                                               uint8_t *bits_out);
/**
 * @brief bits (n, L, C) 0/1 -> uint8 images (n, H, W, ch).
 * @param pipeline A loaded pipeline.
 * @param bits n latents, uint8 0/1.
 * @param n How many.
 * @param[out] images_out Room for n * H * W * ch bytes; written only on success.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for a value other than 0 and 1, else an
 *         error.
 */
BLD_API bld_status *bld_pipeline_decode(bld_pipeline *pipeline, const uint8_t *bits, size_t n,
                                        uint8_t *images_out);

/* --- packed bits (numpy.packbits(..., bitorder="little") per image) and .bldz files ------ */
/**
 * @brief Bytes per image of a packed L x C latent.
 * @param tokens L.
 * @param bits C.
 * @return ceil(L * C / 8).
 */
BLD_API size_t bld_packed_bytes(size_t tokens, size_t bits);
/**
 * @brief Pack (batch, L, C) 0/1 values, little bit order over each image's flat index.
 * @param bits batch * L * C values, 0 or 1.
 * @param batch Images.
 * @param tokens L.
 * @param bits_per_token C.
 * @param[out] packed_out Room for batch * bld_packed_bytes(L, C) bytes.
 * @return NULL on success; BLD_ERROR_PACKED_BITS for a value other than 0 and 1.
 */
BLD_API bld_status *bld_pack_bits(const uint8_t *bits, size_t batch, size_t tokens, size_t bits_per_token,
                                  uint8_t *packed_out);
/**
 * @brief Unpack what bld_pack_bits made.
 * @param packed batch * bld_packed_bytes(L, C) bytes.
 * @param batch Images.
 * @param tokens L.
 * @param bits_per_token C.
 * @param[out] bits_out Room for batch * L * C bytes (0/1).
 * @return NULL on success; BLD_ERROR_PACKED_BITS when a pad bit is set.
 */
BLD_API bld_status *bld_unpack_bits(const uint8_t *packed, size_t batch, size_t tokens,
                                    size_t bits_per_token, uint8_t *bits_out);
/**
 * @brief Write (batch, H*W, C) bits as a .bldz file, atomically.
 * @param path The file, ending in .bldz (bld_runtime.bits' format).
 * @param bits batch * H * W * C values, 0 or 1.
 * @param batch Latents (1 .. 2^32 - 1).
 * @param latent_height H, in tokens.
 * @param latent_width W, in tokens.
 * @param latent_bits C.
 * @return NULL on success; BLD_ERROR_PACKED_BITS for another suffix, sizes a .bldz cannot
 *         hold or bits that are not 0/1; BLD_ERROR_IO when the file cannot be written.
 */
BLD_API bld_status *bld_save_bits(const char *path, const uint8_t *bits, size_t batch,
                                  size_t latent_height, size_t latent_width,
                                  size_t latent_bits);
/**
 * @brief Read a .bldz file that must hold latents of the given shape; *batch_out gets its
 * count.
 * @param path The file.
 * @param latent_height H, in tokens.
 * @param latent_width W, in tokens.
 * @param latent_bits C.
 * @param[out] bits_out The bits, uint8 0/1 (batch, H*W, C), to free with bld_buffer_free.
 * @param[out] batch_out The number of latents.
 * @return NULL on success; BLD_ERROR_PACKED_BITS for a file that is truncated, corrupt (crc32)
 *         or of another shape; BLD_ERROR_IO when it cannot be read.
 */
BLD_API bld_status *bld_load_bits(const char *path, size_t latent_height, size_t latent_width,
                                  size_t latent_bits, bld_buffer **bits_out, size_t *batch_out);

/* --- images: PNG files and grids (bld_runtime/images.py) --------------------------------- */
/**
 * @brief Write one uint8 image (H, W, 1 or 3) as an 8-bit grayscale or RGB PNG, atomically.
 * @param path The file.
 * @param image height * width * channels bytes.
 * @param height H.
 * @param width W.
 * @param channels 1 or 3.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for another channel count; BLD_ERROR_IO.
 */
BLD_API bld_status *bld_save_png(const char *path, const uint8_t *image, size_t height, size_t width,
                                 size_t channels);
/**
 * @brief Read an 8-bit grayscale or RGB PNG that must be exactly H x W x channels (no
 * conversion).
 * @param path The file.
 * @param height H it must have.
 * @param width W it must have.
 * @param channels 1 or 3, which it must have.
 * @param[out] image_out Room for height * width * channels bytes.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for another size or mode or a file that
 *         is not such a PNG; BLD_ERROR_IO.
 */
BLD_API bld_status *bld_load_png(const char *path, size_t height, size_t width, size_t channels,
                                 uint8_t *image_out);
/**
 * @brief Tile n images in rows of cols (0: ceil(sqrt(n))) with 2 black pixels between and
 * around.
 * @param images n * height * width * channels bytes.
 * @param n Images (>= 1).
 * @param height H of each.
 * @param width W of each.
 * @param channels Of each.
 * @param cols Tiles per row; 0 for ceil(sqrt(n)).
 * @param[out] grid_out The grid, uint8 (grid_height, grid_width, channels), to free with
 *             bld_buffer_free.
 * @param[out] grid_height Its height.
 * @param[out] grid_width Its width.
 * @return NULL on success; BLD_ERROR_INVALID_REQUEST for NULL arguments or no images.
 */
BLD_API bld_status *bld_make_grid(const uint8_t *images, size_t n, size_t height, size_t width,
                                  size_t channels, size_t cols, bld_buffer **grid_out,
                                  size_t *grid_height, size_t *grid_width);

/**
 * @brief A buffer's bytes.
 * @param buffer A buffer from bld_load_bits or bld_make_grid (not NULL).
 * @param[out] size Set to the number of bytes when not NULL.
 * @return The bytes, valid as long as the buffer; NULL when it is empty.
 */
BLD_API const uint8_t *bld_buffer_data(const bld_buffer *buffer, size_t *size);
/**
 * @brief Free a buffer (NULL is fine).
 * @param buffer A buffer from bld_load_bits or bld_make_grid.
 */
BLD_API void bld_buffer_free(bld_buffer *buffer);

#ifdef __cplusplus
}
#endif
#endif /* BLD_H */
