#pragma once
// Certificates for TLS tests, made with the openssl command line (Debian's openssl package).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace marty::messaging::testing {

/// Writes into `dir` a CA (ca.pem, ca.key), a server certificate for localhost and 127.0.0.1
/// (server.pem, server.key) and a client certificate (client.pem, client.key), both signed by
/// the CA. False when openssl failed (its output is in dir/openssl.log).
inline bool make_certificates(const std::filesystem::path& dir) {
  const std::string d = dir.string();
  {
    std::ofstream ext(dir / "server.ext");
    ext << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  }
  const std::string script =
      "cd '" + d +
      "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 "
      "-subj /CN=marty-test-ca && "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
      "-subj /CN=localhost && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      "-out server.pem -days 1 -extfile server.ext && "
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
      "-subj /CN=marty-client && "
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      "-out client.pem -days 1";
  return std::system((script + " > openssl.log 2>&1").c_str()) == 0;
}

}  // namespace marty::messaging::testing
