#include "services/crypto/root_key.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/core/files.h"
#include "common/core/status.h"
#include "common/trust/anchors.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace chasqui {
namespace {

using nlohmann::json;

void Wipe(std::string& s) {
  if (!s.empty()) sodium_memzero(s.data(), s.size());
  s.clear();
}

absl::Status Malformed(const std::string& path, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("root key file {}: {}", path, what));
}

absl::StatusOr<SecretBytes> DeriveKey(const Passphrase& passphrase, std::string_view salt,
                                      uint64_t opslimit, size_t memlimit) {
  SecretBytes key(crypto_secretbox_KEYBYTES);
  const std::string_view p = passphrase.view();
  if (crypto_pwhash(key.data(), key.size(), p.data(), p.size(),
                    reinterpret_cast<const uint8_t*>(salt.data()), opslimit, memlimit,
                    crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return absl::ResourceExhaustedError(
        fmt::format("crypto_pwhash needs {} bytes of memory and could not get them", memlimit));
  }
  return key;
}

absl::Status RefuseOpenToOthers(const std::string& path, std::string_view what) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(fmt::format(
        "{} {}: readable by group or others (mode {:o}); it must be mode 0600: chmod 600 {}",
        what, path, st.st_mode & 0777, path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<KdfCost> ParseKdfCost(std::string_view name) {
  if (name == "moderate") return KdfCost::kModerate;
  if (name == "interactive") return KdfCost::kInteractive;
  if (name == "test-minimum") return KdfCost::kTestOnlyMinimum;
  return absl::InvalidArgumentError(
      "KDF cost must be moderate, interactive or test-minimum (tests only)");
}

Passphrase::Passphrase(std::string_view text) : bytes_(text.empty() ? 1 : text.size()),
                                                  size_(text.size()) {
  if (!text.empty()) std::memcpy(bytes_.data(), text.data(), text.size());
}

absl::StatusOr<Passphrase> ReadPassphraseFile(const std::string& path) {
  CHASQUI_RETURN_IF_ERROR(RefuseOpenToOthers(path, "passphrase file"));
  CHASQUI_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "passphrase file"));
  size_t end = text.find('\n');
  if (end == std::string::npos) end = text.size();
  if (end > 0 && text[end - 1] == '\r') --end;
  if (end == 0) {
    Wipe(text);
    return absl::InvalidArgumentError(fmt::format("passphrase file {} is empty", path));
  }
  Passphrase p(std::string_view(text).substr(0, end));
  Wipe(text);
  return p;
}

absl::StatusOr<Passphrase> ReadPassphraseFromTerminal(std::string_view prompt, bool confirm) {
  const int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        "no terminal to ask for the passphrase: use --passphrase-file (mode 0600)");
  }
  termios saved;
  const bool is_tty = ::tcgetattr(fd, &saved) == 0;
  auto read_once = [&](std::string_view text) -> std::string {
    (void)!::write(fd, text.data(), text.size());
    if (is_tty) {
      termios quiet = saved;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      quiet.c_lflag |= ECHONL;
      ::tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    std::string line;
    char c;
    while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
    if (is_tty) ::tcsetattr(fd, TCSAFLUSH, &saved);
    return line;
  };
  std::string first = read_once(prompt);
  if (confirm) {
    std::string second = read_once("Repeat the passphrase: ");
    const bool same = first.size() == second.size() &&
                      sodium_memcmp(first.data(), second.data(), first.size()) == 0;
    Wipe(second);
    if (!same) {
      Wipe(first);
      ::close(fd);
      return absl::InvalidArgumentError("the two passphrases differ");
    }
  }
  ::close(fd);
  if (first.empty()) return absl::InvalidArgumentError("empty passphrase");
  Passphrase p(first);
  Wipe(first);
  return p;
}

