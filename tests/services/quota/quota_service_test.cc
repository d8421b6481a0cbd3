// The quota service over a real nats-server, with routers' QuotaEnforcers drawing leases over
// NATS: many concurrent callers on two routers never pass a cap of N and reach at least N
// minus what the routers still hold; an approved increase (request -> decide, signed) takes
// effect on live enforcers; garbage and malformed requests get precise errors.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/bus/bus.h"
#include "common/bus/request_mux.h"
#include "common/core/status.h"
#include "common/store/kv_store.h"
#include "common/trust/requests.h"
#include "gtest/gtest.h"
#include "services/quota/quota_service.h"
#include "tests/services/quota/quota_test_support.h"
#include "tests/support/metrics.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {
namespace {

const std::string kKey = GrantKeyString("test", "sin", "segip", "persona");

// Raw request-reply for the tests' own calls.
class RawClient {
 public:
  explicit RawClient(Bus* bus) { mux_ = *RequestMux::Create(bus, "_INBOX.test.quotatest"); }
  std::string Call(const std::string& subject, const std::string& data) {
    struct Answer {
      absl::Notification done;
      std::string data;
      MuxOutcome outcome;
    };
    auto a = std::make_shared<Answer>();
    absl::Status s = mux_->Request(subject, data, absl::Seconds(5),
                                   [a](MuxOutcome o, const BusMessage* reply) {
                                     a->outcome = o;
                                     if (reply != nullptr) a->data.assign(reply->data);
                                     a->done.Notify();
                                   });
    EXPECT_TRUE(s.ok()) << s;
    a->done.WaitForNotificationWithTimeout(absl::Seconds(10));
    EXPECT_EQ(a->outcome, MuxOutcome::kReply) << subject;
    return a->data;
  }
  template <class Reply>
  Reply Ask(const std::string& subject, const std::string& data) {
    Reply r;
    EXPECT_TRUE(r.ParseFromString(Call(subject, data))) << subject;
    return r;
  }

 private:
  std::unique_ptr<RequestMux> mux_;
};

class QuotaServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    KvOptions kv;
    kv.path = dir_.File("db");
    store_ = *KvStore::Open(kv);
    ledger_ = *QuotaLedger::Open(QuotaLedgerOptions(), store_.get(), SystemClock());
    control_ = std::make_unique<QuotaControl>(QuotaControlOptions(), ledger_.get(), &signers_,
                                              SystemClock());
    sin_manager_ = signers_.Add(2, v1::CERTIFICATE_ROLE_MANAGER, "sin");
    segip_manager_ = signers_.Add(3, v1::CERTIFICATE_ROLE_MANAGER, "segip");
    service_bus_ = Connect("quota");
    registry_ = std::make_shared<prometheus::Registry>();
    auto service = QuotaService::Start(QuotaServiceOptions(), service_bus_.get(), ledger_.get(),
                                       control_.get(), registry_);
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
    client_bus_ = Connect("client");
    client_ = std::make_unique<RawClient>(client_bus_.get());
  }
  void TearDown() override {
    routers_.clear();
    service_.reset();
  }
  std::unique_ptr<Bus> Connect(const std::string& name) {
    BusOptions o;
    o.url = nats_->url();
    o.name = name;
    o.send_asap = true;
    auto bus = Bus::Connect(o);
    EXPECT_TRUE(bus.ok()) << bus.status();
    return *std::move(bus);
  }

  // A "router": its own connection, lease source and enforcer (background worker on).
  struct Router {
    std::unique_ptr<Bus> bus;
    std::unique_ptr<NatsLeaseSource> source;
    std::unique_ptr<QuotaEnforcer> enforcer;
    std::unique_ptr<Subscription> policies;
  };
  Router* AddRouter(const std::string& id) {
    auto r = std::make_unique<Router>();
    r->bus = Connect(id);
    r->source = *NatsLeaseSource::Create(r->bus.get(), "_INBOX._router.test." + id + ".quota");
    QuotaEnforcerOptions o;
    o.router_id = id;
    o.min_lease = 16;
    auto e = QuotaEnforcer::Create(o, r->source.get(), SystemClock());
    EXPECT_TRUE(e.ok()) << e.status();
    r->enforcer = *std::move(e);
    r->policies = *WatchQuotaPolicies(r->bus.get(), r->enforcer.get());
    EXPECT_TRUE(r->enforcer->Prepare(kKey).ok());
    routers_.push_back(std::move(r));
    return routers_.back().get();
  }
  v1::GrantUsage Usage() {
    auto u = client_->Ask<v1::UsageReply>(kQuotaUsageSubject, v1::UsageRequest().SerializeAsString());
    EXPECT_EQ(u.status().code(), 0) << u.status().message();
    return u.grants_size() > 0 ? u.grants(0) : v1::GrantUsage();
  }

  TempDir dir_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<KvStore> store_;
  std::unique_ptr<QuotaLedger> ledger_;
  FakeSigners signers_;
  Person sin_manager_, segip_manager_;
  std::unique_ptr<QuotaControl> control_;
  std::unique_ptr<Bus> service_bus_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<QuotaService> service_;
  std::unique_ptr<Bus> client_bus_;
  std::unique_ptr<RawClient> client_;
  std::vector<std::unique_ptr<Router>> routers_;
};

