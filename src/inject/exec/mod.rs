//! Exec probes that a native check can run instead: the command is read
//! as the kubelet and the shell read it, recognised as one of the tools of
//! docs/native-checks.md, and each of its flags (and the tool's defaults)
//! mapped to the check's keys. Whatever cannot be carried over exactly
//! keeps the probe exec, with the part that kept it named.
//!
//! - [`shell`]: the `sh -c` script, as one pipeline of simple commands.
//! - [`tools`]: one reader per tool.
//!
//! # Variables
//!
//! The kubelet expands `$(VAR)` in an exec probe's command with the
//! container's *static* `env` values only
//! (`ExpandContainerCommandOnlyStatic`: a `valueFrom` variable becomes the
//! empty string, an unknown one stays `$(VAR)`, `$$` is `$`). The shell
//! then sees the container's environment: `$VAR` of a plain `value` is
//! inlined; of a `valueFrom` (a Secret's or ConfigMap's key, a `fieldRef`,
//! a `resourceFieldRef`), the sidecar gets the same `valueFrom` under the
//! same name and the check reads it with its `*_env` key, so no value lands
//! in the ConfigMap. A variable the container does not define (the image's
//! own, or one of `envFrom`) keeps the probe: copying a whole Secret into
//! the sidecar for one key is not done.

pub(crate) mod shell;
pub(crate) mod tools;

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_yaml_ng::{Mapping, Value};

use shell::Part;

/// What the probe's pod and container say about how its command runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The app container (its `env` and `envFrom`).
    pub(crate) container: &'a Mapping,
    /// The container's name.
    pub(crate) name: &'a str,
    /// Which probe: names the variables made for literal credentials.
    pub(crate) probe: &'a str,
    /// `spec.shareProcessNamespace` is true: the sidecar sees the app's
    /// processes.
    pub(crate) shares_processes: bool,
    /// The probe's `timeoutSeconds` (defaults applied).
    pub(crate) timeout: u64,
}

/// One argument after expansion: text, with the sidecar's variables in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Arg(pub Vec<Piece>);

/// A piece of an [`Arg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Known text.
    Text(String),
    /// The value of the sidecar's variable of this name (copied by
    /// reference from the app container).
    Env(String),
}

impl Arg {
    /// An argument of known text.
    pub(crate) fn text(s: &str) -> Arg {
        Arg(vec![Piece::Text(s.to_string())])
    }

    /// Its text, when it holds no variable.
    pub(crate) fn as_text(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Env(_) => return None,
            }
        }
        Some(out)
    }

    /// The variable it is made of alone.
    pub(crate) fn as_env(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Piece::Env(v)] => Some(v),
            _ => None,
        }
    }

    /// Starts with this text (before any variable).
    pub(crate) fn starts_with(&self, prefix: &str) -> bool {
        matches!(self.0.first(), Some(Piece::Text(t)) if t.starts_with(prefix))
    }

    /// What follows `prefix`.
    pub(crate) fn strip_prefix(&self, prefix: &str) -> Option<Arg> {
        let Some(Piece::Text(first)) = self.0.first() else {
            return None;
        };
        let rest = first.strip_prefix(prefix)?;
        let mut pieces = Vec::new();
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        pieces.extend(self.0[1..].iter().cloned());
        Some(Arg(pieces))
    }

    /// Shown as the shell would write it.
    pub(crate) fn show(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Env(v) => format!("${v}"),
            })
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Piece::Text(t) if t.is_empty()))
    }
}

/// An exec probe turned into a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Converted {
    /// The command as the probe gave it (argv joined, for messages).
    pub(crate) command: String,
    /// The check's kind: `postgres`, `redis`, ...
    pub(crate) kind: &'static str,
    /// The kind's keys, each with its value as TOML.
    pub(crate) keys: Vec<(String, String)>,
    /// The sidecar's environment variables the check reads: (name, the
    /// container's `env` entry, by reference).
    pub(crate) env: Vec<(String, Value)>,
    /// A bound shorter than the probe's `timeoutSeconds` (`timeout N`,
    /// `curl --max-time N`), in seconds.
    pub(crate) timeout: Option<u64>,
    /// The port it dials, when it dials one.
    pub(crate) port: Option<u16>,
    /// The host it dials, when not the loopback default.
    pub(crate) host: Option<String>,
}

impl Converted {
    fn new(command: &str, kind: &'static str) -> Converted {
        Converted {
            command: command.to_string(),
            kind,
            keys: Vec::new(),
            env: Vec::new(),
            timeout: None,
            port: None,
            host: None,
        }
    }

