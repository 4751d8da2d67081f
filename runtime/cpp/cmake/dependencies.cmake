# What libbld builds against. Each dependency is found here once; the package config
# (bldConfig.cmake.in) finds the same ones for static consumers.

# ONNX Runtime from ONNXRUNTIME_ROOT: release tarballs have include/ directly, install trees
# (Jetson builds) include/onnxruntime/ or include/onnxruntime/core/session/.
if(NOT ONNXRUNTIME_ROOT)
  message(FATAL_ERROR "Set ONNXRUNTIME_ROOT to an ONNX Runtime SDK (include/ and lib/): the "
                      "official release tarball, a Jetson build, or the folder that "
                      "runtime/cpp/scripts/setup_deps.sh fills (runtime/cpp/.deps/onnxruntime).")
endif()
get_filename_component(ONNXRUNTIME_ROOT "${ONNXRUNTIME_ROOT}" ABSOLUTE)
find_path(BLD_ORT_INCLUDE_DIR onnxruntime_cxx_api.h NO_DEFAULT_PATH
          PATHS "${ONNXRUNTIME_ROOT}/include" "${ONNXRUNTIME_ROOT}/include/onnxruntime"
                "${ONNXRUNTIME_ROOT}/include/onnxruntime/core/session")
find_library(BLD_ORT_LIBRARY onnxruntime NO_DEFAULT_PATH
             PATHS "${ONNXRUNTIME_ROOT}/lib" "${ONNXRUNTIME_ROOT}/lib64")
if(NOT BLD_ORT_INCLUDE_DIR OR NOT BLD_ORT_LIBRARY)
  message(FATAL_ERROR "ONNXRUNTIME_ROOT=${ONNXRUNTIME_ROOT} is not an ONNX Runtime SDK: it needs "
                      "onnxruntime_cxx_api.h under include/ and libonnxruntime under lib/ "
                      "(found header: ${BLD_ORT_INCLUDE_DIR}, library: ${BLD_ORT_LIBRARY}).")
endif()
get_filename_component(BLD_ORT_LIBDIR "${BLD_ORT_LIBRARY}" DIRECTORY)
add_library(bld::onnxruntime SHARED IMPORTED)
set_target_properties(bld::onnxruntime PROPERTIES
  IMPORTED_LOCATION "${BLD_ORT_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${BLD_ORT_INCLUDE_DIR}")
file(STRINGS "${BLD_ORT_INCLUDE_DIR}/onnxruntime_c_api.h" _ort_api REGEX "^#define ORT_API_VERSION ")
message(STATUS "ONNX Runtime: ${BLD_ORT_LIBRARY} (headers: ${_ort_api})")

find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(PNG REQUIRED)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json 3.2 REQUIRED)

# The native TensorRT backend: only on request, and then the headers must be there.
if(BLD_WITH_TENSORRT)
  set(TENSORRT_ROOT "$ENV{TENSORRT_ROOT}" CACHE PATH "TensorRT SDK (include/NvInfer.h, lib/)")
  find_package(CUDAToolkit)
  find_path(BLD_TRT_INCLUDE_DIR NvInfer.h HINTS "${TENSORRT_ROOT}/include"
            PATHS /usr/include/aarch64-linux-gnu /usr/include/x86_64-linux-gnu)
  find_library(BLD_TRT_LIBRARY nvinfer HINTS "${TENSORRT_ROOT}/lib"
               PATHS /usr/lib/aarch64-linux-gnu /usr/lib/x86_64-linux-gnu)
  if(NOT BLD_TRT_INCLUDE_DIR OR NOT BLD_TRT_LIBRARY OR NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::nvrtc)
    message(FATAL_ERROR "BLD_WITH_TENSORRT=ON needs the TensorRT headers and library (NvInfer.h, "
                        "libnvinfer) and the CUDA toolkit (cudart, the driver API, nvrtc); found "
                        "NvInfer.h: ${BLD_TRT_INCLUDE_DIR}, libnvinfer: ${BLD_TRT_LIBRARY}, CUDA "
                        "toolkit: ${CUDAToolkit_FOUND}. Set TENSORRT_ROOT to the TensorRT SDK "
                        "(JetPack installs it under /usr) or configure with -DBLD_WITH_TENSORRT=OFF.")
  endif()
  add_library(bld::tensorrt INTERFACE IMPORTED)
  set_target_properties(bld::tensorrt PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${BLD_TRT_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${BLD_TRT_LIBRARY};CUDA::cudart;CUDA::cuda_driver;CUDA::nvrtc")
endif()
