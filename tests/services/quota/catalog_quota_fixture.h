#pragma once
// A real nats-server with the real catalog and quota services in this process (RocksDB in a
// temp dir, certificates from a test root: catalog_test_support.h's World), for the tests of
// what joins them: quota policies from the catalog, and the people's `chasqui` verbs.

#include <memory>
#include <string>

#include "common/bus/bus.h"
#include "common/core/clock.h"
#include "common/store/kv_store.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/catalog/catalog.h"
#include "services/catalog/catalog_service.h"
#include "services/quota/quota_control.h"
#include "services/quota/quota_ledger.h"
#include "services/quota/quota_service.h"
#include "tests/services/catalog/catalog_test_support.h"
#include "tests/support/nats_server.h"
#include "tests/support/temp_dir.h"

namespace chasqui::testing {

class CatalogQuotaTest : public ::testing::Test {
 protected:
  CatalogQuotaTest() : world_(clock_.NowUnixMillis()), signer_(world_.Signer()) {}

  void SetUp() override {
    auto nats = NatsServer::Start();
    ASSERT_TRUE(nats.ok()) << nats.status();
    nats_ = *std::move(nats);
    bus_ = Connect("services");
    ASSERT_NE(bus_, nullptr);
    auto cstore = KvStore::Open({.path = dir_.File("catalog")});
    ASSERT_TRUE(cstore.ok()) << cstore.status();
    catalog_store_ = *std::move(cstore);
    CatalogOptions co;
    co.nta_hash = NtaHash();
    auto c = Catalog::Open(co, catalog_store_.get(), *world_.dirs.lookup, *signer_, clock_);
    ASSERT_TRUE(c.ok()) << c.status();
    catalog_ = *std::move(c);
    auto cs = CatalogService::Start({}, bus_.get(), catalog_.get(),
                                    std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(cs.ok()) << cs.status();
    catalog_service_ = *std::move(cs);
    StartQuota();
  }

  void TearDown() override {
    StopQuota();
    catalog_service_.reset();
  }

  // The quota service on its store (kept across a stop and a start: a restart).
  void StartQuota() {
    auto qstore = KvStore::Open({.path = dir_.File("quota")});
    ASSERT_TRUE(qstore.ok()) << qstore.status();
    quota_store_ = *std::move(qstore);
    auto l = QuotaLedger::Open({}, quota_store_.get(), clock_);
    ASSERT_TRUE(l.ok()) << l.status();
    ledger_ = *std::move(l);
    control_ = std::make_unique<QuotaControl>(QuotaControlOptions{}, ledger_.get(),
                                              world_.dirs.lookup.get(), clock_);
    auto qs = QuotaService::Start({}, bus_.get(), ledger_.get(), control_.get(),
                                  std::make_shared<prometheus::Registry>(), clock_);
    ASSERT_TRUE(qs.ok()) << qs.status();
    quota_service_ = *std::move(qs);
  }
  void StopQuota() {
    quota_service_.reset();
    control_.reset();
    ledger_.reset();
    quota_store_.reset();
  }

  std::unique_ptr<Bus> Connect(const std::string& name) {
    BusOptions bo;
    bo.url = nats_->url();
    bo.name = name;
    bo.send_asap = true;
    auto bus = Bus::Connect(bo);
    EXPECT_TRUE(bus.ok()) << bus.status();
    return bus.ok() ? *std::move(bus) : nullptr;
  }

  // The real clock: `chasqui` processes sign with it.
  const Clock& clock_ = SystemClock();
  World world_;
  std::unique_ptr<LocalCatalogSigner> signer_;
  TempDir dir_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<Bus> bus_;
  std::unique_ptr<KvStore> catalog_store_, quota_store_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<CatalogService> catalog_service_;
  std::unique_ptr<QuotaLedger> ledger_;
  std::unique_ptr<QuotaControl> control_;
  std::unique_ptr<QuotaService> quota_service_;
};

}  // namespace chasqui::testing