    /// Adds a key with a text value.
    pub(crate) fn text(&mut self, key: &str, value: &str) {
        self.keys.push((key.into(), toml_str(value)));
    }

    /// Adds a key with a value already written as TOML.
    pub(crate) fn raw(&mut self, key: &str, value: String) {
        self.keys.push((key.into(), value));
    }

    /// The `kind = { ... }` line.
    pub(crate) fn table(&self) -> String {
        let mut out = format!("{} = {{ ", self.kind);
        for (i, (k, v)) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{k} = {v}");
        }
        out.push_str(if self.keys.is_empty() { "}" } else { " }" });
        out
    }
}

/// A TOML basic string on one line (a check's table is one line).
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The container's environment as the kubelet builds it.
pub(crate) struct Env<'a> {
    /// Name → definition; the last of a name wins.
    vars: HashMap<String, &'a Mapping>,
    from: bool,
    container: &'a str,
    prefix: String,
    /// Variables the check needs in the sidecar.
    pub(crate) copied: Vec<(String, Value)>,
}

impl<'a> Env<'a> {
    /// The environment of `ctx`'s container.
    pub(crate) fn of(ctx: &Context<'a>) -> Env<'a> {
        let mut vars = HashMap::new();
        for item in ctx
            .container
            .get("env")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let (Some(m), Some(name)) = (item.as_mapping(), item.get("name").and_then(Value::as_str)) {
                vars.insert(name.to_string(), m);
            }
        }
        let from = ctx
            .container
            .get("envFrom")
            .and_then(Value::as_sequence)
            .is_some_and(|l| !l.is_empty());
        let prefix: String = format!("HEALTHPROXY_{}_{}", ctx.name, ctx.probe)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        Env {
            vars,
            from,
            container: ctx.name,
            prefix,
            copied: Vec::new(),
        }
    }

    /// The kubelet's `$(VAR)` expansion of one argument of the probe's
    /// command (kubernetes `third_party/forked/golang/expansion`).
    pub(crate) fn kubelet_expand(&self, input: &str) -> Result<String, String> {
        let b = input.as_bytes();
        let mut out = String::new();
        let mut checkpoint = 0;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' && i + 1 < b.len() {
                out.push_str(&input[checkpoint..i]);
                match b[i + 1] {
                    b'$' => {
                        out.push('$');
                        i += 1;
                    }
                    b'(' => match input[i + 2..].find(')') {
                        Some(end) => {
                            let name = &input[i + 2..i + 2 + end];
                            match self.vars.get(name) {
                                Some(def) => match def.get("value").and_then(Value::as_str) {
                                    Some(v) => out.push_str(v),
                                    None if def.get("valueFrom").is_some_and(|v| !v.is_null()) => {
                                        return Err(format!(
                                            "$({name}) is a valueFrom variable, which the kubelet expands to the empty string in a probe's command (only static values are expanded): use $${name} in sh -c"
                                        ));
                                    }
                                    None => {}
                                },
                                None => out.push_str(&format!("$({name})")),
                            }
                            i += 2 + end;
                        }
                        None => {
                            out.push_str("$(");
                            i += 1;
                        }
                    },
                    _ => {
                        out.push('$');
                        let ch = input[i + 1..].chars().next().expect("a char");
                        out.push(ch);
                        i += ch.len_utf8();
                    }
                }
                checkpoint = i + 1;
            }
            i += 1;
        }
        out.push_str(&input[checkpoint.min(input.len())..]);
        Ok(out)
    }

    /// The shell's `$NAME` in the container: text, or a variable copied
    /// into the sidecar.
    pub(crate) fn shell_var(&mut self, name: &str) -> Result<Piece, String> {
        match self.lookup(name)? {
            Some(piece) => Ok(piece),
            None if self.from => Err(format!(
                "${name} is not in the container's env; it may come from envFrom, which is not copied whole into the sidecar"
            )),
            None => Err(format!(
                "${name} is not in the container's env (the image may set it)"
            )),
        }
    }

    /// A variable the tool itself reads (`PGPASSWORD`, `MYSQL_PWD`): its
    /// piece when the container's `env` defines it.
    pub(crate) fn tool_var(&mut self, name: &str) -> Result<Option<Arg>, String> {
        Ok(self.lookup(name)?.map(|p| Arg(vec![p])))
    }

    fn lookup(&mut self, name: &str) -> Result<Option<Piece>, String> {
        let Some(def) = self.vars.get(name).copied() else {
            return Ok(None);
        };
        if let Some(from) = def.get("valueFrom").filter(|v| !v.is_null()) {
            let mut from = from.clone();
            // A resourceFieldRef names its container, or means its own:
            // in the sidecar it must still mean the app's.
            if let Some(Value::Mapping(r)) = from.get_mut("resourceFieldRef")
                && r.get("containerName")
                    .is_none_or(|c| c.as_str().is_none_or(str::is_empty))
            {
                r.insert("containerName".into(), self.container.into());
            }
            let mut item = Mapping::new();
            item.insert("name".into(), name.into());
            item.insert("valueFrom".into(), from);
            self.copy(name, Value::Mapping(item));
            return Ok(Some(Piece::Env(name.to_string())));
        }
        let value = def.get("value").and_then(Value::as_str).unwrap_or("");
        if value.contains("$(") {
            return Err(format!("${name}'s value refers to other variables ($(...))"));
        }
        Ok(Some(Piece::Text(value.to_string())))
    }

    fn copy(&mut self, name: &str, item: Value) {
        if !self.copied.iter().any(|(n, _)| n == name) {
            self.copied.push((name.to_string(), item));
        }
    }

    /// The name of a sidecar variable that holds `arg`: the variable
    /// itself, or one made for a literal (a password written in the
    /// command stays in the pod spec, where it was, not in the ConfigMap).
    pub(crate) fn var_for(&mut self, arg: &Arg, what: &str) -> Result<String, String> {
        if let Some(v) = arg.as_env() {
            return Ok(v.to_string());
        }
        let Some(text) = arg.as_text() else {
            return Err(format!("{what} {} mixes text and variables", arg.show()));
        };
        let name = format!("{}_{what}", self.prefix).to_ascii_uppercase();
        let mut item = Mapping::new();
        item.insert("name".into(), name.clone().into());
        item.insert("value".into(), text.into());
        self.copy(&name, Value::Mapping(item));
        Ok(name)
    }
}

