# Overlay port: builds the rtdefer checkout this file lives in (packaging/vcpkg/ports/rtdefer/).
# A copy for the vcpkg registry replaces the SOURCE_PATH line with
#   vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO <owner>/rtdefer REF "v${VERSION}" SHA512 <hash>)
set(VCPKG_BUILD_TYPE release) # header-only: one configuration

cmake_path(ABSOLUTE_PATH CMAKE_CURRENT_LIST_DIR NORMALIZE OUTPUT_VARIABLE port_dir)
cmake_path(GET port_dir PARENT_PATH SOURCE_PATH) # ports/
cmake_path(GET SOURCE_PATH PARENT_PATH SOURCE_PATH) # vcpkg/
cmake_path(GET SOURCE_PATH PARENT_PATH SOURCE_PATH) # packaging/
cmake_path(GET SOURCE_PATH PARENT_PATH SOURCE_PATH) # the repository
if(NOT EXISTS "${SOURCE_PATH}/meson.build" OR NOT EXISTS "${SOURCE_PATH}/include/rtdefer/rtdefer.hpp")
    message(FATAL_ERROR "rtdefer: ${SOURCE_PATH} is not an rtdefer checkout")
endif()

if("uring" IN_LIST FEATURES)
    set(liburing enabled)
else()
    set(liburing disabled)
endif()

vcpkg_configure_meson(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -Dtests=false
        -Dbenchmarks=false
        -Dexamples=false
        -Dliburing=${liburing}
)
vcpkg_install_meson()

# Architecture independent: the CMake package is installed to datadir (share/cmake/rtdefer).
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/rtdefer)
# meson installs the .pc files to share/pkgconfig (header-only), but they carry `Libs: -pthread`,
# and vcpkg allows share/pkgconfig only for modules without Libs: they go to lib/pkgconfig.
file(GLOB pc_files "${CURRENT_PACKAGES_DIR}/share/pkgconfig/*.pc")
file(MAKE_DIRECTORY "${CURRENT_PACKAGES_DIR}/lib/pkgconfig")
foreach(pc IN LISTS pc_files)
    cmake_path(GET pc FILENAME name)
    file(RENAME "${pc}" "${CURRENT_PACKAGES_DIR}/lib/pkgconfig/${name}")
endforeach()
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/share/pkgconfig")
vcpkg_fixup_pkgconfig()

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
