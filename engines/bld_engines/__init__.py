"""bld_engines: TensorRT engines for bld bundles (TensorRT 10, 11 and TensorRT-RTX).

It builds (builder.py), caches (bld_runtime.engine_cache, shared with the runtime's loader),
writes trtexec lines for devices (trtexec.py) and adds `bld-export engine` and `bld-export
doctor` (cli.py, doctor.py). It imports bld_runtime, never bld_train or torch.
"""
