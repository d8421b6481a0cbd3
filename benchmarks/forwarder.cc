// chasqui-forwarder: the raw baseline of DESIGN.md's performance budget. It relays each
// request on `raw.req.<rest>` to `raw.svc.<rest>` with its own reply subject (one RequestMux,
// as the router does) and relays the answer back to the original reply subject. Two hops, the
// shape of the router, without a single check. Nothing here belongs on a real bus.

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/log.h"
#include "common/core/signals.h"
#include "common/core/status.h"
#include "fmt/format.h"
#include "nats/nats.h"

namespace {

constexpr std::string_view kRequestPrefix = "raw.req.";

int Fail(const absl::Status& status) {
  CHQ_LOG_ERROR("forwarder stopped: {}", chasqui::MessageOf(status));
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  chasqui::InitLogging("forwarder");
  chasqui::BusOptions bus_options;
  int64_t timeout_ms = 5000;
  bus_options.url = "nats://127.0.0.1:4222";

  CLI::App app{"chasqui-forwarder: a bare two-hop forwarder, the raw baseline of chasqui-bench"};
  app.add_option("--nats", bus_options.url, "NATS server URL");
  app.add_option("--nats-ca", bus_options.ca_file, "nats-server's CA (PEM): connect over TLS");
  app.add_option("--timeout-ms", timeout_ms, "wait this long for the responder");
  app.add_flag("--send-asap", bus_options.send_asap,
               "flush every publish at once (lower latency, lower pipelined throughput)");
  CLI11_PARSE(app, argc, argv);
  bus_options.name = fmt::format("chasqui-forwarder-{}", ::getpid());
  const absl::Duration timeout = absl::Milliseconds(timeout_ms);

  std::signal(SIGPIPE, SIG_IGN);
  chasqui::TerminationSignals signals;  // before any thread starts: they inherit the mask

  auto bus = chasqui::Bus::Connect(bus_options);
  if (!bus.ok()) return Fail(bus.status());
  chasqui::Bus* b = bus->get();
  auto mux = chasqui::RequestMux::Create(b, fmt::format("_INBOX.fwd.{}", ::getpid()));
  if (!mux.ok()) return Fail(mux.status());
  chasqui::RequestMux* m = mux->get();
  std::atomic<uint64_t> unanswered{0};
  auto sub = b->QueueSubscribe(
      "raw.req.>", "raw.forwarders", [b, m, timeout, &unanswered](const chasqui::BusMessage& msg) {
        if (msg.reply.empty() || msg.subject.size() <= kRequestPrefix.size()) return;
        std::string target = fmt::format("raw.svc.{}", msg.subject.substr(kRequestPrefix.size()));
        absl::Status sent =
            m->Request(target, msg.data, timeout,
                       [b, reply_to = std::string(msg.reply), &unanswered](
                           chasqui::MuxOutcome outcome, const chasqui::BusMessage* reply) {
                         if (outcome != chasqui::MuxOutcome::kReply) {
                           ++unanswered;  // the requester times out: that is what it measures
                           return;
                         }
                         (void)b->Publish(reply_to, reply->data);
                       });
        if (!sent.ok()) ++unanswered;
      });
  if (!sub.ok()) return Fail(sub.status());
  if (auto s = b->Flush(absl::Seconds(5)); !s.ok()) return Fail(s);
  CHQ_LOG_INFO("forwarder ready: raw.req.> -> raw.svc.> send_asap={}", bus_options.send_asap);

  const int sig = signals.Wait();
  CHQ_LOG_INFO("signal {}: stopping; {} requests were not answered", sig, unanswered.load());
  (void)(*sub)->Drain(absl::Seconds(2));
  sub->reset();
  mux->reset();
  (void)b->Drain(absl::Seconds(2));
  bus->reset();
  chasqui::CloseNatsLibrary();
  return 0;
}
