#pragma once
// The root key at rest (DESIGN.md, "Trust"): the Ed25519 secret sealed with crypto_secretbox
// under a key derived from a passphrase by crypto_pwhash (Argon2id). Decrypted only into
// sodium_malloc'ed memory; never logged, never in an error message.
//
// File (mode 0600, created with O_EXCL):
//   {"version":1,"key_id":HEX16,"sign_pk":B64,"kdf":"argon2id13","opslimit":N,"memlimit":N,
//    "salt":B64,"nonce":B64,"box":B64}

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/core/files.h"  // WriteFileDurably
#include "common/crypto/sodium.h"

namespace chasqui {

enum class KdfCost {
  kModerate,  // crypto_pwhash's MODERATE limits (256 MiB, ~1 s here): the default
  kInteractive,
  kTestOnlyMinimum,  // the library's minimum: for tests only, never for a real root
};
absl::StatusOr<KdfCost> ParseKdfCost(std::string_view name);  // moderate|interactive|test-minimum

// A passphrase in locked memory.
class Passphrase {
 public:
  explicit Passphrase(std::string_view text);
  std::string_view view() const { return AsView(bytes_.data(), size_); }

 private:
  SecretBytes bytes_;
  size_t size_;
};

// The first line of `path` (trailing newline stripped). PermissionDenied if group or others
// may read it, NotFound if missing, InvalidArgument if empty.
absl::StatusOr<Passphrase> ReadPassphraseFile(const std::string& path);
// Asks on the terminal (/dev/tty) without echo; `confirm` asks twice and refuses a mismatch.
// FailedPrecondition if there is no terminal (then use --passphrase-file).
absl::StatusOr<Passphrase> ReadPassphraseFromTerminal(std::string_view prompt, bool confirm);

// Encrypts `key` under `passphrase` and writes the file (AlreadyExists if present).
absl::Status WriteEncryptedRootKey(const std::string& path, const SigningKey& key,
                                   const Passphrase& passphrase, KdfCost cost);
// PermissionDenied "wrong passphrase" if it does not open (the message says the file may also
// have been altered), InvalidArgument if malformed, PermissionDenied if group/others may read
// it, DataLoss if the secret does not match the file's public key.
absl::StatusOr<SigningKey> ReadEncryptedRootKey(const std::string& path,
                                                const Passphrase& passphrase);

}  // namespace chasqui
