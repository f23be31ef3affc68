#pragma once
// AWS Signature Version 4 for the SNS and SQS Query APIs (there is no AWS SDK for C++ in
// Debian): the canonical request, the string to sign and the Authorization header, as AWS
// specifies them (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html).
// Checked against AWS's published test suite (tests/integration/aws_sigv4_test.cpp).
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace marty::messaging::aws {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;  ///< never logged, never in an error message
  std::string session_token;      ///< temporary credentials only
};

/// A request to sign. `path` and `query` are as sent on the wire, before percent-encoding
/// (`query` without the `?`: "Action=Publish&TopicArn=..."); headers in order, repeats allowed.
struct HttpRequest {
  std::string method = "POST";
  std::string path = "/";
  std::string query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

/// Every intermediate step, so a refused signature can be compared with AWS's
/// (SignatureDoesNotMatch replies quote the canonical request AWS computed).
struct Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;
  std::string signature;      ///< hex
  std::string authorization;  ///< the Authorization header's value
};

/// Signs `request`, whose headers must already hold `Host` and `X-Amz-Date` (`amz_date`,
/// "YYYYMMDDTHHMMSSZ") and, with temporary credentials, `X-Amz-Security-Token`: every header
/// present is signed.
Signature sign(const HttpRequest& request, const Credentials& credentials, std::string_view region,
               std::string_view service, std::string_view amz_date);

/// Percent-encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ as %XY (upper-case
/// hex); '/' too unless `keep_slash`.
std::string uri_encode(std::string_view text, bool keep_slash = false);

/// Lower-case hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

}  // namespace marty::messaging::aws
