#include "aws_query.hpp"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <algorithm>
#include <ctime>

#include "marty/messaging/detail/sleep.hpp"

namespace marty::messaging::aws {
namespace {

void collect(const XmlElement& element, std::string_view name,
             std::vector<const XmlElement*>& out) {
  for (const auto& child : element.children) {
    if (child.name == name) out.push_back(&child);
    collect(child, name, out);
  }
}

XmlElement convert(xmlNode* node) {
  XmlElement element;
  element.name = reinterpret_cast<const char*>(node->name);
  for (xmlNode* child = node->children; child != nullptr; child = child->next) {
    if (child->type == XML_ELEMENT_NODE) {
      element.children.push_back(convert(child));
    } else if (child->type == XML_TEXT_NODE || child->type == XML_CDATA_SECTION_NODE) {
      if (child->content != nullptr) element.text += reinterpret_cast<const char*>(child->content);
    }
  }
  return element;
}

errc code_for(long status, std::string_view code) {
  auto is = [&](std::initializer_list<std::string_view> codes) {
    return std::find(codes.begin(), codes.end(), code) != codes.end();
  };
  if (is({"Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
          "TooManyRequestsException", "RequestLimitExceeded", "KMSThrottlingException"})) {
    return errc::resource_exhausted;
  }
  if (is({"InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature", "ExpiredToken",
          "MissingAuthenticationToken", "UnrecognizedClientException", "InvalidSecurity"})) {
    return errc::unauthenticated;
  }
  if (is({"AccessDenied", "AccessDeniedException", "AuthorizationError", "KMSAccessDenied",
          "KMSAccessDeniedException"})) {
    return errc::permission_denied;
  }
  if (is({"NotFound", "NotFoundException", "NonExistentQueue",
          "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "TopicNotFound",
          "ResourceNotFoundException", "KMSNotFoundException"})) {
    return errc::not_found;
  }
  if (is({"QueueAlreadyExists", "QueueNameExists",
          "AWS.SimpleQueueService.QueueDeletedRecently"})) {
    return errc::already_exists;
  }
  if (is({"InvalidParameter", "InvalidParameterValue", "InvalidParameterCombination",
          "MissingParameter", "ValidationError", "InvalidAction", "InvalidAttributeName",
          "InvalidAttributeValue", "InvalidMessageContents", "MessageTooLong",
          "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "ReceiptHandleIsInvalid",
          "InvalidQueryParameter", "MalformedQueryString"})) {
    return errc::invalid_argument;
  }
  if (is({"ServiceUnavailable", "InternalError", "InternalFailure", "ServiceUnavailableException",
          "KMSInternalException"}) ||
      status >= 500) {
    return errc::unavailable;
  }
  return status == 404 ? errc::not_found : errc::failed_precondition;
}

std::string form_encode(const QueryParameters& parameters) {
  std::string body;
  for (const auto& [name, value] : parameters) {
    if (!body.empty()) body.push_back('&');
    body.append(uri_encode(name)).append("=").append(uri_encode(value));
  }
  return body;
}

}  // namespace

const XmlElement* XmlElement::find(std::string_view wanted) const {
  if (name == wanted) return this;
  for (const auto& child : children) {
    if (const XmlElement* found = child.find(wanted)) return found;
  }
  return nullptr;
}

std::vector<const XmlElement*> XmlElement::find_all(std::string_view wanted) const {
  std::vector<const XmlElement*> out;
  collect(*this, wanted, out);
  return out;
}

std::string XmlElement::text_of(std::string_view wanted) const {
  for (const auto& child : children) {
    if (const XmlElement* found = child.find(wanted)) return found->text;
  }
  return {};
}

Result<XmlElement> parse_xml(std::string_view text) {
  // libxml2 2.9 initialises itself lazily, which is not thread-safe: once, here.
  static const bool initialised = [] {
    xmlInitParser();
    return true;
  }();
  (void)initialised;
  xmlDocPtr doc = xmlReadMemory(text.data(), static_cast<int>(text.size()), "reply.xml", nullptr,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (doc == nullptr) {
    const xmlError* error = xmlGetLastError();
    return Error(errc::invalid_argument, std::string("the reply is not XML") +
                                             (error != nullptr && error->message != nullptr
                                                  ? std::string(": ") + error->message
                                                  : std::string()));
  }
  xmlNode* root = xmlDocGetRootElement(doc);
  Result<XmlElement> out = Error(errc::invalid_argument, "the reply has no root element");
  if (root != nullptr) out = convert(root);
  xmlFreeDoc(doc);
  return out;
}

Error aws_error(long http_status, std::string_view code, std::string_view message,
                std::string_view action) {
  std::string text(action);
  text.append(": ").append(code.empty() ? "HTTP " + std::to_string(http_status)
                                        : std::string(code));
  if (!message.empty()) text.append(": ").append(message);
  return Error(code_for(http_status, code), std::move(text));
}

std::string amz_date_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char out[17];
  std::strftime(out, sizeof out, "%Y%m%dT%H%M%SZ", &utc);
  return out;
}

QueryClient::QueryClient(std::shared_ptr<HttpClient> http, QueryEndpoint endpoint,
                         Credentials credentials)
    : http_(std::move(http)), endpoint_(std::move(endpoint)), credentials_(std::move(credentials)) {
  std::string_view rest = endpoint_.url;
  if (const auto scheme = rest.find("://"); scheme != std::string_view::npos) {
    rest.remove_prefix(scheme + 3);
  }
  const auto slash = rest.find('/');
  host_ = std::string(rest.substr(0, slash));
  path_ = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
}

asio::awaitable<Result<XmlElement>> QueryClient::call(std::string action,
                                                      QueryParameters parameters,
                                                      std::chrono::milliseconds timeout,
                                                      int attempts) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  parameters.insert(parameters.begin(), {{"Action", action}, {"Version", endpoint_.version}});
  const std::string body = form_encode(parameters);
  std::chrono::milliseconds backoff(50);
  for (int attempt = 1;; ++attempt) {
    HttpRequest request;
    request.method = "POST";
    request.path = path_;
    request.body = body;
    const std::string date = amz_date_now();
    request.headers = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
                       {"Host", host_},
                       {"X-Amz-Date", date}};
    if (!credentials_.session_token.empty()) {
      request.headers.emplace_back("X-Amz-Security-Token", credentials_.session_token);
    }
    const Signature signature =
        sign(request, credentials_, endpoint_.region, endpoint_.service, date);
    std::vector<std::string> headers;
    for (const auto& [name, value] : request.headers) {
      if (name != "Host") headers.push_back(name + ": " + value);
    }
    headers.push_back("Authorization: " + signature.authorization);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      co_return Error(errc::deadline_exceeded,
                      action + ": no reply within " + std::to_string(timeout.count()) + " ms");
    }
    auto reply = co_await http_->post(endpoint_.url, std::move(headers), body, left);
    Result<XmlElement> outcome = Error(errc::internal, "unset");
    if (!reply) {
      outcome = std::move(reply).error().with_context(action);
    } else {
      auto xml = parse_xml(reply->body);
      if (reply->status == 200 && xml) {
        co_return std::move(*xml);
      }
      if (xml) {
        outcome = aws_error(reply->status, xml->text_of("Code"), xml->text_of("Message"), action);
      } else {
        outcome = aws_error(reply->status, "", reply->body.substr(0, 200), action);
      }
    }
    const bool transient =
        outcome.error().is(errc::resource_exhausted) || outcome.error().is(errc::unavailable);
    if (!transient || attempt >= attempts ||
        std::chrono::steady_clock::now() + backoff >= deadline) {
      co_return outcome;
    }
    co_await detail::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2'000));
  }
}

}  // namespace marty::messaging::aws
