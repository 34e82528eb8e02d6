//! No response an app sends may panic an `http` check (issue 32): a panic
//! is caught by the engine, but the run becomes Unknown, which moves no
//! threshold, so the app's verdict would never change. Property tests
//! feed arbitrary bytes, then HTTP/1 heads, bodies and chunked framing
//! built from the pieces Go and hyper disagree on, to the real check over
//! a real socket on 127.0.0.1, and assert that no run panics, whether in
//! the check itself (its task's `JoinError`, as `engine::run_guarded`
//! sees it) or in a task it spawned (hyper's connection task: a panic
//! hook counting the panics on this test's thread, which runs every task
//! of its current-thread runtime), and that every run ends within its
//! timeout.
//!
//! On a failure proptest prints the shrunk response and saves its seed in
//! `tests/proptest-regressions/response_fuzz.txt`: commit that file,
//! so the case is tried first from then on.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use healthproxy::check::Check;
use healthproxy::config::{CheckKind, HttpMethod};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A run's timeout. Every app here closes after answering, so a run
/// waits for nothing: reaching it is a hang.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The names of the threads every panic since the hook went in was on.
static PANICKED_ON: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// How many panics this thread has had, once a hook counting them is in
/// (the previous hook still prints them).
fn panics_here() -> usize {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            PANICKED_ON.lock().unwrap_or_else(|e| e.into_inner()).push(name);
            previous(info);
        }));
    });
    let me = std::thread::current().name().unwrap_or("").to_string();
    PANICKED_ON
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|n| **n == me)
        .count()
}

/// Answers every connection with `response` after reading the request
/// head, then closes (draining what the client still sends, so that the
/// close is not a reset).
async fn serve(listener: TcpListener, response: Arc<Vec<u8>>) {
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        connections.spawn(answer(stream, Arc::clone(&response)));
    }
}

async fn answer(mut stream: TcpStream, response: Arc<Vec<u8>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut Vec::new())).await;
}

/// Runs an `http` check (GET or HEAD) once against an app answering
/// `response`; the failure, if the run panicked or hung.
fn run_once(response: Vec<u8>, method: HttpMethod) -> Result<(), TestCaseError> {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
    }
    let before = panics_here();
    let (outcome, took) = RUNTIME.with(|rt| {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let app = tokio::spawn(serve(listener, Arc::new(response.clone())));
            let mut spec = crate::http_check::spec(port, "/");
            spec.method = method;
            let check = Check::new("fuzz", &CheckKind::Http(Box::new(spec))).unwrap();
            let started = Instant::now();
            // Its own task, as the engine runs it: a panic is a JoinError.
            let outcome = tokio::spawn(async move { check.run(TIMEOUT).await }).await;
            let took = started.elapsed();
            app.abort();
            (outcome, took)
        })
    });
    let shown = String::from_utf8_lossy(&response);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the run panicked ({e}) on {shown:?}"
            )));
        }
    };
    prop_assert_eq!(panics_here(), before, "a task of the run panicked on {:?}", shown);
    prop_assert!(
        !outcome.message.contains("panicked"),
        "{:?} on {:?}",
        outcome,
        shown
    );
    prop_assert!(
        took < TIMEOUT + Duration::from_secs(1),
        "the run took {:?} on {:?}",
        took,
        shown
    );
    Ok(())
}

fn method() -> impl Strategy<Value = HttpMethod> {
    prop_oneof![4 => Just(HttpMethod::Get), 1 => Just(HttpMethod::Head)]
}

/// Picks one of `pieces`, or (one time in `1 + pieces.len() / 4`) any
/// short byte string.
fn piece(pieces: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let known = prop::sample::select(pieces).prop_map(|p| p.as_bytes().to_vec());
    prop_oneof![4 => known, 1 => prop::collection::vec(any::<u8>(), 0..12)]
}

const STATUS_LINES: &[&str] = &[
    "HTTP/1.1 200 OK",
    "HTTP/1.0 200 OK",
    "HTTP/1.1  200 OK",
    "HTTP/1.1 204 No Content",
    "HTTP/1.1 304 Not Modified",
    "HTTP/1.1 100 Continue",
    "HTTP/1.1 101 Switching Protocols",
    "HTTP/1.1 302 Found",
    "HTTP/1.1 500",
    "HTTP/1.2 200 OK",
    "HTTP/2.0 200 OK",
    "HTTP/0.9 200 OK",
    "HTTP/1.1 099 Low",
    "HTTP/1.1 +20 Sign",
    "HTTP/1.1 -00 Sign",
    "HTTP/1.1 2000 Long",
    "HTTP/1.1 200 O\rK",
    "HTTP/1.x 200 OK",
    "",
    "garbage",
];

