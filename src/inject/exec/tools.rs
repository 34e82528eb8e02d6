//! One reader per tool: its options as the tool parses them, its defaults,
//! and the keys of the check that gives its exit status
//! (docs/native-checks.md has the verdicts; the tools' sources the flags).

use super::{Arg, Cmd, Context, Converted, Env, Grep, Piece, toml_str};

/// How a tool reads its options.
#[derive(Default)]
struct Spec {
    /// Short options that take a value (`-h HOST`, `-hHOST`).
    short_val: &'static str,
    /// Short flags.
    short_flag: &'static str,
    /// Short options whose value, if any, is attached (`mysql -pPASS`).
    short_opt: &'static str,
    /// Long options that take a value (`--host=H`, `--host H`).
    long_val: &'static [&'static str],
    /// Long flags.
    long_flag: &'static [&'static str],
    /// Long options with an optional `=VALUE` (`--password[=P]`).
    long_opt: &'static [&'static str],
    /// Options end at the first argument that is not one (redis-cli).
    stop_at_first: bool,
    /// `_` in a long name is `-` (MariaDB's my_getopt).
    underscores: bool,
    /// Each option its own word, its value the next (redis-cli's parser
    /// compares whole words: `-h127.0.0.1`, `-ec`, `--user=U` fail it).
    whole_words: bool,
}

/// One option as read.
#[derive(Debug)]
enum Opt {
    /// A flag: its name (one letter, or the long name).
    Flag(String),
    /// An option and its value (`None`: an optional value not given).
    Val(String, Option<Arg>),
    /// An argument that is not an option.
    Pos(Arg),
}

/// Reads `args` (the tool's name excluded) as getopt_long does.
fn getopt(tool: &str, args: &[Arg], spec: &Spec) -> Result<Vec<Opt>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut only_pos = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let is_opt = !only_pos && a.starts_with("-") && a.as_text().is_none_or(|t| t != "-");
        if !is_opt {
            if spec.stop_at_first {
                only_pos = true;
            }
            out.push(Opt::Pos(a.clone()));
            continue;
        }
        if a.as_text().as_deref() == Some("--") {
            only_pos = true;
            continue;
        }
        if spec.whole_words
            && a.as_text()
                .is_none_or(|t| t.contains('=') || !t.starts_with("--") && t.len() != 2)
        {
            return Err(format!(
                "{tool}'s option {}: it reads each option as a word of its own",
                a.show()
            ));
        }
        if let Some(long) = a.strip_prefix("--") {
            out.push(long_option(tool, a, &long, args, &mut i, spec)?);
            continue;
        }
        short_options(tool, a, args, &mut i, spec, &mut out)?;
    }
    Ok(out)
}

/// The long option `a` (`long` without its `--`), its value attached
/// (`--name=V`) or, where it takes one, the next argument (`args[*i]`).
fn long_option(
    tool: &str,
    a: &Arg,
    long: &Arg,
    args: &[Arg],
    i: &mut usize,
    spec: &Spec,
) -> Result<Opt, String> {
    let (name, value) = match &long.0.first() {
        Some(Piece::Text(t)) => match t.split_once('=') {
            Some((n, v)) => {
                let mut rest = vec![Piece::Text(v.to_string())];
                rest.extend(long.0[1..].iter().cloned());
                (n.to_string(), Some(Arg(rest).trimmed()))
            }
            None if long.0.len() == 1 => (t.clone(), None),
            None => return Err(format!("{tool}'s option {}", a.show())),
        },
        _ => return Err(format!("{tool}'s option {}", a.show())),
    };
    let name = if spec.underscores {
        name.replace('_', "-")
    } else {
        name
    };
    if spec.long_val.contains(&name.as_str()) {
        let value = match value {
            Some(v) => v,
            None => {
                *i += 1;
                args.get(*i - 1)
                    .cloned()
                    .ok_or_else(|| format!("{tool}'s --{name} without a value"))?
            }
        };
        Ok(Opt::Val(name, Some(value)))
    } else if spec.long_opt.contains(&name.as_str()) {
        Ok(Opt::Val(name, value))
    } else if spec.long_flag.contains(&name.as_str()) && value.is_none() {
        Ok(Opt::Flag(name))
    } else {
        Err(format!("{tool}'s option --{name}"))
    }
}

/// Short options, perhaps several in one argument `a`; a value is the
/// rest of `a` or, where the option needs one, the next argument.
fn short_options(
    tool: &str,
    a: &Arg,
    args: &[Arg],
    i: &mut usize,
    spec: &Spec,
    out: &mut Vec<Opt>,
) -> Result<(), String> {
    let Some(Piece::Text(first)) = a.0.first() else {
        return Err(format!("{tool}'s option {}", a.show()));
    };
    let letters: Vec<char> = first[1..].chars().collect();
    let mut j = 0;
    while j < letters.len() {
        let l = letters[j];
        let rest = || {
            let offset: usize = 1 + letters[..=j].iter().map(|c| c.len_utf8()).sum::<usize>();
            let mut pieces = Vec::new();
            if offset < first.len() {
                pieces.push(Piece::Text(first[offset..].to_string()));
            }
            pieces.extend(a.0[1..].iter().cloned());
            Arg(pieces)
        };
        if spec.short_val.contains(l) {
            let attached = rest();
            let value = if attached.0.is_empty() {
                *i += 1;
                args.get(*i - 1)
                    .cloned()
                    .ok_or_else(|| format!("{tool}'s -{l} without a value"))?
            } else {
                attached
            };
            out.push(Opt::Val(l.to_string(), Some(value)));
            break;
        } else if spec.short_opt.contains(l) {
            let attached = rest();
            out.push(Opt::Val(
                l.to_string(),
                (!attached.0.is_empty()).then_some(attached),
            ));
            break;
        } else if spec.short_flag.contains(l) {
            out.push(Opt::Flag(l.to_string()));
        } else {
            return Err(format!("{tool}'s option -{l}"));
        }
        j += 1;
    }
    if letters.is_empty() || a.0.len() > 1 && !out.last().is_some_and(|o| matches!(o, Opt::Val(..))) {
        return Err(format!("{tool}'s option {}", a.show()));
    }
    Ok(())
}

impl Arg {
    fn trimmed(self) -> Arg {
        Arg(self
            .0
            .into_iter()
            .filter(|p| !matches!(p, Piece::Text(t) if t.is_empty()))
            .collect())
    }
}

