//! Ports on 127.0.0.1, as the kernel hands them out.

use std::net::SocketAddr;

/// A port on 127.0.0.1 for a server that cannot be handed a listening
/// socket: the kernel picks a free one, which is released for the server
/// to bind. A server that then finds it taken is started again on another
/// (see each server's start).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// A port on 127.0.0.1 that refuses connections for as long as the
/// returned socket lives: bound, never listening. Unlike a listener bound
/// and dropped, no other process can take the port meanwhile.
pub fn refusing_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}
