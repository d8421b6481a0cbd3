#include "services/audit/audit_client.h"

#include <deque>
#include <mutex>
#include <utility>
#include <vector>

#include "common/core/status.h"
#include "fmt/format.h"

namespace chasqui::audit {
namespace {

struct Item {
  bool refusal = false;
  v1::AuditRecord record;
  v1::RefusalCount count;
  size_t bytes = 0;
  AuditCallback done;
};

absl::StatusOr<uint64_t> FromAck(const v1::RecordAck& ack) {
  switch (ack.status()) {
    case v1::ACK_DURABLE:
      return ack.seq();
    case v1::ACK_REPLAYED:
      return absl::AlreadyExistsError(fmt::format("audit: duplicate (sender, request id): {}",
                                                  ack.error()));
    case v1::ACK_REJECTED:
      return absl::InvalidArgumentError(fmt::format("audit refused the record: {}", ack.error()));
    default:
      return absl::UnavailableError(fmt::format("audit could not store the record: {}",
                                                ack.error()));
  }
}

}  // namespace

class AuditClient::Core : public std::enable_shared_from_this<AuditClient::Core> {
 public:
  Core(RequestMux* mux, AuditClientOptions options) : mux_(mux), options_(std::move(options)) {}

  void Add(Item item) {
    std::vector<Item> batch;
    absl::Status refused;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) {
        refused = absl::UnavailableError("audit client closed");
      } else if (queue_.size() + in_flight_records_ >= options_.max_backlog) {
        refused = absl::UnavailableError(fmt::format(
            "audit backlog full ({} records await the audit service)", options_.max_backlog));
      } else {
        queue_.push_back(std::move(item));
        if (in_flight_batches_ < options_.max_in_flight_batches) TakeLocked(batch);
      }
    }
    if (!refused.ok()) {
      item.done(refused);
      return;
    }
    if (!batch.empty()) Send(std::move(batch));
  }

  void Close() {
    std::deque<Item> left;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      left.swap(queue_);
    }
    for (Item& item : left) item.done(absl::UnavailableError("audit client closed"));
  }

  size_t backlog() const {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size() + in_flight_records_;
  }
  uint64_t batches_sent() const {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_sent_;
  }

 private:
  // Moves the next batch out of the queue and counts it in flight.
  void TakeLocked(std::vector<Item>& batch) {
    size_t bytes = 0;
    while (!queue_.empty() && batch.size() < options_.max_batch_records &&
           (batch.empty() || bytes + queue_.front().bytes <= options_.max_batch_bytes)) {
      bytes += queue_.front().bytes;
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    if (batch.empty()) return;
    ++in_flight_batches_;
    in_flight_records_ += batch.size();
    ++batches_sent_;
  }

  // Sends `batch`; when a publish fails at once, answers it and sends what queued meanwhile.
  void Send(std::vector<Item> batch) {
    while (!batch.empty()) {
      v1::AppendBatch wire;
      // Moved, not copied: an item keeps only its callback once it is on the wire.
      for (Item& item : batch) {
        if (item.refusal) {
          *wire.add_refusal_counts() = std::move(item.count);
        } else {
          *wire.add_records() = std::move(item.record);
        }
      }
      auto items = std::make_shared<std::vector<Item>>(std::move(batch));
      batch.clear();
      auto self = shared_from_this();
      absl::Status sent = mux_->Request(
          options_.subject, wire.SerializeAsString(), options_.timeout,
          [self, items](MuxOutcome outcome, const BusMessage* reply) {
            std::vector<Item> next = self->Answer(*items, outcome, reply, absl::OkStatus());
            if (!next.empty()) self->Send(std::move(next));
          });
      if (sent.ok()) return;
      batch = Answer(*items, MuxOutcome::kClosed, nullptr,
                     absl::UnavailableError(fmt::format("audit: cannot publish: {}",
                                                        MessageOf(sent))));
    }
  }

  // Calls each item's callback, frees its slot, and returns the next batch to send (if any).
  std::vector<Item> Answer(std::vector<Item>& items, MuxOutcome outcome, const BusMessage* reply,
                           absl::Status failure) {
    std::vector<absl::StatusOr<uint64_t>> results(items.size(),
                                                  absl::UnavailableError("audit: no answer"));
    if (!failure.ok()) {
      std::fill(results.begin(), results.end(), failure);
    } else if (outcome == MuxOutcome::kTimeout) {
      std::fill(results.begin(), results.end(),
                absl::UnavailableError(fmt::format("audit service did not answer within {}",
                                                   absl::FormatDuration(options_.timeout))));
    } else if (outcome == MuxOutcome::kNoResponders) {
      std::fill(results.begin(), results.end(),
                absl::UnavailableError("audit service: no responders on " + options_.subject));
    } else if (outcome == MuxOutcome::kClosed || reply == nullptr) {
      std::fill(results.begin(), results.end(), absl::UnavailableError("audit: request closed"));
    } else {
      v1::AppendAck ack;
      if (!ack.ParseFromArray(reply->data.data(), static_cast<int>(reply->data.size()))) {
        std::fill(results.begin(), results.end(),
                  absl::UnavailableError("audit: the ack does not parse"));
      } else if (ack.has_error() && ack.error().code() != v1::OK) {
        std::fill(results.begin(), results.end(),
                  absl::InvalidArgumentError(fmt::format("audit refused the batch: {}",
                                                         ack.error().message())));
      } else {
        int r = 0;
        int c = 0;
        for (size_t i = 0; i < items.size(); ++i) {
          const bool refusal = items[i].refusal;
          const auto& acks = refusal ? ack.refusal_counts() : ack.records();
          const int index = refusal ? c++ : r++;
          results[i] = index < acks.size()
                           ? FromAck(acks[index])
                           : absl::UnavailableError("audit: the ack misses this record");
        }
      }
    }
    // The slots are free before anyone hears of the outcome, so a callback may append again.
    std::vector<Item> next;
    {
      std::lock_guard<std::mutex> lock(mu_);
      --in_flight_batches_;
      in_flight_records_ -= items.size();
      if (!closed_) TakeLocked(next);
    }
    for (size_t i = 0; i < items.size(); ++i) items[i].done(std::move(results[i]));
    return next;
  }

  RequestMux* const mux_;
  const AuditClientOptions options_;
  mutable std::mutex mu_;
  std::deque<Item> queue_;
  int in_flight_batches_ = 0;
  size_t in_flight_records_ = 0;
  uint64_t batches_sent_ = 0;
  bool closed_ = false;
};

std::unique_ptr<AuditClient> AuditClient::Create(RequestMux* mux, AuditClientOptions options) {
  return std::unique_ptr<AuditClient>(
      new AuditClient(std::make_shared<Core>(mux, std::move(options))));
}

AuditClient::~AuditClient() { core_->Close(); }

void AuditClient::Append(v1::AuditRecord record, AuditCallback done) {
  Item item;
  item.bytes = record.ByteSizeLong() + 8;
  item.record = std::move(record);
  item.done = std::move(done);
  core_->Add(std::move(item));
}

void AuditClient::AppendRefusalCount(v1::RefusalCount count, AuditCallback done) {
  Item item;
  item.refusal = true;
  item.bytes = count.ByteSizeLong() + 8;
  item.count = std::move(count);
  item.done = std::move(done);
  core_->Add(std::move(item));
}

size_t AuditClient::backlog() const { return core_->backlog(); }
uint64_t AuditClient::batches_sent() const { return core_->batches_sent(); }

}  // namespace chasqui::audit
