#include "json.h"

#include <cmath>
#include <cstdlib>

#include "../core/error.h"

namespace medllava {
namespace json {

const Value* Value::find(const std::string& key) const {
  for (const auto& kv : object)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

namespace {
constexpr int kMaxDepth = 64;

class Parser {
 public:
  Parser(const char* p, size_t n, const std::string& what) : p_(p), end_(p + n), what_(what) {}

  Value document() {
    Value v = value(0);
    skip_ws();
    if (p_ != end_) fail("trailing characters after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) {
    throw Error(ErrorCode::Format, what_ + ": invalid JSON at byte " + std::to_string(offset()) + ": " + why);
  }
  size_t offset() const { return (size_t)(p_ - start_); }
  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool eat(char c) {
    skip_ws();
    if (p_ < end_ && *p_ == c) { ++p_; return true; }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }

  Value value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than 64");
    skip_ws();
    if (p_ >= end_) fail("unexpected end");
    Value v;
    switch (*p_) {
      case '{': {
        ++p_;
        v.type = Value::Type::Object;
        if (eat('}')) return v;
        do {
          skip_ws();
          if (p_ >= end_ || *p_ != '"') fail("expected a string key");
          std::string key = string();
          expect(':');
          v.object.emplace_back(std::move(key), value(depth + 1));
        } while (eat(','));
        expect('}');
        return v;
      }
      case '[': {
        ++p_;
        v.type = Value::Type::Array;
        if (eat(']')) return v;
        do v.array.push_back(value(depth + 1));
        while (eat(','));
        expect(']');
        return v;
      }
      case '"':
        v.type = Value::Type::String;
        v.string = string();
        return v;
      case 't': literal("true"); v.type = Value::Type::Bool; v.boolean = true; return v;
      case 'f': literal("false"); v.type = Value::Type::Bool; return v;
      case 'n': literal("null"); return v;
      default: return number();
    }
  }

  void literal(const char* word) {
    for (const char* w = word; *w; ++w, ++p_)
      if (p_ >= end_ || *p_ != *w) fail(std::string("expected '") + word + "'");
  }

  Value number() {
    const char* s = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) fail("expected a value");
    if (*p_ == '0' && p_ + 1 < end_ && p_[1] >= '0' && p_[1] <= '9') fail("leading zero");
    bool integer = true;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    if (p_ < end_ && *p_ == '.') {
      integer = false;
      ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) fail("digit expected after '.'");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) fail("digit expected in exponent");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    Value v;
    v.type = Value::Type::Number;
    const std::string text(s, p_);
    v.number = std::strtod(text.c_str(), nullptr);
    if (integer && text[0] != '-') {
      uint64_t u = 0;
      bool fits = true;
      for (char c : text) {
        const uint64_t d = (uint64_t)(c - '0');
        if (u > (UINT64_MAX - d) / 10) { fits = false; break; }
        u = u * 10 + d;
      }
      v.is_uint = fits;
      v.uint = fits ? u : 0;
    }
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) out += (char)cp;
    else if (cp < 0x800) { out += (char)(0xc0 | cp >> 6); out += (char)(0x80 | (cp & 0x3f)); }
    else if (cp < 0x10000) {
      out += (char)(0xe0 | cp >> 12); out += (char)(0x80 | ((cp >> 6) & 0x3f)); out += (char)(0x80 | (cp & 0x3f));
    } else {
      out += (char)(0xf0 | cp >> 18); out += (char)(0x80 | ((cp >> 12) & 0x3f));
      out += (char)(0x80 | ((cp >> 6) & 0x3f)); out += (char)(0x80 | (cp & 0x3f));
    }
  }

  uint32_t hex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char c = *p_;
      v <<= 4;
      if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
      else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
      else fail("bad hex digit in \\u escape");
    }
    return v;
  }

  std::string string() {
    ++p_;  // opening quote
    std::string out;
    for (;;) {
      if (p_ >= end_) fail("unterminated string");
      const unsigned char c = (unsigned char)*p_++;
      if (c == '"') return out;
      if (c < 0x20) fail("control character in string");
      if (c != '\\') { out += (char)c; continue; }
      if (p_ >= end_) fail("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00) {
            if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u') fail("unpaired surrogate");
            p_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xdc00 || lo >= 0xe000) fail("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            fail("unpaired surrogate");
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  const char* p_;
  const char* end_;
  const char* start_ = p_;
  std::string what_;
};
}  // namespace

Value parse(const char* text, size_t size, const std::string& what) { return Parser(text, size, what).document(); }

}  // namespace json
}  // namespace medllava
