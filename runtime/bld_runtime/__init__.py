"""bld_runtime: the torch-free runtime for Binary Latent Diffusion bundles.

Where to look: the RNG is `philox`, the schedule and posterior math is `contract`,
the bundle manifest is `manifest`, the request rules are `request`, the 16-step loop is
`pipeline`, and the served models' protocol is `protocol` (its client: `remote`).
"""

__version__ = "0.1.0"
