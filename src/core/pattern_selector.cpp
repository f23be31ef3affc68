#include "marty/messaging/pattern_selector.hpp"

#include <algorithm>
#include <cctype>
#include <string>

namespace marty::messaging {
namespace {

bool contains_ci(std::string_view haystack, std::string_view needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                     [](char a, char b) {
                       return std::tolower(static_cast<unsigned char>(a)) ==
                              std::tolower(static_cast<unsigned char>(b));
                     }) != haystack.end();
}

}  // namespace

MessagingPattern PatternSelector::recommend_pattern(std::string_view use_case,
                                                    bool /*durability_required*/,
                                                    bool ordering_required, bool response_needed,
                                                    bool high_throughput) {
  if (response_needed) return MessagingPattern::request_response;
  if (high_throughput && ordering_required) return MessagingPattern::streaming;
  if (contains_ci(use_case, "notification") || contains_ci(use_case, "event")) {
    return MessagingPattern::pub_sub;
  }
  if (contains_ci(use_case, "command") || contains_ci(use_case, "task")) {
    return MessagingPattern::point_to_point;
  }
  if (contains_ci(use_case, "broadcast")) return MessagingPattern::broadcast;
  return MessagingPattern::pub_sub;
}

MessageBackendType PatternSelector::recommend_backend(MessagingPattern pattern,
                                                      std::string_view scale_requirements,
                                                      std::string_view cloud_preference) {
  using B = MessageBackendType;
  if (cloud_preference == "aws") {
    if (pattern == MessagingPattern::pub_sub || pattern == MessagingPattern::broadcast) {
      return B::aws_sns;
    }
    if (pattern == MessagingPattern::point_to_point) return B::aws_sqs;
  }
  int column;
  if (scale_requirements == "low") {
    column = 0;
  } else if (scale_requirements == "medium") {
    column = 1;
  } else if (scale_requirements == "high") {
    column = 2;
  } else {
    return B::nats;
  }
  struct Row {
    MessagingPattern pattern;
    B by_scale[3];
  };
  static constexpr Row kTable[] = {
      {MessagingPattern::pub_sub, {B::redis, B::nats, B::kafka}},
      {MessagingPattern::request_response, {B::nats, B::rabbitmq, B::nats}},
      {MessagingPattern::streaming, {B::redis, B::kafka, B::kafka}},
      {MessagingPattern::point_to_point, {B::rabbitmq, B::aws_sqs, B::rabbitmq}},
      {MessagingPattern::broadcast, {B::redis, B::aws_sns, B::nats}},
  };
  for (const Row& row : kTable) {
    if (row.pattern == pattern) return row.by_scale[column];
  }
  return B::nats;
}

}  // namespace marty::messaging
