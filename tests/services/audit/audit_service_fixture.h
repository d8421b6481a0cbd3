#pragma once
// The audit service on a real nats-server and a real RocksDB store, with readers' certificates
// from a test root: the fixture of the service, access and report tests.

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/envelope/identity.h"
#include "gtest/gtest.h"
#include "services/audit/audit_access.h"
#include "services/audit/audit_client.h"
#include "services/audit/audit_service.h"
#include "tests/services/audit/audit_readers.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace chasqui::audit::testing {

using ::chasqui::testing::NatsServer;
using ::chasqui::testing::TempDir;

// A synchronous request over the test's own mux, for raw bytes.
inline std::optional<std::string> RawRequest(RequestMux& mux, const std::string& subject,
                                      const std::string& data) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::optional<std::string> reply;
  absl::Status s = mux.Request(subject, data, absl::Seconds(5),
                               [&](MuxOutcome outcome, const BusMessage* m) {
                                 std::lock_guard<std::mutex> lock(mu);
                                 if (outcome == MuxOutcome::kReply) reply = std::string(m->data);
                                 done = true;
                                 cv.notify_all();
                               });
  if (!s.ok()) return std::nullopt;
  std::unique_lock<std::mutex> lock(mu);
  cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; });
  return reply;
}

class AuditServiceFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    auto store = KvStore::Open({.path = dir_.File("audit")});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    signer_ = std::make_unique<LocalCheckpointSigner>(
        GenerateIdentity("audit", "test", Role::kRouter));
    metrics_ = std::make_unique<AuditMetrics>(registry_);
    auto chain = AuditChain::Open({.env = "test"}, store_.get(), signer_.get(), SystemClock(),
                                  metrics_.get());
    ASSERT_TRUE(chain.ok()) << chain.status();
    chain_ = *std::move(chain);
    auto server_bus = Bus::Connect({.url = nats_->url(), .name = "audit"});
    ASSERT_TRUE(server_bus.ok()) << server_bus.status();
    server_bus_ = *std::move(server_bus);
    operator_ = readers_.Make("ops", v1::CERTIFICATE_ROLE_OPERATOR, "olga");
    access_ = std::make_unique<AuditAccess>(AuditAccessOptions{}, readers_.dirs.lookup.get(),
                                            SystemClock());
    auto service = AuditService::Start(server_bus_.get(), chain_.get(), store_.get(),
                                       metrics_.get(), {.access = access_.get()});
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
    auto client_bus = Bus::Connect({.url = nats_->url(), .name = "router", .send_asap = true});
    ASSERT_TRUE(client_bus.ok()) << client_bus.status();
    client_bus_ = *std::move(client_bus);
    auto mux = RequestMux::Create(client_bus_.get(), "_INBOX._router.t1");
    ASSERT_TRUE(mux.ok()) << mux.status();
    mux_ = *std::move(mux);
  }

  void TearDown() override {
    client_.reset();
    mux_.reset();
    client_bus_.reset();
    service_.reset();
    access_.reset();
    server_bus_.reset();
    chain_.reset();
  }

  static int64_t Now() { return SystemClock().NowUnixMillis(); }

  TempDir dir_;
  Readers readers_{Now()};
  Holder operator_;
  std::unique_ptr<AuditAccess> access_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<LocalCheckpointSigner> signer_;
  prometheus::Registry registry_;
  std::unique_ptr<AuditMetrics> metrics_;
  std::unique_ptr<AuditChain> chain_;
  std::unique_ptr<Bus> server_bus_;
  std::unique_ptr<AuditService> service_;
  std::unique_ptr<Bus> client_bus_;
  std::unique_ptr<RequestMux> mux_;
  std::unique_ptr<AuditClient> client_;
};

}  // namespace chasqui::audit::testing