TEST_F(QuotaServiceTest, ConcurrentCallersOnTwoRoutersNeverPassTheCap) {
  constexpr int kCap = 3000;
  constexpr int kThreadsPerRouter = 3;
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, kCap, 0), "test").ok());
  Router* r1 = AddRouter("r1");
  Router* r2 = AddRouter("r2");
  std::atomic<int> admitted{0};
  std::atomic<int> day_refusals{0};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::vector<std::thread> callers;
  for (Router* r : {r1, r2}) {
    for (int t = 0; t < kThreadsPerRouter; ++t) {
      callers.emplace_back([&, r] {
        while (std::chrono::steady_clock::now() < deadline) {
          QuotaAdmission a = r->enforcer->Admit(kKey, SystemClock().NowUnixMillis());
          if (a.admitted) {
            admitted.fetch_add(1);
          } else if (a.limit == v1::QUOTA_LIMIT_DAY) {
            day_refusals.fetch_add(1);
            return;  // the caller was told to come back tomorrow
          } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(a.retry_after_ms));
          }
        }
      });
    }
  }
  for (auto& t : callers) t.join();
  const uint64_t held = r1->enforcer->Outstanding() + r2->enforcer->Outstanding();
  EXPECT_EQ(day_refusals.load(), 2 * kThreadsPerRouter) << "callers ran out of time";
  EXPECT_LE(admitted.load(), kCap);
  EXPECT_GE(admitted.load(), kCap - static_cast<int>(held));
  // The service's count is exactly what was admitted plus what the routers hold.
  EXPECT_EQ(Usage().day_consumed(), static_cast<uint64_t>(admitted.load()) + held);
  ASSERT_TRUE(r1->enforcer->Drain().ok());
  ASSERT_TRUE(r2->enforcer->Drain().ok());
  EXPECT_EQ(Usage().day_consumed(), static_cast<uint64_t>(admitted.load()));
  std::printf("cap %d: admitted %d across 2 routers x %d callers, %llu held at the end\n", kCap,
              admitted.load(), kThreadsPerRouter, static_cast<unsigned long long>(held));
  service_->UpdateGauges();
  EXPECT_EQ(SeriesValue(*registry_, "chasqui_quota_consumed",
                        {"consumer=\"sin\"", "period=\"day\""}),
            admitted.load());
  EXPECT_GE(SeriesValue(*registry_, "chasqui_quota_refusals_total", {"limit=\"day\""}), 1);
}