const NAMES: &[&str] = &[
    "Content-Length",
    "content-length",
    "Transfer-Encoding",
    "Trailer",
    "Location",
    "Connection",
    "X-Custom",
    "Content-Length ",
    "Transfer-Encoding ",
    " X-Lead",
    "X@Bad",
    "",
];

const SEPARATORS: &[&str] = &[": ", ":", " : ", ":\t", "", ": \r\n "];

const VALUES: &[&str] = &[
    "0",
    "2",
    "5",
    "10240",
    "10241",
    "2, 2",
    "",
    "-1",
    "+2",
    "99999999999999999999",
    "9223372036854775807",
    "chunked",
    "CHUNKED",
    "identity",
    "gzip, chunked",
    "chunked, chunked",
    "Content-Length",
    "/again",
    "http://127.0.0.1:1/",
    "http://[::1",
    "close",
    "keep-alive",
];

const ENDINGS: &[&str] = &["\r\n", "\n", "\r", "\r\r\n", ""];

const CHUNK_SIZES: &[&str] = &[
    "0",
    "2",
    "a",
    "A",
    "ffffffffffffffff",
    "1;ext=1",
    "2 ",
    " 2",
    "-1",
    "zz",
    "",
];

/// A response head built from the pieces above.
fn head() -> impl Strategy<Value = Vec<u8>> {
    let field = (piece(NAMES), piece(SEPARATORS), piece(VALUES), piece(ENDINGS));
    (
        piece(STATUS_LINES),
        piece(ENDINGS),
        prop::collection::vec(field, 0..6),
        piece(ENDINGS),
    )
        .prop_map(|(status, end, fields, blank)| {
            let mut head = status;
            head.extend_from_slice(&end);
            for (name, separator, value, end) in fields {
                head.extend(name.iter().chain(&separator).chain(&value).chain(&end));
            }
            head.extend_from_slice(&blank);
            head
        })
}

/// A chunked body, well or badly framed.
fn chunked() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        piece(CHUNK_SIZES),
        piece(ENDINGS),
        prop::collection::vec(any::<u8>(), 0..12),
        piece(ENDINGS),
    );
    (
        prop::collection::vec(chunk, 0..5),
        piece(&["0\r\n\r\n", "0\r\nX-T: 1\r\n\r\n", "0\r\n", ""]),
    )
        .prop_map(|(chunks, last)| {
            let mut body = Vec::new();
            for (size, end, data, data_end) in chunks {
                body.extend(size.iter().chain(&end).chain(&data).chain(&data_end));
            }
            body.extend_from_slice(&last);
            body
        })
}

/// A head and a body, as an app may send them.
fn response() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![
        chunked(),
        prop::collection::vec(any::<u8>(), 0..64),
        (0usize..12_000).prop_map(|n| vec![b'a'; n]),
    ];
    (prop::collection::vec(head(), 1..3), body).prop_map(|(heads, body)| {
        let mut response = heads.concat();
        response.extend_from_slice(&body);
        response
    })
}

/// A well-formed response with a few bytes changed, added or cut.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    const GOOD: &[&str] = &[
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n two\r\n\r\nbody",
    ];
    let edit = (any::<prop::sample::Index>(), 0u8..3, any::<u8>());
    (prop::sample::select(GOOD), prop::collection::vec(edit, 1..6)).prop_map(|(good, edits)| {
        let mut bytes = good.as_bytes().to_vec();
        for (at, kind, byte) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_byte_sequence_panics_an_http_check(bytes in prop::collection::vec(any::<u8>(), 0..400), method in method()) {
        run_once(bytes, method)?;
    }

    #[test]
    fn no_http1_head_body_or_chunked_framing_panics_an_http_check(bytes in response(), method in method()) {
        run_once(bytes, method)?;
    }

    #[test]
    fn no_damaged_response_panics_an_http_check(bytes in mutated(), method in method()) {
        run_once(bytes, method)?;
    }
}
