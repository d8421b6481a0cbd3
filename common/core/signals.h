#pragma once
// How a service waits for SIGINT/SIGTERM: block them in every thread (construct this before
// starting any thread, so threads inherit the mask) and wait for one on the main thread.

#include <csignal>

namespace chasqui {

class TerminationSignals {
 public:
  TerminationSignals();
  // Blocks until SIGINT or SIGTERM arrives; returns it.
  int Wait();

 private:
  sigset_t set_;
};

}  // namespace chasqui
