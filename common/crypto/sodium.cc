#include "common/crypto/sodium.h"

#include <sodium.h>

#include <cstring>
#include <new>
#include <utility>

#include "common/core/status.h"

namespace chasqui {

void InitSodium() {
  static const int rc = sodium_init();
  CHASQUI_CHECK(rc >= 0, "sodium_init failed");
}

SecretBytes::SecretBytes(size_t size) : size_(size) {
  InitSodium();
  // sodium_malloc places the buffer before a guard page and mlocks it.
  data_ = static_cast<uint8_t*>(sodium_malloc(size));
  if (data_ == nullptr) throw std::bad_alloc();
  sodium_memzero(data_, size);
}

SecretBytes::~SecretBytes() {
  if (data_ != nullptr) sodium_free(data_);  // wipes before freeing
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) sodium_free(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void RandomBytes(uint8_t* out, size_t n) {
  InitSodium();
  randombytes_buf(out, n);
}

std::string RandomString(size_t n) {
  std::string s(n, '\0');
  RandomBytes(reinterpret_cast<uint8_t*>(s.data()), n);
  return s;
}

Hash32 Blake2b256(std::string_view data) {
  Hash32 out;
  crypto_generichash(out.data(), out.size(), reinterpret_cast<const uint8_t*>(data.data()),
                     data.size(), nullptr, 0);
  return out;
}

std::string ToHex(std::string_view bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), reinterpret_cast<const uint8_t*>(bytes.data()),
                 bytes.size());
  out.pop_back();
  return out;
}

absl::StatusOr<std::string> FromHex(std::string_view hex, std::string_view what) {
  std::string out(hex.size() / 2, '\0');
  size_t len = 0;
  const char* end = nullptr;
  if (hex.size() % 2 != 0 ||
      sodium_hex2bin(reinterpret_cast<uint8_t*>(out.data()), out.size(), hex.data(), hex.size(),
                     nullptr, &len, &end) != 0 ||
      end != hex.data() + hex.size()) {
    return absl::InvalidArgumentError(std::string(what) + ": expected hexadecimal digits");
  }
  out.resize(len);
  return out;
}

std::string ToBase64(std::string_view bytes) {
  const int variant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const uint8_t*>(bytes.data()),
                    bytes.size(), variant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

absl::StatusOr<std::string> FromBase64(std::string_view b64, std::string_view what) {
  std::string out(b64.size(), '\0');
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<uint8_t*>(out.data()), out.size(), b64.data(),
                        b64.size(), nullptr, &len, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != b64.data() + b64.size()) {
    return absl::InvalidArgumentError(std::string(what) + ": expected standard base64");
  }
  out.resize(len);
  return out;
}

SigningKey SigningKey::Generate() {
  InitSodium();
  SigningKey key;
  crypto_sign_keypair(key.pk_.data(), key.sk_.data());
  return key;
}

absl::StatusOr<SigningKey> SigningKey::FromSecret(std::string_view secret64) {
  if (secret64.size() != crypto_sign_SECRETKEYBYTES) {
    return absl::InvalidArgumentError("Ed25519 secret key: expected 64 bytes");
  }
  InitSodium();
  SigningKey key;
  std::memcpy(key.sk_.data(), secret64.data(), 64);
  crypto_sign_ed25519_sk_to_pk(key.pk_.data(), key.sk_.data());
  // The secret embeds its public half; a mismatch means a damaged key file.
  SecretBytes seed(32);
  crypto_sign_ed25519_sk_to_seed(seed.data(), key.sk_.data());
  SignPublicKey derived;
  SecretBytes check(64);
  crypto_sign_seed_keypair(derived.data(), check.data(), seed.data());
  if (derived != key.pk_) {
    return absl::InvalidArgumentError("Ed25519 secret key: public half does not match its seed");
  }
  return key;
}

SignatureBytes SigningKey::Sign(std::string_view message) const {
  SignatureBytes sig;
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const uint8_t*>(message.data()),
                       message.size(), sk_.data());
  return sig;
}