/// A port number as text.
fn port_of(tool: &str, flag: &str, a: &Arg) -> Result<u16, String> {
    a.as_text()
        .and_then(|t| t.trim().parse::<u16>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{tool}'s {flag} {} is not a port number", a.show()))
}

/// A host: text (not a socket path), or `${VAR}`.
fn host_of(tool: &str, flag: &str, a: &Arg) -> Result<String, String> {
    if let Some(v) = a.as_env() {
        return Ok(format!("${{{v}}}"));
    }
    let t = a
        .as_text()
        .ok_or_else(|| format!("{tool}'s {flag} {} mixes text and variables", a.show()))?;
    if t.starts_with('/') || t.starts_with('@') {
        return Err(format!(
            "{tool}'s {flag} {t} is a Unix socket in the app container's filesystem, which the sidecar does not see"
        ));
    }
    if t.is_empty() || t.contains([',', ' ', '$', '[', ']']) {
        return Err(format!("{tool}'s {flag} {t:?} is not one host"));
    }
    Ok(t)
}

/// Whole seconds.
fn seconds(tool: &str, flag: &str, a: &Arg) -> Result<u64, String> {
    a.as_text()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{tool}'s {flag} {} is not whole seconds", a.show()))
}

/// The commands read here.
pub(crate) const KNOWN: &[&str] = &[
    "pg_isready",
    "psql",
    "redis-cli",
    "mysqladmin",
    "mariadb-admin",
    "mysql",
    "mariadb",
    "curl",
    "wget",
    "grpc_health_probe",
    "nc",
    "ncat",
    "netcat",
    "pgrep",
];

/// Which tool, and its reader.
pub(crate) fn tool(
    cmd: &Cmd,
    grep: Option<&Grep>,
    env: &mut Env<'_>,
    ctx: &Context<'_>,
    shown: &str,
) -> Result<Converted, String> {
    let name = cmd.name();
    let no_grep = |c: Converted| match grep {
        None => Ok(c),
        Some(g) => Err(format!("{name} piped into grep {:?}", g.pattern)),
    };
    match name.as_str() {
        "pg_isready" => no_grep(pg_isready(cmd, env, ctx, shown)?),
        "psql" => no_grep(psql(cmd, env, shown)?),
        "redis-cli" => redis_cli(cmd, grep, env, shown),
        "mysqladmin" | "mariadb-admin" => mysqladmin(cmd, grep, env, shown),
        "mysql" | "mariadb" => no_grep(mysql(cmd, env, shown)?),
        "curl" => curl(cmd, grep, env, shown),
        "wget" => wget(cmd, grep, env, shown),
        "grpc_health_probe" => no_grep(grpc_health_probe(cmd, shown)?),
        "nc" | "ncat" | "netcat" => no_grep(nc_z(cmd, shown)?),
        "pgrep" => no_grep(pgrep(cmd, ctx, shown)?),
        "" => Err("a command named by a variable".into()),
        _ => Err(format!("{name} is not a command healthproxy knows")),
    }
}

/// A libpq connection's settings, from flags, a conninfo string and the
/// container's PG* variables.
#[derive(Default)]
struct Pg {
    host: Option<Arg>,
    port: Option<Arg>,
    user: Option<Arg>,
    dbname: Option<Arg>,
    sslmode: Option<Arg>,
    connect_timeout: Option<Arg>,
}

/// The PG* variables libpq reads that no key stands for.
const PG_UNSUPPORTED: &[&str] = &[
    "PGHOSTADDR",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGREQUIRESSL",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLROOTCERT",
    "PGTARGETSESSIONATTRS",
    "PGGSSENCMODE",
    "PGREQUIREAUTH",
    "PGLOADBALANCEHOSTS",
    "PGPASSFILE",
];

impl Pg {
    /// Fills what the flags left unset from the container's variables.
    fn env_defaults(&mut self, env: &mut Env<'_>, tool: &str) -> Result<(), String> {
        for var in PG_UNSUPPORTED {
            if env.tool_var(var)?.is_some() {
                return Err(format!("the container sets {var}, which {tool} reads"));
            }
        }
        for (slot, var) in [
            (&mut self.host, "PGHOST"),
            (&mut self.port, "PGPORT"),
            (&mut self.user, "PGUSER"),
            (&mut self.dbname, "PGDATABASE"),
            (&mut self.sslmode, "PGSSLMODE"),
            (&mut self.connect_timeout, "PGCONNECT_TIMEOUT"),
        ] {
            if slot.is_none() {
                *slot = env.tool_var(var)?.filter(|a| !a.is_empty());
            }
        }
        Ok(())
    }

    /// `-d "dbname=x host=y"`: libpq expands a dbname holding `=`; its
    /// fields override the flags before it (pg_isready and psql pass
    /// host, port and user first).
    fn dbname(&mut self, tool: &str, a: &Arg) -> Result<(), String> {
        let Some(text) = a.as_text() else {
            self.dbname = Some(a.clone());
            return Ok(());
        };
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Err(format!("{tool}'s connection URI {text}"));
        }
        if !text.contains('=') {
            self.dbname = Some(a.clone());
            return Ok(());
        }
        for (k, v) in conninfo(&text).ok_or_else(|| format!("{tool}'s connection string {text:?}"))? {
            let v = Some(Arg::text(&v));
            match k.as_str() {
                "dbname" => self.dbname = v,
                "host" => self.host = v,
                "port" => self.port = v,
                "user" => self.user = v,
                "sslmode" => self.sslmode = v,
                "connect_timeout" => self.connect_timeout = v,
                "application_name" | "fallback_application_name" => {}
                _ => return Err(format!("{tool}'s connection string key {k}")),
            }
        }
        Ok(())
    }

    /// The keys; `query` and the password are the caller's.
    fn keys(&self, c: &mut Converted, tool: &str, env: &mut Env<'_>) -> Result<(), String> {
        let host = self.host.as_ref().ok_or_else(|| {
            format!(
                "{tool} without -h (nor PGHOST) uses the Unix socket in /var/run/postgresql, in the app container's filesystem"
            )
        })?;
        let host = host_of(tool, "-h", host)?;
        c.host = Some(host.clone());
        c.text("host", &host);
        if let Some(p) = &self.port {
            let port = port_of(tool, "-p", p)?;
            c.port = Some(port);
            if port != crate::config::DEFAULT_POSTGRES_PORT {
                c.raw("port", port.to_string());
            }
        } else {
            c.port = Some(crate::config::DEFAULT_POSTGRES_PORT);
        }
        for (key, arg) in [("user", &self.user), ("dbname", &self.dbname)] {
            match arg {
                None => {}
                Some(a) => match (a.as_text(), a.as_env()) {
                    (Some(t), _) if !t.is_empty() => c.text(key, &t),
                    (_, Some(v)) => c.text(&format!("{key}_env"), v),
                    _ => return Err(format!("{tool}'s {key} {}", a.show())),
                },
            }
        }
        if let Some(m) = &self.sslmode {
            match m.as_text().as_deref() {
                Some(m @ ("disable" | "prefer" | "require")) => c.text("sslmode", m),
                _ => {
                    return Err(format!(
                        "sslmode {} (disable, prefer and require carry over)",
                        m.show()
                    ));
                }
            }
        }
        let _ = env;
        Ok(())
    }
}

