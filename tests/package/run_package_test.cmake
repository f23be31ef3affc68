# Installs the build in BUILD_DIR to a fresh prefix, then builds and runs the consumer project
# against it (MODE=find_package) or against the sources in SOURCE_DIR (MODE=add_subdirectory).
# cmake -DMODE=... -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=... -DSANITIZE=... -P run_package_test.cmake
foreach(variable MODE BUILD_DIR SOURCE_DIR WORK_DIR)
  if(NOT ${variable})
    message(FATAL_ERROR "run_package_test.cmake: ${variable} is not set")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT status EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "failed (${status}): ${command}\n${out}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(flags "")
if(SANITIZE)
  # Our libraries were built with sanitizers: whoever links them needs their runtime.
  set(flags "-fsanitize=${SANITIZE}")
endif()
set(configure ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/package -B ${WORK_DIR}/build -G Ninja
    -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS=${flags}" "-DCMAKE_EXE_LINKER_FLAGS=${flags}")
find_program(CCACHE ccache)
if(CCACHE)
  list(APPEND configure -DCMAKE_CXX_COMPILER_LAUNCHER=${CCACHE})
endif()
if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
  foreach(file include/marty/messaging.hpp include/marty/messaging/nats_backend.hpp
               lib/cmake/MartyMessaging/MartyMessagingConfig.cmake
               lib/cmake/MartyMessaging/MartyMessagingConfigVersion.cmake
               lib/cmake/MartyMessaging/MartyMessagingNatsTargets.cmake
               include/marty/messaging/config.hpp bin/marty-bus)
    if(NOT EXISTS ${WORK_DIR}/prefix/${file})
      message(FATAL_ERROR "cmake --install did not install ${file}")
    endif()
  endforeach()
  # The installed CLI runs and reads a configuration file.
  file(WRITE ${WORK_DIR}/bus.yaml "service: package-test\nbackends:\n  memory: {}\n")
  run(${WORK_DIR}/prefix/bin/marty-bus config check ${WORK_DIR}/bus.yaml)
  if(NOT last_output MATCHES "bus.yaml: ok")
    message(FATAL_ERROR "the installed marty-bus did not check a file:\n${last_output}")
  endif()
  run(${configure} -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
elseif(MODE STREQUAL "add_subdirectory")
  run(${configure} -DMARTY_MESSAGING_SOURCE_DIR=${SOURCE_DIR}
      -DMARTY_MESSAGING_SANITIZE=${SANITIZE})
else()
  message(FATAL_ERROR "run_package_test.cmake: MODE must be find_package or add_subdirectory")
endif()
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build -j 2)
run(${WORK_DIR}/build/consumer)
if(NOT last_output MATCHES "consumer ok")
  message(FATAL_ERROR "the consumer did not say ok:\n${last_output}")
endif()
message(STATUS "${MODE}: the consumer built and ran")
