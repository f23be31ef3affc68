#include "marty/messaging/detail/json_writer.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace marty::messaging::detail {
namespace {

using Json = nlohmann::json;

// What dump() writes, or "throws <id>" when it refuses.
std::string dumped(const Json& value) {
  try {
    return value.dump();
  } catch (const Json::exception& e) {
    return "throws " + std::to_string(e.id);
  }
}

std::string written(const Json& value) {
  try {
    return write_json(value);
  } catch (const Json::exception& e) {
    return "throws " + std::to_string(e.id);
  }
}

TEST(JsonWriterTest, WritesWhatDumpWritesForEveryKindOfValue) {
  const Json values[] = {
      Json(),
      Json(true),
      Json(false),
      Json(0),
      Json(-1),
      Json(std::numeric_limits<std::int64_t>::min()),
      Json(std::numeric_limits<std::int64_t>::max()),
      Json(std::numeric_limits<std::uint64_t>::max()),
      Json(""),
      Json("plain"),
      Json(Json::value_t::object),
      Json(Json::value_t::array),
      Json::parse(R"({"b":[1,2,{"c":null}],"a":{"x":"y"},"":[]})"),
      Json::array({Json::array(), Json::object(), 1, "two", false}),
  };
  for (const Json& value : values) EXPECT_EQ(written(value), dumped(value)) << dumped(value);
}

TEST(JsonWriterTest, EscapesAsDumpDoes) {
  std::string every_control;
  for (int c = 0; c < 0x20; ++c) every_control.push_back(static_cast<char>(c));
  const std::string texts[] = {
      every_control,
      "quote \" backslash \\ slash / del \x7f",
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",   // 2, 3 and 4 bytes
      "\xed\x9f\xbf \xee\x80\x80 \xf4\x8f\xbf\xbf",  // the last before the surrogates, the end
      std::string("nul \0 inside", 12),
  };
  for (const std::string& text : texts) {
    const Json value{{text, text}};
    EXPECT_EQ(written(value), dumped(value)) << dumped(value);
  }
}

TEST(JsonWriterTest, RefusesWhatIsNotUtf8AsDumpDoes) {
  const std::string texts[] = {
      "\x80",              // a lone continuation byte
      "\xc3",              // cut short
      "\xc0\xaf",          // overlong
      "\xe0\x80\xaf",      // overlong
      "\xed\xa0\x80",      // a surrogate
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "\xf8\x88\x80\x80\x80",
      "ok \xe2\x82",  // cut short at the end
  };
  for (const std::string& text : texts) {
    const Json value = Json::array({"fine", Json{{"key", text}}});
    EXPECT_EQ(dumped(value), "throws 316");
    EXPECT_EQ(written(value), "throws 316") << "for a string of " << text.size() << " bytes";
    const Json as_key{{text, 1}};
    EXPECT_EQ(written(as_key), "throws 316");
  }
}

TEST(JsonWriterTest, FloatsReadBackAsTheSameFloat) {
  const double numbers[] = {0.0,
                            -0.0,
                            1.5,
                            2.0,
                            -3.0,
                            0.1,
                            1e16,
                            1e300,
                            -1e-300,
                            5e-324,
                            123456789.125,
                            std::numeric_limits<double>::max(),
                            std::numeric_limits<double>::lowest()};
  for (double number : numbers) {
    const std::string text = write_json(Json(number));
    const Json back = Json::parse(text);
    ASSERT_TRUE(back.is_number_float()) << text;
    EXPECT_EQ(back.get<double>(), number) << text;
    EXPECT_EQ(std::signbit(back.get<double>()), std::signbit(number)) << text;
  }
  EXPECT_EQ(write_json(Json(2.0)), "2.0");
  EXPECT_EQ(write_json(Json(std::numeric_limits<double>::quiet_NaN())), "null");
  EXPECT_EQ(write_json(Json(std::numeric_limits<double>::infinity())), "null");
}

TEST(JsonWriterTest, LeavesBinaryValuesToDump) {
  const Json value{{"blob", Json::binary({1, 2, 3}, 7)}};
  EXPECT_EQ(written(value), dumped(value));
}

// Random trees of every kind of value, with strings of random bytes (some of them not UTF-8).
Json random_value(std::mt19937_64& random, int depth) {
  auto pick = [&](int n) { return static_cast<int>(random() % static_cast<std::uint64_t>(n)); };
  auto text = [&] {
    std::string s;
    const int length = pick(12);
    for (int i = 0; i < length; ++i) {
      // Mostly ASCII, sometimes a valid multi-byte character, rarely a stray byte.
      const int kind = pick(20);
      if (kind == 0) {
        s.push_back(static_cast<char>(0x80 + pick(0x80)));
      } else if (kind < 3) {
        s += "\xc3\xa9";
      } else if (kind < 4) {
        s += "\xf0\x9f\x98\x80";
      } else {
        s.push_back(static_cast<char>(pick(0x80)));
      }
    }
    return s;
  };
  switch (depth > 3 ? pick(6) : pick(8)) {
    case 0:
      return Json();
    case 1:
      return Json(pick(2) == 0);
    case 2:
      return Json(static_cast<std::int64_t>(random()));
    case 3:
      return Json(static_cast<std::uint64_t>(random()));
    case 4:
      return Json(static_cast<double>(static_cast<std::int64_t>(random())) / 1024.0);
    case 5:
      return Json(text());
    case 6: {
      Json array(Json::value_t::array);
      for (int i = pick(4); i > 0; --i) array.push_back(random_value(random, depth + 1));
      return array;
    }
    default: {
      Json object(Json::value_t::object);
      for (int i = pick(4); i > 0; --i) object[text()] = random_value(random, depth + 1);
      return object;
    }
  }
}

TEST(JsonWriterTest, AgreesWithDumpOnRandomValues) {
  std::mt19937_64 random(20261208);
  for (int i = 0; i < 20'000; ++i) {
    const Json value = random_value(random, 0);
    const std::string expected = dumped(value);
    const std::string actual = written(value);
    if (expected == actual) continue;
    // Floats may be spelled differently; they must read back as the same value.
    ASSERT_NE(expected.rfind("throws", 0), 0u) << actual;
    ASSERT_EQ(Json::parse(actual), value) << expected << " vs " << actual;
  }
}

}  // namespace
}  // namespace marty::messaging::detail
