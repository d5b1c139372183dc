// Noticing that an HTTP client hung up while its (non-streaming) request still runs. cpp-httplib
// 0.11 gives a handler neither its socket nor a closed-connection check, so the socket is found
// by its address pair among the process's descriptors. Streaming responses do not need this: the
// content provider's DataSink::is_writable() already checks the peer.
#pragma once

#include <string>

namespace dsv4::server {

class ConnectionWatch {
 public:
  // The socket whose local and peer addresses are these (as httplib::Request reports them).
  // Not found (should not happen while the request's handler runs): hung_up() stays false.
  ConnectionWatch(const std::string& local_addr, int local_port, const std::string& remote_addr,
                  int remote_port);
  bool found() const { return fd_ >= 0; }
  // The peer closed or reset the connection (a client that sends more bytes is still there).
  bool hung_up() const;
  // Reads on the connection see end-of-file from now on: after a refused request whose body was
  // not read, the connection ends instead of reading that body as a next request.
  void stop_reading() const;

 private:
  int fd_ = -1;  // borrowed: httplib closes it after the handler returns
};

}  // namespace dsv4::server
