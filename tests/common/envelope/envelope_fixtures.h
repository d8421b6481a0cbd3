#pragma once
// Valid headers and signed envelopes for the envelope tests. BatchSigner signs on its own
// thread; these helpers wait for the completions (no sleeps).

#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "chasqui/v1/envelope.pb.h"
#include "common/envelope/batch_signer.h"
#include "common/envelope/envelope.h"
#include "gtest/gtest.h"

namespace chasqui::testing {

inline constexpr int64_t kSentAt = 1'800'000'000'000;  // FakeClock's default now

inline v1::Header RequestHeader(uint64_t sender_cert, std::string env = "test") {
  v1::Header h;
  h.set_protocol_version(kProtocolVersion);
  h.set_id(NewEnvelopeId());
  h.set_env(std::move(env));
  h.set_kind(v1::KIND_REQUEST);
  h.set_consumer("segip");
  h.set_provider("sedem");
  h.set_service("persona-consulta");
  h.set_service_version("1.2.0");
  h.set_end_user("funcionario-0042");
  h.set_purpose("tramite de licencia");
  h.set_sent_at_ms(kSentAt);
  h.set_sender_cert(sender_cert);
  h.set_recipient_cert(77);
  return h;
}

inline v1::Header ReplyHeader(uint64_t sender_cert, const std::string& request_id) {
  v1::Header h = RequestHeader(sender_cert);
  h.set_kind(v1::KIND_REPLY);
  h.clear_end_user();
  h.set_in_reply_to(request_id);
  return h;
}

inline v1::Header ErrorHeader(uint64_t sender_cert, const std::string& request_id, v1::Code code) {
  v1::Header h = ReplyHeader(sender_cert, request_id);
  h.set_kind(v1::KIND_ERROR);
  h.mutable_error()->set_code(code);
  h.mutable_error()->set_message("no such person");
  return h;
}

// Signs one envelope and waits for it. Submitted alone to an idle signer, it is a batch of one.
inline std::string SignOne(BatchSigner& signer, v1::Header header, std::string body = "{}") {
  std::string wire;
  absl::Notification done;
  SignEnvelope(signer, std::move(header), std::move(body), [&](std::string w) {
    wire = std::move(w);
    done.Notify();
  });
  done.WaitForNotification();
  return wire;
}

// Signs `items` as one batch, deterministically: they are submitted from inside the completion
// of a first envelope, on the signing thread while it is busy, so they queue and its next
// round signs them together. Waits for all of them.
inline std::vector<std::string> SignBatch(BatchSigner& signer,
                                          std::vector<std::pair<v1::Header, std::string>> items,
                                          uint64_t primer_sender_cert) {
  std::vector<std::string> wires(items.size());
  absl::BlockingCounter pending(static_cast<int>(items.size()));
  SignEnvelope(signer, RequestHeader(primer_sender_cert), "primer", [&](std::string) {
    for (size_t i = 0; i < items.size(); ++i) {
      SignEnvelope(signer, std::move(items[i].first), std::move(items[i].second),
                   [&wires, &pending, i](std::string w) {
                     wires[i] = std::move(w);
                     pending.DecrementCount();
                   });
    }
  });
  pending.Wait();
  return wires;
}

inline std::string Wire(const v1::Envelope& e) { return e.SerializeAsString(); }

// Replaces the header of `wire` with `header`, keeping body and signature.
inline std::string WithHeader(const std::string& wire, const v1::Header& header) {
  v1::Envelope e;
  EXPECT_TRUE(e.ParseFromString(wire));
  e.set_header(header.SerializeAsString());
  return e.SerializeAsString();
}

}  // namespace chasqui::testing
