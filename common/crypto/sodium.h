#pragma once
// Thin, typed wrappers over libsodium. Secrets live in sodium_malloc'ed, mlock'ed memory that
// is wiped when freed; they are never copied into ordinary strings.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace chasqui {

// Initialises libsodium once; safe to call from any thread, any number of times.
// CHECK-fails if the library cannot start (no entropy): nothing secure can happen then.
void InitSodium();

using Hash32 = std::array<uint8_t, 32>;
using SignPublicKey = std::array<uint8_t, 32>;
using KxPublicKey = std::array<uint8_t, 32>;
using SignatureBytes = std::array<uint8_t, 64>;

inline std::string_view AsView(const uint8_t* p, size_t n) {
  return {reinterpret_cast<const char*>(p), n};
}
template <size_t N>
std::string_view AsView(const std::array<uint8_t, N>& a) {
  return AsView(a.data(), N);
}
// Copies exactly N bytes from `s`; InvalidArgument naming `what` if the size differs.
template <size_t N>
absl::StatusOr<std::array<uint8_t, N>> ToArray(std::string_view s, std::string_view what);

// Fixed-size secret in locked memory, wiped on destruction. Move-only.
class SecretBytes {
 public:
  explicit SecretBytes(size_t size);
  ~SecretBytes();
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

void RandomBytes(uint8_t* out, size_t n);
std::string RandomString(size_t n);

Hash32 Blake2b256(std::string_view data);

std::string ToHex(std::string_view bytes);
absl::StatusOr<std::string> FromHex(std::string_view hex, std::string_view what);
std::string ToBase64(std::string_view bytes);
absl::StatusOr<std::string> FromBase64(std::string_view b64, std::string_view what);

// An Ed25519 key pair. The secret half stays in locked memory.
class SigningKey {
 public:
  static SigningKey Generate();
  // From the 64-byte libsodium secret key (seed || public key).
  static absl::StatusOr<SigningKey> FromSecret(std::string_view secret64);
  const SignPublicKey& public_key() const { return pk_; }
  SignatureBytes Sign(std::string_view message) const;
  // For writing a key file; the caller wipes what it copies.
  const SecretBytes& secret() const { return sk_; }

 private:
  SigningKey() : sk_(64) {}
  SignPublicKey pk_{};
  SecretBytes sk_;
};

bool VerifySignature(const SignPublicKey& pk, std::string_view message,
                     const SignatureBytes& signature);

// An X25519 key pair for crypto_kx.
class KxKey {
 public:
  static KxKey Generate();
  static absl::StatusOr<KxKey> FromSecret(std::string_view secret32);
  const KxPublicKey& public_key() const { return pk_; }
  const SecretBytes& secret() const { return sk_; }

 private:
  KxKey() : sk_(32) {}
  KxPublicKey pk_{};
  SecretBytes sk_;
};

// Per-direction session keys from crypto_kx. rx opens what the peer sent; tx seals what we send.
struct SessionKeys {
  SessionKeys() : rx(32), tx(32) {}
  SecretBytes rx;
  SecretBytes tx;
};
// The consumer is the client; the provider is the server. InvalidArgument if the peer key is
// unacceptable (libsodium refuses low-order points).
absl::StatusOr<SessionKeys> ClientSessionKeys(const KxKey& own, const KxPublicKey& server);
absl::StatusOr<SessionKeys> ServerSessionKeys(const KxKey& own, const KxPublicKey& client);

inline constexpr size_t kAeadNonceBytes = 24;
inline constexpr size_t kAeadTagBytes = 16;

// XChaCha20-Poly1305 (IETF). Appends nothing on failure.
std::string AeadSeal(const SecretBytes& key, std::string_view nonce24, std::string_view ad,
                     std::string_view plaintext);
// InvalidArgument if the ciphertext or its associated data was altered, or the key is wrong.
absl::StatusOr<std::string> AeadOpen(const SecretBytes& key, std::string_view nonce24,
                                     std::string_view ad, std::string_view ciphertext);

// Nonces for one process: a random 16-byte prefix || a 64-bit big-endian counter, so two
// nonces from one generator never repeat, and two processes collide with chance 2^-128.
// Thread-safe.
class NonceSource {
 public:
  NonceSource();
  std::string Next();

 private:
  std::array<uint8_t, 16> prefix_{};
  std::atomic<uint64_t> counter_{0};
};

template <size_t N>
absl::StatusOr<std::array<uint8_t, N>> ToArray(std::string_view s, std::string_view what) {
  if (s.size() != N) {
    return absl::InvalidArgumentError(std::string(what) + ": expected " + std::to_string(N) +
                                      " bytes, got " + std::to_string(s.size()));
  }
  std::array<uint8_t, N> out;
  std::copy(s.begin(), s.end(), reinterpret_cast<char*>(out.data()));
  return out;
}

}  // namespace chasqui
