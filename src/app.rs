//! The application built from a config file: the one setup step of `run`,
//! `check-config`, a reload and the benchmark harness ([`App::load`],
//! [`App::build`]), and where its config came from ([`Source`]), which a
//! reload reads again. Binding and serving are `run`'s (the crate root).

use std::hash::{Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::check::PrepareError;
use crate::config::{self, Config, ConfigErrors};
use crate::engine::Engine;
use crate::lifecycle::{Token, TokenError};

/// The application built from a validated config, ready to run: every
/// check prepared (CA files loaded, headers checked) and the lifecycle
/// token read. `run`, `check-config` and the benchmark harness all build it
/// with [`App::build`], so a config passes `check-config` exactly when
/// `run` accepts it. Binding the listener is left to [`run`](crate::run): it is an
/// act on the host, not a property of the config.
#[derive(Debug)]
pub struct App {
    pub(crate) config: Config,
    pub(crate) engine: Engine,
    pub(crate) token: Option<Token>,
    /// The file it was read from, if any: what a reload reads again.
    pub(crate) source: Option<Source>,
}

/// Why a valid config does not make an application.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Checks that cannot be prepared (a CA file that does not load, a key
    /// that is not its certificate's), each with the line of its table.
    #[error("{}", .0.iter().map(|(line, e)| format!("line {line}: {e}")).collect::<Vec<_>>().join("; "))]
    Checks(Vec<(usize, PrepareError)>),
    /// `drain.token_file` cannot be read, or is empty.
    #[error("{0}")]
    Token(TokenError),
}

impl BuildError {
    /// As `check-config` prints it for the file `origin`: one line for
    /// each check that cannot be prepared, `FILE:LINE: check "NAME": ...`,
    /// as config errors and lints are printed.
    pub(crate) fn for_file(&self, origin: &str) -> String {
        self.lines(origin).join("\n")
    }

    /// [`BuildError::for_file`], a line each.
    pub(crate) fn lines(&self, origin: &str) -> Vec<String> {
        match self {
            BuildError::Checks(errors) => errors
                .iter()
                .map(|(line, e)| format!("{origin}:{line}: {e}"))
                .collect(),
            BuildError::Token(message) => vec![format!("{origin}: {message}")],
        }
    }
}

/// Why [`App::load`] gives no application. Its text is what
/// `check-config` prints, one error a line; [`LoadError::lines`] gives
/// the lines one by one (a reload logs each).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read, or its config is not valid: every error
    /// with file, line, column and key.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The config is valid, but a check or the token file cannot be
    /// prepared.
    #[error("{}", .error.for_file(.origin))]
    Build {
        /// The file, as errors name it.
        origin: String,
        /// What cannot be prepared.
        error: BuildError,
    },
}

impl LoadError {
    /// One line per error, as `check-config` prints them.
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            LoadError::Config(errors) => errors.lines().collect(),
            LoadError::Build { origin, error } => error.lines(origin),
        }
    }
}

impl App {
    /// Prepares every check of `config` and reads its token file.
    pub fn build(config: Config) -> Result<App, BuildError> {
        let engine = Engine::new(&config.checks).map_err(BuildError::Checks)?;
        let token = config
            .drain
            .token_file
            .as_deref()
            .map(Token::load)
            .transpose()
            .map_err(BuildError::Token)?;
        Ok(App {
            config,
            engine,
            token,
            source: None,
        })
    }

    /// Reads the config file at `path` (`listen`, when given, replacing
    /// its address) and builds the application: the one setup step of
    /// `run`, `check-config` and a reload. The error says what
    /// `check-config` prints: every config error with file, line, column
    /// and key, or the check or token file that cannot be prepared.
    pub(crate) fn load(
        path: &std::path::Path,
        listen: Option<std::net::SocketAddr>,
    ) -> Result<App, LoadError> {
        let text = Config::read(path)?;
        let origin = path.display().to_string();
        let mut config = Config::from_toml_str(&text, &origin, &config::ProcessEnv)?;
        if let Some(listen) = listen {
            config.listen = listen;
        }
        let mut app = App::build(config).map_err(|error| LoadError::Build { origin, error })?;
        app.source = Some(Source {
            path: path.to_path_buf(),
            listen,
            content: fingerprint(text.as_bytes()),
        });
        Ok(app)
    }

    /// The config it was built from.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
}

/// Where a running config came from, to be read again.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The config file's path, as given.
    pub(crate) path: PathBuf,
    /// `--listen`, which replaces the file's `listen`.
    pub(crate) listen: Option<SocketAddr>,
    /// The [`fingerprint`] of the text the running config was read from.
    pub(crate) content: u64,
}

/// A fingerprint of a file's content, to notice a change.
pub(crate) fn fingerprint(content: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    content.hash(&mut hasher);
    hasher.finish()
}
