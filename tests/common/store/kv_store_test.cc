#include "common/store/kv_store.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace chasqui {
namespace {

using ::chasqui::testing::TempDir;

TEST(KvStore, PutGetDeleteAndNotFound) {
  TempDir dir;
  auto store = KvStore::Open({.path = dir.File("db")});
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Put("a", "1", Durability::kSynced).ok());
  EXPECT_EQ(*(*store)->Get("a"), "1");
  EXPECT_TRUE(absl::IsNotFound((*store)->Get("b").status()));
  KvBatch batch;
  batch.Delete("a");
  batch.Put("b", "2");
  ASSERT_TRUE((*store)->Write(batch, Durability::kBuffered).ok());
  EXPECT_TRUE(absl::IsNotFound((*store)->Get("a").status()));
  EXPECT_EQ(*(*store)->Get("b"), "2");
}

TEST(KvStore, ScansRangesBothWaysAndFindsTheLast) {
  TempDir dir;
  auto store = *KvStore::Open({.path = dir.File("db")});
  KvBatch batch;
  for (uint64_t i = 1; i <= 5; ++i) batch.Put("r" + BigEndian64(i * 10), std::to_string(i));
  batch.Put("s", "other prefix");
  ASSERT_TRUE(store->Write(batch, Durability::kSynced).ok());

  std::vector<std::string> seen;
  auto collect = [&](std::string_view, std::string_view v) {
    seen.emplace_back(v);
    return true;
  };
  ASSERT_TRUE(store->Scan("r" + BigEndian64(20), "r" + BigEndian64(50), collect).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"2", "3", "4"}));
  seen.clear();
  ASSERT_TRUE(store->Scan("r", "s", collect, /*reverse=*/true).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"5", "4", "3", "2", "1"}));

  auto last = store->Last("r", "s");
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(FromBigEndian64(last->first.substr(1)), 50u);
  EXPECT_TRUE(absl::IsNotFound(store->Last("q", "r").status()));
  auto all_last = store->Last("", "");
  ASSERT_TRUE(all_last.ok());
  EXPECT_EQ(all_last->first, "s");
}

TEST(KvStore, SecondOpenOfTheSameDirectoryIsUnavailableAndNamesThePath) {
  TempDir dir;
  auto first = KvStore::Open({.path = dir.File("db")});
  ASSERT_TRUE(first.ok());
  auto second = KvStore::Open({.path = dir.File("db")});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_NE(second.status().message().find(dir.File("db")), std::string::npos);
}

TEST(KvStore, DamagedTableFileIsReportedAsDataLoss) {
  TempDir dir;
  {
    auto store = *KvStore::Open({.path = dir.File("db")});
    KvBatch batch;
    for (int i = 0; i < 2000; ++i) batch.Put("k" + BigEndian64(i), std::string(100, 'v'));
    ASSERT_TRUE(store->Write(batch, Durability::kSynced).ok());
  }
  // Reopen so the WAL is flushed into a table file, then flip bytes in the middle of it.
  {
    auto store = *KvStore::Open({.path = dir.File("db")});
  }
  std::string sst;
  for (const auto& entry : std::filesystem::directory_iterator(dir.File("db"))) {
    if (entry.path().extension() == ".sst") sst = entry.path();
  }
  ASSERT_FALSE(sst.empty()) << "no table file was written";
  {
    std::fstream f(sst, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(sst) / 3));
    std::string junk(64, '\xA5');
    f.write(junk.data(), junk.size());
  }
  auto store = KvStore::Open({.path = dir.File("db")});
  absl::Status status;
  if (!store.ok()) {
    status = store.status();
  } else {
    status = (*store)->Scan("", "", [](std::string_view, std::string_view) { return true; });
  }
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
}

// What a synced write acknowledged survives kill -9 of the writer at any moment.
TEST(KvStore, SyncedWritesSurviveKillDashNine) {
  TempDir dir;
  int acks[2];
  ASSERT_EQ(pipe(acks), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(acks[0]);
    auto store = KvStore::Open({.path = dir.File("db")});
    if (!store.ok()) _exit(2);
    for (uint64_t i = 0;; ++i) {
      KvBatch batch;
      for (int j = 0; j < 10; ++j) batch.Put(BigEndian64(i * 10 + j), std::string(300, 'x'));
      if (!(*store)->Write(batch, Durability::kSynced).ok()) _exit(3);
      if (write(acks[1], &i, sizeof i) != sizeof i) _exit(4);
    }
  }
  close(acks[1]);
  uint64_t last_acked = 0;
  for (int n = 0; n < 200; ++n) {
    ASSERT_EQ(read(acks[0], &last_acked, sizeof last_acked), (ssize_t)sizeof last_acked);
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  // Drain acks the child sent before it died: each was sent after its sync returned.
  uint64_t value;
  while (read(acks[0], &value, sizeof value) == (ssize_t)sizeof value) last_acked = value;
  close(acks[0]);

  auto store = KvStore::Open({.path = dir.File("db")});
  ASSERT_TRUE(store.ok()) << store.status();
  uint64_t count = 0;
  ASSERT_TRUE((*store)
                  ->Scan("", BigEndian64(last_acked * 10 + 10),
                         [&](std::string_view, std::string_view) {
                           ++count;
                           return true;
                         })
                  .ok());
  EXPECT_EQ(count, last_acked * 10 + 10);
}

}  // namespace
}  // namespace chasqui
