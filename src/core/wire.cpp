#include "marty/messaging/wire.hpp"

#include "marty/messaging/backend.hpp"

namespace marty::messaging {

std::string dead_letter_subject(std::string_view subject) {
  return "deadletter." + std::string(subject);
}

void mark_dead_letter(Message& message, std::string_view subject, std::string reason,
                      int attempts) {
  message.set_subject(dead_letter_subject(subject));
  auto& headers = message.mutable_metadata().headers;
  const std::string now = format_rfc3339(Clock::now());
  headers[std::string(headers::kDeadLetterId)] = make_uuid_v7();
  headers[std::string(headers::kDeadLetterReason)] = std::move(reason);
  headers[std::string(headers::kDeadLetterSubject)] = std::string(subject);
  headers[std::string(headers::kDeadLetterAttempts)] = std::to_string(attempts);
  headers[std::string(headers::kDeadLetterTime)] = now;
  headers[std::string(headers::kDeadLetterFirstFailure)] = now;
}

Message undecodable_dead_letter(std::string_view subject, std::string raw, std::string reason) {
  Message dead = undecodable_message(subject, std::move(raw));
  mark_dead_letter(dead, subject, std::move(reason), 1);
  return dead;
}

}  // namespace marty::messaging