/// `key=value key='quoted value'` (libpq's `conninfo_parse`).
fn conninfo(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// pg_isready's default `-t`, in seconds (`DEFAULT_CONNECT_TIMEOUT`).
const PG_ISREADY_TIMEOUT: u64 = 3;

/// `pg_isready` (postgres `src/bin/scripts/pg_isready.c`, getopt_long
/// "d:h:p:qt:U:V?").
fn pg_isready(cmd: &Cmd, env: &mut Env<'_>, ctx: &Context<'_>, shown: &str) -> Result<Converted, String> {
    let spec = Spec {
        short_val: "dhptU",
        short_flag: "q",
        long_val: &["dbname", "host", "port", "timeout", "username"],
        long_flag: &["quiet"],
        ..Spec::default()
    };
    let mut pg = Pg::default();
    let mut timeout = PG_ISREADY_TIMEOUT;
    let mut dbname = None;
    for o in getopt("pg_isready", &cmd.args[1..], &spec)? {
        match o {
            Opt::Val(n, Some(v)) => match n.as_str() {
                "h" | "host" => pg.host = Some(v),
                "p" | "port" => pg.port = Some(v),
                "U" | "username" => pg.user = Some(v),
                "d" | "dbname" => dbname = Some(v),
                _ => timeout = seconds("pg_isready", "-t", &v)?,
            },
            Opt::Flag(_) => {}
            Opt::Pos(p) => return Err(format!("pg_isready's extra argument {}", p.show())),
            Opt::Val(..) => unreachable!("no optional values"),
        }
    }
    if let Some(d) = dbname {
        pg.dbname("pg_isready", &d)?;
    }
    // pg_isready always passes its own connect_timeout: PGCONNECT_TIMEOUT
    // is not read.
    let saved = pg.connect_timeout.take();
    pg.env_defaults(env, "pg_isready")?;
    pg.connect_timeout = saved;
    if let Some(t) = &pg.connect_timeout {
        timeout = seconds("pg_isready", "connect_timeout", t)?;
    }
    let mut c = Converted::new(shown, "postgres");
    pg.keys(&mut c, "pg_isready", env)?;
    // 0 is no limit; a limit at or over the probe's timeout never acts.
    if timeout > 0 && timeout < ctx.timeout {
        c.raw("connect_timeout", toml_str(&format!("{timeout}s")));
    }
    Ok(c)
}

/// `psql -c QUERY` (postgres `src/bin/psql/startup.c`).
fn psql(cmd: &Cmd, env: &mut Env<'_>, shown: &str) -> Result<Converted, String> {
    let mut pg = Pg::default();
    let args = psql_options(cmd, &mut pg)?;
    let query = psql_query(args.query)?;
    psql_positional(args.positional, args.dbname, &mut pg)?;
    pg.env_defaults(env, "psql")?;
    if pg.user.is_none() {
        return Err(
            "psql without -U (nor PGUSER) logs in as the app container's OS user, which the sidecar does not know".into(),
        );
    }
    let mut c = Converted::new(shown, "postgres");
    pg.keys(&mut c, "psql", env)?;
    if let Some(t) = &pg.connect_timeout {
        let t = seconds("psql", "connect_timeout", t)?;
        if t > 0 {
            c.raw("connect_timeout", toml_str(&format!("{t}s")));
        }
    }
    if let Some(pw) = env.tool_var("PGPASSWORD")? {
        let var = env.var_for(&pw, "password")?;
        c.text("password_env", &var);
    }
    c.text("query", &query);
    Ok(c)
}

/// How psql reads its options.
fn psql_spec() -> Spec {
    Spec {
        short_val: "cdhpUvoPFR",
        short_flag: "AtqXwnxeb1a",
        long_val: &[
            "command",
            "dbname",
            "host",
            "port",
            "username",
            "set",
            "variable",
            "output",
            "pset",
            "field-separator",
            "record-separator",
        ],
        long_flag: &[
            "no-align",
            "tuples-only",
            "quiet",
            "no-psqlrc",
            "no-password",
            "no-readline",
            "expanded",
            "echo-queries",
            "echo-errors",
            "single-transaction",
            "echo-all",
        ],
        ..Spec::default()
    }
}

/// What psql's options give besides the target: the `-c` query, the
/// positional arguments and `-d`.
struct PsqlArgs {
    query: Option<Arg>,
    positional: Vec<Arg>,
    dbname: Option<Arg>,
}

/// psql's options: the target into `pg`, the rest returned.
fn psql_options(cmd: &Cmd, pg: &mut Pg) -> Result<PsqlArgs, String> {
    let mut query = None;
    let mut positional = Vec::new();
    let mut dbname = None;
    for o in getopt("psql", &cmd.args[1..], &psql_spec())? {
        match o {
            Opt::Val(n, Some(v)) => match n.as_str() {
                "c" | "command" => {
                    if query.is_some() {
                        return Err("psql with several -c".into());
                    }
                    query = Some(v);
                }
                "h" | "host" => pg.host = Some(v),
                "p" | "port" => pg.port = Some(v),
                "U" | "username" => pg.user = Some(v),
                "d" | "dbname" => dbname = Some(v),
                "o" | "output" if v.as_text().as_deref() == Some("/dev/null") => {}
                "o" | "output" => return Err(format!("psql's -o {}", v.show())),
                _ => {}
            },
            Opt::Flag(_) => {}
            Opt::Pos(p) => positional.push(p),
            Opt::Val(..) => unreachable!("no optional values"),
        }
    }
    Ok(PsqlArgs {
        query,
        positional,
        dbname,
    })
}

/// The `-c` query: one SQL statement, written out.
fn psql_query(query: Option<Arg>) -> Result<String, String> {
    let query = query.ok_or("psql without -c reads its commands from stdin")?;
    let query = query
        .as_text()
        .ok_or_else(|| format!("psql's query {} holds a variable", query.show()))?;
    if query.trim_start().starts_with('\\') || query.trim().is_empty() {
        return Err(format!("psql's -c {query:?} is not an SQL statement"));
    }
    Ok(query)
}

/// `psql [DBNAME [USER]]`, where no option names them.
fn psql_positional(positional: Vec<Arg>, mut dbname: Option<Arg>, pg: &mut Pg) -> Result<(), String> {
    let mut positional = positional.into_iter();
    if let Some(d) = positional.next()
        && dbname.is_none()
    {
        dbname = Some(d);
    }
    if let Some(u) = positional.next()
        && pg.user.is_none()
    {
        pg.user = Some(u);
    }
    if let Some(extra) = positional.next() {
        return Err(format!("psql's extra argument {}", extra.show()));
    }
    if let Some(d) = dbname {
        pg.dbname("psql", &d)?;
    }
    Ok(())
}

/// `redis-cli [options] ping` (redis `src/redis-cli.c` `parseOptions`:
/// options end at the first argument that is not one).
fn redis_cli(cmd: &Cmd, grep: Option<&Grep>, env: &mut Env<'_>, shown: &str) -> Result<Converted, String> {
    let mut o = RedisCli::read(cmd)?;
    o.only_ping()?;
    let mut c = Converted::new(shown, "redis");
    o.target(&mut c)?;
    o.credentials(&mut c, env)?;
    o.tls(&mut c)?;
    match grep {
        Some(g) if g.finds("PONG") => c.text("expect", "pong"),
        Some(g) => {
            return Err(format!(
                "redis-cli ping piped into grep {:?}: only grep PONG carries over",
                g.pattern
            ));
        }
        None if o.errcode => c.text("expect", "pong"),
        None => c.text("expect", "reply"),
    }
    Ok(c)
}

/// redis-cli's options as read.
#[derive(Default)]
struct RedisCli {
    host: Option<Arg>,
    port: Option<Arg>,
    password: Option<Arg>,
    user: Option<Arg>,
    tls: bool,
    insecure: bool,
    errcode: bool,
    sni: Option<Arg>,
    /// The command's words.
    words: Vec<Arg>,
}

impl RedisCli {
    fn read(cmd: &Cmd) -> Result<RedisCli, String> {
        let spec = Spec {
            short_val: "hpan",
            short_flag: "ec",
            long_val: &["user", "pass", "sni"],
            long_flag: &["tls", "insecure", "no-auth-warning", "raw", "no-raw"],
            stop_at_first: true,
            whole_words: true,
            ..Spec::default()
        };
        let mut r = RedisCli::default();
        for o in getopt("redis-cli", &cmd.args[1..], &spec)? {
            match o {
                Opt::Val(n, Some(v)) => match n.as_str() {
                    "h" => r.host = Some(v),
                    "p" => r.port = Some(v),
                    "a" | "pass" => r.password = Some(v),
                    "user" => r.user = Some(v),
                    "sni" => r.sni = Some(v),
                    _ => {
                        if v.as_text().as_deref() != Some("0") {
                            return Err(format!(
                                "redis-cli's -n {}: a database other than 0 (the check does not SELECT)",
                                v.show()
                            ));
                        }
                    }
                },
                Opt::Flag(f) => match f.as_str() {
                    "tls" => r.tls = true,
                    "insecure" => r.insecure = true,
                    "e" => r.errcode = true,
                    _ => {}
                },
                Opt::Pos(p) => r.words.push(p),
                Opt::Val(..) => unreachable!("no optional values"),
            }
        }
        Ok(r)
    }

    fn only_ping(&self) -> Result<(), String> {
        match self.words.as_slice() {
            [w] if w.as_text().is_some_and(|t| t.eq_ignore_ascii_case("ping")) => Ok(()),
            [] => Err("redis-cli without a command is interactive".into()),
            _ => {
                let shown: Vec<String> = self.words.iter().map(Arg::show).collect();
                Err(format!("redis-cli {}: only PING carries over", shown.join(" ")))
            }
        }
    }

    /// `-h` and `-p`.
    fn target(&self, c: &mut Converted) -> Result<(), String> {
        if let Some(h) = &self.host {
            let h = host_of("redis-cli", "-h", h)?;
            c.host = Some(h.clone());
            c.text("host", &h);
        }
        c.port = Some(match &self.port {
            Some(p) => {
                let p = port_of("redis-cli", "-p", p)?;
                if p != 6379 {
                    c.raw("port", p.to_string());
                }
                p
            }
            None => 6379,
        });
        Ok(())
    }

    /// `-a` (or REDISCLI_AUTH) and `--user`, by reference to the
    /// environment.
    fn credentials(&mut self, c: &mut Converted, env: &mut Env<'_>) -> Result<(), String> {
        if self.password.is_none() {
            self.password = env.tool_var("REDISCLI_AUTH")?;
        }
        let Some(pw) = &self.password else {
            return Ok(());
        };
        if pw.is_empty() {
            return Err("redis-cli's -a with an empty password".into());
        }
        // redis-cli sends AUTH only with a password; --user alone is unused.
        if let Some(u) = &self.user {
            match (u.as_text(), u.as_env()) {
                (Some(t), _) if !t.is_empty() => c.text("user", &t),
                (_, Some(v)) => c.text("user_env", v),
                _ => return Err(format!("redis-cli's --user {}", u.show())),
            }
        }
        let var = env.var_for(pw, "password")?;
        c.text("password_env", &var);
        Ok(())
    }

    /// `--tls`, which carries over only with `--insecure`, and `--sni`.
    fn tls(&self, c: &mut Converted) -> Result<(), String> {
        if self.tls {
            if !self.insecure {
                return Err(
                    "redis-cli --tls verifies the server against the app container's CA files, which the sidecar does not see (--insecure carries over)".into(),
                );
            }
            c.raw("tls", "true".into());
            c.raw("insecure_skip_verify", "true".into());
            if let Some(s) = &self.sni {
                let s = s.as_text().ok_or("redis-cli's --sni from a variable")?;
                c.text("server_name", &s);
            }
        } else if self.insecure || self.sni.is_some() {
            return Err("redis-cli's --insecure or --sni without --tls".into());
        }
        Ok(())
    }
}

/// MariaDB's client options shared by mysqladmin and mysql.
#[derive(Default)]
struct My {
    host: Option<Arg>,
    port: Option<Arg>,
    user: Option<Arg>,
    password: Option<Option<Arg>>,
    tcp: bool,
    skip_ssl: bool,
    connect_timeout: Option<Arg>,
}

impl My {
    const SHORT_VAL: &'static str = "hPuS";
    const LONG_VAL: &'static [&'static str] =
        &["host", "port", "user", "protocol", "socket", "connect-timeout"];
    const LONG_FLAG: &'static [&'static str] =
        &["skip-ssl", "disable-ssl", "ssl", "no-defaults", "silent", "force"];

    /// Takes the option if it is a connection's; `false` if not.
    fn take(&mut self, tool: &str, o: &Opt) -> Result<bool, String> {
        match o {
            Opt::Val(n, v) => {
                let v = v.clone();
                match n.as_str() {
                    "h" | "host" => self.host = v,
                    "P" | "port" => self.port = v,
                    "u" | "user" => self.user = v,
                    "p" | "password" => self.password = Some(v),
                    "S" | "socket" => {
                        return Err(format!(
                            "{tool}'s --socket: a Unix socket in the app container's filesystem"
                        ));
                    }
                    "protocol" => match v
                        .and_then(|v| v.as_text())
                        .map(|t| t.to_ascii_lowercase())
                        .as_deref()
                    {
                        Some("tcp") => self.tcp = true,
                        Some("socket") => {
                            return Err(format!(
                                "{tool}'s --protocol=socket: a Unix socket in the app container's filesystem"
                            ));
                        }
                        other => return Err(format!("{tool}'s --protocol={}", other.unwrap_or(""))),
                    },
                    "connect-timeout" => self.connect_timeout = v,
                    "ssl" => {
                        if let Some("0" | "OFF" | "off" | "FALSE" | "false") =
                            v.and_then(|v| v.as_text()).as_deref()
                        {
                            self.skip_ssl = true;
                        }
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            }
            Opt::Flag(f) => match f.as_str() {
                "skip-ssl" | "disable-ssl" => {
                    self.skip_ssl = true;
                    Ok(true)
                }
                "ssl" | "no-defaults" | "s" | "silent" | "f" | "force" => Ok(true),
                _ => Ok(false),
            },
            Opt::Pos(_) => Ok(false),
        }
    }

    fn keys(
        &self,
        c: &mut Converted,
        tool: &str,
        env: &mut Env<'_>,
        needs_login: bool,
    ) -> Result<(), String> {
        let host = match &self.host {
            Some(h) => Some(h.clone()),
            None => env.tool_var("MYSQL_HOST")?,
        };
        let host = match host {
            Some(h) if h.as_text().as_deref() != Some("localhost") || self.tcp => host_of(tool, "-h", &h)?,
            _ => {
                return Err(format!(
                    "{tool} without -h (or with -h localhost) and without --protocol=tcp uses the Unix socket in the app container's filesystem"
                ));
            }
        };
        if host != "127.0.0.1" {
            c.text("host", &host);
        }
        c.host = Some(host);
        let port = match &self.port {
            Some(p) => Some(p.clone()),
            None => env.tool_var("MYSQL_TCP_PORT")?,
        };
        c.port = Some(match port {
            Some(p) => {
                let p = port_of(tool, "-P", &p)?;
                if p != 3306 {
                    c.raw("port", p.to_string());
                }
                p
            }
            None => 3306,
        });
        match &self.user {
            Some(u) => match (u.as_text(), u.as_env()) {
                (Some(t), _) if !t.is_empty() => c.text("user", &t),
                (_, Some(v)) => c.text("user_env", v),
                _ => return Err(format!("{tool}'s -u {}", u.show())),
            },
            // A login without -u is the container's OS user's; ping
            // passes on any answer, whoever asks.
            None if needs_login => {
                return Err(format!(
                    "{tool} without -u logs in as the app container's OS user, which the sidecar does not know"
                ));
            }
            None => {}
        }
        let password = match &self.password {
            Some(None) => {
                return Err(format!(
                    "{tool}'s -p without a value asks for the password on a terminal"
                ));
            }
            Some(Some(p)) if p.is_empty() => {
                return Err(format!(
                    "{tool}'s -p with an empty value asks for the password on a terminal"
                ));
            }
            Some(Some(p)) => Some(p.clone()),
            None => env.tool_var("MYSQL_PWD")?,
        };
        if let Some(p) = password
            && !p.is_empty()
        {
            let var = env.var_for(&p, "password")?;
            c.text("password_env", &var);
        }
        if self.skip_ssl {
            c.raw("skip_ssl", "true".into());
        }
        if let Some(t) = &self.connect_timeout {
            let t = seconds(tool, "--connect-timeout", t)?;
            if t > 0 {
                c.timeout = Some(t);
            }
        }
        Ok(())
    }
}

/// `mysqladmin ping|status` (MariaDB `client/mysqladmin.cc`).
fn mysqladmin(cmd: &Cmd, grep: Option<&Grep>, env: &mut Env<'_>, shown: &str) -> Result<Converted, String> {
    let tool = cmd.name();
    let spec = Spec {
        short_val: My::SHORT_VAL,
        short_opt: "p",
        short_flag: "sf",
        long_val: My::LONG_VAL,
        long_opt: &["password"],
        long_flag: My::LONG_FLAG,
        underscores: true,
        ..Spec::default()
    };
    let mut my = My::default();
    let mut commands = Vec::new();
    for o in getopt(&tool, &cmd.args[1..], &spec)? {
        if !my.take(&tool, &o)? {
            match o {
                Opt::Pos(p) => commands.push(p.as_text().unwrap_or_default().to_ascii_lowercase()),
                _ => return Err(format!("{tool}'s option {o:?}")),
            }
        }
    }
    let command = match commands.as_slice() {
        [c] if c == "ping" || c == "status" => c.clone(),
        _ => {
            return Err(format!(
                "{tool} {}: only ping and status carry over",
                commands.join(" ")
            ));
        }
    };
    // `ping | grep alive` passes only once logged in and answered, as
    // `status` does (the server's errors fail it too), so it needs the
    // login's user as `status` does.
    let command = match grep {
        None => command,
        Some(g) if command == "ping" && g.finds("mysqld is alive") => "status".into(),
        Some(g) => {
            return Err(format!("{tool} {command} piped into grep {:?}", g.pattern));
        }
    };
    let mut c = Converted::new(shown, "mysql");
    my.keys(&mut c, &tool, env, command == "status")?;
    if command != "ping" {
        c.text("command", &command);
    }
    Ok(c)
}

/// `mysql -e QUERY` (MariaDB `client/mysql.cc`).
fn mysql(cmd: &Cmd, env: &mut Env<'_>, shown: &str) -> Result<Converted, String> {
    let tool = cmd.name();
    let spec = Spec {
        short_val: "hPuSeD",
        short_opt: "p",
        short_flag: "sfNBrtnqA",
        long_val: &[
            "host",
            "port",
            "user",
            "protocol",
            "socket",
            "connect-timeout",
            "execute",
            "database",
        ],
        long_opt: &["password"],
        long_flag: &[
            "skip-ssl",
            "disable-ssl",
            "ssl",
            "no-defaults",
            "silent",
            "force",
            "skip-column-names",
            "batch",
            "raw",
            "table",
            "unbuffered",
            "quick",
            "no-auto-rehash",
            "skip-auto-rehash",
        ],
        underscores: true,
        ..Spec::default()
    };
    let mut my = My::default();
    let (mut query, mut database) = (None, None);
    for o in getopt(&tool, &cmd.args[1..], &spec)? {
        if my.take(&tool, &o)? {
            continue;
        }
        match o {
            Opt::Val(n, Some(v)) if n == "e" || n == "execute" => query = Some(v),
            Opt::Val(n, Some(v)) if n == "D" || n == "database" => database = Some(v),
            Opt::Pos(p) if database.is_none() => database = Some(p),
            Opt::Flag(_) => {}
            other => return Err(format!("{tool}'s argument {other:?}")),
        }
    }
    let query = query.ok_or_else(|| format!("{tool} without -e reads its statements from stdin"))?;
    let query = query
        .as_text()
        .ok_or_else(|| format!("{tool}'s -e {} holds a variable", query.show()))?;
    let mut c = Converted::new(shown, "mysql");
    my.keys(&mut c, &tool, env, true)?;
    if let Some(d) = database {
        let d = d
            .as_text()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("{tool}'s database {} from a variable", d.show()))?;
        c.text("database", &d);
    }
    c.text("command", "query");
    if query.trim() != "SELECT 1" {
        c.text("query", query.trim_end_matches([';', ' ']));
    }
    Ok(c)
}

