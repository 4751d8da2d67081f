"""Python-backend model files. `bld-export triton` copies each into a model version folder
as model.py, so a repository keeps the model code it was written with; they import only
numpy, bld_runtime and Triton's triton_python_backend_utils."""
