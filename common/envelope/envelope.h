#pragma once
// Parsing, shape checks, domain tags and the seal context of the envelope (DESIGN.md,
// "The envelope"). Nothing here trusts a size or a field from the wire.

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "chasqui/v1/envelope.pb.h"
#include "common/crypto/hash_tree.h"

namespace chasqui {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kIdBytes = 16;
inline constexpr size_t kHashBytes = 32;
// NATS's default max_payload. Envelopes above it cannot travel anyway.
inline constexpr size_t kDefaultMaxEnvelopeBytes = 1024 * 1024;
// Bounds on free-text header fields, so a header stays small.
inline constexpr size_t kMaxEndUserBytes = 128;
inline constexpr size_t kMaxTextFieldBytes = 256;
// Header.idempotency_key: the router refuses longer ones or control characters; gateways
// accept printable ASCII only (services/gateway/idempotency.h).
inline constexpr size_t kMaxIdempotencyKeyBytes = 128;
inline constexpr size_t kMaxErrorMessageBytes = 1024;

struct ParsedEnvelope {
  v1::Envelope envelope;  // envelope.header() holds the signed bytes, exactly as received
  v1::Header header;      // parsed from those bytes
};

// BAD_REQUEST (as a ChasquiError) naming the field if `wire` is not an envelope of this
// protocol version whose every field has the shape the protocol fixes. Addressing, keys and
// signatures are the caller's checks.
absl::StatusOr<ParsedEnvelope> ParseEnvelope(std::string_view wire);

// Domain tags: a verifier builds them from its own environment, never from the message.
std::string EnvelopeTag(std::string_view env);
// What the Ed25519 batch signature covers: tag || tree_size (u32, big-endian) || root.
std::string BatchSignedMessage(std::string_view tag, uint32_t tree_size, const Hash32& root);

// The associated data of a sealed body: a fixed layout of kind, env, id, nonce, consumer,
// provider, service, in_reply_to and both certificate serials, so a sealed body opens only in
// the envelope it was sealed for.
std::string SealContext(const v1::Header& header);

// Seals `plaintext` for the envelope `header` describes: sets header.sealed and header.nonce
// (from `nonces`), then encrypts under `tx` with SealContext(header) as associated data. Every
// other header field the context covers must be final before this call.
std::string SealBody(v1::Header& header, const SecretBytes& tx, NonceSource& nonces,
                     std::string_view plaintext);
// BAD_REQUEST if the header says the body is not sealed; UNAUTHENTICATED if it does not open.
absl::StatusOr<std::string> OpenBody(const v1::Header& header, const SecretBytes& rx,
                                     std::string_view body);

// A fresh 16-byte id, unique per process (random 8-byte prefix || 64-bit counter).
std::string NewEnvelopeId();

}  // namespace chasqui
