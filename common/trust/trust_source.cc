#include "common/trust/trust_source.h"

#include <utility>

namespace chasqui {
namespace {

class FixedTrustSource final : public TrustSource {
 public:
  explicit FixedTrustSource(TrustStore store)
      : store_(std::make_shared<const TrustStore>(std::move(store))) {}
  const std::string& env() const override { return store_->env(); }
  absl::StatusOr<std::shared_ptr<const TrustStore>> Current() const override { return store_; }

 private:
  const std::shared_ptr<const TrustStore> store_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const TrustStore>> TrustSource::FetchEntity(std::string_view) {
  return Current();
}

absl::StatusOr<std::shared_ptr<const TrustStore>> TrustSource::FetchSerial(uint64_t) {
  return Current();
}

absl::StatusOr<std::shared_ptr<const TrustStore>> TrustSource::FetchSerials(
    const std::vector<uint64_t>&) {
  return Current();
}

std::shared_ptr<TrustSource> FixedTrust(TrustStore store) {
  return std::make_shared<FixedTrustSource>(std::move(store));
}

}  // namespace chasqui
