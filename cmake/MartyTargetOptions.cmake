# Warnings and sanitizers for the project's own targets only; never forced on consumers.
function(marty_target_options target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Woverloaded-virtual
    -Wimplicit-fallthrough -Wno-missing-field-initializers)
  if(MARTY_MESSAGING_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(MARTY_MESSAGING_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${MARTY_MESSAGING_SANITIZE}
      -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=${MARTY_MESSAGING_SANITIZE})
  endif()
endfunction()