/// A URL as curl and wget take it, a variable allowed as its host only.
struct Url {
    https: bool,
    host: String,
    port: u16,
    path: String,
}

fn url_of(tool: &str, a: &Arg) -> Result<Url, String> {
    // A variable stands for the host alone (`http://$POD_IP:8080/`).
    let mut text = String::new();
    let mut var = None;
    for p in &a.0 {
        match p {
            Piece::Text(t) => text.push_str(t),
            Piece::Env(v) if var.is_none() => {
                var = Some(v.clone());
                text.push('\u{1}');
            }
            Piece::Env(_) => return Err(format!("{tool}'s URL {} holds several variables", a.show())),
        }
    }
    let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (false, r)
    } else if text.contains("://") {
        return Err(format!("{tool}'s URL {} is not http or https", a.show()));
    } else {
        (false, text.as_str())
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let path = path.split('#').next().unwrap_or("/").to_string();
    if authority.contains('@') {
        return Err(format!("{tool}'s URL {} holds credentials", a.show()));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("{tool}'s URL {}", a.show()))?;
        (h.to_string(), rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{tool}'s URL {} has no valid port", a.show()))?,
        None if https => 443,
        None => 80,
    };
    if path.contains('\u{1}') || host.is_empty() || host.contains(['%', ' ']) {
        return Err(format!("{tool}'s URL {}", a.show()));
    }
    let host = match (&var, host == "\u{1}") {
        (Some(v), true) => format!("${{{v}}}"),
        (Some(_), false) => {
            return Err(format!(
                "{tool}'s URL {} mixes text and a variable in its host",
                a.show()
            ));
        }
        (None, _) => host,
    };
    if path.contains(char::is_whitespace) {
        return Err(format!("{tool}'s URL {} holds spaces", a.show()));
    }
    Ok(Url {
        https,
        host,
        port,
        path,
    })
}

