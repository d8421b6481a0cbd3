#include "services/top/top.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "fmt/format.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace chasqui {
namespace {

constexpr char kRequests[] = "chasqui_router_requests_total";
constexpr char kInFlight[] = "chasqui_router_in_flight";
constexpr char kLatencyBucket[] = "chasqui_router_added_latency_seconds_bucket";

absl::Status Bad(size_t line_no, std::string_view why) {
  return absl::InvalidArgumentError(fmt::format("metrics line {}: {}", line_no, why));
}

// Parses `{a="x",b="y"}` starting at text[pos] == '{'; leaves pos after '}'.
absl::Status ParseLabels(std::string_view text, size_t& pos, size_t line_no,
                         std::map<std::string, std::string>& labels) {
  ++pos;  // '{'
  while (pos < text.size() && text[pos] != '}') {
    const size_t eq = text.find('=', pos);
    if (eq == std::string_view::npos || eq + 1 >= text.size() || text[eq + 1] != '"') {
      return Bad(line_no, "expected label=\"value\"");
    }
    std::string name(text.substr(pos, eq - pos));
    std::string value;
    size_t i = eq + 2;
    for (; i < text.size() && text[i] != '"'; ++i) {
      if (text[i] == '\\' && i + 1 < text.size()) {
        ++i;
        value.push_back(text[i] == 'n' ? '\n' : text[i]);
      } else {
        value.push_back(text[i]);
      }
    }
    if (i >= text.size()) return Bad(line_no, "unterminated label value");
    labels[std::move(name)] = std::move(value);
    pos = i + 1;
    if (pos < text.size() && text[pos] == ',') ++pos;
  }
  if (pos >= text.size()) return Bad(line_no, "unterminated label set");
  ++pos;  // '}'
  return absl::OkStatus();
}

absl::StatusOr<double> ParseValue(std::string_view text, size_t line_no) {
  if (text == "+Inf") return HUGE_VAL;
  if (text == "-Inf") return -HUGE_VAL;
  if (text == "NaN") return NAN;
  std::string s(text);
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0') return Bad(line_no, fmt::format("bad value \"{}\"", s));
  return v;
}

std::string Key(const std::map<std::string, std::string>& labels) {
  std::string key;
  for (const auto& [k, v] : labels) key += k + "=" + v + "\x1f";
  return key;
}

// A counter's increase between two scrapes of one source; a reset counts from zero.
double Increase(double before, double after) { return after >= before ? after - before : after; }

double Quantile(double q, const std::vector<std::pair<double, double>>& buckets) {
  // buckets: (upper bound, cumulative count), sorted by bound, ending with +Inf.
  if (buckets.empty() || buckets.back().second <= 0) return -1;
  const double rank = q * buckets.back().second;
  double lower = 0, below = 0;
  for (const auto& [bound, count] : buckets) {
    if (count >= rank) {
      if (std::isinf(bound)) return lower;  // Prometheus: the highest finite bound
      if (count == below) return bound;
      return lower + (bound - lower) * (rank - below) / (count - below);
    }
    lower = bound;
    below = count;
  }
  return lower;
}

}  // namespace

absl::StatusOr<std::vector<MetricSample>> ParseMetricsText(std::string_view text) {
  std::vector<MetricSample> samples;
  size_t line_no = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    MetricSample sample;
    size_t pos = 0;
    while (pos < line.size() && line[pos] != '{' && line[pos] != ' ') ++pos;
    sample.name = std::string(line.substr(0, pos));
    if (sample.name.empty()) return Bad(line_no, "missing metric name");
    if (pos < line.size() && line[pos] == '{') {
      if (absl::Status s = ParseLabels(line, pos, line_no, sample.labels); !s.ok()) return s;
    }
    while (pos < line.size() && line[pos] == ' ') ++pos;
    const size_t value_end = line.find(' ', pos);
    auto value = ParseValue(line.substr(pos, value_end == std::string_view::npos
                                                 ? std::string_view::npos
                                                 : value_end - pos),
                            line_no);
    if (!value.ok()) return value.status();
    sample.value = *value;
    samples.push_back(std::move(sample));
  }
  return samples;
}

TopView ComputeTop(const std::vector<std::vector<MetricSample>>& before,
                   const std::vector<std::vector<MetricSample>>& after, double seconds) {
  TopView view;
  view.seconds = seconds;
  using RowKey = std::tuple<std::string, std::string, std::string, std::string>;
  std::map<RowKey, ExchangeRow> rows;
  std::map<double, double> latency;  // le -> increase, over every source
  for (size_t i = 0; i < after.size(); ++i) {
    absl::flat_hash_map<std::string, double> prior;
    if (i < before.size()) {
      for (const MetricSample& s : before[i]) prior[s.name + "\x1e" + Key(s.labels)] = s.value;
    }
    for (const MetricSample& s : after[i]) {
      if (s.name == kInFlight) {
        view.in_flight += s.value;
        continue;
      }
      if (s.name != kRequests && s.name != kLatencyBucket) continue;
      auto it = prior.find(s.name + "\x1e" + Key(s.labels));
      const double increase = Increase(it == prior.end() ? 0 : it->second, s.value);
      if (s.name == kLatencyBucket) {
        auto le = s.labels.find("le");
        if (le != s.labels.end()) {
          latency[le->second == "+Inf" ? HUGE_VAL : std::atof(le->second.c_str())] += increase;
        }
        continue;
      }
      if (increase <= 0) continue;
      auto label = [&](const char* name) {
        auto l = s.labels.find(name);
        return l == s.labels.end() ? std::string("?") : l->second;
      };
      RowKey key{label("env"), label("consumer"), label("provider"), label("service")};
      ExchangeRow& row = rows[key];
      std::tie(row.env, row.consumer, row.provider, row.service) = key;
      const double rate = seconds > 0 ? increase / seconds : 0;
      row.per_second += rate;
      const std::string code = label("code");
      if (code == "OK") {
        row.ok_per_second += rate;
      } else {
        row.refused_per_second[code] += rate;
      }
    }
  }
  for (auto& [key, row] : rows) view.rows.push_back(std::move(row));
  std::stable_sort(view.rows.begin(), view.rows.end(),
                   [](const ExchangeRow& a, const ExchangeRow& b) {
                     return a.per_second > b.per_second;
                   });
  std::vector<std::pair<double, double>> buckets(latency.begin(), latency.end());
  const double p50 = Quantile(0.5, buckets), p99 = Quantile(0.99, buckets);
  view.added_latency_p50_ms = p50 < 0 ? -1 : p50 * 1e3;
  view.added_latency_p99_ms = p99 < 0 ? -1 : p99 * 1e3;
  return view;
}

