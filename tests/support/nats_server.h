#pragma once
// A real nats-server for tests: loopback, random port (-p -1 with --ports_file_dir), its own
// temp dir. Killed (and its dir removed) on destruction.
// (Implementation: tests/support/nats_server.cc.)