/// An HTTP request's pieces, as a curl or wget command gives them.
#[derive(Default)]
struct Request {
    headers: Vec<(String, String)>,
    header_env: Vec<(String, String)>,
    head: bool,
    insecure: bool,
}

impl Request {
    /// `Name: value`.
    fn header(&mut self, tool: &str, a: &Arg) -> Result<(), String> {
        let Some(Piece::Text(first)) = a.0.first() else {
            return Err(format!("{tool}'s header {}", a.show()));
        };
        let (name, value) = first
            .split_once(':')
            .ok_or_else(|| format!("{tool}'s header {} has no value", a.show()))?;
        let name = name.trim().to_string();
        let mut rest = Vec::new();
        let v = value.trim_start();
        if !v.is_empty() {
            rest.push(Piece::Text(v.to_string()));
        }
        rest.extend(a.0[1..].iter().cloned());
        let value = Arg(rest);
        if name.is_empty()
            || self
                .headers
                .iter()
                .chain(&self.header_env)
                .any(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            return Err(format!("{tool}'s header {name:?}, empty or given twice"));
        }
        match (value.as_text(), value.as_env()) {
            (Some(t), _) => self.headers.push((name, t)),
            (_, Some(v)) => self.header_env.push((name, v.to_string())),
            _ => {
                return Err(format!(
                    "{tool}'s header {name}: {} mixes text and a variable",
                    value.show()
                ));
            }
        }
        Ok(())
    }

