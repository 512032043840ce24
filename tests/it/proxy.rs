//! A loopback TCP proxy in front of sshd that can cut every open connection (the peer sees the
//! sockets close) or freeze them (bytes stop flowing, no FIN, no RST: a dead Wi-Fi link or a
//! sleeping Mac). New connections always pass, so a bridge that notices can reconnect.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct Link {
    sockets: [TcpStream; 2],
    frozen: Arc<AtomicBool>,
}

pub struct Proxy {
    pub port: u16,
    links: Arc<Mutex<Vec<Link>>>,
    accepted: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
}

impl Proxy {
    /// Forward 127.0.0.1:<port> to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let links = Arc::new(Mutex::new(Vec::<Link>::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        std::thread::spawn({
            let (links, accepted, stopping) = (links.clone(), accepted.clone(), stopping.clone());
            move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let frozen = Arc::new(AtomicBool::new(false));
                    pump(
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        frozen.clone(),
                    );
                    pump(
                        server.try_clone().unwrap(),
                        client.try_clone().unwrap(),
                        frozen.clone(),
                    );
                    links.lock().unwrap().push(Link {
                        sockets: [client, server],
                        frozen,
                    });
                }
            }
        });
        Self {
            port,
            links,
            accepted,
            stopping,
        }
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Close every open connection on both sides.
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            for socket in &link.sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }

    /// Stop forwarding on every open connection without closing anything.
    pub fn freeze(&self) {
        for link in self.links.lock().unwrap().iter() {
            link.frozen.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copy `from` → `to` until either side closes; once frozen, swallow what arrives (a black hole:
/// no byte forwarded, nothing closed) until the link is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        // A frozen link forwards no FIN either.
        if !frozen.load(Ordering::SeqCst) {
            let _ = to.shutdown(Shutdown::Write);
        }
    });
}
