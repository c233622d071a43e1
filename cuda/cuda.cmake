# cuda.cmake: the optional CUDA backend (docs/architecture.md), included from CMakeLists.txt
# before any target exists (see there); adamcore_link_cuda_backend adds it to libadamcore.
#
#   ADAMCORE_CUDA=AUTO  build it when CMake finds a CUDA compiler (the default)
#   ADAMCORE_CUDA=ON    require it (configuring fails without a CUDA compiler)
#   ADAMCORE_CUDA=OFF   never build it
#
# With it, libadamcore's adamcore_cuda_* entry points run the kernels, and the Python build adds
# the module adamcore._cuda (adamcore_add_cuda_python_module below). The CUDA runtime is linked
# statically, so nothing needs libcudart at run time; only the driver (libcuda) is loaded, by
# the runtime, when a CUDA call is first made. Without a driver or a GPU, everything still
# imports and the backend reports why it cannot run.
set(ADAMCORE_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set_property(CACHE ADAMCORE_CUDA PROPERTY STRINGS AUTO ON OFF)
# A short list keeps CI's compile short: SASS for A100 (sm_80, also runs on sm_86/87/89) and H100
# (sm_90), plus compute_90 PTX that newer GPUs compile at load time.
set(ADAMCORE_CUDA_ARCHITECTURES "80-real;90" CACHE STRING
    "CUDA architectures of the kernels (CMAKE_CUDA_ARCHITECTURES syntax); ignored when CMAKE_CUDA_ARCHITECTURES or the CUDAARCHS environment variable is set")

set(ADAMCORE_WITH_CUDA OFF)
string(TOUPPER "${ADAMCORE_CUDA}" _adamcore_cuda_mode)
if(NOT _adamcore_cuda_mode MATCHES "^(AUTO|ON|OFF|TRUE|FALSE|YES|NO|1|0)$")
  message(FATAL_ERROR "adamcore: ADAMCORE_CUDA must be AUTO, ON or OFF, got '${ADAMCORE_CUDA}'")
endif()
if(NOT _adamcore_cuda_mode MATCHES "^(OFF|FALSE|NO|0)$")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Cached, as enable_language would cache its own default: every later configure (and every
    # generator) sees the same list. A -D or the CUDAARCHS environment variable wins.
    if((NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
       AND "$ENV{CUDAARCHS}" STREQUAL "")
      set(CMAKE_CUDA_ARCHITECTURES "${ADAMCORE_CUDA_ARCHITECTURES}" CACHE STRING
          "CUDA architectures (adamcore's default: ADAMCORE_CUDA_ARCHITECTURES)" FORCE)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(TARGET CUDA::cudart_static)
      set(ADAMCORE_WITH_CUDA ON)
      message(STATUS "adamcore: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                     "architectures ${CMAKE_CUDA_ARCHITECTURES}): one CUDA file, cuda/kernels.cu, "
                     "about 20 s on one core; ADAMCORE_CUDA=OFF leaves it out")
    elseif(_adamcore_cuda_mode MATCHES "^(ON|TRUE|YES|1)$")
      message(FATAL_ERROR "adamcore: ADAMCORE_CUDA=ON but the CUDA toolkit's static runtime "
                          "(cudart_static) was not found next to ${CMAKE_CUDA_COMPILER}")
    else()
      message(STATUS "adamcore: CUDA backend OFF (nvcc found, but not the static CUDA runtime)")
    endif()
  elseif(_adamcore_cuda_mode MATCHES "^(ON|TRUE|YES|1)$")
    message(FATAL_ERROR "adamcore: ADAMCORE_CUDA=ON but no CUDA compiler was found "
                        "(set CMAKE_CUDA_COMPILER or put nvcc on PATH)")
  else()
    message(STATUS "adamcore: CUDA backend OFF (no CUDA compiler found)")
  endif()
else()
  message(STATUS "adamcore: CUDA backend OFF (ADAMCORE_CUDA=${ADAMCORE_CUDA})")
endif()

if(ADAMCORE_WITH_CUDA)
  # The backend: kernels.cu is the one file nvcc compiles (every kernel, behind launch.h); the
  # rest is host C++ over the CUDA runtime's headers, built by the C++ compiler (fast, and with
  # the same flags as the core). --fmad=false: no contraction into FMA, the floating-point
  # contract of update.h that makes CUDA and every CPU level agree bit for bit.
  set(_cuda_dir ${CMAKE_CURRENT_LIST_DIR})
  add_library(adamcore_cuda_objects OBJECT
    ${_cuda_dir}/kernels.cu
    ${_cuda_dir}/blockwise.cu
    ${_cuda_dir}/blockwise_step.cpp
    ${_cuda_dir}/device.cpp
    ${_cuda_dir}/memory.cpp
    ${_cuda_dir}/table.cpp
    ${_cuda_dir}/finite_check.cpp
    ${_cuda_dir}/backend.cpp
    ${_cuda_dir}/plan.cpp)
  target_include_directories(adamcore_cuda_objects PUBLIC ${_cuda_dir}
                             PRIVATE ${_cuda_dir}/../cpp/include ${_cuda_dir}/../cpp/src)
  target_link_libraries(adamcore_cuda_objects PRIVATE CUDA::cudart_static)  # its headers
  target_compile_features(adamcore_cuda_objects PRIVATE cuda_std_17)
  target_compile_options(adamcore_cuda_objects PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${ADAMCORE_FP_FLAGS}>
    $<$<COMPILE_LANGUAGE:CUDA>:--fmad=false -prec-div=true -prec-sqrt=true>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fno-math-errno,-fno-trapping-math,-ffp-contract=off>)
  set_target_properties(adamcore_cuda_objects PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CUDA_VISIBILITY_PRESET hidden
    CUDA_RUNTIME_LIBRARY Static
    CUDA_SEPARABLE_COMPILATION OFF)
endif()

# Called from CMakeLists.txt once libadamcore exists. The C ABI's CUDA entry points exist in every
# build (they return ADAMCORE_ERROR_UNAVAILABLE without the backend), so the exported symbols do
# not depend on the build machine.
function(adamcore_link_cuda_backend target)
  set(root ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/..)
  target_sources(${target} PRIVATE ${root}/cpp/src/c_api_cuda.cpp)
  target_include_directories(${target} PRIVATE ${root}/cpp/src)
  target_compile_definitions(${target} PRIVATE ADAMCORE_BUILDING_LIBRARY)
  if(ADAMCORE_WITH_CUDA)
    target_compile_definitions(${target} PRIVATE ADAMCORE_WITH_CUDA)
    target_link_libraries(${target} PRIVATE adamcore_cuda_objects CUDA::cudart_static)
  endif()
endfunction()

# adamcore._cuda: the nanobind module over the kernels. It holds its own copy of the validation
# (validate.cpp, validate_blockwise.cpp), not the CPU kernels.
function(adamcore_add_cuda_python_module)
  if(NOT ADAMCORE_WITH_CUDA)
    return()
  endif()
  set(root ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/..)
  add_library(adamcore_cuda_validate OBJECT ${root}/cpp/src/validate.cpp
              ${root}/cpp/src/validate_blockwise.cpp)
  target_include_directories(adamcore_cuda_validate PRIVATE ${root}/cpp/include ${root}/cpp/src)
  nanobind_add_module(_cuda NB_STATIC ${root}/cuda/python/cuda_module.cpp)
  target_include_directories(_cuda PRIVATE ${root}/cpp/include ${root}/cuda)
  target_link_libraries(_cuda PRIVATE adamcore_cuda_objects adamcore_cuda_validate
                        CUDA::cudart_static)
  install(TARGETS _cuda LIBRARY DESTINATION adamcore)
endfunction()