    fn keys(&self, c: &mut Converted, tool: &str, url: &Url) -> Result<(), String> {
        if url.https {
            if !self.insecure {
                return Err(format!(
                    "{tool} verifies an https server against the app container's CA certificates, which the sidecar does not have (-k / --no-check-certificate carries over)"
                ));
            }
            c.text("scheme", "https");
        }
        if url.host != "127.0.0.1" {
            c.text("host", &url.host);
        }
        c.raw("port", url.port.to_string());
        c.text("path", &url.path);
        c.port = Some(url.port);
        c.host = Some(url.host.clone());
        if self.head {
            c.text("method", "HEAD");
        }
        let table = |list: &[(String, String)]| {
            let items: Vec<String> = list
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        };
        if !self.headers.is_empty() {
            c.raw("headers", table(&self.headers));
        }
        if !self.header_env.is_empty() {
            c.raw("header_env", table(&self.header_env));
        }
        if url.https {
            c.raw("insecure_skip_verify", "true".into());
        }
        Ok(())
    }
}

/// A plain-text grep pattern found anywhere in the body: `body_contains`.
fn body_text(tool: &str, g: &Grep) -> Result<String, String> {
    let p = g.pattern.as_str();
    let plain = !p.is_empty()
        && (g.fixed || !p.contains(['.', '*', '[', '\\', '+', '?', '(', '|', '{', '^', '$']))
        && !g.icase
        && !g.line
        && !g.word
        && !g.invert;
    if plain {
        Ok(p.to_string())
    } else {
        Err(format!(
            "{tool} piped into grep {p:?}: only a plain text found in the body carries over"
        ))
    }
}

/// Seconds as curl and wget take them: whole, or the ceiling is not exact.
fn whole_seconds(tool: &str, flag: &str, a: &Arg) -> Result<u64, String> {
    seconds(tool, flag, a)
}

/// `curl` (its exit status: docs/native-checks.md, "curl, wget and
/// grpc_health_probe").
fn curl(cmd: &Cmd, grep: Option<&Grep>, env: &mut Env<'_>, shown: &str) -> Result<Converted, String> {
    let spec = Spec {
        short_val: "HmoXA",
        short_flag: "fsSLkIv",
        long_val: &["header", "max-time", "output", "request", "user-agent", "url"],
        long_flag: &[
            "fail",
            "fail-with-body",
            "silent",
            "show-error",
            "location",
            "insecure",
            "head",
            "verbose",
            "no-progress-meter",
        ],
        ..Spec::default()
    };
    let mut req = Request::default();
    let (mut fail, mut follow, mut out_null, mut timeout) = (false, false, false, None);
    let mut urls = Vec::new();
    for o in getopt("curl", &cmd.args[1..], &spec)? {
        match o {
            Opt::Val(n, Some(v)) => match n.as_str() {
                "H" | "header" => req.header("curl", &v)?,
                "A" | "user-agent" => req.header("curl", &prefixed("User-Agent: ", &v))?,
                "m" | "max-time" => timeout = Some(whole_seconds("curl", "--max-time", &v)?),
                "o" | "output" => match v.as_text().as_deref() {
                    Some("/dev/null") => out_null = true,
                    Some("-") => {}
                    _ => return Err(format!("curl's -o {}: a file in the app's filesystem", v.show())),
                },
                "X" | "request" => match v.as_text().as_deref() {
                    Some("GET") => {}
                    Some("HEAD") => req.head = true,
                    _ => return Err(format!("curl's -X {}", v.show())),
                },
                _ => urls.push(v),
            },
            Opt::Flag(f) => match f.as_str() {
                "f" | "fail" | "fail-with-body" => fail = true,
                "L" | "location" => follow = true,
                "k" | "insecure" => req.insecure = true,
                "I" | "head" => req.head = true,
                _ => {}
            },
            Opt::Pos(p) => urls.push(p),
            Opt::Val(..) => unreachable!("no optional values"),
        }
    }
    let [url] = urls.as_slice() else {
        return Err("curl with other than one URL".into());
    };
    let url = url_of("curl", url)?;
    let mut c = Converted::new(shown, "http");
    req.keys(&mut c, "curl", &url)?;
    // Without -f any answer passes; with -f, a status >= 400 fails, after
    // the redirects with -L, at the first answer without.
    if !fail {
        c.raw("expect_status", "[\"100-599\"]".into());
    }
    if !follow || !fail {
        c.raw("follow_redirects", "false".into());
    }
    if let Some(g) = grep {
        if out_null || req.head {
            return Err("curl's body goes elsewhere than grep".into());
        }
        c.text("body_contains", &body_text("curl", g)?);
    }
    c.timeout = timeout.filter(|t| *t > 0);
    let _ = env;
    Ok(c)
}

fn prefixed(prefix: &str, a: &Arg) -> Arg {
    let mut pieces = vec![Piece::Text(prefix.to_string())];
    pieces.extend(a.0.iter().cloned());
    let mut joined: Vec<Piece> = Vec::new();
    for p in pieces {
        match (joined.last_mut(), p) {
            (Some(Piece::Text(x)), Piece::Text(y)) => x.push_str(&y),
            (_, p) => joined.push(p),
        }
    }
    Arg(joined)
}

/// `wget` (GNU and BusyBox): follows redirects, exits non-zero for an
/// error answer.
fn wget(cmd: &Cmd, grep: Option<&Grep>, env: &mut Env<'_>, shown: &str) -> Result<Converted, String> {
    let spec = Spec {
        short_val: "OTtUo",
        short_flag: "qsS",
        long_val: &[
            "output-document",
            "timeout",
            "tries",
            "header",
            "user-agent",
            "output-file",
        ],
        long_flag: &[
            "quiet",
            "spider",
            "no-check-certificate",
            "server-response",
            "no-verbose",
        ],
        ..Spec::default()
    };
    let mut req = Request::default();
    let (mut to_stdout, mut out_null, mut spider, mut timeout) = (false, false, false, None);
    let mut urls = Vec::new();
    for o in getopt("wget", &cmd.args[1..], &spec)? {
        match o {
            Opt::Val(n, Some(v)) => match n.as_str() {
                "O" | "output-document" => match v.as_text().as_deref() {
                    Some("-") => to_stdout = true,
                    Some("/dev/null") => out_null = true,
                    _ => return Err(format!("wget's -O {}: a file in the app's filesystem", v.show())),
                },
                "o" | "output-file" if v.as_text().as_deref() == Some("/dev/null") => {}
                "o" | "output-file" => return Err(format!("wget's -o {}", v.show())),
                "T" | "timeout" => timeout = Some(whole_seconds("wget", "-T", &v)?),
                "t" | "tries" => {}
                "header" => req.header("wget", &v)?,
                _ => req.header("wget", &prefixed("User-Agent: ", &v))?,
            },
            Opt::Flag(f) => match f.as_str() {
                "s" | "spider" => spider = true,
                "no-check-certificate" => req.insecure = true,
                _ => {}
            },
            Opt::Pos(p) => urls.push(p),
            Opt::Val(..) => unreachable!("no optional values"),
        }
    }
    let [url] = urls.as_slice() else {
        return Err("wget with other than one URL".into());
    };
    if !(to_stdout || out_null || spider) {
        return Err("wget without -O- or --spider writes the page to a file in the app's filesystem".into());
    }
    if spider {
        // GNU wget's --spider asks with HEAD, BusyBox's with GET.
        return Err("wget --spider (GNU wget asks with HEAD, BusyBox's with GET)".into());
    }
    let url = url_of("wget", url)?;
    let mut c = Converted::new(shown, "http");
    req.keys(&mut c, "wget", &url)?;
    if let Some(g) = grep {
        if !to_stdout {
            return Err("wget's page goes elsewhere than grep".into());
        }
        c.text("body_contains", &body_text("wget", g)?);
    }
    c.timeout = timeout.filter(|t| *t > 0);
    let _ = env;
    Ok(c)
}

