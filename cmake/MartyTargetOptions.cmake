# Warnings and sanitizers for the project's own targets only; never forced on consumers.
function(marty_target_options target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Woverloaded-virtual
    -Wimplicit-fallthrough -Wno-missing-field-initializers)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 reports a false -Wrestrict inside std::string::operator+ at -O2 (GCC bug 105329).
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
  if(MARTY_MESSAGING_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(MARTY_MESSAGING_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${MARTY_MESSAGING_SANITIZE}
      -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=${MARTY_MESSAGING_SANITIZE})
  endif()
endfunction()
