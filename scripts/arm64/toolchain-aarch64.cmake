# Cross-compiling the C++ runtime for aarch64 Linux with Debian's g++-aarch64-linux-gnu,
# against the libraries of an arm64 root (scripts/arm64/setup.sh) as the sysroot:
#   cmake -S runtime/cpp -B BUILD -DCMAKE_TOOLCHAIN_FILE=scripts/arm64/toolchain-aarch64.cmake \
#         -DBLD_ARM64_ROOT=ROOT -DONNXRUNTIME_ROOT=...
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
if(NOT BLD_ARM64_ROOT)
  set(BLD_ARM64_ROOT "$ENV{BLD_ARM64_ROOT}")
endif()
if(NOT BLD_ARM64_ROOT)
  message(FATAL_ERROR "Set BLD_ARM64_ROOT to the arm64 root (scripts/arm64/setup.sh prints it)")
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES BLD_ARM64_ROOT)  # try_compile projects too
set(CMAKE_SYSROOT "${BLD_ARM64_ROOT}")
set(CMAKE_FIND_ROOT_PATH "${BLD_ARM64_ROOT}")
# Programs from the host; headers, libraries and packages from the root first, then from
# absolute paths given outside it (ONNXRUNTIME_ROOT).
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# Tests (try_run) cannot run on the host without emulation.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static;-L;${BLD_ARM64_ROOT})