/// Turns one shell word into an argument.
pub(super) fn resolve(word: &[Part], env: &mut Env<'_>) -> Result<Arg, String> {
    let mut pieces = Vec::new();
    for part in word {
        match part {
            Part::Lit(t) => pieces.push(Piece::Text(t.clone())),
            Part::Var { name, quoted } => {
                let piece = env.shell_var(name)?;
                if let Piece::Text(t) = &piece
                    && !quoted
                    && (t.is_empty() || t.contains([' ', '\t', '\n', '*', '?', '[']))
                {
                    return Err(format!(
                        "${name} unquoted: its value is split or matched against files by the shell"
                    ));
                }
                pieces.push(piece);
            }
            Part::Subst(script) => return Err(format!("the command substitution $({script})")),
        }
    }
    // Join neighbouring text.
    let mut joined: Vec<Piece> = Vec::new();
    for p in pieces {
        match (joined.last_mut(), p) {
            (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
            (_, p) => joined.push(p),
        }
    }
    if joined.is_empty() {
        joined.push(Piece::Text(String::new()));
    }
    Ok(Arg(joined))
}

/// One command of the pipeline, its words resolved.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    /// Its arguments, the name first.
    pub(crate) args: Vec<Arg>,
}

impl Cmd {
    /// The command's name without its directory (`/usr/bin/redis-cli`).
    pub(crate) fn name(&self) -> String {
        let first = self.args[0].as_text().unwrap_or_default();
        first.rsplit('/').next().unwrap_or("").to_string()
    }
}

/// `grep` at the end of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grep {
    /// The pattern.
    pub(crate) pattern: String,
    /// `-F`.
    pub(crate) fixed: bool,
    /// `-i`.
    pub(crate) icase: bool,
    /// `-x`.
    pub(crate) line: bool,
    /// `-w`.
    pub(crate) word: bool,
    /// `-v`.
    pub(crate) invert: bool,
}

impl Grep {
    /// Whether it passes on `line` and on nothing that does not hold
    /// `line` whole: the pattern, without its anchors, is plain text found
    /// in `line` (`grep -q PONG`, `grep '^PONG$'`, `grep alive`).
    pub(crate) fn finds(&self, line: &str) -> bool {
        if self.invert {
            return false;
        }
        let p = self.pattern.as_str();
        let (core, anchored) = if self.fixed {
            (p, false)
        } else {
            let a = p.strip_prefix('^');
            let core = a.unwrap_or(p);
            let b = core.strip_suffix('$');
            (b.unwrap_or(core), a.is_some() || b.is_some())
        };
        if core.is_empty()
            || (!self.fixed && core.contains(['.', '*', '[', '\\', '+', '?', '(', '|', '{', '^', '$']))
        {
            return false;
        }
        let (core, line) = if self.icase {
            (core.to_ascii_lowercase(), line.to_ascii_lowercase())
        } else {
            (core.to_string(), line.to_string())
        };
        if anchored || self.line {
            return core == line;
        }
        line.contains(&core)
    }

