#pragma once
// What a router calls to make its trace durable before it relays a reply (DESIGN.md, "One
// request, start to end", step 4: no trace, no data).
//
// Batching is adaptive, like the envelope batcher: an idle client sends a record at once, in a
// batch of one; while `max_in_flight_batches` batches await their acks, new records queue and
// leave together in the next batch (one NATS request to chq.ctl.audit.append per batch). No
// wait is ever added to grow a batch.
//
// Outcomes, per record, exactly once:
//   seq                 the record is durable (synced) under that sequence number
//   AlreadyExists       a duplicate (sender, request id): it was stored before; the router must
//                       not release this reply (REPLAYED)
//   Unavailable         the backlog is full, the audit service did not answer within `timeout`,
//                       nobody serves the subject, or its store failed: answer AUDIT_UNAVAILABLE
//   InvalidArgument     the audit service refused the record as malformed (a router bug)
// The callback runs on the mux's reply thread, its timeout thread, or (for a full backlog or a
// closed client) on the calling thread before Append returns. It must not block.
// Thread-safe.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "chasqui/v1/audit.pb.h"
#include "common/bus/request_mux.h"

namespace chasqui::audit {

struct AuditClientOptions {
  std::string subject = "chq.ctl.audit.append";
  // Records queued or awaiting an ack; beyond it Append answers Unavailable at once.
  size_t max_backlog = 10'000;
  size_t max_batch_records = 1024;
  // A batch stays under NATS's 1 MiB max_payload.
  size_t max_batch_bytes = 900 * 1024;
  int max_in_flight_batches = 2;
  absl::Duration timeout = absl::Seconds(2);
};

using AuditCallback = std::function<void(absl::StatusOr<uint64_t> seq)>;

class AuditClient {
 public:
  // `mux` (e.g. the router's own) must outlive the client; requests still in flight when the
  // client goes are answered by the mux (timeout or kClosed) into state the client keeps alive.
  static std::unique_ptr<AuditClient> Create(RequestMux* mux, AuditClientOptions options = {});
  // Answers queued records with Unavailable.
  ~AuditClient();

  void Append(v1::AuditRecord record, AuditCallback done);
  void AppendRefusalCount(v1::RefusalCount count, AuditCallback done);

  // Records queued or awaiting an ack.
  size_t backlog() const;
  uint64_t batches_sent() const;

  class Core;

 private:
  explicit AuditClient(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
};

}  // namespace chasqui::audit
