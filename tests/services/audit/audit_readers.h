#pragma once
// Readers of the audit trail for the access, report and CLI tests: real certificates from a
// test root (the catalog tests' TestRoot, common/trust underneath), a directory lookup that
// holds them, and signed query and report requests as `chasqui-audit query --key --cert`
// builds them.

#include <memory>
#include <string>

#include "chasqui/v1/audit.pb.h"
#include "gtest/gtest.h"
#include "common/core/clock.h"
#include "services/audit/audit_access.h"
#include "tests/services/catalog/catalog_test_support.h"

namespace chasqui::audit::testing {

using ::chasqui::testing::Directories;
using ::chasqui::testing::Holder;
using ::chasqui::testing::TestRoot;

// A test root, a directory with a fresh revocation list, and a holder per reader.
struct Readers {
  explicit Readers(int64_t now_ms) : root(now_ms), dirs(root, now_ms), now(now_ms) {}

  Holder Make(const std::string& entity, v1::CertificateRole role,
              const std::string& subject = "") {
    Holder h;
    h.entity = entity;
    h.subject = subject.empty() ? entity : subject;
    root.Issue(h, role);
    absl::Status s = dirs.Add(h, now);
    EXPECT_TRUE(s.ok()) << s;
    return h;
  }

  TestRoot root;
  Directories dirs;
  int64_t now;
};

inline v1::ControlRequest SignedQuery(const Holder& who, v1::QueryRequest q, int64_t now_ms) {
  v1::AuditControlBody body;
  *body.mutable_query() = std::move(q);
  return MakeAuditRequest(std::move(body), who.env, who.serial, who.key, now_ms);
}

inline v1::ControlRequest SignedReport(const Holder& who, v1::ReportRequest r, int64_t now_ms) {
  v1::AuditControlBody body;
  *body.mutable_report() = std::move(r);
  return MakeAuditRequest(std::move(body), who.env, who.serial, who.key, now_ms);
}

}  // namespace chasqui::audit::testing