std::string RenderTopTable(const TopView& view, const std::vector<std::string>& sources) {
  std::string out = fmt::format(
      "chasqui top: {} router(s), last {:.1f} s, {} in flight, router-added latency ",
      sources.size(), view.seconds, view.in_flight);
  out += view.added_latency_p50_ms < 0
             ? "(no exchanges)\n\n"
             : fmt::format("p50 {:.2f} ms p99 {:.2f} ms\n\n", view.added_latency_p50_ms,
                           view.added_latency_p99_ms);
  out += fmt::format("{:<5} {:<16} {:<16} {:<24} {:>9} {:>9}  {}\n", "ENV", "CONSUMER",
                     "PROVIDER", "SERVICE", "REQ/S", "OK/S", "REFUSED/S BY CODE");
  if (view.rows.empty()) out += "(no exchanges finished in this interval)\n";
  for (const ExchangeRow& r : view.rows) {
    std::string refused;
    for (const auto& [code, rate] : r.refused_per_second) {
      refused += fmt::format("{}{} {:.1f}", refused.empty() ? "" : ", ", code, rate);
    }
    out += fmt::format("{:<5} {:<16} {:<16} {:<24} {:>9.1f} {:>9.1f}  {}\n", r.env, r.consumer,
                       r.provider, r.service, r.per_second, r.ok_per_second, refused);
  }
  return out;
}

std::string RenderTopJson(const TopView& view) {
  nlohmann::json rows = nlohmann::json::array();
  for (const ExchangeRow& r : view.rows) {
    rows.push_back({{"env", r.env},
                    {"consumer", r.consumer},
                    {"provider", r.provider},
                    {"service", r.service},
                    {"per_second", r.per_second},
                    {"ok_per_second", r.ok_per_second},
                    {"refused_per_second", r.refused_per_second}});
  }
  nlohmann::json out = {{"seconds", view.seconds}, {"in_flight", view.in_flight}, {"rows", rows}};
  if (view.added_latency_p50_ms >= 0) {
    out["added_latency_ms"] = {{"p50", view.added_latency_p50_ms},
                               {"p99", view.added_latency_p99_ms}};
  }
  return out.dump();
}

namespace {

absl::StatusOr<std::vector<MetricSample>> Scrape(const std::string& base) {
  httplib::Client client(base);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(2, 0);
  auto res = client.Get("/metrics");
  if (!res) {
    const std::string why = res.error() == httplib::Error::Connection
                                ? "cannot connect: is a router running there, and is that its "
                                  "--ops-port?"
                                : "HTTP error " + httplib::to_string(res.error());
    return absl::UnavailableError(fmt::format("{}/metrics: {}", base, why));
  }
  if (res->status != 200) {
    return absl::UnavailableError(fmt::format("{}/metrics: HTTP {}", base, res->status));
  }
  auto samples = ParseMetricsText(res->body);
  if (!samples.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{}/metrics: {}", base, std::string(samples.status().message())));
  }
  return samples;
}

// One scrape of every router; a failing one contributes nothing and is reported.
std::vector<std::vector<MetricSample>> ScrapeAll(const std::vector<std::string>& routers,
                                                 bool* all_ok) {
  std::vector<std::vector<MetricSample>> out;
  for (const std::string& r : routers) {
    auto s = Scrape(r);
    if (!s.ok()) {
      std::cerr << "chasqui top: " << std::string(s.status().message()) << "\n";
      *all_ok = false;
      out.emplace_back();
    } else {
      out.push_back(*std::move(s));
    }
  }
  return out;
}

}  // namespace

int RunTop(const TopOptions& options) {
  if (!(options.interval_seconds > 0)) {
    std::cerr << "chasqui top: --interval must be positive\n";
    return 2;
  }
  bool ok = true;
  auto before = ScrapeAll(options.routers, &ok);
  auto at = std::chrono::steady_clock::now();
  for (;;) {
    std::this_thread::sleep_for(std::chrono::duration<double>(options.interval_seconds));
    auto after = ScrapeAll(options.routers, &ok);
    const auto now = std::chrono::steady_clock::now();
    const TopView view =
        ComputeTop(before, after, std::chrono::duration<double>(now - at).count());
    if (options.json) {
      std::cout << RenderTopJson(view) << std::endl;
    } else {
      if (!options.once) std::cout << "\033[H\033[2J";  // clear the terminal
      std::cout << RenderTopTable(view, options.routers) << std::flush;
    }
    if (options.once) return ok ? 0 : 1;
    before = std::move(after);
    at = now;
  }
}

}  // namespace chasqui
