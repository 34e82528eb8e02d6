//! The kubelet's prober, case by case: how an app behaves, the verdict and
//! message the kubelet's own code gives it, and where in that code the
//! rule lives. Every row runs the real check against a real socket on
//! 127.0.0.1: raw TCP servers written here for apps that misbehave on
//! purpose, tonic and a raw HTTP/2 server for gRPC.
//!
//! Sources are kubernetes/kubernetes (`pkg/probe/...`,
//! `pkg/kubelet/prober/...`) and, where the kubelet leaves the work to its
//! libraries, Go's `net/http` and `net/url` and grpc-go. The verdicts are
//! those of one run as `prober.go` sees it: `Unknown` is a run the kubelet
//! reports as an error, which `runProbeWithRetries` runs again and
//! `worker.go` then throws away ("Prober error, throw away the result").
//! docs/kubelet-parity.md is the same table in prose, with the known
//! deviations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use healthproxy::check::{Check, Outcome, Verdict};
use healthproxy::config::{CheckKind, Host, HttpSpec, Scheme, TcpSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The timeout of rows whose app never finishes: short, so the table runs
/// quickly; long enough for a loaded machine to answer the others.
const STALL: Duration = Duration::from_millis(400);
/// The timeout of every other row.
const PROMPT: Duration = Duration::from_secs(5);

/// What the app does with one request (or, for TLS, one ClientHello).
/// `{port}` in the bytes becomes the app's own port.
#[derive(Clone)]
enum Act {
    /// Writes the bytes, then closes.
    Send(Vec<u8>),
    /// Writes the bytes, then holds the connection open, silent.
    Stall(Vec<u8>),
    /// Writes the bytes, then resets the connection (RST).
    Reset(Vec<u8>),
}

fn send(bytes: impl AsRef<[u8]>) -> Act {
    Act::Send(bytes.as_ref().to_vec())
}

fn stall(bytes: impl AsRef<[u8]>) -> Act {
    Act::Stall(bytes.as_ref().to_vec())
}

fn reset(bytes: impl AsRef<[u8]>) -> Act {
    Act::Reset(bytes.as_ref().to_vec())
}

/// A response with `status` and `body`, its length declared.
fn ok(status: u16, body: &str) -> Act {
    send(format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A redirect to `location`, with a small declared body.
fn to(status: u16, location: &str) -> Act {
    send(format!(
        "HTTP/1.1 {status} X\r\nLocation: {location}\r\nContent-Length: 5\r\n\r\nmoved"
    ))
}

/// How an app answers each request path.
type Routes = Arc<dyn Fn(&str) -> Act + Send + Sync>;

/// An app on 127.0.0.1 speaking raw bytes; it records every request head
/// and stops (closing every connection) when dropped.
struct RawApp {
    port: u16,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl RawApp {
    async fn start(routes: Routes) -> RawApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&heads);
        let task = tokio::spawn(async move {
            // Dropped with the accept task: every connection ends with it.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (routes, log) = (Arc::clone(&routes), Arc::clone(&log));
                connections.spawn(answer(stream, port, routes, log));
            }
        });
        RawApp {
            port,
            heads,
            _task: task,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect()
    }
}

/// Reads one request head (or a TLS ClientHello) and acts on it.
async fn answer(mut stream: TcpStream, port: u16, routes: Routes, log: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        // A TLS record (0x16) is answered as soon as it arrives.
        if head[0] == 0x16 || head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let path = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    log.lock().unwrap().push(head);
    let fill = |bytes: Vec<u8>| {
        String::from_utf8_lossy(&bytes)
            .replace("{port}", &port.to_string())
            .into_bytes()
    };
    match routes(&path) {
        Act::Send(bytes) => {
            let _ = stream.write_all(&fill(bytes)).await;
            let _ = stream.shutdown().await;
            // Drain what the client still sends, so that closing does not
            // turn into a reset.
            let _ = tokio::time::timeout(PROMPT, stream.read_to_end(&mut Vec::new())).await;
        }
        Act::Stall(bytes) => {
            let _ = stream.write_all(&fill(bytes)).await;
            let _ = stream.read_to_end(&mut Vec::new()).await;
            std::future::pending::<()>().await;
        }
        Act::Reset(bytes) => {
            let _ = stream.write_all(&fill(bytes)).await;
            let _ = stream.flush().await;
            let _ = stream.set_zero_linger();
        }
    }
}

/// An `http` check of `path` on 127.0.0.1:`port`, everything else at the
/// kubelet's defaults.
fn http(scheme: Scheme, port: u16, path: &str) -> HttpSpec {
    HttpSpec {
        scheme,
        ..crate::http_check::spec(port, path)
    }
}

async fn run(kind: CheckKind, timeout: Duration) -> Outcome {
    Check::new("parity", &kind).unwrap().run(timeout).await
}

/// Whether `text` matches `pattern`, where `*` stands for any text.
fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().unwrap();
    let Some(mut left) = text.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        if i + 1 == rest.len() {
            return left.ends_with(part);
        }
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    left.is_empty()
}

/// One app behaviour and the kubelet's verdict on it.
struct Row {
    /// What the app does, in words.
    app: &'static str,
    /// The path the check asks for.
    path: &'static str,
    /// How the app answers each path.
    routes: fn(&str) -> Act,
    /// The check's timeout: [`STALL`] when the app never finishes.
    timeout: Duration,
    /// The kubelet's verdict of one run.
    verdict: Verdict,
    /// The kubelet's message; `{base}` is `http://127.0.0.1:PORT`, `*` any
    /// text (an ephemeral port).
    message: &'static str,
    /// Where the rule is, in the kubelet's code or the Go library it uses.
    source: &'static str,
}

/// Runs every row and reports every disagreement at once.
async fn check_rows(scheme: Scheme, rows: &[Row]) {
    let mut wrong = Vec::new();
    for row in rows {
        let routes = row.routes;
        let app = RawApp::start(Arc::new(move |path: &str| routes(path))).await;
        let outcome = run(
            CheckKind::Http(Box::new(http(scheme, app.port, row.path))),
            row.timeout,
        )
        .await;
        let base = match scheme {
            Scheme::Http => format!("http://127.0.0.1:{}", app.port),
            Scheme::Https => format!("https://127.0.0.1:{}", app.port),
        };
        let want = row.message.replace("{base}", &base);
        if outcome.verdict != row.verdict || !matches(&want, &outcome.message) {
            wrong.push(format!(
                "{}\n    kubelet: {:?} {want:?} ({})\n    got:     {:?} {:?}",
                row.app, row.verdict, row.source, outcome.verdict, outcome.message
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows differ:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

const HTTP_GO: &str = "pkg/probe/http/http.go DoHTTPProbe";
const READ_AT_MOST: &str = "pkg/probe/http/http.go DoHTTPProbe, utilio.ReadAtMost";
const BODY_ERROR: &str =
    "http.go DoHTTPProbe returns the read error; prober.go runProbeWithRetries, worker.go doProbe";
const CLIENT_DO: &str = "net/http/client.go (*Client).do";
const REDIRECT_CHECKER: &str = "pkg/probe/http/http.go RedirectChecker";
const READ_LOOP: &str = "net/http/transport.go (*persistConn).readLoop, mapRoundTripError";
const READ_RESPONSE: &str = "net/http/response.go ReadResponse";

/// 10,240 bytes: the kubelet's `maxRespBodyLength`.
fn ten_kib(extra_declared: usize, sent: usize) -> Act {
    stall(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
        10 * 1024 + extra_declared,
        "a".repeat(sent)
    ))
}

#[tokio::test]
async fn http_status_and_body() {
    check_rows(
        Scheme::Http,
        &[
            Row {
                app: "answers 200 with a body",
                path: "/",
                routes: |_| ok(200, "fine"),
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: HTTP_GO,
            },
            Row {
                app: "answers 204 without a body",
                path: "/",
                routes: |_| send("HTTP/1.1 204 No Content\r\n\r\n"),
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 204",
                source: HTTP_GO,
            },
            Row {
                app: "answers 399",
                path: "/",
                routes: |_| ok(399, "odd"),
                timeout: PROMPT,
                verdict: Verdict::Warning,
                message: "Probe terminated redirects, Response body: odd",
                source: HTTP_GO,
            },
            Row {
                app: "answers 400",
                path: "/",
                routes: |_| ok(400, "no"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "HTTP probe failed with statuscode: 400",
                source: HTTP_GO,
            },
            Row {
                app: "answers 500 with a body (never in the message: issue 99425)",
                path: "/",
                routes: |_| ok(500, "secret stack trace"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "HTTP probe failed with statuscode: 500",
                source: HTTP_GO,
            },
            Row {
                app: "answers 199-less HTTP/1.0 with a body ended by closing",
                path: "/",
                routes: |_| send("HTTP/1.0 200 OK\r\n\r\nuntil close"),
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: HTTP_GO,
            },
            Row {
                app: "sends exactly 10,240 body bytes of more declared, then stalls",
                path: "/",
                routes: |_| ten_kib(100, 10 * 1024),
                timeout: STALL,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: READ_AT_MOST,
            },
            Row {
                app: "sends 10,239 body bytes of more declared, then stalls",
                path: "/",
                routes: |_| ten_kib(100, 10 * 1024 - 1),
                timeout: STALL,
                verdict: Verdict::Unknown,
                message: "context deadline exceeded (Client.Timeout or context cancellation while reading body)",
                source: BODY_ERROR,
            },
            Row {
                app: "sends the head of a 200, then stalls",
                path: "/",
                routes: |_| stall("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
                timeout: STALL,
                verdict: Verdict::Unknown,
                message: "context deadline exceeded (Client.Timeout or context cancellation while reading body)",
                source: BODY_ERROR,
            },
            Row {
                app: "sends the head of a 500, then stalls (the body is read before the status is judged)",
                path: "/",
                routes: |_| stall("HTTP/1.1 500 Oops\r\nContent-Length: 10\r\n\r\n"),
                timeout: STALL,
                verdict: Verdict::Unknown,
                message: "context deadline exceeded (Client.Timeout or context cancellation while reading body)",
                source: BODY_ERROR,
            },
            Row {
                app: "closes in the middle of a declared body",
                path: "/",
                routes: |_| send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten.."),
                timeout: PROMPT,
                verdict: Verdict::Unknown,
                message: "unexpected EOF",
                source: BODY_ERROR,
            },
            Row {
                app: "closes in the middle of a chunked body",
                path: "/",
                routes: |_| send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
                timeout: PROMPT,
                verdict: Verdict::Unknown,
                message: "unexpected EOF",
                source: BODY_ERROR,
            },
            Row {
                app: "sends a malformed chunk size",
                path: "/",
                routes: |_| send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
                timeout: PROMPT,
                verdict: Verdict::Unknown,
                message: "malformed chunked encoding",
                source: "net/http/internal/chunked.go; http.go DoHTTPProbe",
            },
            Row {
                app: "resets the connection in the middle of the body",
                path: "/",
                routes: |_| reset("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart"),
                timeout: PROMPT,
                verdict: Verdict::Unknown,
                message: "read tcp 127.0.0.1:*->127.0.0.1:*: read: connection reset by peer",
                source: BODY_ERROR,
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn http_transport_failures() {
    check_rows(
        Scheme::Http,
        &[
            Row {
                app: "accepts and never answers",
                path: "/slow",
                routes: |_| stall(""),
                timeout: STALL,
                verdict: Verdict::Failure,
                message: "Get \"{base}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                source: "net/http/client.go (*Client).do, Client.Timeout; http.go DoHTTPProbe",
            },
            Row {
                app: "closes without answering",
                path: "/",
                routes: |_| send(""),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": EOF",
                source: READ_LOOP,
            },
            Row {
                app: "resets without answering",
                path: "/",
                routes: |_| reset(""),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": read tcp 127.0.0.1:*->127.0.0.1:*: read: connection reset by peer",
                source: READ_LOOP,
            },
            Row {
                app: "closes in the middle of the head",
                path: "/",
                routes: |_| send("HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": net/http: HTTP/1.x transport connection broken: unexpected EOF",
                source: "net/http/response.go ReadResponse (io.EOF becomes io.ErrUnexpectedEOF), transport.go mapRoundTripError",
            },
            Row {
                app: "closes in the middle of a header name",
                path: "/",
                routes: |_| send("HTTP/1.1 200 OK\r\nContent-Le"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": net/http: HTTP/1.x transport connection broken: malformed MIME header: missing colon: \"Content-Le\"",
                source: "net/textproto/reader.go readLineSlice (the last line at EOF is a line), mustHaveFieldNameColon",
            },
            Row {
                app: "answers with garbage",
                path: "/",
                routes: |_| send("garbage\r\n\r\n"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": net/http: HTTP/1.x transport connection broken: malformed HTTP response \"garbage\"",
                source: READ_RESPONSE,
            },
            Row {
                app: "answers with a status code that is not a number",
                path: "/",
                routes: |_| send("HTTP/1.1 abc OK\r\n\r\n"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": net/http: HTTP/1.x transport connection broken: malformed HTTP status code \"abc\"",
                source: READ_RESPONSE,
            },
            Row {
                app: "answers with a header line without a colon",
                path: "/",
                routes: |_| send("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": net/http: HTTP/1.x transport connection broken: malformed MIME header: missing colon: \"no colon here\"",
                source: "net/textproto/reader.go readMIMEHeader, mustHaveFieldNameColon",
            },
            Row {
                app: "answers with a head larger than 10 MiB",
                path: "/",
                routes: |_| send(format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "b".repeat(11 << 20))),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": net/http: HTTP/1.x transport connection broken: net/http: server response headers exceeded 10485760 bytes; aborted",
                source: "net/http/transport.go MaxResponseHeaderBytes default, readLoop",
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn http_heads_are_read_as_leniently_as_go() {
    check_rows(
        Scheme::Http,
        &[
            Row {
                app: "answers with a 1 MiB header",
                path: "/",
                routes: |_| {
                    send(format!(
                        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
                        "b".repeat(1 << 20)
                    ))
                },
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: "net/http/transport.go MaxResponseHeaderBytes (10 MiB)",
            },
            Row {
                app: "answers with 5,000 header lines",
                path: "/",
                routes: |_| {
                    let lines: String = (0..5000).map(|i| format!("X-H{i}: {i}\r\n")).collect();
                    send(format!("HTTP/1.1 200 OK\r\n{lines}Content-Length: 0\r\n\r\n"))
                },
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: "net/textproto/reader.go ReadMIMEHeader (no count limit)",
            },
            Row {
                app: "folds a header over two lines (obsolete line folding)",
                path: "/",
                routes: |_| send("HTTP/1.1 200 OK\r\nX-Folded: one\r\n two\r\nContent-Length: 2\r\n\r\nok"),
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: "net/textproto/reader.go readContinuedLineSlice",
            },
            Row {
                app: "answers a status line without a reason phrase",
                path: "/",
                routes: |_| send("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"),
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: READ_RESPONSE,
            },
            Row {
                app: "sends 100 Continue before its answer",
                path: "/",
                routes: |_| send("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: "net/http/transport.go readResponse (1xx skipped)",
            },
        ],
    )
    .await;
}

// Response framing as Go's net/http reads it (Go >= 1.24): response.go
// ReadResponse, transfer.go readTransfer, textproto readMIMEHeader. hyper's
// own parser differs on each; src/check/http/head.rs reads every head
// first with Go's rules.

const READ_MIME: &str = "net/textproto/reader.go readMIMEHeader";
const TRANSFER_ENCODING: &str = "net/http/transfer.go parseTransferEncoding";
const FIX_LENGTH: &str = "net/http/transfer.go fixLength, parseContentLength";

#[tokio::test]
async fn http_response_framing_as_go_reads_it() {
    const OK: &str = "HTTP probe succeeded with statuscode: 200";
    const BROKEN: &str = "Get \"{base}/\": net/http: HTTP/1.x transport connection broken: ";
    let rows = [
        Row {
            app: "puts two spaces before the status code",
            path: "/",
            routes: |_| send("HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Success,
            message: OK,
            source: "net/http/response.go ReadResponse: strings.TrimLeft(status, \" \")",
        },
        Row {
            app: "sends an empty line before the status line",
            path: "/",
            routes: |_| send("\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}malformed HTTP response \"\"",
            source: "net/http/response.go ReadResponse: strings.Cut(line, \" \") of the first line",
        },
        Row {
            app: "answers with a status line of HTTP/1.2",
            path: "/",
            routes: |_| send("HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Success,
            message: OK,
            source: "net/http/request.go ParseHTTPVersion (any HTTP/D.D)",
        },
        Row {
            app: "puts a space between a header name and its colon",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nX-Custom : 1\r\nContent-Length: 2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Success,
            message: OK,
            source: "net/textproto/reader.go canonicalMIMEHeaderKey (a space is kept, go.dev/issue/34540)",
        },
        Row {
            app: "declares `Content-Length : 100` (space before the colon) and sends 2 bytes",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nContent-Length : 100\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Success,
            message: OK,
            source: "canonicalMIMEHeaderKey keeps \"Content-Length \" as its own key: no length, read to EOF",
        },
        Row {
            app: "sends an empty Content-Length",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}invalid empty Content-Length \"\"",
            source: "net/http/transfer.go parseContentLength (httplaxcontentlength=0 since Go 1.22)",
        },
        Row {
            app: "sends Content-Length: 2, 2",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}bad Content-Length \"2, 2\"",
            source: FIX_LENGTH,
        },
        Row {
            app: "sends two different Content-Length fields",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}http: message cannot contain multiple Content-Length headers; got [\"2\" \"3\"]",
            source: FIX_LENGTH,
        },
        Row {
            app: "sends the same Content-Length twice",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length:  2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Success,
            message: OK,
            source: FIX_LENGTH,
        },
        Row {
            app: "sends Transfer-Encoding: identity on HTTP/1.1",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}unsupported transfer encoding: \"identity\"",
            source: TRANSFER_ENCODING,
        },
        Row {
            app: "sends Transfer-Encoding: gzip, chunked on HTTP/1.1",
            path: "/",
            routes: |_| {
                send("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
            },
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}unsupported transfer encoding: \"gzip, chunked\"",
            source: TRANSFER_ENCODING,
        },
        Row {
            app: "sends two Transfer-Encoding: chunked fields on HTTP/1.1",
            path: "/",
            routes: |_| {
                send(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n\
                     2\r\nok\r\n0\r\n\r\n",
                )
            },
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}too many transfer encodings: [\"chunked\" \"chunked\"]",
            source: TRANSFER_ENCODING,
        },
        Row {
            app: "sends Transfer-Encoding: CHUNKED and a Content-Length on HTTP/1.1",
            path: "/",
            routes: |_| {
                send(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\nContent-Length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                )
            },
            timeout: PROMPT,
            verdict: Verdict::Success,
            message: OK,
            source: "transfer.go parseTransferEncoding (ascii.EqualFold), fixLength (chunked wins)",
        },
        Row {
            app: "sends Transfer-Encoding: chunked on HTTP/1.0",
            path: "/",
            routes: |_| send("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            timeout: PROMPT,
            verdict: Verdict::Success,
            message: OK,
            source: "net/http/transfer.go parseTransferEncoding: ignored below HTTP/1.1 (Go issue 12785), read to EOF",
        },
        Row {
            app: "names Content-Length in the Trailer of a chunked body",
            path: "/",
            routes: |_| {
                send(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\n\r\n",
                )
            },
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}bad trailer key \"Content-Length\"",
            source: "net/http/transfer.go fixTrailer",
        },
        Row {
            app: "starts its headers with a folded line",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\n X-A: 1\r\nContent-Length: 2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}malformed MIME header initial line: X-A: 1", // one_line: blanks collapsed
            source: READ_MIME,
        },
        Row {
            app: "sends a header name with a byte that is not a token",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nX@A: 1\r\nContent-Length: 2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "{BROKEN}malformed MIME header line: X@A: 1",
            source: READ_MIME,
        },
        Row {
            app: "folds its Content-Length value onto a second line",
            path: "/",
            routes: |_| send("HTTP/1.1 200 OK\r\nContent-Length:\r\n 2\r\n\r\nok"),
            timeout: PROMPT,
            verdict: Verdict::Success,
            message: OK,
            source: "net/textproto/reader.go readContinuedLineSlice",
        },
    ];
    // `{BROKEN}` is the prefix of Go's errors once part of a head is read
    // (transport.go mapRoundTripError).
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|row| Row {
            message: row.message.replace("{BROKEN}", BROKEN).leak(),
            ..row
        })
        .collect();
    check_rows(Scheme::Http, &rows).await;
}

#[tokio::test]
async fn http_redirects() {
    check_rows(
        Scheme::Http,
        &[
            Row {
                app: "redirects to a relative path on the same host",
                path: "/",
                routes: |p| if p == "/" { to(302, "/ok") } else { ok(200, "") },
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: REDIRECT_CHECKER,
            },
            Row {
                app: "redirects (301, 303, 307, 308) to an absolute URL on the same host",
                path: "/",
                routes: |p| match p {
                    "/" => to(301, "http://127.0.0.1:{port}/b"),
                    "/b" => to(303, "http://127.0.0.1:{port}/c"),
                    "/c" => to(307, "http://127.0.0.1:{port}/d"),
                    "/d" => to(308, "//127.0.0.1:{port}/e"),
                    _ => ok(200, ""),
                },
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: REDIRECT_CHECKER,
            },
            Row {
                app: "redirects to the same name in other letter case",
                path: "/",
                routes: |_| to(302, "http://LOCALHOST:{port}/"),
                timeout: PROMPT,
                verdict: Verdict::Warning,
                message: "Probe terminated redirects, Response body: moved",
                source: "http.go RedirectChecker compares req.URL.Hostname() strings",
            },
            Row {
                app: "redirects to another host",
                path: "/",
                routes: |_| to(302, "http://0.0.0.0/fail"),
                timeout: PROMPT,
                verdict: Verdict::Warning,
                message: "Probe terminated redirects, Response body: moved",
                source: "http_test.go TestHTTPProbeChecker_NonLocalRedirects (bogus nonlocal)",
            },
            Row {
                app: "redirects to a URL without a host",
                path: "/",
                routes: |_| to(302, "http:/nohost"),
                timeout: PROMPT,
                verdict: Verdict::Warning,
                message: "Probe terminated redirects, Response body: moved",
                source: REDIRECT_CHECKER,
            },
            Row {
                app: "redirects without a Location",
                path: "/",
                routes: |_| send("HTTP/1.1 302 Found\r\nContent-Length: 7\r\n\r\nnowhere"),
                timeout: PROMPT,
                verdict: Verdict::Warning,
                message: "Probe terminated redirects, Response body: nowhere",
                source: CLIENT_DO,
            },
            Row {
                app: "answers 300 and 304 (not followed) with a Location",
                path: "/",
                routes: |p| if p == "/" { to(300, "/x") } else { to(304, "/y") },
                timeout: PROMPT,
                verdict: Verdict::Warning,
                message: "Probe terminated redirects, Response body: moved",
                source: "net/http/client.go redirectBehavior",
            },
            Row {
                app: "redirects in a loop",
                path: "/loop",
                routes: |_| to(302, "/loop"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"/loop\": stopped after 10 redirects",
                source: "http.go RedirectChecker; client.go sets the error's URL to the Location",
            },
            Row {
                app: "redirects to a Location with an unterminated IPv6 literal",
                path: "/",
                routes: |_| to(302, "http://[::1"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": failed to parse Location header \"http://[::1\": parse \"http://[::1\": missing ']' in host",
                source: "net/http/client.go (*Client).do; net/url url.go parseHost",
            },
            Row {
                app: "redirects to a Location with an invalid escape",
                path: "/",
                routes: |_| to(302, "/a%zz"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"{base}/\": failed to parse Location header \"/a%zz\": parse \"/a%zz\": invalid URL escape \"%zz\"",
                source: "net/http/client.go (*Client).do; net/url url.go unescape",
            },
            Row {
                app: "redirects to a Location with a raw space, a quote and non-ASCII",
                path: "/",
                routes: |p| match p {
                    "/" => to(302, "/a b\"c\u{e9}"),
                    "/a%20b%22c%C3%A9" => ok(200, ""),
                    _ => ok(404, ""),
                },
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: "net/url url.go (*URL).EscapedPath",
            },
            Row {
                app: "redirects to a Location with dot segments and a query",
                path: "/a/b",
                routes: |p| match p {
                    "/a/b" => to(302, "../c/./d?x=1"),
                    "/c/d?x=1" => ok(200, ""),
                    _ => ok(404, ""),
                },
                timeout: PROMPT,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: "net/url url.go ResolveReference, resolvePath",
            },
            Row {
                app: "redirects with a body that stalls (read before following)",
                path: "/",
                routes: |p| match p {
                    "/" => stall("HTTP/1.1 302 Found\r\nLocation: /next\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nmove\r\n"),
                    _ => ok(200, ""),
                },
                timeout: STALL,
                verdict: Verdict::Failure,
                message: "Get \"{base}/next\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                source: "net/http/client.go (*Client).do, maxBodySlurpSize",
            },
            Row {
                app: "redirects with a large declared body that stalls (not read before following)",
                path: "/",
                routes: |p| match p {
                    "/" => stall("HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 5000\r\n\r\nmove"),
                    _ => ok(200, ""),
                },
                timeout: STALL,
                verdict: Verdict::Success,
                message: "HTTP probe succeeded with statuscode: 200",
                source: "net/http/client.go (*Client).do: only ContentLength -1 or <= 2 KiB is read",
            },
            Row {
                app: "redirects to another scheme on the same host",
                path: "/",
                routes: |_| to(302, "ftp://127.0.0.1/x"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"ftp://127.0.0.1/x\": unsupported protocol scheme \"ftp\"",
                source: "net/http/transport.go roundTrip",
            },
            Row {
                app: "redirects to a port out of range on the same host",
                path: "/",
                routes: |_| to(302, "http://127.0.0.1:99999/"),
                timeout: PROMPT,
                verdict: Verdict::Failure,
                message: "Get \"http://127.0.0.1:99999/\": dial tcp: address 99999: invalid port",
                source: "net/url accepts any digits; net dial refuses them",
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn https_to_a_plain_http_port_is_refused_in_gos_words() {
    check_rows(
        Scheme::Https,
        &[Row {
            app: "speaks plain HTTP on the port probed over HTTPS",
            path: "/",
            routes: |_| send("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
            timeout: PROMPT,
            verdict: Verdict::Failure,
            message: "Get \"{base}/\": http: server gave HTTP response to HTTPS client",
            source: "net/http/transport.go (*persistConn).addTLS, tls.RecordHeaderError",
        }],
    )
    .await;
}

#[tokio::test]
async fn http_requests_look_like_the_kubelets_on_the_wire() {
    // pkg/probe/http/request.go newProbeRequest sets User-Agent and
    // Accept; Go's (*Request).write writes Host, then User-Agent, then the
    // other headers sorted, in canonical case; the transport adds
    // `Connection: close` (DisableKeepAlives) last.
    let app = RawApp::start(Arc::new(|_: &str| ok(200, ""))).await;
    let mut spec = http(Scheme::Http, app.port, "/healthz?full=1");
    spec.headers = vec![
        ("x-custom".into(), "one".into()),
        ("authorization".into(), "Bearer t".into()),
    ];
    assert_eq!(
        run(CheckKind::Http(Box::new(spec)), PROMPT).await.verdict,
        Verdict::Success
    );
    assert_eq!(
        app.heads(),
        [format!(
            "GET /healthz?full=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: kube-probe/1.36\r\n\
             Accept: */*\r\nAuthorization: Bearer t\r\nX-Custom: one\r\nConnection: close\r\n\r\n",
            app.port
        )]
    );
}

#[tokio::test]
async fn a_redirect_sends_the_referer_and_the_same_headers() {
    // net/http/client.go (*Client).do: makeHeadersCopier copies the first
    // request's headers; refererForURL adds the previous URL.
    let app = RawApp::start(Arc::new(
        |p: &str| if p == "/" { to(302, "/next") } else { ok(200, "") },
    ))
    .await;
    let outcome = run(
        CheckKind::Http(Box::new(http(Scheme::Http, app.port, "/"))),
        PROMPT,
    )
    .await;
    assert_eq!(outcome.verdict, Verdict::Success, "{outcome:?}");
    let heads = app.heads();
    assert_eq!(heads.len(), 2);
    assert_eq!(
        heads[1],
        format!(
            "GET /next HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\n\
             Referer: http://127.0.0.1:{0}/\r\nConnection: close\r\n\r\n",
            app.port
        )
    );
}

#[tokio::test]
async fn a_configured_path_that_go_would_escape_is_escaped() {
    // pkg/probe/http/request.go formatURL: url.Parse(path), or the raw
    // path when that fails; the request line carries EscapedPath.
    let app = RawApp::start(Arc::new(|_: &str| ok(200, ""))).await;
    for (path, wire) in [
        ("/a b", "/a%20b"),
        ("/bad%zz", "/bad%25zz"),
        ("/ok%2Fslash", "/ok%2Fslash"),
    ] {
        let outcome = run(
            CheckKind::Http(Box::new(http(Scheme::Http, app.port, path))),
            PROMPT,
        )
        .await;
        assert_eq!(outcome.verdict, Verdict::Success, "{path:?}: {outcome:?}");
        let heads = app.heads();
        let line = heads.last().unwrap().lines().next().unwrap().to_string();
        assert_eq!(line, format!("GET {wire} HTTP/1.1"), "{path:?}");
    }
}

/// A TCP check of 127.0.0.1:`port`.
fn tcp(port: u16) -> CheckKind {
    CheckKind::Tcp(TcpSpec {
        host: Host {
            name: "127.0.0.1".into(),
            from_env: None,
        },
        port,
    })
}

#[tokio::test]
async fn tcp_connects_and_nothing_more() {
    // pkg/probe/tcp/tcp.go DoTCPProbe: success when the connection is
    // established, whatever the app then does; a dial error is a failure
    // with its text.
    let open = RawApp::start(Arc::new(|_: &str| send(""))).await;
    assert_eq!(run(tcp(open.port), PROMPT).await.verdict, Verdict::Success);

    let closer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closer_port = closer.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = closer.accept().await {
            drop(stream);
        }
    });
    assert_eq!(
        run(tcp(closer_port), PROMPT).await.verdict,
        Verdict::Success,
        "an app that closes at once counts as healthy (pod-lifecycle docs)"
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = run(tcp(port), PROMPT).await;
    assert_eq!(refused.verdict, Verdict::Failure);
    assert_eq!(
        refused.message,
        format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
    );
}

#[tokio::test]
async fn tcp_to_a_full_backlog_times_out_in_gos_words() {
    // A listener that never accepts, its queue full: SYNs are dropped and
    // the dial runs into the timeout (net.DialTimeout's `i/o timeout`).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    // Every connection made stays in the queue (nobody accepts it), so
    // the checks fill it themselves; its size depends on the kernel.
    let mut outcome = None;
    for _ in 0..8 {
        let o = run(tcp(port), Duration::from_millis(300)).await;
        if o.verdict == Verdict::Failure {
            outcome = Some(o);
            break;
        }
    }
    let outcome = outcome.expect("a full backlog drops the SYN");
    assert_eq!(outcome.message, format!("dial tcp 127.0.0.1:{port}: i/o timeout"));
}

/// An app with a listen backlog of 5 (Python's `socketserver` default)
/// that serves one connection at a time, taking a couple of milliseconds
/// over each, as a small single-threaded server does. Stops when dropped.
struct Backlog5App {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Backlog5App {
    fn start() -> Backlog5App {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(5).unwrap();
        socket.set_nonblocking(true).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match socket.accept() {
                    // The request's work, one connection at a time.
                    Ok((conn, _)) => {
                        std::thread::sleep(Duration::from_millis(3));
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Backlog5App { port, stop }
    }
}

impl Drop for Backlog5App {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `count` tcp checks with `period` against a backlog-5 app, run by the
/// real binary for `periods` periods: none may fail.
async fn tcp_checks_against_a_backlog_of_5(count: usize, period: &str, periods: usize) {
    let app = Backlog5App::start();
    let config: String = (0..count)
        .map(|i| {
            format!(
                r#"[[check]]
name = "c{i}"
probes = ["readiness"]
tcp = {{ port = {} }}
period = "{period}"
"#,
                app.port
            )
        })
        .collect();
    let proxy = crate::support::Proxy::start(&config);
    let runs = |text: &str, result: &str| -> f64 {
        crate::support::series(text, "healthproxy_check_runs_total")
            .iter()
            .filter(|l| l.contains(&format!("result=\"{result}\"")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    crate::support::eventually(Duration::from_secs(60), "every period's runs", || async {
        runs(&proxy.get("/metrics").await.body, "success") >= (periods * count) as f64
    })
    .await;
    let text = proxy.get("/metrics").await.body;
    assert_eq!(
        runs(&text, "failure"),
        0.0,
        "{}\n{}",
        proxy.log_lines("probe failed").join("\n"),
        crate::support::series(&text, "healthproxy_check_failures_total").join("\n")
    );
    assert_eq!(proxy.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn ten_tcp_checks_against_a_backlog_of_5_never_fail() {
    // The kubelet's workers each keep their own ticker
    // (pkg/kubelet/prober/worker.go run), so a pod's probes are not in
    // lockstep; the checks here are spread over their period.
    tcp_checks_against_a_backlog_of_5(10, "1s", 3).await;
}

#[tokio::test]
async fn a_hundred_tcp_checks_against_a_backlog_of_5_never_fail() {
    // The kubelet's defaults: a period of 10 s, a timeout of 1 s.
    tcp_checks_against_a_backlog_of_5(100, "10s", 2).await;
}

/// How a raw HTTP/2 server answers a gRPC call: tonic always answers
/// correctly, so these apps are written with the h2 crate.
#[derive(Clone)]
struct GrpcReply {
    /// The HTTP status.
    status: u16,
    /// The `content-type`, if any.
    content_type: Option<&'static str>,
    /// The response messages, each a `HealthCheckResponse`.
    messages: Vec<Vec<u8>>,
    /// `grpc-status` and `grpc-message` in the trailers.
    grpc_status: &'static str,
    grpc_message: &'static str,
    /// More fields of the response head, and of the trailers.
    headers: Vec<(&'static str, &'static [u8])>,
    trailers: Vec<(&'static str, &'static [u8])>,
    /// The compression flag of every message.
    flag: u8,
    /// The server's SETTINGS_MAX_HEADER_LIST_SIZE, if it sends one.
    max_header_list_size: Option<u32>,
}

/// A `HealthCheckResponse` with `status` (field 1, a varint).
fn health(status: u8) -> Vec<u8> {
    vec![0x08, status]
}

const SERVING: u8 = 1;

impl GrpcReply {
    fn serving() -> GrpcReply {
        GrpcReply {
            status: 200,
            content_type: Some("application/grpc"),
            messages: vec![health(SERVING)],
            grpc_status: "0",
            grpc_message: "",
            headers: Vec::new(),
            trailers: Vec::new(),
            flag: 0,
            max_header_list_size: None,
        }
    }
}

/// An HTTP/2 server on 127.0.0.1 answering every call with `reply`.
async fn h2_app(reply: GrpcReply) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut builder = h2::server::Builder::new();
                if let Some(max) = reply.max_header_list_size {
                    builder.max_header_list_size(max);
                }
                let Ok(mut conn) = builder.handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    let mut head = hyper::Response::builder().status(reply.status);
                    if let Some(ct) = reply.content_type {
                        head = head.header("content-type", ct);
                    }
                    for (name, value) in &reply.headers {
                        head = head.header(*name, hyper::header::HeaderValue::from_bytes(value).unwrap());
                    }
                    let Ok(mut send) = respond.send_response(head.body(()).unwrap(), false) else {
                        return;
                    };
                    for message in &reply.messages {
                        let mut framed = vec![reply.flag];
                        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                        framed.extend_from_slice(message);
                        let _ = send.send_data(bytes::Bytes::from(framed), false);
                    }
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", reply.grpc_status.parse().unwrap());
                    if !reply.grpc_message.is_empty() {
                        trailers.insert("grpc-message", reply.grpc_message.parse().unwrap());
                    }
                    for (name, value) in &reply.trailers {
                        trailers.append(*name, hyper::header::HeaderValue::from_bytes(value).unwrap());
                    }
                    let _ = send.send_trailers(trailers);
                }
            });
        }
    });
    addr
}

fn grpc(addr: std::net::SocketAddr) -> CheckKind {
    CheckKind::Grpc(healthproxy::config::GrpcSpec {
        host: Host {
            name: addr.ip().to_string(),
            from_env: None,
        },
        port: addr.port(),
        service: String::new(),
        user_agent: "kube-probe/1.36".into(),
        tls: None,
    })
}

const GRPC_GO: &str = "pkg/probe/grpc/grpc.go Probe";
const OPERATE_HEADERS: &str = "grpc-go internal/transport/http2_client.go operateHeaders; grpc.go Probe";

#[tokio::test]
async fn grpc_responses_are_judged_as_grpc_go_judges_them() {
    let rows: Vec<(&str, GrpcReply, Verdict, &str, &str)> = vec![
        (
            "answers SERVING",
            GrpcReply::serving(),
            Verdict::Success,
            "service healthy",
            GRPC_GO,
        ),
        (
            "answers SERVING as application/grpc+proto",
            GrpcReply {
                content_type: Some("application/grpc+proto"),
                ..GrpcReply::serving()
            },
            Verdict::Success,
            "service healthy",
            "grpc-go internal/grpcutil ContentSubtype",
        ),
        (
            "answers NOT_SERVING",
            GrpcReply {
                messages: vec![health(2)],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "service unhealthy (responded with \"NOT_SERVING\")",
            GRPC_GO,
        ),
        (
            "answers a serving status this client does not know",
            GrpcReply {
                messages: vec![health(7)],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "service unhealthy (responded with \"7\")",
            "grpc.go Probe; protobuf enum String() of an unknown value",
        ),
        (
            "answers without a content-type",
            GrpcReply {
                content_type: None,
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Unknown desc = malformed header: missing HTTP content-type",
            OPERATE_HEADERS,
        ),
        (
            "answers as application/json (a proxy rewrote it)",
            GrpcReply {
                content_type: Some("application/json"),
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Unknown desc = transport: received unexpected content-type \"application/json\"",
            OPERATE_HEADERS,
        ),
        (
            "answers HTTP 404 as text/plain",
            GrpcReply {
                status: 404,
                content_type: Some("text/plain"),
                messages: vec![],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): \
             unexpected HTTP status code received from server: 404 (Not Found); \
             transport: received unexpected content-type \"text/plain\"",
            "grpc-go HTTPStatusConvTab (404 is Unimplemented); grpc.go Probe",
        ),
        (
            "answers HTTP 503 as application/grpc",
            GrpcReply {
                status: 503,
                messages: vec![],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Unavailable desc = \
             unexpected HTTP status code received from server: 503 (Service Unavailable)",
            OPERATE_HEADERS,
        ),
        (
            "answers two messages to one unary Check",
            GrpcReply {
                messages: vec![health(SERVING), health(SERVING)],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Internal desc = \
             cardinality violation: expected <EOF> for non server-streaming RPCs, but received another message",
            "grpc-go stream.go (*clientStream).RecvMsg",
        ),
        (
            "answers a message larger than 4 MiB",
            GrpcReply {
                messages: vec![vec![0u8; 5 << 20]],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = ResourceExhausted desc = \
             grpc: received message larger than max (5242880 vs. 4194304)",
            "grpc-go rpc_util.go recvAndDecompress, defaultClientMaxReceiveMessageSize",
        ),
        (
            "fails the call with status 1",
            GrpcReply {
                messages: vec![],
                grpc_status: "1",
                grpc_message: "stopping",
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Canceled desc = stopping",
            "grpc-go codes/code_string.go",
        ),
        (
            "fails the call with status 17",
            GrpcReply {
                messages: vec![],
                grpc_status: "17",
                grpc_message: "odd",
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Code(17) desc = odd",
            "grpc-go codes/code_string.go",
        ),
        (
            "fails the call with Unimplemented",
            GrpcReply {
                messages: vec![],
                grpc_status: "12",
                grpc_message: "unknown service grpc.health.v1.Health",
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): \
             unknown service grpc.health.v1.Health",
            GRPC_GO,
        ),
    ];
    let mut wrong = Vec::new();
    for (app, reply, verdict, message, source) in &rows {
        let addr = h2_app(reply.clone()).await;
        let outcome = run(grpc(addr), PROMPT).await;
        if outcome.verdict != *verdict || outcome.message != *message {
            wrong.push(format!(
                "{app}\n    kubelet: {verdict:?} {message:?} ({source})\n    got:     {:?} {:?}",
                outcome.verdict, outcome.message
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows differ:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn grpc_connection_failures_all_read_as_a_connect_timeout() {
    // The kubelet dials WithBlock (grpc.go Probe): grpc-go retries until
    // the context's deadline, and the probe then reports that deadline.
    let silent = RawApp::start(Arc::new(|_: &str| stall(""))).await;
    let http1 = RawApp::start(Arc::new(|_: &str| {
        send("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    }))
    .await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for (app, port) in [
        ("never sends its SETTINGS frame", silent.port),
        ("speaks HTTP/1.1", http1.port),
        ("refuses the connection", refused),
    ] {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let started = std::time::Instant::now();
        let outcome = run(grpc(addr), STALL).await;
        assert_eq!(
            (outcome.verdict, outcome.message.as_str()),
            (
                Verdict::Failure,
                format!(
                    "timeout: failed to connect service \"{addr}\" within 400ms: context deadline exceeded"
                )
                .as_str()
            ),
            "an app that {app}"
        );
        assert!(
            started.elapsed() >= STALL,
            "an app that {app}: the run lasts the timeout, as the kubelet's"
        );
    }
}

#[tokio::test]
async fn grpc_against_a_real_tonic_server() {
    let server = crate::grpc_check::health_server().await;
    assert_eq!(
        run(grpc(server.addr), PROMPT).await,
        Outcome::success("service healthy")
    );
}

fn exec(command: &[&str]) -> CheckKind {
    CheckKind::Exec(healthproxy::config::ExecSpec {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        workdir: None,
    })
}

#[tokio::test]
async fn exec_results_follow_the_kubelets_exec_prober() {
    // pkg/probe/exec/exec.go Probe: exit 0 is Success, another exit code
    // a Failure with the output (stdout, then stderr:
    // kuberuntime_container.go RunInContainer), a timeout a Failure with
    // the runtime's `command "..." timed out`
    // (cri-client remote_runtime.go ExecSync), anything else an error.
    let rows: Vec<(&[&str], Duration, Verdict, &str)> = vec![
        (&["/bin/sh", "-c", "echo fine"], PROMPT, Verdict::Success, "fine"),
        (
            &["/bin/sh", "-c", "echo to-err >&2; echo to-out; exit 3"],
            PROMPT,
            Verdict::Failure,
            "to-out to-err",
        ),
        (
            &["/bin/sh", "-c", "sleep 5"],
            STALL,
            Verdict::Failure,
            "command \"/bin/sh -c sleep 5\" timed out",
        ),
        (
            &["/nonexistent/probe"],
            PROMPT,
            Verdict::Unknown,
            "cannot run \"/nonexistent/probe\": no such file or directory",
        ),
    ];
    for (command, timeout, verdict, message) in rows {
        let outcome = run(exec(command), timeout).await;
        assert_eq!(
            (outcome.verdict, outcome.message.as_str()),
            (verdict, message),
            "{command:?}"
        );
    }
}

#[tokio::test]
async fn a_body_that_stalls_is_tried_three_times_and_moves_no_threshold() {
    // http.go DoHTTPProbe returns the body read error; prober.go
    // runProbeWithRetries runs the probe again, three times in all; the
    // worker throws the errored result away (worker.go doProbe). With a
    // failure threshold of 1, a single counted failure would fail
    // readiness: it stays ready.
    let stalling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let switch = Arc::clone(&stalling);
    let app = RawApp::start(Arc::new(move |_: &str| {
        if switch.load(std::sync::atomic::Ordering::SeqCst) {
            stall("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
        } else {
            ok(200, "fine")
        }
    }))
    .await;
    let proxy = crate::support::Proxy::start(&format!(
        r#"[[check]]
name = "web"
probes = ["readiness"]
http = {{ port = {} }}
period = "2s"
timeout = "300ms"
failure_threshold = 1
"#,
        app.port
    ));
    proxy.wait_status("/readyz", 200).await;
    stalling.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = app.heads().len();
    let last = || async {
        let reply = crate::support::request(proxy.addr, "GET", "/readyz?format=json", &[]).await;
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        (
            reply.status,
            v["checks"][0]["last_result"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    crate::support::eventually(Duration::from_secs(20), "an unknown run", || async {
        last().await.1 == "unknown"
    })
    .await;
    // The three attempts of that run (and perhaps some of the next).
    assert!(
        app.heads().len() - before >= 3,
        "{} requests",
        app.heads().len() - before
    );
    assert_eq!(last().await, (200, "unknown".to_string()));
    let reply = crate::support::request(proxy.addr, "GET", "/readyz?format=json", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        v["checks"][0]["message"],
        "context deadline exceeded (Client.Timeout or context cancellation while reading body)"
    );
    assert_eq!(v["checks"][0]["consecutive_failures"], 0);
}

// === Round 2: TLS, HTTP/2 and gRPC (issue 32 items 8-15) ===

const RECV_PAYLOAD: &str = "grpc-go rpc_util.go recv, checkRecvPayload (the flag, not grpc-encoding)";
const DECODE_HEADER: &str = "grpc-go internal/transport/http_util.go (*decodeState).processHeaderField";

/// Runs gRPC rows and reports every disagreement at once.
async fn check_grpc_rows(rows: &[(&str, GrpcReply, Verdict, &str, &str)]) {
    let mut wrong = Vec::new();
    for (app, reply, verdict, message, source) in rows {
        let addr = h2_app(reply.clone()).await;
        let outcome = run(grpc(addr), PROMPT).await;
        if outcome.verdict != *verdict || !matches(message, &outcome.message) {
            wrong.push(format!(
                "{app}\n    kubelet: {verdict:?} {message:?} ({source})\n    got:     {:?} {:?}",
                outcome.verdict, outcome.message
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows differ:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn grpc_status_fields_and_compression_as_grpc_go_reads_them() {
    let rows: Vec<(&str, GrpcReply, Verdict, &str, &str)> = vec![
        (
            "says grpc-encoding: gzip but sends its message uncompressed (flag 0)",
            GrpcReply {
                headers: vec![("grpc-encoding", b"gzip")],
                ..GrpcReply::serving()
            },
            Verdict::Success,
            "service healthy",
            RECV_PAYLOAD,
        ),
        (
            "sends a message with the compression flag and no grpc-encoding",
            GrpcReply {
                flag: 1,
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Internal desc = \
             grpc: compressed flag set with identity or empty encoding",
            RECV_PAYLOAD,
        ),
        (
            "sends a message with compression flag 2",
            GrpcReply {
                flag: 2,
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Internal desc = \
             grpc: received unexpected payload format 2",
            RECV_PAYLOAD,
        ),
        (
            "ends OK with a grpc-message of raw Latin-1 bytes",
            GrpcReply {
                trailers: vec![("grpc-message", b"d\xe9j\xe0 vu 100%")],
                ..GrpcReply::serving()
            },
            Verdict::Success,
            "service healthy",
            "grpc-go http_util.go decodeGrpcMessage never fails; an OK status ignores its message",
        ),
        (
            "fails with a grpc-message of raw Latin-1 bytes",
            GrpcReply {
                messages: vec![],
                grpc_status: "14",
                trailers: vec![("grpc-message", b"arr\xeat%zz%41")],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Unavailable desc = arr\u{fffd}t%zzA",
            "grpc-go http_util.go decodeGrpcMessage",
        ),
        (
            "ends OK with a grpc-status-details-bin that is not base64",
            GrpcReply {
                trailers: vec![("grpc-status-details-bin", b"not base64!")],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Internal desc = \
             transport: malformed grpc-status-details-bin: illegal base64 data at input byte 3",
            DECODE_HEADER,
        ),
        (
            "sends a grpc-status-details-bin that is not base64 in its response head",
            GrpcReply {
                headers: vec![("grpc-status-details-bin", b"%%%%")],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Internal desc = \
             transport: malformed grpc-status-details-bin: illegal base64 data at input byte 0",
            DECODE_HEADER,
        ),
        (
            "ends OK with an unpadded grpc-status-details-bin whose last bits are not zero",
            GrpcReply {
                trailers: vec![("grpc-status-details-bin", b"CAB")],
                ..GrpcReply::serving()
            },
            Verdict::Success,
            "service healthy",
            "grpc-go http_util.go decodeBinHeader (RawStdEncoding, not strict)",
        ),
        (
            "ends with grpc-status 0 but a grpc-status-details-bin saying NotFound",
            GrpcReply {
                trailers: vec![("grpc-status-details-bin", b"CAUSBGdvbmU=")],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = NotFound desc = gone",
            "grpc-go http_util.go processHeaderField (status.FromProto); (*decodeState).status",
        ),
        (
            "ends OK with a grpc-status-details-bin that is base64 but no google.rpc.Status",
            GrpcReply {
                trailers: vec![("grpc-status-details-bin", b"//8=")],
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Internal desc = \
             transport: malformed grpc-status-details-bin: proto: cannot parse invalid wire-format data",
            DECODE_HEADER,
        ),
        (
            "announces SETTINGS_MAX_HEADER_LIST_SIZE 64, less than the request's headers",
            GrpcReply {
                max_header_list_size: Some(64),
                ..GrpcReply::serving()
            },
            Verdict::Failure,
            "error: health rpc probe failed: rpc error: code = Internal desc = \
             header list size to send violates the maximum size (64 bytes) set by server",
            "grpc-go internal/transport/http2_client.go NewStream, checkForHeaderListSize",
        ),
        (
            "announces SETTINGS_MAX_HEADER_LIST_SIZE 16 KiB",
            GrpcReply {
                max_header_list_size: Some(16 << 10),
                ..GrpcReply::serving()
            },
            Verdict::Success,
            "service healthy",
            "grpc-go internal/transport/http2_client.go NewStream, checkForHeaderListSize",
        ),
    ];
    check_grpc_rows(&rows).await;
}

/// `openssl s_server -www` (a real TLS server from Debian) on a port the
/// kernel chose, answering `HTTP/1.0 200 ok` with a status page; killed
/// and reaped on drop.
struct OpensslServer {
    port: u16,
    _process: crate::support::Process,
    _dir: tempfile::TempDir,
}

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new(crate::support::tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OpensslServer {
    /// Makes `cert.pem` and `key.pem` with the `openssl` commands given,
    /// then serves them with `server_args` added.
    fn start(make: Commands, server_args: &[&str]) -> OpensslServer {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        for args in make {
            openssl(dir.path(), args);
        }
        let mut child = std::process::Command::new(crate::support::tool("openssl"))
            .args([
                "s_server", "-accept", "0", "-cert", "cert.pem", "-key", "key.pem", "-www",
            ])
            .args(server_args)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut process = crate::support::Process(child);
        // `ACCEPT [::]:PORT` once it listens; the pipe closes if it fails.
        let mut line = String::new();
        let port = loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(process.0.stderr.as_mut().unwrap(), &mut err);
                panic!("openssl s_server {server_args:?} did not start: {err}");
            }
            if let Some(port) = line
                .trim()
                .strip_prefix("ACCEPT ")
                .and_then(|a| a.rsplit(':').next())
            {
                break port.parse().unwrap();
            }
        };
        // Drain what it prints per connection, so it never blocks on a
        // full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        OpensslServer {
            port,
            _process: process,
            _dir: dir,
        }
    }
}

/// The `openssl` commands that make a certificate and its key.
type Commands = &'static [&'static [&'static str]];

const RSA_1024: Commands = &[&[
    "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-subj",
    "/CN=app", "-days", "2",
]];
const ECDSA_P521: Commands = &[&[
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-521",
    "-nodes",
    "-keyout",
    "key.pem",
    "-out",
    "cert.pem",
    "-subj",
    "/CN=app",
    "-days",
    "2",
]];
/// `x509 -req -signkey` writes a version 1 certificate (no extensions).
const X509_V1: Commands = &[
    &[
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr", "-subj",
        "/CN=app",
    ],
    &[
        "x509", "-req", "-in", "req.csr", "-signkey", "key.pem", "-out", "cert.pem", "-days", "2",
    ],
];
const RSA_2048: Commands = &[&[
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-subj",
    "/CN=app", "-days", "2",
]];

/// Debian's OpenSSL refuses to serve a 1,024-bit key at its default
/// security level; the app's operator lowered it.
const ANY_KEY: &str = "DEFAULT:@SECLEVEL=0";

#[tokio::test]
async fn https_completes_every_handshake_gos_client_completes_without_verifying() {
    // The kubelet's client: tls.Config{InsecureSkipVerify: true}
    // (pkg/probe/http/http.go New). crypto/tls handshake_client.go
    // verifyServerCertificate skips the chain; the certificate's key
    // only has to sign the handshake with a scheme Go offers (defaults.go
    // defaultSupportedSignatureAlgorithms: ECDSAWithP521AndSHA512
    // included), and Go 1.24's crypto/rsa accepts keys from 1,024 bits.
    let rows: Vec<(&str, Commands, Vec<&str>)> = vec![
        (
            "an RSA key of 1,024 bits, TLS 1.3",
            RSA_1024,
            vec!["-cipher", ANY_KEY],
        ),
        (
            "an RSA key of 1,024 bits, TLS 1.2",
            RSA_1024,
            vec!["-cipher", ANY_KEY, "-tls1_2"],
        ),
        ("an ECDSA P-521 key, TLS 1.3", ECDSA_P521, vec![]),
        ("an ECDSA P-521 key, TLS 1.2", ECDSA_P521, vec!["-tls1_2"]),
        ("an X.509 version 1 certificate, TLS 1.3", X509_V1, vec![]),
        (
            "an X.509 version 1 certificate, TLS 1.2",
            X509_V1,
            vec!["-tls1_2"],
        ),
    ];
    let mut wrong = Vec::new();
    for (app, make, args) in &rows {
        let server = OpensslServer::start(make, args);
        let outcome = run(
            CheckKind::Http(Box::new(http(Scheme::Https, server.port, "/"))),
            PROMPT,
        )
        .await;
        if outcome.verdict != Verdict::Success
            || outcome.message != "HTTP probe succeeded with statuscode: 200"
        {
            wrong.push(format!(
                "a server with {app}\n    kubelet: Success (crypto/tls handshake_client.go)\n    got:     {:?} {:?}",
                outcome.verdict, outcome.message
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows differ:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn known_deviation_a_tls_1_2_server_with_only_cbc_suites() {
    // Go's default suites include TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
    // (crypto/tls cipher_suites.go cipherSuitesPreferenceOrder; not in
    // disabledCipherSuites, rsaKexCiphers or tdesCiphers), so the kubelet
    // says Success. rustls has no CBC suite: healthproxy fails the
    // handshake (docs/kubelet-parity.md, known deviations).
    let server = OpensslServer::start(RSA_2048, &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"]);
    let outcome = run(
        CheckKind::Http(Box::new(http(Scheme::Https, server.port, "/"))),
        PROMPT,
    )
    .await;
    assert_eq!(outcome.verdict, Verdict::Failure, "{outcome:?}");
    assert!(
        matches(
            "Get \"https://127.0.0.1:*/\": tls: *HandshakeFailure*",
            &outcome.message
        ),
        "{outcome:?}"
    );
    // The same server with an AEAD suite beside: the handshake completes.
    let server = OpensslServer::start(
        RSA_2048,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256",
        ],
    );
    let outcome = run(
        CheckKind::Http(Box::new(http(Scheme::Https, server.port, "/"))),
        PROMPT,
    )
    .await;
    assert_eq!(outcome.verdict, Verdict::Success, "{outcome:?}");
}

/// One HTTP/2 frame (RFC 9113 §4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A header block of literals that touch no HPACK table (RFC 7541
/// §6.2.2), in the order given: what the h2 crate will not send.
fn literal_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        for s in [name, value] {
            assert!(s.len() < 127);
            block.push(s.len() as u8);
            block.extend_from_slice(s.as_bytes());
        }
        block.insert(block.len() - name.len() - value.len() - 2, 0x00);
    }
    block
}

const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Answers the first request of one HTTP/2 connection with `frames`
/// (stream 1), written frame by frame, then holds the connection until
/// the client closes it.
async fn raw_h2_answer<S>(mut io: S, frames: Vec<Vec<u8>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if io.write_all(&h2_frame(0x4, 0, 0, &[])).await.is_err() {
        return;
    }
    let mut preface = [0u8; 24];
    if io.read_exact(&mut preface).await.is_err() {
        return;
    }
    loop {
        let mut head = [0u8; 9];
        if io.read_exact(&mut head).await.is_err() {
            return;
        }
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        if io.read_exact(&mut payload).await.is_err() {
            return;
        }
        if head[3] == 0x4 && head[4] & 0x1 == 0 {
            let _ = io.write_all(&h2_frame(0x4, 0x1, 0, &[])).await;
        }
        if head[3] == HEADERS {
            break;
        }
    }
    for frame in frames {
        if io.write_all(&frame).await.is_err() {
            return;
        }
    }
    let mut rest = [0u8; 1024];
    while io.read(&mut rest).await.is_ok_and(|n| n > 0) {}
}

/// A plaintext raw HTTP/2 server answering every connection with `frames`.
async fn raw_h2_app(frames: Vec<Vec<u8>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(raw_h2_answer(stream, frames.clone()));
        }
    });
    addr
}

/// The same over TLS, `h2` chosen by ALPN.
async fn raw_h2_tls_app(frames: Vec<Vec<u8>>) -> std::net::SocketAddr {
    let acceptor = crate::http_check::self_signed_speaking("app", &[b"h2"]).acceptor;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, frames) = (acceptor.clone(), frames.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    raw_h2_answer(tls, frames).await;
                }
            });
        }
    });
    addr
}

/// A gRPC answer to `Check`: SERVING, with `extra` fields in its head.
fn grpc_frames(extra: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let mut head = vec![(":status", "200"), ("content-type", "application/grpc")];
    head.extend_from_slice(extra);
    let mut message = vec![0u8, 0, 0, 0, 2];
    message.extend_from_slice(&health(SERVING));
    vec![
        h2_frame(HEADERS, END_HEADERS, 1, &literal_block(&head)),
        h2_frame(DATA, 0, 1, &message),
        h2_frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &literal_block(&[("grpc-status", "0")]),
        ),
    ]
}

#[tokio::test]
async fn http2_responses_keep_what_x_net_keeps() {
    // x/net http2 frame.go (*Framer).readMetaFrame checks only that names
    // and values are valid (httpguts); connection-specific fields stay in
    // the response (transport.go (*clientConnReadLoop).handleResponse).
    // grpc-go reads its headers through the same Framer
    // (internal/transport/http_util.go newFramer, ReadMetaHeaders), and
    // operateHeaders puts unknown fields in the metadata.
    let mut wrong = Vec::new();
    for extra in [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("te", "gzip"),
        ("upgrade", "h2c"),
    ] {
        let addr = raw_h2_app(grpc_frames(&[extra])).await;
        let outcome = run(grpc(addr), PROMPT).await;
        if outcome != Outcome::success("service healthy") {
            wrong.push(format!("gRPC head with {extra:?}: {outcome:?}"));
        }
        // The kubelet's HTTPS transport speaks HTTP/2 when the app
        // chooses it by ALPN (kubelet-semantics §1.1).
        let head = [(":status", "200"), extra, ("content-length", "2")];
        let addr = raw_h2_tls_app(vec![
            h2_frame(HEADERS, END_HEADERS, 1, &literal_block(&head)),
            h2_frame(DATA, END_STREAM, 1, b"ok"),
        ])
        .await;
        let outcome = run(
            CheckKind::Http(Box::new(http(Scheme::Https, addr.port(), "/"))),
            PROMPT,
        )
        .await;
        if (outcome.verdict, outcome.message.as_str())
            != (Verdict::Success, "HTTP probe succeeded with statuscode: 200")
        {
            wrong.push(format!("HTTPS/2 head with {extra:?}: {outcome:?}"));
        }
    }
    // The same in the trailers of a gRPC answer, and a second answer on
    // the same connection after the table has been rewritten.
    let mut frames = grpc_frames(&[]);
    frames[2] = h2_frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &literal_block(&[("grpc-status", "0"), ("connection", "close")]),
    );
    let addr = raw_h2_app(frames).await;
    let outcome = run(grpc(addr), PROMPT).await;
    if outcome != Outcome::success("service healthy") {
        wrong.push(format!("gRPC trailers with connection: close: {outcome:?}"));
    }
    // A status in the trailers is still read: the fields after the
    // dropped one count.
    let mut frames = grpc_frames(&[("connection", "keep-alive")]);
    frames[1] = h2_frame(DATA, 0, 1, &[]);
    frames[2] = h2_frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &literal_block(&[
            ("upgrade", "x"),
            ("grpc-status", "14"),
            ("grpc-message", "draining"),
        ]),
    );
    let addr = raw_h2_app(frames).await;
    let outcome = run(grpc(addr), PROMPT).await;
    let want = "error: health rpc probe failed: rpc error: code = Unavailable desc = draining";
    if outcome.verdict != Verdict::Failure || outcome.message != want {
        wrong.push(format!("gRPC failure after a dropped field: {outcome:?}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
