include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS marty_messaging marty_asio EXPORT MartyMessagingTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT MartyMessagingTargets NAMESPACE marty::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
# Each backend (and the SQLite saga store) is an optional component with its own export set,
# so a user needs only the client libraries of the components they use.
function(marty_install_component target export_set)
  if(TARGET ${target})
    install(TARGETS ${target} EXPORT ${export_set}
      LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
      ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
    install(EXPORT ${export_set} NAMESPACE marty::
      DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
  endif()
endfunction()
marty_install_component(marty_messaging_sqlite MartyMessagingSqliteTargets)
marty_install_component(marty_messaging_nats MartyMessagingNatsTargets)
marty_install_component(marty_messaging_redis MartyMessagingRedisTargets)
marty_install_component(marty_messaging_rabbitmq MartyMessagingRabbitmqTargets)
marty_install_component(marty_messaging_kafka MartyMessagingKafkaTargets)
marty_install_component(marty_messaging_aws MartyMessagingAwsTargets)
marty_install_component(marty_messaging_config MartyMessagingConfigTargets)
if(TARGET marty-bus)
  install(TARGETS marty-bus RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
configure_package_config_file(cmake/MartyMessagingConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/MartyMessagingConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/MartyMessagingConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/MartyMessagingConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/MartyMessagingConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/MartyMessaging)