/// A Go duration in whole seconds or less (`1s`, `500ms`), rounded up.
fn go_duration(flag: &str, text: &str) -> Result<u64, String> {
    let bad = || format!("grpc_health_probe's {flag} {text}");
    if let Some(ms) = text.strip_suffix("ms") {
        let ms: u64 = ms.parse().map_err(|_| bad())?;
        return Ok(ms.div_ceil(1000));
    }
    if let Some(s) = text.strip_suffix('s') {
        return s.parse::<u64>().map_err(|_| bad());
    }
    Err(bad())
}

/// `grpc_health_probe` (Go's flag package: `-flag=v`, `-flag v`,
/// `--flag`).
fn grpc_health_probe(cmd: &Cmd, shown: &str) -> Result<Converted, String> {
    let mut addr = None;
    let (mut service, mut tls, mut no_verify, mut server_name, mut user_agent) =
        (None, false, false, None, None);
    let (mut connect, mut rpc) = (1, 1);
    let mut args = cmd.args[1..].iter();
    while let Some(a) = args.next() {
        let t = a
            .as_text()
            .ok_or_else(|| format!("grpc_health_probe's argument {} holds a variable", a.show()))?;
        let Some(flag) = t.strip_prefix("--").or_else(|| t.strip_prefix('-')) else {
            return Err(format!("grpc_health_probe's argument {t}"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let boolean = matches!(name.as_str(), "tls" | "tls-no-verify" | "v");
        let value = if boolean {
            match value.as_deref() {
                None | Some("true") => "true".to_string(),
                Some("false") => "false".to_string(),
                Some(v) => return Err(format!("grpc_health_probe's -{name}={v}")),
            }
        } else {
            match value {
                Some(v) => v,
                None => args
                    .next()
                    .and_then(Arg::as_text)
                    .ok_or_else(|| format!("grpc_health_probe's -{name} without a value"))?,
            }
        };
        match name.as_str() {
            "addr" => addr = Some(value),
            "service" => service = Some(value),
            "tls" => tls = value == "true",
            "tls-no-verify" => no_verify = value == "true",
            "tls-server-name" => server_name = Some(value),
            "user-agent" => user_agent = Some(value),
            "connect-timeout" => connect = go_duration("-connect-timeout", &value)?,
            "rpc-timeout" => rpc = go_duration("-rpc-timeout", &value)?,
            "v" => {}
            _ => return Err(format!("grpc_health_probe's -{name}")),
        }
    }
    let addr = addr.ok_or("grpc_health_probe without -addr")?;
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => return Err(format!("grpc_health_probe's -addr {addr} has no port")),
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("grpc_health_probe's -addr {addr} has no valid port"))?;
    let mut c = Converted::new(shown, "grpc");
    if !host.is_empty() && host != "127.0.0.1" {
        if host.contains(['/', ' ', '$']) {
            return Err(format!("grpc_health_probe's -addr {addr}"));
        }
        c.text("host", host);
        c.host = Some(host.to_string());
    }
    c.raw("port", port.to_string());
    c.port = Some(port);
    if let Some(s) = &service {
        c.text("service", s);
    }
    if let Some(ua) = &user_agent {
        c.text("user_agent", ua);
    }
    if tls {
        if !no_verify {
            return Err(
                "grpc_health_probe -tls verifies the server against the app container's CA certificates, which the sidecar does not have (-tls-no-verify carries over)".into(),
            );
        }
        c.raw("tls", "true".into());
        c.raw("insecure_skip_verify", "true".into());
        if let Some(n) = &server_name {
            c.text("server_name", n);
        }
    } else if no_verify || server_name.is_some() {
        return Err("grpc_health_probe's TLS flags without -tls".into());
    }
    // Its own limits: -connect-timeout for the dial, -rpc-timeout for the call.
    c.timeout = Some(connect + rpc);
    Ok(c)
}

/// `nc -z HOST PORT`: a TCP connection, as tcpSocket.
fn nc_z(cmd: &Cmd, shown: &str) -> Result<Converted, String> {
    let spec = Spec {
        short_val: "w",
        short_flag: "zvn4",
        ..Spec::default()
    };
    let (mut zero, mut timeout, mut pos) = (false, None, Vec::new());
    for o in getopt("nc", &cmd.args[1..], &spec)? {
        match o {
            Opt::Flag(f) if f == "z" => zero = true,
            Opt::Flag(_) => {}
            Opt::Val(_, Some(v)) => timeout = Some(seconds("nc", "-w", &v)?),
            Opt::Pos(p) => pos.push(p),
            Opt::Val(..) => unreachable!("no optional values"),
        }
    }
    if !zero {
        return Err("nc without -z and without input".into());
    }
    let [host, port] = pos.as_slice() else {
        return Err("nc -z with other than one host and one port".into());
    };
    let host = host_of("nc", "host", host)?;
    let port = port_of("nc", "port", port)?;
    let mut c = Converted::new(shown, "tcp");
    if host != "127.0.0.1" {
        c.text("host", &host);
    }
    c.raw("port", port.to_string());
    c.host = Some(host);
    c.port = Some(port);
    c.timeout = timeout.filter(|t| *t > 0);
    Ok(c)
}

/// ZooKeeper's four-letter words: the server answers and closes.
const FOUR_LETTER_WORDS: &[&str] = &[
    "ruok", "stat", "srvr", "mntr", "conf", "envi", "cons", "crst", "dump", "wchs", "wchc", "wchp", "isro",
    "srst", "gtmk", "dirs",
];

/// What `echo WORD`, `echo -n WORD` or `printf WORD` writes.
fn sent(cmd: &Cmd) -> Result<String, String> {
    let args: Vec<String> = cmd.args[1..]
        .iter()
        .map(|a| a.as_text().ok_or_else(|| format!("{} of a variable", cmd.name())))
        .collect::<Result<_, _>>()?;
    match (cmd.name().as_str(), args.as_slice()) {
        ("echo", [w]) if !w.starts_with('-') && !w.contains('\\') => Ok(format!("{w}\n")),
        ("echo", [n, w]) if n == "-n" && !w.contains('\\') => Ok(w.clone()),
        ("printf", [w]) if !w.contains('%') => {
            let mut out = String::new();
            let mut chars = w.chars();
            while let Some(ch) = chars.next() {
                if ch == '\\' {
                    match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('r') => out.push('\r'),
                        Some('\\') => out.push('\\'),
                        other => return Err(format!("printf's escape \\{}", other.unwrap_or(' '))),
                    }
                } else {
                    out.push(ch);
                }
            }
            Ok(out)
        }
        (name, _) => Err(format!("{name} {} piped into nc", args.join(" "))),
    }
}

/// `nc HOST PORT` after a pipe: host, port, and whether it ends once its
/// input does (else it waits for the server to close).
fn nc_talk(cmd: &Cmd, timeout: u64) -> Result<(String, u16, bool), String> {
    if !matches!(cmd.name().as_str(), "nc" | "ncat" | "netcat") {
        return Err(format!("{} after echo", cmd.name()));
    }
    let spec = Spec {
        short_val: "wq",
        short_flag: "Nvn4",
        ..Spec::default()
    };
    let (mut ends, mut pos) = (false, Vec::new());
    for o in getopt("nc", &cmd.args[1..], &spec)? {
        match o {
            Opt::Flag(f) if f == "N" => ends = true,
            Opt::Flag(_) => {}
            Opt::Val(_, Some(v)) => ends |= seconds("nc", "-q/-w", &v)? < timeout,
            Opt::Pos(p) => pos.push(p),
            Opt::Val(..) => unreachable!("no optional values"),
        }
    }
    let [host, port] = pos.as_slice() else {
        return Err("nc with other than one host and one port".into());
    };
    Ok((host_of("nc", "host", host)?, port_of("nc", "port", port)?, ends))
}

fn dialogue_of(shown: &str, host: String, port: u16, send: &str, expect: &str) -> Converted {
    let mut c = Converted::new(shown, "dialogue");
    if host != "127.0.0.1" {
        c.text("host", &host);
    }
    c.raw("port", port.to_string());
    c.raw(
        "steps",
        format!(
            "[{{ send = {} }}, {{ expect = {} }}]",
            toml_str(send),
            toml_str(expect)
        ),
    );
    c.host = Some(host);
    c.port = Some(port);
    c
}

/// `echo WORD | nc HOST PORT | grep PATTERN`.
pub(crate) fn dialogue(
    echo: &Cmd,
    nc: &Cmd,
    grep: Option<&Grep>,
    ctx: &Context<'_>,
    shown: &str,
) -> Result<Converted, String> {
    let send = sent(echo)?;
    let (host, port, ends) = nc_talk(nc, ctx.timeout)?;
    if !ends && !FOUR_LETTER_WORDS.contains(&send.trim_end()) {
        return Err(
            "nc waits for the server to close the connection, which it may never do (nc -q/-w/-N carries over)".into(),
        );
    }
    let g = grep.ok_or("echo | nc without grep")?;
    let p = g.pattern.as_str();
    if g.invert || g.word || (!g.fixed && p.contains(['.', '*', '[', '\\', '+', '?', '(', '|', '{'])) {
        return Err(format!(
            "nc piped into grep {p:?}: only a plain text carries over"
        ));
    }
    let (core, start, end) = if g.fixed {
        (p, false, false)
    } else {
        let a = p.strip_prefix('^');
        let core = a.unwrap_or(p);
        let b = core.strip_suffix('$');
        (b.unwrap_or(core), a.is_some(), b.is_some())
    };
    if core.is_empty() || core.contains(['^', '$']) {
        return Err(format!("nc piped into grep {p:?}"));
    }
    let mut expect = String::from("(?m)");
    if g.icase {
        expect.push_str("(?i)");
    }
    if start || g.line {
        expect.push('^');
    }
    expect.push_str(&regex_lite::escape(core));
    if end || g.line {
        expect.push('$');
    }
    Ok(dialogue_of(shown, host, port, &send, &expect))
}

/// `[ "$(echo ruok | nc HOST PORT)" = "imok" ]`, and `test ...`, `==`.
pub(crate) fn comparison(
    words: &[super::shell::Word],
    ctx: &Context<'_>,
    env: &mut Env<'_>,
    shown: &str,
) -> Result<Option<Converted>, String> {
    use super::shell::Part;
    let lit = |w: &super::shell::Word| match w.as_slice() {
        [Part::Lit(t)] => Some(t.clone()),
        _ => None,
    };
    let parts: Vec<&super::shell::Word> = match words.first().and_then(lit).as_deref() {
        Some("[") if words.last().and_then(lit).as_deref() == Some("]") => {
            words[1..words.len() - 1].iter().collect()
        }
        Some("test") => words[1..].iter().collect(),
        _ => return Ok(None),
    };
    let [left, op, right] = parts.as_slice() else {
        return Ok(None);
    };
    let (subst, word) = match (left.as_slice(), right.as_slice()) {
        ([Part::Subst(s)], _) => (s, right),
        (_, [Part::Subst(s)]) => (s, left),
        _ => return Ok(None),
    };
    if !matches!(lit(op).as_deref(), Some("=" | "==")) {
        return Err(format!("the comparison {}", lit(op).unwrap_or_default()));
    }
    let expected = lit(word).ok_or("a comparison with a variable")?;
    let pipeline = super::shell::parse(subst).map_err(|e| format!("{e} in $({subst})"))?;
    let cmds: Vec<Cmd> = pipeline
        .iter()
        .map(|c| {
            Ok(Cmd {
                args: c
                    .words
                    .iter()
                    .map(|w| super::resolve(w, env))
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<_, String>>()?;
    let [echo, nc] = cmds.as_slice() else {
        return Err(format!(
            "the command substitution $({subst}): only echo WORD | nc HOST PORT carries over"
        ));
    };
    let send = sent(echo)?;
    let (host, port, ends) = nc_talk(nc, ctx.timeout)?;
    if !ends && !FOUR_LETTER_WORDS.contains(&send.trim_end()) {
        return Err("nc waits for the server to close the connection, which it may never do".into());
    }
    if expected.is_empty() || expected.contains('\n') {
        return Err(format!("the comparison with {expected:?}"));
    }
    // $(...) drops the trailing newlines; the answer must be the word.
    let expect = format!("^{}\\n*$", regex_lite::escape(&expected));
    Ok(Some(dialogue_of(shown, host, port, &send, &expect)))
}

/// `pgrep -f PATTERN`, where the sidecar sees the app's processes.
fn pgrep(cmd: &Cmd, ctx: &Context<'_>, shown: &str) -> Result<Converted, String> {
    let spec = Spec {
        short_flag: "fxlac",
        long_flag: &["full", "exact", "list-name", "list-full", "count"],
        ..Spec::default()
    };
    let (mut full, mut exact, mut pos) = (false, false, Vec::new());
    for o in getopt("pgrep", &cmd.args[1..], &spec)? {
        match o {
            Opt::Flag(f) if f == "f" || f == "full" => full = true,
            Opt::Flag(f) if f == "x" || f == "exact" => exact = true,
            Opt::Flag(_) => {}
            Opt::Pos(p) => pos.push(p),
            Opt::Val(..) => unreachable!("no values"),
        }
    }
    if !full {
        return Err("pgrep without -f matches the process's name, not its command line".into());
    }
    let [pattern] = pos.as_slice() else {
        return Err("pgrep with other than one pattern".into());
    };
    let pattern = pattern
        .as_text()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("pgrep's pattern {}", pattern.show()))?;
    if !ctx.shares_processes {
        return Err(
            "pgrep sees the app's processes, the sidecar only where the pod shares its process namespace (shareProcessNamespace: true, or inject --share-process-namespace)".into(),
        );
    }
    if regex_lite::Regex::new(&pattern).is_err() || pattern.contains("[[:") || pattern.contains('\\') {
        return Err(format!(
            "pgrep's pattern {pattern:?} reads otherwise as a POSIX expression"
        ));
    }
    let pattern = if exact {
        format!("^(?:{pattern})$")
    } else {
        pattern
    };
    let mut c = Converted::new(shown, "process");
    c.text("pattern", &pattern);
    Ok(c)
}
