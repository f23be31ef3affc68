include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS marty_messaging marty_asio EXPORT MartyMessagingTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT MartyMessagingTargets NAMESPACE marty::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
# Each backend (and the SQLite saga store) is an optional component with its own export set.
if(TARGET marty_messaging_sqlite)
  install(TARGETS marty_messaging_sqlite EXPORT MartyMessagingSqliteTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT MartyMessagingSqliteTargets NAMESPACE marty::
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
endif()
if(TARGET marty_messaging_nats)
  install(TARGETS marty_messaging_nats EXPORT MartyMessagingNatsTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(EXPORT MartyMessagingNatsTargets NAMESPACE marty::
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
endif()
configure_package_config_file(cmake/MartyMessagingConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/MartyMessagingConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/MartyMessagingConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/MartyMessagingConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/MartyMessagingConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