bool VerifySignature(const SignPublicKey& pk, std::string_view message,
                     const SignatureBytes& signature) {
  return crypto_sign_verify_detached(signature.data(),
                                     reinterpret_cast<const uint8_t*>(message.data()),
                                     message.size(), pk.data()) == 0;
}

KxKey KxKey::Generate() {
  InitSodium();
  KxKey key;
  crypto_kx_keypair(key.pk_.data(), key.sk_.data());
  return key;
}

absl::StatusOr<KxKey> KxKey::FromSecret(std::string_view secret32) {
  if (secret32.size() != crypto_kx_SECRETKEYBYTES) {
    return absl::InvalidArgumentError("X25519 secret key: expected 32 bytes");
  }
  InitSodium();
  KxKey key;
  std::memcpy(key.sk_.data(), secret32.data(), 32);
  crypto_scalarmult_base(key.pk_.data(), key.sk_.data());
  return key;
}

absl::StatusOr<SessionKeys> ClientSessionKeys(const KxKey& own, const KxPublicKey& server) {
  SessionKeys keys;
  if (crypto_kx_client_session_keys(keys.rx.data(), keys.tx.data(), own.public_key().data(),
                                    own.secret().data(), server.data()) != 0) {
    return absl::InvalidArgumentError("the provider's key-exchange public key is unacceptable");
  }
  return keys;
}

absl::StatusOr<SessionKeys> ServerSessionKeys(const KxKey& own, const KxPublicKey& client) {
  SessionKeys keys;
  if (crypto_kx_server_session_keys(keys.rx.data(), keys.tx.data(), own.public_key().data(),
                                    own.secret().data(), client.data()) != 0) {
    return absl::InvalidArgumentError("the consumer's key-exchange public key is unacceptable");
  }
  return keys;
}

std::string AeadSeal(const SecretBytes& key, std::string_view nonce24, std::string_view ad,
                     std::string_view plaintext) {
  CHASQUI_CHECK(nonce24.size() == kAeadNonceBytes && key.size() == 32, "bad AEAD key or nonce");
  std::string out(plaintext.size() + kAeadTagBytes, '\0');
  unsigned long long out_len = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      reinterpret_cast<uint8_t*>(out.data()), &out_len,
      reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size(),
      reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), nullptr,
      reinterpret_cast<const uint8_t*>(nonce24.data()), key.data());
  out.resize(out_len);
  return out;
}

absl::StatusOr<std::string> AeadOpen(const SecretBytes& key, std::string_view nonce24,
                                     std::string_view ad, std::string_view ciphertext) {
  if (nonce24.size() != kAeadNonceBytes || ciphertext.size() < kAeadTagBytes) {
    return absl::InvalidArgumentError("sealed body: nonce or ciphertext too short");
  }
  std::string out(ciphertext.size() - kAeadTagBytes, '\0');
  unsigned long long out_len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<uint8_t*>(out.data()), &out_len, nullptr,
          reinterpret_cast<const uint8_t*>(ciphertext.data()), ciphertext.size(),
          reinterpret_cast<const uint8_t*>(ad.data()), ad.size(),
          reinterpret_cast<const uint8_t*>(nonce24.data()), key.data()) != 0) {
    return absl::InvalidArgumentError(
        "sealed body does not open: altered, re-addressed, or sealed for another key");
  }
  out.resize(out_len);
  return out;
}

NonceSource::NonceSource() { RandomBytes(prefix_.data(), prefix_.size()); }

std::string NonceSource::Next() {
  const uint64_t n = counter_.fetch_add(1, std::memory_order_relaxed);
  std::string out(kAeadNonceBytes, '\0');
  std::memcpy(out.data(), prefix_.data(), prefix_.size());
  for (int i = 0; i < 8; ++i) out[16 + i] = static_cast<char>((n >> (56 - 8 * i)) & 0xff);
  return out;
}

}  // namespace chasqui
