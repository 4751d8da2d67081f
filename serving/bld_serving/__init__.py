"""bld_serving: Triton Inference Server model repositories for bld bundles.

`repository` writes them (bld-export triton), `configs` builds and checks their
config.pbtxt, `models/` holds the Python-backend model files, and `local_server` runs a real
tritonserver on 127.0.0.1 for tests and `make serve`. Depends on bld_runtime, never the
other way round.
"""
