# jax.cmake: adamcore._jax_ffi, the XLA FFI handlers for JAX (cpp/jax/jax_ffi.cpp), included from
# CMakeLists.txt inside the Python block. Built only when the Python that builds adamcore has
# jax, whose jaxlib ships the XLA FFI headers; without jax the build is as before.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "import jax.ffi; print(jax.ffi.include_dir())"
  OUTPUT_VARIABLE ADAMCORE_XLA_FFI_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _adamcore_jax_found ERROR_QUIET)
if(NOT _adamcore_jax_found EQUAL 0)
  # pip's isolated build environment hides the target environment's packages: look for jaxlib's
  # headers where that environment installs packages (it has them once jax is installed there)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import sysconfig, os; print(os.path.join(sysconfig.get_paths()['platlib'], 'jaxlib', 'include'))"
    OUTPUT_VARIABLE ADAMCORE_XLA_FFI_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _adamcore_jax_found ERROR_QUIET)
endif()
if(_adamcore_jax_found EQUAL 0 AND EXISTS "${ADAMCORE_XLA_FFI_INCLUDE}/xla/ffi/api/ffi.h")
  message(STATUS "adamcore: JAX FFI module ON (XLA FFI headers in ${ADAMCORE_XLA_FFI_INCLUDE})")
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
else()
  message(STATUS "adamcore: JAX FFI module OFF (jax not importable by ${Python_EXECUTABLE})")
endif()
