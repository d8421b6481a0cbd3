#include "tests/services/gateway/gateway_test_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>


#include "common/core/status.h"
#include "fmt/format.h"
#include "tests/support/wait_for.h"

namespace chasqui::testing {

std::string UpstreamSystem::Seen::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "<absent>" : it->second;
}

UpstreamSystem::UpstreamSystem(Handler handler) : handler_(std::move(handler)) {
  server_.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_.set_keep_alive_timeout(1);
  server_.Post(".*", [this](const httplib::Request& req, httplib::Response& res) {
    {
      absl::MutexLock lock(&mu_);
      seen_.push_back(Seen{req.path, req.body, req.headers});
    }
    ++calls_;
    handler_(req, res);
  });
  port_ = server_.bind_to_any_port("127.0.0.1");
  CHASQUI_CHECK(port_ > 0, "upstream system: bind failed");
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  CHASQUI_CHECK(WaitFor([this] { return server_.is_running(); }), "upstream system: no start");
}

UpstreamSystem::~UpstreamSystem() {
  stopping_.Notify();
  server_.stop();
  thread_.join();
}

std::string UpstreamSystem::Url(const std::string& path) const {
  return fmt::format("http://127.0.0.1:{}{}", port_, path);
}

UpstreamSystem::Seen UpstreamSystem::Last() {
  absl::MutexLock lock(&mu_);
  return seen_.empty() ? Seen{} : seen_.back();
}

int ClosedPort() {
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  CHASQUI_CHECK(sock >= 0, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  CHASQUI_CHECK(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0, "bind");
  socklen_t len = sizeof(addr);
  CHASQUI_CHECK(::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len) == 0, "name");
  ::close(sock);
  return ntohs(addr.sin_port);
}

std::string HttpReply::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "<absent>" : it->second;
}

HttpReply Send(int port, const std::string& method, const std::string& path,
               const std::string& body, const httplib::Headers& headers) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(std::chrono::seconds(15));
  client.set_write_timeout(std::chrono::seconds(5));
  httplib::Request req;
  req.method = method;
  req.path = path;
  req.headers = headers;
  req.body = body;
  if (!body.empty() && !req.has_header("Content-Type")) {
    req.set_header("Content-Type", "application/json");
  }
  HttpReply reply;
  httplib::Result res = client.send(req);
  if (!res) {
    reply.error = httplib::to_string(res.error());
    return reply;
  }
  reply.status = res->status;
  reply.body = res->body;
  reply.headers = res->headers;
  return reply;
}

}  // namespace chasqui::testing
