# philox_source.hpp, the draw kernels' source as text for NVRTC, from the one Philox source and
# the one kernel source. Included by CMakeLists.txt (BLD_WITH_TENSORRT) and run as a script by
# scripts/check_tensorrt_build.sh:
#   cmake -DBLD_PHILOX_DIR=runtime/bld_runtime/csrc -DBLD_PHILOX_OUT=DIR/philox_source.hpp -P ...
file(READ ${BLD_PHILOX_DIR}/bld_philox.h BLD_PHILOX_SOURCE)
file(READ ${BLD_PHILOX_DIR}/bld_kernels.cu BLD_KERNELS_SOURCE)
configure_file(${CMAKE_CURRENT_LIST_DIR}/philox_source.hpp.in ${BLD_PHILOX_OUT} @ONLY)