TEST_F(QuotaServiceTest, AnApprovedIncreaseTakesEffectOnLiveRouters) {
  ASSERT_TRUE(ledger_->SetPolicy(Policy(Grant(), 0, 0, 5, 0), "test").ok());
  Router* r = AddRouter("r1");
  int admitted = 0;
  ASSERT_TRUE(WaitFor([&] {
    QuotaAdmission a = r->enforcer->Admit(kKey, SystemClock().NowUnixMillis());
    admitted += a.admitted;
    return a.limit == v1::QUOTA_LIMIT_DAY;
  }));
  EXPECT_EQ(admitted, 5);

  auto asked = client_->Ask<v1::QuotaRequestReply>(
      kQuotaRequestSubject,
      RequestIncrease(sin_manager_, Policy(Grant(), 0, 0, 50, 0), SystemClock().NowUnixMillis())
          .SerializeAsString());
  ASSERT_EQ(asked.status().code(), 0) << asked.status().message();
  EXPECT_EQ(asked.record().state(), v1::QUOTA_REQUEST_STATE_PENDING);
  // Still refused: a request alone changes nothing.
  EXPECT_FALSE(r->enforcer->Admit(kKey, SystemClock().NowUnixMillis()).admitted);

  auto decided = client_->Ask<v1::QuotaRequestReply>(
      kQuotaDecideSubject, DecideRequest(segip_manager_, asked.record().id(),
                                         v1::QUOTA_OUTCOME_APPROVE, SystemClock().NowUnixMillis())
                               .SerializeAsString());
  ASSERT_EQ(decided.status().code(), 0) << decided.status().message();
  EXPECT_EQ(decided.record().state(), v1::QUOTA_REQUEST_STATE_APPROVED);
  // The live enforcer admits again, without a restart, up to the new cap.
  ASSERT_TRUE(WaitFor([&] {
    QuotaAdmission a = r->enforcer->Admit(kKey, SystemClock().NowUnixMillis());
    admitted += a.admitted;
    return admitted > 5;
  }, std::chrono::seconds(5)));
  ASSERT_TRUE(WaitFor([&] {
    QuotaAdmission a = r->enforcer->Admit(kKey, SystemClock().NowUnixMillis());
    admitted += a.admitted;
    return a.limit == v1::QUOTA_LIMIT_DAY;
  }));
  EXPECT_EQ(admitted, 50);
}

TEST_F(QuotaServiceTest, GarbageAndMalformedRequestsGetPreciseErrors) {
  for (const char* subject : {kQuotaLeaseSubject, kQuotaReturnSubject, kQuotaUsageSubject}) {
    v1::LeaseReply r = client_->Ask<v1::LeaseReply>(subject, "\xff\xff\xff garbage");
    EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument)) << subject;
    EXPECT_NE(r.status().message().find("truncated or garbage"), std::string::npos)
        << r.status().message();
  }
  for (const char* subject : {kQuotaSetPolicySubject, kQuotaRequestSubject, kQuotaDecideSubject}) {
    v1::PolicyReply r = client_->Ask<v1::PolicyReply>(subject, "\x08\x01 not signed");
    EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument)) << subject;
    EXPECT_NE(r.status().message().find("not a ControlRequest"), std::string::npos)
        << r.status().message();
  }
  v1::LeaseRequest lease;
  lease.set_router_id("Router One");
  *lease.mutable_grant() = Grant();
  lease.set_wanted(5);
  auto bad_router = client_->Ask<v1::LeaseReply>(kQuotaLeaseSubject, lease.SerializeAsString());
  EXPECT_EQ(bad_router.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(bad_router.status().message().find("router_id"), std::string::npos);
  lease.set_router_id("r1");
  lease.mutable_grant()->set_env("staging");
  auto bad_env = client_->Ask<v1::LeaseReply>(kQuotaLeaseSubject, lease.SerializeAsString());
  EXPECT_NE(bad_env.status().message().find("grant.env \"staging\""), std::string::npos)
      << bad_env.status().message();
  v1::LeaseReturn ret;
  ret.set_router_id("r9");
  *ret.mutable_grant() = Grant();
  ret.set_unspent(3);
  auto unknown = client_->Ask<v1::ReturnReply>(kQuotaReturnSubject, ret.SerializeAsString());
  EXPECT_EQ(unknown.status().code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_NE(unknown.status().message().find("router r9 holds no lease"), std::string::npos);
  v1::UsageRequest usage;
  usage.set_consumer("../etc");
  auto bad_usage = client_->Ask<v1::UsageReply>(kQuotaUsageSubject, usage.SerializeAsString());
  EXPECT_EQ(bad_usage.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  // A request with no reply subject is dropped and counted.
  ASSERT_TRUE(client_bus_->Publish(kQuotaLeaseSubject, lease.SerializeAsString()).ok());
  EXPECT_TRUE(WaitFor([&] {
    return SeriesValue(*registry_, "chasqui_quota_requests_total",
                       {"verb=\"lease\"", "code=\"NO_REPLY_SUBJECT\""}) == 1;
  }));
  EXPECT_GE(SeriesValue(*registry_, "chasqui_quota_requests_total",
                        {"verb=\"lease\"", "code=\"INVALID_ARGUMENT\""}),
            3);
}

}  // namespace
}  // namespace chasqui::testing