absl::Status WriteEncryptedRootKey(const std::string& path, const SigningKey& key,
                                   const Passphrase& passphrase, KdfCost cost) {
  uint64_t ops = crypto_pwhash_OPSLIMIT_MODERATE;
  size_t mem = crypto_pwhash_MEMLIMIT_MODERATE;
  if (cost == KdfCost::kInteractive) {
    ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
    mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
  } else if (cost == KdfCost::kTestOnlyMinimum) {
    ops = crypto_pwhash_OPSLIMIT_MIN;
    mem = crypto_pwhash_MEMLIMIT_MIN;
  }
  const std::string salt = RandomString(crypto_pwhash_SALTBYTES);
  const std::string nonce = RandomString(crypto_secretbox_NONCEBYTES);
  CHASQUI_ASSIGN_OR_RETURN(SecretBytes box_key, DeriveKey(passphrase, salt, ops, mem));
  std::string box(crypto_secretbox_MACBYTES + 64, '\0');
  crypto_secretbox_easy(reinterpret_cast<uint8_t*>(box.data()), key.secret().data(), 64,
                        reinterpret_cast<const uint8_t*>(nonce.data()), box_key.data());
  json j{{"version", 1},
         {"key_id", RootKeyId(key.public_key())},
         {"sign_pk", ToBase64(AsView(key.public_key()))},
         {"kdf", "argon2id13"},
         {"opslimit", ops},
         {"memlimit", mem},
         {"salt", ToBase64(salt)},
         {"nonce", ToBase64(nonce)},
         {"box", ToBase64(box)}};
  return WriteFileDurably(path, j.dump(2) + "\n", 0600, /*replace=*/false);
}

absl::StatusOr<SigningKey> ReadEncryptedRootKey(const std::string& path,
                                                const Passphrase& passphrase) {
  CHASQUI_RETURN_IF_ERROR(RefuseOpenToOthers(path, "root key file"));
  CHASQUI_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "root key file"));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Malformed(path, "not a JSON object");
  auto str = [&](const char* f) -> absl::StatusOr<std::string> {
    auto it = j.find(f);
    if (it == j.end() || !it->is_string()) {
      return Malformed(path, fmt::format("field \"{}\" missing", f));
    }
    return FromBase64(it->get<std::string>(), f);
  };
  auto ops = j.find("opslimit");
  auto mem = j.find("memlimit");
  if (j.value("version", 0) != 1 || j.value("kdf", "") != "argon2id13" || ops == j.end() ||
      !ops->is_number_unsigned() || mem == j.end() || !mem->is_number_unsigned()) {
    return Malformed(path, "expected version 1, kdf argon2id13, opslimit and memlimit");
  }
  CHASQUI_ASSIGN_OR_RETURN(std::string pk_raw, str("sign_pk"));
  CHASQUI_ASSIGN_OR_RETURN(std::string salt, str("salt"));
  CHASQUI_ASSIGN_OR_RETURN(std::string nonce, str("nonce"));
  CHASQUI_ASSIGN_OR_RETURN(std::string box, str("box"));
  if (pk_raw.size() != 32 || salt.size() != crypto_pwhash_SALTBYTES ||
      nonce.size() != crypto_secretbox_NONCEBYTES ||
      box.size() != crypto_secretbox_MACBYTES + 64) {
    return Malformed(path, "a field has the wrong size");
  }
  CHASQUI_ASSIGN_OR_RETURN(SecretBytes box_key,
                           DeriveKey(passphrase, salt, ops->get<uint64_t>(), mem->get<size_t>()));
  SecretBytes secret(64);
  if (crypto_secretbox_open_easy(secret.data(), reinterpret_cast<const uint8_t*>(box.data()),
                                 box.size(), reinterpret_cast<const uint8_t*>(nonce.data()),
                                 box_key.data()) != 0) {
    return absl::PermissionDeniedError(fmt::format(
        "root key file {}: wrong passphrase (or the file was altered): it does not decrypt",
        path));
  }
  CHASQUI_ASSIGN_OR_RETURN(SigningKey key, SigningKey::FromSecret(AsView(secret.data(), 64)));
  if (AsView(key.public_key()) != pk_raw) {
    return absl::DataLossError(
        fmt::format("root key file {}: the secret does not match its sign_pk", path));
  }
  return key;
}

}  // namespace chasqui
