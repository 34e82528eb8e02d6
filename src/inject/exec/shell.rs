//! The part of the POSIX shell language that exec probes write in
//! `sh -c`: one pipeline of simple commands, words with `'...'`, `"..."`
//! and backslash quoting, `$VAR`, `${VAR}`, `$(...)`, and the redirections
//! that throw output away. Everything else is refused with the construct
//! named, so that a probe whose meaning is not read exactly stays exec.

/// One piece of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Text, as the shell passes it on.
    Lit(String),
    /// `$NAME`, `${NAME}`; `quoted` inside `"..."` (no field splitting).
    Var {
        /// The variable's name.
        name: String,
        /// Whether it stood inside double quotes.
        quoted: bool,
    },
    /// `$(...)`: the script inside, unparsed.
    Subst(String),
}

/// A word: pieces joined without space.
pub(crate) type Word = Vec<Part>;

/// One simple command of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Command {
    /// Its words, the command's name first.
    pub(crate) words: Vec<Word>,
    /// Its standard output goes to /dev/null.
    pub(crate) stdout_null: bool,
    /// Its standard error goes to /dev/null or to its standard output.
    pub(crate) stderr_moved: bool,
}

/// Parses `script` into one pipeline. The error names the construct that
/// is not understood.
pub(crate) fn parse(script: &str) -> Result<Vec<Command>, String> {
    let mut p = Parser {
        s: script.as_bytes(),
        text: script,
        i: 0,
    };
    let mut pipeline = vec![Command::default()];
    loop {
        p.blanks();
        let Some(c) = p.peek() else { break };
        match c {
            b'#' => {
                // A comment runs to the end of the line.
                while p.peek().is_some_and(|c| c != b'\n') {
                    p.i += 1;
                }
            }
            b'\n' => {
                p.i += 1;
                let rest = script[p.i..].trim();
                if !rest.is_empty() && !rest.starts_with('#') {
                    return Err("several commands (lines)".into());
                }
            }
            b'|' => {
                if p.s.get(p.i + 1) == Some(&b'|') {
                    return Err("`||`".into());
                }
                p.i += 1;
                if pipeline.last().is_some_and(|c| c.words.is_empty()) {
                    return Err("an empty command in a pipeline".into());
                }
                pipeline.push(Command::default());
            }
            b'&' if p.s.get(p.i + 1) == Some(&b'>') => {
                p.i += 2;
                let target = p.redirect_target()?;
                if target != "/dev/null" {
                    return Err(format!("the redirection &>{target}"));
                }
                let cmd = pipeline.last_mut().expect("a command");
                cmd.stdout_null = true;
                cmd.stderr_moved = true;
            }
            b'&' if p.s.get(p.i + 1) == Some(&b'&') => return Err("`&&`".into()),
            b'&' => return Err("`&` (a background job)".into()),
            b';' => {
                p.i += 1;
                let rest = script[p.i..].trim();
                if !rest.is_empty() && !rest.starts_with('#') {
                    return Err("several commands (`;`)".into());
                }
            }
            b'(' | b')' => return Err("a subshell `( )`".into()),
            b'<' => return Err("an input redirection `<`".into()),
            b'>' => {
                p.i += 1;
                p.redirect(pipeline.last_mut().expect("a command"), 1)?;
            }
            b'0'..=b'9'
                if p.s[p.i..]
                    .iter()
                    .position(|c| !c.is_ascii_digit())
                    .is_some_and(|n| matches!(p.s.get(p.i + n), Some(b'>' | b'<'))) =>
            {
                let n = p.s[p.i..].iter().position(|c| !c.is_ascii_digit()).unwrap_or(0);
                let fd: u32 = script[p.i..p.i + n].parse().unwrap_or(u32::MAX);
                p.i += n;
                if p.peek() == Some(b'<') {
                    return Err("an input redirection `<`".into());
                }
                p.i += 1;
                p.redirect(pipeline.last_mut().expect("a command"), fd)?;
            }
            _ => {
                let word = p.word()?;
                pipeline.last_mut().expect("a command").words.push(word);
            }
        }
    }
    if pipeline.iter().any(|c| c.words.is_empty()) {
        return Err(if pipeline.len() == 1 {
            "no command".into()
        } else {
            "an empty command in a pipeline".into()
        });
    }
    Ok(pipeline)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

/// Bytes that end an unquoted word.
fn ends_word(c: u8) -> bool {
    matches!(
        c,
        b' ' | b'\t' | b'\n' | b'|' | b'&' | b';' | b'<' | b'>' | b'(' | b')'
    )
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
        // A backslash before a newline joins the lines.
        if self.peek() == Some(b'\\') && self.s.get(self.i + 1) == Some(&b'\n') {
            self.i += 2;
            self.blanks();
        }
    }

    /// After `>` (or `N>`): `>>`, `>&N`, or a file.
    fn redirect(&mut self, cmd: &mut Command, fd: u32) -> Result<(), String> {
        if self.peek() == Some(b'>') {
            self.i += 1;
        }
        if self.peek() == Some(b'&') {
            self.i += 1;
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let to = &self.text[start..self.i];
            return match (fd, to) {
                (2, "1") => {
                    cmd.stderr_moved = true;
                    Ok(())
                }
                _ => Err(format!("the redirection {fd}>&{to}")),
            };
        }
        let target = self.redirect_target()?;
        match (fd, target.as_str()) {
            (1, "/dev/null") => cmd.stdout_null = true,
            (2, "/dev/null") => cmd.stderr_moved = true,
            _ => return Err(format!("the redirection {fd}>{target}")),
        }
        Ok(())
    }

    fn redirect_target(&mut self) -> Result<String, String> {
        self.blanks();
        let word = self.word()?;
        match word.as_slice() {
            [Part::Lit(t)] => Ok(t.clone()),
            _ => Err("a redirection to a file named by a variable".into()),
        }
    }

    fn word(&mut self) -> Result<Word, String> {
        let mut parts: Word = Vec::new();
        let mut lit = String::new();
        let push_lit = |parts: &mut Word, lit: &mut String| {
            if !lit.is_empty() {
                match parts.last_mut() {
                    Some(Part::Lit(t)) => t.push_str(lit),
                    _ => parts.push(Part::Lit(std::mem::take(lit))),
                }
                lit.clear();
            }
        };
        let start = self.i;
        let mut quoted_empty = false;
        while let Some(c) = self.peek() {
            if ends_word(c) {
                break;
            }
            match c {
                b'\'' => {
                    self.i += 1;
                    let end = self.s[self.i..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .ok_or("an unterminated '")?;
                    lit.push_str(&self.text[self.i..self.i + end]);
                    quoted_empty = true;
                    self.i += end + 1;
                }
                b'"' => {
                    self.i += 1;
                    quoted_empty = true;
                    loop {
                        match self.peek() {
                            None => return Err("an unterminated \"".into()),
                            Some(b'"') => {
                                self.i += 1;
                                break;
                            }
                            Some(b'\\') => {
                                let next = self.s.get(self.i + 1).copied();
                                match next {
                                    Some(b'$' | b'`' | b'"' | b'\\') => {
                                        lit.push(next.unwrap_or(b'\\') as char);
                                        self.i += 2;
                                    }
                                    Some(b'\n') => self.i += 2,
                                    _ => {
                                        lit.push('\\');
                                        self.i += 1;
                                    }
                                }
                            }
                            Some(b'`') => return Err("a command substitution in backquotes".into()),
                            Some(b'$') => {
                                push_lit(&mut parts, &mut lit);
                                parts.push(self.dollar(true)?);
                            }
                            Some(_) => {
                                let ch = self.text[self.i..].chars().next().expect("a char");
                                lit.push(ch);
                                self.i += ch.len_utf8();
                            }
                        }
                    }
                }
                b'\\' => {
                    match self.text[self.i + 1..].chars().next() {
                        None => return Err("a backslash at the end".into()),
                        Some('\n') => {}
                        Some(ch) => lit.push(ch),
                    }
                    self.i += 1 + self.text[self.i + 1..].chars().next().map_or(0, char::len_utf8);
                }
                b'$' => {
                    push_lit(&mut parts, &mut lit);
                    parts.push(self.dollar(false)?);
                }
                b'`' => return Err("a command substitution in backquotes".into()),
                // In a URL a pattern matches no file (no directory of the
                // app's is named `http:` holding `/`): the shell leaves it.
                b'*' | b'?' if self.text[start..self.i].contains("://") => {
                    lit.push(c as char);
                    self.i += 1;
                }
                b'*' | b'?' => return Err(format!("the pattern {:?}", self.rest_of_word(start))),
                b'[' | b']' if !(self.i == start && self.s.get(self.i + 1).is_none_or(|&c| ends_word(c))) => {
                    return Err(format!("the pattern {:?}", self.rest_of_word(start)));
                }
                b'~' if self.i == start => return Err("a home directory `~`".into()),
                b'{' | b'}' if self.i == start => return Err("a group `{ }`".into()),
                _ => {
                    let ch = self.text[self.i..].chars().next().expect("a char");
                    lit.push(ch);
                    self.i += ch.len_utf8();
                }
            }
        }
        push_lit(&mut parts, &mut lit);
        if parts.is_empty() && quoted_empty {
            parts.push(Part::Lit(String::new()));
        }
        // `NAME=value command`: a variable set for the command.
        if let Some(Part::Lit(t)) = parts.first()
            && let Some(eq) = t.find('=')
            && eq > 0
            && t[..eq].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !t.as_bytes()[0].is_ascii_digit()
            && !self.text[start..].starts_with(['\'', '"'])
        {
            return Err(format!("the assignment {}", &t[..=eq]));
        }
        Ok(parts)
    }

    fn rest_of_word(&self, start: usize) -> String {
        let end = self.s[start..]
            .iter()
            .position(|&c| ends_word(c))
            .map_or(self.s.len(), |n| start + n);
        self.text[start..end].to_string()
    }

    /// At a `$`.
    fn dollar(&mut self, quoted: bool) -> Result<Part, String> {
        self.i += 1;
        let name_len = |s: &[u8]| {
            s.iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .unwrap_or(s.len())
        };
        match self.peek() {
            Some(b'{') => {
                let inner = &self.s[self.i + 1..];
                let n = name_len(inner);
                if n == 0 || inner.get(n) != Some(&b'}') || inner[0].is_ascii_digit() {
                    let end = inner
                        .iter()
                        .position(|&c| c == b'}')
                        .map_or(inner.len(), |e| e + 1);
                    return Err(format!(
                        "the expansion ${{{}",
                        &self.text[self.i + 1..self.i + 1 + end]
                    ));
                }
                let name = self.text[self.i + 1..self.i + 1 + n].to_string();
                self.i += n + 2;
                Ok(Part::Var { name, quoted })
            }
            Some(b'(') => {
                if self.s.get(self.i + 1) == Some(&b'(') {
                    return Err("an arithmetic expansion $((...))".into());
                }
                let mut depth = 0usize;
                let start = self.i + 1;
                let mut j = self.i;
                while j < self.s.len() {
                    match self.s[j] {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                let inner = self.text[start..j].to_string();
                                self.i = j + 1;
                                return Ok(Part::Subst(inner));
                            }
                        }
                        b'\'' => {
                            j += self.s[j + 1..].iter().position(|&c| c == b'\'').unwrap_or(0) + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                Err("an unterminated $(".into())
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let n = name_len(&self.s[self.i..]);
                let name = self.text[self.i..self.i + n].to_string();
                self.i += n;
                Ok(Part::Var { name, quoted })
            }
            Some(c) if !ends_word(c) && c != b'"' => Err(format!("the special parameter ${}", c as char)),
            // A lone `$` is itself.
            _ => Ok(Part::Lit("$".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Word {
        vec![Part::Lit(s.into())]
    }

    #[test]
    fn quoting_joins_and_keeps_text_as_the_shell_does() {
        let p = parse(r#"exec pg_isready -U "postgres" -d 'dbname=x y' -h 127.0.0.1\ 2"#).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].words,
            vec![
                lit("exec"),
                lit("pg_isready"),
                lit("-U"),
                lit("postgres"),
                lit("-d"),
                lit("dbname=x y"),
                lit("-h"),
                lit("127.0.0.1 2")
            ]
        );
        let p = parse("redis-cli -a \"$REDIS_PASSWORD\" -p ${PORT} ping | grep -q PONG\n").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].words[2],
            vec![Part::Var {
                name: "REDIS_PASSWORD".into(),
                quoted: true
            }]
        );
        assert_eq!(
            p[0].words[4],
            vec![Part::Var {
                name: "PORT".into(),
                quoted: false
            }]
        );
        assert_eq!(p[1].words, vec![lit("grep"), lit("-q"), lit("PONG")]);
        let p = parse(r#"mysqladmin -p"$MYSQL_ROOT_PASSWORD" ping"#).unwrap();
        assert_eq!(
            p[0].words[1],
            vec![
                Part::Lit("-p".into()),
                Part::Var {
                    name: "MYSQL_ROOT_PASSWORD".into(),
                    quoted: true
                }
            ]
        );
        assert_eq!(parse("a ''").unwrap()[0].words[1], lit(""));
    }

    #[test]
    fn output_thrown_away_is_understood() {
        let p = parse("curl -sf http://localhost/ >/dev/null 2>&1").unwrap();
        assert!(p[0].stdout_null && p[0].stderr_moved);
        assert_eq!(p[0].words.len(), 3);
        let p = parse("nc -z localhost 80 &> /dev/null").unwrap();
        assert!(p[0].stdout_null && p[0].stderr_moved);
        let p = parse("x 2>/dev/null").unwrap();
        assert!(!p[0].stdout_null && p[0].stderr_moved);
    }

    #[test]
    fn the_zookeeper_comparison_parses_with_its_substitution() {
        let p = parse(r#"[ "$(echo ruok | nc 127.0.0.1 2181)" = "imok" ]"#).unwrap();
        assert_eq!(
            p[0].words,
            vec![
                lit("["),
                vec![Part::Subst("echo ruok | nc 127.0.0.1 2181".into())],
                lit("="),
                lit("imok"),
                lit("]")
            ]
        );
    }

    #[test]
    fn what_is_not_one_pipeline_of_simple_commands_is_named() {
        for (script, named) in [
            ("a && b", "&&"),
            ("a || b", "||"),
            ("a; b", ";"),
            ("a\nb", "lines"),
            ("a > /tmp/x", "/tmp/x"),
            ("a < x", "<"),
            ("a `b`", "backquotes"),
            ("ls *.sock", "*.sock"),
            ("(a)", "subshell"),
            ("X=1 a", "X="),
            ("echo ${X:-y}", "${X:-y}"),
            ("echo $?", "$?"),
            ("a &", "background"),
            ("echo 'x", "unterminated"),
            ("cat ~/x", "~"),
            ("a | | b", "empty"),
        ] {
            let e = parse(script).unwrap_err();
            assert!(e.contains(named), "{script}: {e}");
        }
        assert!(parse("a; # done\n").is_ok());
        assert!(parse("  a  \n\n").is_ok());
    }
}
