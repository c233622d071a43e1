# jax.cmake: adamcore._jax_ffi, the XLA FFI handlers for JAX (cpp/jax/jax_ffi.cpp), included from
# CMakeLists.txt inside the Python block. The handlers need only the XLA FFI headers, which jaxlib
# ships (header-only: the module does not link against jaxlib, and XLA's FFI is versioned, so the
# module runs with the jaxlib installed next to it).
#
# ADAMCORE_JAX: AUTO builds the module where jaxlib's headers are found, ON requires them (the
# `adamcore.jax` config-setting sets it and puts jaxlib into the build environment, see
# pyproject.toml), OFF leaves the module out.
set(ADAMCORE_JAX AUTO CACHE STRING "Build adamcore._jax_ffi: AUTO (where jaxlib is found), ON, OFF")
set_property(CACHE ADAMCORE_JAX PROPERTY STRINGS AUTO ON OFF)

if(NOT ADAMCORE_JAX STREQUAL "OFF")
  # jaxlib's include directory, looked up without importing jax: first in the Python that builds
  # (pip's isolated build environment, where `-Cadamcore.jax=true` installs jaxlib), then where
  # the target environment installs packages (pip's isolation hides them, but they are there
  # when jax was installed before adamcore).
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c [=[
import importlib.util, os, sysconfig
spec = importlib.util.find_spec("jaxlib")
roots = list(spec.submodule_search_locations) if spec else []
roots.append(os.path.join(sysconfig.get_paths()["platlib"], "jaxlib"))
for root in roots:
    if os.path.isfile(os.path.join(root, "include", "xla", "ffi", "api", "ffi.h")):
        print(os.path.join(root, "include"))
        break
]=]
    OUTPUT_VARIABLE ADAMCORE_XLA_FFI_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()

if(ADAMCORE_XLA_FFI_INCLUDE)
  message(STATUS "adamcore: JAX FFI module ON (XLA FFI headers in ${ADAMCORE_XLA_FFI_INCLUDE})")
  # Compiled from a copy in the build directory, one per header content: jaxlib found in pip's
  # isolated build environment has a new path at every install, and a new include path would
  # recompile the module every time (as for nanobind in CMakeLists.txt).
  file(GLOB _xla_ffi_headers "${ADAMCORE_XLA_FFI_INCLUDE}/xla/ffi/api/*.h")
  set(_xla_ffi_text "")
  foreach(_header IN LISTS _xla_ffi_headers)
    file(SHA256 "${_header}" _sha)
    string(APPEND _xla_ffi_text "${_sha}")
  endforeach()
  string(SHA256 _xla_ffi_id "${_xla_ffi_text}")
  string(SUBSTRING "${_xla_ffi_id}" 0 16 _xla_ffi_id)
  set(_xla_ffi_copy "${CMAKE_BINARY_DIR}/xla-ffi-${_xla_ffi_id}")
  if(NOT EXISTS "${_xla_ffi_copy}/xla/ffi/api/ffi.h")
    file(COPY ${_xla_ffi_headers} DESTINATION "${_xla_ffi_copy}/xla/ffi/api")
  endif()
  set(ADAMCORE_XLA_FFI_INCLUDE "${_xla_ffi_copy}")
  nanobind_add_module(_jax_ffi NB_STATIC ${CMAKE_CURRENT_LIST_DIR}/jax_ffi.cpp)
  target_include_directories(_jax_ffi PRIVATE ${ADAMCORE_XLA_FFI_INCLUDE})
  adamcore_link_core(_jax_ffi)
  if(ADAMCORE_WITH_CUDA)
    # the CUDA handler, over the CUDA kernels on XLA's stream (the CPU core supplies validate.cpp)
    target_compile_definitions(_jax_ffi PRIVATE ADAMCORE_JAX_CUDA)
    target_include_directories(_jax_ffi PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../../cuda)
    target_link_libraries(_jax_ffi PRIVATE adamcore_cuda_objects CUDA::cudart_static)
  endif()
  install(TARGETS _jax_ffi LIBRARY DESTINATION adamcore)
elseif(ADAMCORE_JAX STREQUAL "ON")
  message(FATAL_ERROR "adamcore: ADAMCORE_JAX=ON but jaxlib's XLA FFI headers were not found by "
                      "${Python_EXECUTABLE} (install jaxlib, or build with -Cadamcore.jax=true)")
elseif(ADAMCORE_JAX STREQUAL "OFF")
  message(STATUS "adamcore: JAX FFI module OFF (ADAMCORE_JAX=OFF)")
else()
  message(STATUS "adamcore: JAX FFI module OFF (no jaxlib for ${Python_EXECUTABLE}; "
                 "-Cadamcore.jax=true builds it)")
endif()
