//! A small application to run healthproxy against: the app container of the
//! demo, with something for every kind of check in `config.example.toml`.
//!
//! - HTTP on 127.0.0.1:8080: `GET /healthz` answers 200 "ok", or 500
//!   "failing" while told to fail; `GET /` is a short page; `/slow` answers
//!   after 3 s; `POST /fail` and `POST /recover` (GET works too) switch the
//!   failure on and off.
//! - gRPC on 127.0.0.1:8081: `grpc.health.v1.Health`, with the service
//!   "demo" `NOT_SERVING` while failing.
//! - A heartbeat file, touched every second except while failing, so that a
//!   `file` check with a `max_age` of a few seconds goes stale.
//!
//! Every state change is printed as one line on stdout.
//!
//! Run with
//!
//! ```not_rust
//! cargo run --example demo-app
//! cargo run --example demo-app -- --http 127.0.0.1:8080 --grpc 127.0.0.1:8081 \
//!     --heartbeat /tmp/healthproxy-demo/heartbeat
//! ```
//!
//! or `./demo.sh`, which also runs healthproxy in front of it. The flags
//! may also be given as `DEMO_HTTP`, `DEMO_GRPC` and `DEMO_HEARTBEAT`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The gRPC service name whose status follows the failure switch.
const GRPC_SERVICE: &str = "demo";
/// How often the heartbeat file is touched.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long `/slow` takes to answer.
const SLOW: Duration = Duration::from_secs(3);

const USAGE: &str = "\
usage: demo-app [--http ADDR] [--grpc ADDR] [--heartbeat PATH]

  --http ADDR       HTTP address   (env DEMO_HTTP,      default 127.0.0.1:8080)
  --grpc ADDR       gRPC address   (env DEMO_GRPC,      default 127.0.0.1:8081)
  --heartbeat PATH  heartbeat file (env DEMO_HEARTBEAT, default /tmp/healthproxy-demo/heartbeat)
";

/// The command line, after defaults and the environment.
#[derive(Debug)]
struct Args {
    http: SocketAddr,
    grpc: SocketAddr,
    heartbeat: PathBuf,
}

impl Args {
    /// Flags win over the environment, which wins over the defaults.
    fn parse() -> Result<Args, String> {
        let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        let mut http = env("DEMO_HTTP", "127.0.0.1:8080");
        let mut grpc = env("DEMO_GRPC", "127.0.0.1:8081");
        let mut heartbeat = env("DEMO_HEARTBEAT", "/tmp/healthproxy-demo/heartbeat");
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--http" => &mut http,
                "--grpc" => &mut grpc,
                "--heartbeat" => &mut heartbeat,
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            };
            *slot = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        }
        let addr = |flag: &str, text: &str| {
            text.parse::<SocketAddr>()
                .map_err(|_| format!("{flag} {text:?} is not an address such as 127.0.0.1:8080"))
        };
        Ok(Args {
            http: addr("--http", &http)?,
            grpc: addr("--grpc", &grpc)?,
            heartbeat: PathBuf::from(heartbeat),
        })
    }
}

/// The failure switch, shared by the HTTP handlers, the gRPC health status
/// and the heartbeat task.
#[derive(Clone)]
struct Demo {
    failing: Arc<AtomicBool>,
    grpc: HealthReporter,
}

impl Demo {
    fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Switches the failure on or off; prints a line if that changed it.
    async fn set_failing(&self, failing: bool) -> &'static str {
        if self.failing.swap(failing, Ordering::SeqCst) == failing {
            return if failing {
                "already failing\n"
            } else {
                "already healthy\n"
            };
        }
        let status = if failing {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        self.grpc.set_service_status(GRPC_SERVICE, status).await;
        if failing {
            println!("demo-app: FAILING: /healthz 500, gRPC {GRPC_SERVICE:?} NOT_SERVING, heartbeat stopped");
            "failing\n"
        } else {
            println!("demo-app: HEALTHY: /healthz 200, gRPC {GRPC_SERVICE:?} SERVING, heartbeat resumed");
            "recovered\n"
        }
    }
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprint!("demo-app: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-app: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(GRPC_SERVICE, ServingStatus::Serving)
        .await;
    let demo = Demo {
        failing: Arc::new(AtomicBool::new(false)),
        grpc: reporter,
    };
    if let Some(dir) = args.heartbeat.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let http = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let grpc = tokio::net::TcpListener::bind(args.grpc)
        .await
        .with_context(|| format!("cannot listen on {}", args.grpc))?;

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            println!("demo-app: stopping");
            stop.cancel();
        }
    });
    tokio::spawn(heartbeat(demo.clone(), args.heartbeat.clone(), stop.clone()));

    let grpc_server = tonic::transport::Server::builder()
        .add_service(health_service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            stop.clone().cancelled_owned(),
        );
    let http_server = axum::serve(http, app(demo)).with_graceful_shutdown(stop.clone().cancelled_owned());
    println!(
        "demo-app: HEALTHY: http://{} (gRPC health on {}, heartbeat {})",
        args.http,
        args.grpc,
        args.heartbeat.display()
    );
    let (h, g) = tokio::join!(http_server, grpc_server);
    h.context("HTTP server")?;
    g.context("gRPC server")?;
    Ok(())
}

/// The HTTP routes.
fn app(demo: Demo) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/fail", get(fail).post(fail))
        .route("/recover", get(recover).post(recover))
        .route("/slow", get(slow))
        .with_state(demo)
}

async fn index() -> &'static str {
    "healthproxy demo app\n\
     \n\
     GET  /healthz   200 \"ok\", or 500 \"failing\" while failing\n\
     POST /fail      start failing: /healthz 500, gRPC \"demo\" NOT_SERVING, heartbeat stops\n\
     POST /recover   stop failing\n\
     GET  /slow      answers after 3 s\n"
}

async fn healthz(State(demo): State<Demo>) -> (StatusCode, &'static str) {
    if demo.failing() {
        (StatusCode::INTERNAL_SERVER_ERROR, "failing\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn fail(State(demo): State<Demo>) -> &'static str {
    demo.set_failing(true).await
}

async fn recover(State(demo): State<Demo>) -> &'static str {
    demo.set_failing(false).await
}

async fn slow() -> &'static str {
    tokio::time::sleep(SLOW).await;
    "slow ok\n"
}

/// Touches `path` every second unless failing; prints when that stops or
/// fails to work.
async fn heartbeat(demo: Demo, path: PathBuf, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if demo.failing() {
            continue;
        }
        // Writing the file (not just opening it) moves its modification
        // time, which is what the `file` check reads.
        let stamp = format!("{:?}\n", std::time::SystemTime::now());
        let result = tokio::fs::write(&path, stamp).await.map_err(|e| e.to_string());
        if result.as_ref().err() != last_error.as_ref() {
            match &result {
                Err(e) => println!("demo-app: cannot write heartbeat {}: {e}", path.display()),
                Ok(()) => println!("demo-app: heartbeat {} written again", path.display()),
            }
            last_error = result.err();
        }
    }
}

/// Ctrl-C or SIGTERM (what `kill` and demo.sh's trap send).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot listen for SIGTERM");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