    fn parse(cmd: &Cmd) -> Result<Grep, String> {
        let mut g = Grep {
            pattern: String::new(),
            fixed: false,
            icase: false,
            line: false,
            word: false,
            invert: false,
        };
        let mut pattern = None;
        let mut args = cmd.args[1..].iter();
        while let Some(a) = args.next() {
            let t = a
                .as_text()
                .ok_or_else(|| format!("grep's argument {} is a variable", a.show()))?;
            if t == "-e" || t == "--regexp" {
                pattern = args.next().and_then(Arg::as_text);
                continue;
            }
            if let Some(flags) = t
                .strip_prefix('-')
                .filter(|f| !f.is_empty() && !f.starts_with('-'))
            {
                for f in flags.chars() {
                    match f {
                        'q' | 's' => {}
                        'F' => g.fixed = true,
                        'E' | 'G' => {}
                        'i' => g.icase = true,
                        'x' => g.line = true,
                        'w' => g.word = true,
                        'v' => g.invert = true,
                        _ => return Err(format!("grep's flag -{f}")),
                    }
                }
                continue;
            }
            match t.as_str() {
                "--quiet" | "--silent" | "--no-messages" => continue,
                "--fixed-strings" => {
                    g.fixed = true;
                    continue;
                }
                "--extended-regexp" => continue,
                _ if t.starts_with("--") => return Err(format!("grep's flag {t}")),
                _ => {}
            }
            if pattern.is_some() {
                return Err("grep with a file argument".into());
            }
            pattern = Some(t);
        }
        g.pattern = pattern.ok_or("grep without a pattern")?;
        Ok(g)
    }
}

/// Recognises the exec probe `command`; the error says which part keeps
/// it exec.
pub(crate) fn convert(command: &[String], ctx: &Context<'_>) -> Result<Converted, String> {
    let mut env = Env::of(ctx);
    let shown = show_command(command);
    let argv: Vec<String> = command
        .iter()
        .map(|a| env.kubelet_expand(a))
        .collect::<Result<_, _>>()?;
    let Some(first) = argv.first() else {
        return Err("an empty command".into());
    };
    let base = first.rsplit('/').next().unwrap_or("");
    // Whether a process of the shell or of `timeout` stays beside the
    // command, its command line holding the command's (pgrep matches it).
    let (mut pipeline, parent_stays) = if matches!(base, "sh" | "bash" | "ash" | "dash") {
        match unwrap_shell(base, &argv[1..], ctx, &mut env, &shown)? {
            Shell::Check(c) => return finish(c, env),
            Shell::Pipeline(cmds, parent_stays) => (cmds, parent_stays),
        }
    } else {
        let args = argv.iter().map(|a| Arg::text(a)).collect();
        (vec![Cmd { args }], false)
    };
    let (timeout, parent_stays) = strip_wrappers(&mut pipeline, parent_stays)?;
    if parent_stays && pipeline.iter().any(|c| c.name() == "pgrep") {
        return Err(
            "pgrep runs beside a shell or timeout whose command line holds its pattern, which it finds: the probe always passes (argv, or sh -c 'exec pgrep ...', carries over)".into(),
        );
    }
    let mut c = build_check(&pipeline, &mut env, ctx, &shown)?;
    if let Some(n) = timeout {
        c.timeout = Some(c.timeout.map_or(n, |t| t.min(n)));
    }
    finish(c, env)
}

/// What a `sh -c SCRIPT` holds: a whole check (a `[ ... = ... ]`
/// comparison), or a pipeline and whether the shell stays beside it.
enum Shell {
    Check(Converted),
    Pipeline(Vec<Cmd>, bool),
}

/// Unwraps `base` (a shell) run with `args`: its `-c` script, parsed.
fn unwrap_shell(
    base: &str,
    args: &[String],
    ctx: &Context<'_>,
    env: &mut Env<'_>,
    shown: &str,
) -> Result<Shell, String> {
    let script = shell_script(base, args)?;
    let parsed = shell::parse(script).map_err(|e| format!("{e} in the {base} -c script"))?;
    // `[ "$(echo ruok | nc HOST PORT)" = "imok" ]`.
    if let [only] = parsed.as_slice()
        && let Some(c) = tools::comparison(&only.words, ctx, env, shown)?
    {
        return Ok(Shell::Check(c));
    }
    let mut cmds = Vec::new();
    for c in &parsed {
        let args = c
            .words
            .iter()
            .map(|w| resolve(w, env))
            .collect::<Result<Vec<_>, _>>()?;
        cmds.push((Cmd { args }, c.stdout_null));
    }
    // Output thrown away matters only where a later command reads it.
    if cmds.len() > 1 && cmds[..cmds.len() - 1].iter().any(|(_, null)| *null) {
        return Err("a redirection to /dev/null inside the pipeline".into());
    }
    // bash execs a lone simple command without a redirection; dash
    // and busybox's ash fork it (measured: `sh -c 'pgrep -f X'` always
    // finds the sh).
    let redirected = parsed.iter().any(|c| c.stdout_null || c.stderr_moved);
    let parent_stays = cmds.len() > 1 || base != "bash" || redirected;
    Ok(Shell::Pipeline(
        cmds.into_iter().map(|(c, _)| c).collect(),
        parent_stays,
    ))
}

