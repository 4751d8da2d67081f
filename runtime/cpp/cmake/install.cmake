# Installs headers, libbld.so + libbld.a, bld-cpp and the package config, so that an app does
#   find_package(bld REQUIRED)
#   target_link_libraries(app PRIVATE bld::bld)        # or bld::bld_static
include(CMakePackageConfigHelpers)

install(FILES include/bld/bld.h include/bld/bld.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/bld)
install(TARGETS bld bld_static EXPORT bldTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS bld-cpp RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
set_target_properties(bld-cpp PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")

set(BLD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/bld)
install(EXPORT bldTargets NAMESPACE bld:: DESTINATION ${BLD_CMAKE_DIR})
configure_package_config_file(cmake/bldConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/bldConfig.cmake
                              INSTALL_DESTINATION ${BLD_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/bldConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/bldConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/bldConfigVersion.cmake
        DESTINATION ${BLD_CMAKE_DIR})
