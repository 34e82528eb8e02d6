//! The recipes of docs/native-checks.md ("curl, wget and
//! grpc_health_probe") against the real tools: for each answer of a real
//! server on 127.0.0.1 (200, a same-host 301 to a 200 and to a 500, 404,
//! 500, a closed port), the `http` check set up as the recipe says gives
//! the verdict of the tool's exit status.

use std::time::Duration;

use bytes::Bytes;
use healthproxy::check::{HttpCheck, Outcome};
use healthproxy::config::{HttpSpec, StatusSet};
use http_body_util::Full;
use hyper::Response;

use crate::http_check::{Server, spec};
use crate::oracle::{Ran, agree, sh};
use crate::support::refusing_port;

/// Generous: a loaded machine must not turn an answer into a time-out.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Only a bound against a hung tool; a verdict never waits on it.
const BOUND: Duration = Duration::from_secs(60);

/// The server's paths and the states they stand for.
const PATHS: [(&str, &str); 5] = [
    ("/ok", "200"),
    ("/moved-ok", "301 to a 200"),
    ("/moved-err", "301 to a 500"),
    ("/missing", "404"),
    ("/err", "500"),
];

fn answer(path: &str) -> Response<Full<Bytes>> {
    let (status, location) = match path {
        "/ok" => (200, None),
        "/moved-ok" => (301, Some("/ok")),
        "/moved-err" => (301, Some("/err")),
        "/err" => (500, None),
        _ => (404, None),
    };
    let mut response = Response::builder().status(status);
    if let Some(location) = location {
        response = response.header("location", location);
    }
    response.body(Full::new(Bytes::from("body"))).unwrap()
}

async fn check(spec: HttpSpec) -> Outcome {
    HttpCheck::new(spec).unwrap().run(TIMEOUT).await
}

/// Every state: (state, URL port, path).
fn states(server: &Server, closed: u16) -> Vec<(&'static str, u16, &'static str)> {
    let mut all: Vec<_> = PATHS.iter().map(|(p, s)| (*s, server.port(), *p)).collect();
    all.push(("a closed port", closed, "/ok"));
    all
}

async fn tool(form: &str, port: u16, path: &str) -> Ran {
    sh(&format!("{form} http://127.0.0.1:{port}{path}"), &[], BOUND).await
}

/// `curl URL` exits 0 for any HTTP answer: `expect_status = ["100-599"]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_without_f_is_any_status() {
    let server = Server::start(|seen| answer(&seen.path)).await;
    let (_hold, closed) = refusing_port();
    let form = "curl -s -o /dev/null";
    for (state, port, path) in states(&server, closed) {
        let recipe = HttpSpec {
            expect_status: Some(StatusSet::new(vec![100..=599])),
            ..spec(port, path)
        };
        let (real, ours) = tokio::join!(tool(form, port, path), check(recipe));
        agree(state, form, &real, &ours);
    }
}

/// `curl -fL URL` and `wget URL` follow redirects and fail on 4xx and
/// 5xx: the `http` check with its defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_f_l_and_wget_are_the_default_check() {
    let server = Server::start(|seen| answer(&seen.path)).await;
    let (_hold, closed) = refusing_port();
    assert!(
        sh("command -v wget", &[], BOUND).await.passed(),
        "wget is not installed (.ci/run installs it)"
    );
    for form in ["curl -sfL -o /dev/null", "wget -q -t 1 -O /dev/null"] {
        for (state, port, path) in states(&server, closed) {
            let (real, ours) = tokio::join!(tool(form, port, path), check(spec(port, path)));
            agree(state, form, &real, &ours);
        }
    }
}

/// `curl -f URL` without `-L` does not follow: a 3xx passes whatever it
/// points at, a status of 400 or more fails: `follow_redirects = false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_f_without_l_is_the_check_that_does_not_follow() {
    let server = Server::start(|seen| answer(&seen.path)).await;
    let (_hold, closed) = refusing_port();
    let form = "curl -sf -o /dev/null";
    for (state, port, path) in states(&server, closed) {
        let recipe = HttpSpec {
            follow_redirects: false,
            ..spec(port, path)
        };
        let (real, ours) = tokio::join!(tool(form, port, path), check(recipe));
        agree(state, form, &real, &ours);
    }
    // Followed, as by default, the 301 to a 500 fails where curl -f passes.
    let (real, ours) = tokio::join!(
        tool(form, server.port(), "/moved-err"),
        check(spec(server.port(), "/moved-err"))
    );
    assert!(real.passed(), "`{form}` exited {:?}", real.code);
    assert!(!ours.verdict.is_success(), "the following check passed: {ours:?}");
}