/// The script of `base -c SCRIPT`: options first (`sh -c -e SCRIPT` is
/// `sh -ec SCRIPT`), then the script; any later argument is `$0`, `$1`...
fn shell_script<'a>(base: &str, args: &'a [String]) -> Result<&'a String, String> {
    let mut command_mode = false;
    let mut script = None;
    for a in args {
        if a == "--" {
            continue;
        }
        match a.strip_prefix('-').filter(|f| !f.is_empty()) {
            Some(flags) if flags.chars().all(|c| matches!(c, 'c' | 'e' | 'x' | 'u')) => {
                command_mode |= flags.contains('c');
            }
            Some(_) => return Err(format!("{base}'s option {a}")),
            None => {
                script = Some(a);
                break;
            }
        }
    }
    match script {
        Some(s) if command_mode => Ok(s),
        Some(file) => Err(format!("{base} runs the script file {file}")),
        None => Err(format!("{base} without -c reads a script")),
    }
}

/// Strips `exec` in front of the first command and `timeout N` in front
/// of any: the pipeline ends no later than its commands. Returns the
/// shortest timeout and whether a parent process stays beside them.
fn strip_wrappers(pipeline: &mut [Cmd], mut parent_stays: bool) -> Result<(Option<u64>, bool), String> {
    let pipeline_len = pipeline.len();
    let mut timeout = None;
    for (i, first) in pipeline.iter_mut().enumerate() {
        loop {
            match first.name().as_str() {
                "exec" if i == 0 && first.args.len() > 1 => {
                    first.args.remove(0);
                    parent_stays = pipeline_len > 1;
                }
                "timeout" => {
                    let n = first
                        .args
                        .get(1)
                        .and_then(Arg::as_text)
                        .and_then(|t| t.strip_suffix('s').unwrap_or(&t).parse::<u64>().ok())
                        .filter(|n| *n > 0)
                        .ok_or("timeout's options or a duration that is not whole seconds")?;
                    if first.args.len() < 3 {
                        return Err("timeout without a command".into());
                    }
                    first.args.drain(..2);
                    timeout = Some(timeout.map_or(n, |t: u64| t.min(n)));
                    parent_stays = true;
                }
                _ => break,
            }
        }
    }
    Ok((timeout, parent_stays))
}

/// The native check for a pipeline of known shapes: a tool, a tool piped
/// into grep, or `echo ... | nc HOST PORT | grep ...`.
fn build_check(
    pipeline: &[Cmd],
    env: &mut Env<'_>,
    ctx: &Context<'_>,
    shown: &str,
) -> Result<Converted, String> {
    match pipeline {
        [tool] => tools::tool(tool, None, env, ctx, shown),
        [tool, grep] if grep.name() == "grep" => {
            if !tools::KNOWN.contains(&tool.name().as_str()) {
                return Err(format!("{} is not a command healthproxy knows", tool.name()));
            }
            let g = Grep::parse(grep)?;
            tools::tool(tool, Some(&g), env, ctx, shown)
        }
        [echo, nc, grep]
            if grep.name() == "grep"
                && matches!(echo.name().as_str(), "echo" | "printf")
                && matches!(nc.name().as_str(), "nc" | "ncat" | "netcat") =>
        {
            let g = Grep::parse(grep)?;
            tools::dialogue(echo, nc, Some(&g), ctx, shown)
        }
        [_, ..] if pipeline.len() > 1 => {
            let names: Vec<String> = pipeline.iter().map(Cmd::name).collect();
            Err(format!("the pipeline {}", names.join(" | ")))
        }
        _ => Err("no command".into()),
    }
}

fn finish(mut c: Converted, env: Env<'_>) -> Result<Converted, String> {
    c.env = env.copied;
    Ok(c)
}

/// The command as one line: argv joined, quoted where needed.
pub(crate) fn show_command(command: &[String]) -> String {
    command
        .iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
