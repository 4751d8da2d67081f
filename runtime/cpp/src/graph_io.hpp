// The graph I/O of bundle format v1, checked in three places: the manifest's per-graph inputs
// and outputs must be what the role takes (the names, dtypes and per-image sizes below), the
// graph file must have exactly the manifest's I/O, and its `bld.graph` metadata must agree with
// the manifest. The backends then bind tensors by the manifest's names and shapes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "manifest.hpp"

namespace bld::core {

struct IoSlot {
    std::string name;
    std::string dtype;
    int64_t per_image;  // elements per image (the product of the non-batch dimensions)
};

struct RoleIo {
    std::vector<IoSlot> inputs, outputs;
};

// What a role (encoder, decoder, step, step_guided) takes and returns for this manifest.
RoleIo role_io(const std::string &role, const Manifest &manifest);

// Elements per image of a manifest tensor: the product of its fixed dimensions after the
// first (the batch axis, which must be dynamic). -1 when a later dimension is dynamic too.
int64_t per_image(const TensorSpec &spec);

// Refuse a manifest graph whose inputs/outputs differ from role_io (BLD_ERROR_MANIFEST).
void check_manifest_io(const std::string &graph, const std::string &role, const Manifest &manifest);

// Compare a graph's `bld.graph` metadata (JSON text; empty when the graph has none) with the
// manifest; refuse a mismatch naming the graph and the key (BLD_ERROR_MANIFEST).
void check_graph_metadata(const std::string &graph, const std::string &role,
                          const std::string &metadata, const Manifest &manifest);

}  // namespace bld::core
