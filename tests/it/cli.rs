//! The command line of the real binary: `check-config` and config errors.

use std::process::Command;

use crate::support::binary;

fn check_config(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hp.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let shown = |b: &[u8]| String::from_utf8_lossy(b).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap(), shown(&out.stdout), shown(&out.stderr))
}

#[test]
fn check_config_accepts_a_valid_file() {
    let (code, stdout, stderr) = check_config(
        r#"[[check]]
name = "web"
probes = ["readiness"]
http = { port = 8080, path = "/healthz" }
"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "FILE: ok (1 checks)\n");
    // Valid, but the lifecycle endpoints answer loopback only: said once.
    assert!(
        stderr.starts_with("FILE: warning: drain.token_file: not set: /prestop, /drain and /exit answer loopback clients only"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let (code, _, stderr) = check_config(&format!(
        r#"allow_empty = true
[drain]
token_file = "{}"
"#,
        token.display()
    ));
    assert_eq!((code, stderr.as_str()), (0, ""));
}

#[test]
fn check_config_names_file_line_column_and_key_and_exits_2() {
    let (code, _, stderr) = check_config(
        r#"[[check]]
name = "web"
probes = ["readiness"]
tcp = { port = 1 }
period = "10ms"
timeot = "1s"
"#,
    );
    assert_eq!(code, 2);
    // Every error in one run, in file order: the bad value and the
    // misspelt key.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(lines[0], "FILE:5:10: check[0].period: must be at least 100ms");
    assert!(
        lines[1].starts_with("FILE:6:1: timeot: unknown field `timeot`")
            && lines[1].ends_with("did you mean `timeout`?"),
        "{stderr}"
    );
    let (code, _, stderr) = check_config(
        r#"[[check]]
name = "web"
probes = ["readiness"]
tcp = { port = 1 }
period = "10ms"
"#,
    );
    assert_eq!(code, 2);
    assert_eq!(stderr, "FILE:5:10: check[0].period: must be at least 100ms\n");
}

#[test]
fn check_config_prints_lints_without_failing() {
    let (code, _, stderr) = check_config(
        r#"[[check]]
name = "db"
probes = ["liveness"]
tcp = { host = "10.0.0.9", port = 5432 }
"#,
    );
    assert_eq!(code, 0);
    assert!(
        stderr.starts_with("FILE:1: warning: check \"db\": a liveness check aimed at \"10.0.0.9\""),
        "{stderr}"
    );
}

#[test]
fn check_config_rejects_a_missing_file() {
    let out = Command::new(binary())
        .args(["check-config", "/nonexistent/hp.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hp.toml"));
}

#[test]
fn run_with_a_bad_config_exits_2_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hp.toml");
    std::fs::write(
        &path,
        r#"listen = "127.0.0.1:0"
bogus = 1
"#,
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2:1: bogus: unknown field `bogus`"), "{stderr}");
    assert!(!stderr.contains("serving"));
}

#[test]
fn check_config_fails_exactly_when_run_would() {
    // A valid file whose token file is missing: run refuses it, so must
    // check-config, with the same message.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hp.toml");
    let missing = dir.path().join("no-such-token");
    std::fs::write(
        &path,
        format!(
            "allow_empty = true\n[drain]\ntoken_file = {:?}\n",
            missing.display().to_string()
        ),
    )
    .unwrap();
    let checked = Command::new(binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let ran = Command::new(binary())
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(2));
    assert_eq!(ran.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(
        stderr.contains("drain.token_file") && stderr.contains("no-such-token"),
        "{stderr}"
    );
    assert_eq!(stderr, String::from_utf8_lossy(&ran.stderr));

    std::fs::write(&missing, "s3cret\n").unwrap();
    let checked = Command::new(binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
}

/// The one error line check-config prints for a check whose own lines
/// are `body`.
fn one_error(body: &str) -> String {
    let (code, _, stderr) = check_config(&format!(
        r#"[[check]]
name = "web"
probes = ["readiness"]
{body}"#
    ));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one error: {stderr}");
    stderr.trim_end().to_string()
}

#[test]
fn check_config_says_what_to_write_for_the_mistakes_people_make() {
    // A port out of range, inline or as its own section: one error, no
    // "missing field `port`" beside it.
    assert_eq!(
        one_error("tcp = { port = 70000 }\n"),
        "FILE:4:16: port: invalid value: integer `70000`, expected u16; a port is 1 to 65535"
    );
    assert_eq!(
        one_error("[check.tcp]\nport = 70000\n"),
        "FILE:5:8: port: invalid value: integer `70000`, expected u16; a port is 1 to 65535"
    );
    let named = one_error(
        r#"tcp = { port = "http" }
"#,
    );
    assert!(
        named.starts_with("FILE:4:16: port: invalid type: string \"http\", expected u16")
            && named.contains("resolved to its number by `healthproxy inject`"),
        "{named}"
    );
    assert_eq!(
        one_error("period = 10\ntcp = { port = 80 }\n"),
        "FILE:4:10: period: invalid type: integer `10`, expected a string; a duration takes its unit: write `period = \"10s\"`"
    );
    let (code, _, stderr) = check_config(
        r#"[check]
name = "web"
probes = ["readiness"]
tcp = { port = 80 }
"#,
    );
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "FILE:1:1: [check]: invalid type: map, expected a sequence; write each check as `[[check]]` (an array of tables), not `[check]`\n"
    );
}

#[test]
fn check_config_reads_healthproxy_config_as_run_does_and_a_missing_file_has_no_place() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = Command::new(binary())
        .arg("check-config")
        .env("HEALTHPROXY_CONFIG", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{}: cannot read: no such file or directory\n", missing.display())
    );
    let path = dir.path().join("hp.toml");
    std::fs::write(
        &path,
        r#"[drain]
min = "1s"
[[check]]
name = "web"
probes = ["readiness"]
tcp = { port = 8080 }
"#,
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("check-config")
        .env("HEALTHPROXY_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok (1 checks)\n", path.display())
    );
}

#[test]
fn check_config_warns_of_checks_of_the_sidecar_itself_and_programs_only_this_machine_has() {
    let (code, _, stderr) = check_config(
        r#"listen = "[::]:9775"
[drain]
ports = [8080, 9775]

[[check]]
name = "self"
probes = ["readiness"]
http = { port = 9775, path = "/healthz" }

[[check]]
name = "db"
probes = ["readiness"]
exec = { command = ["sh", "-c", "true"] }
"#,
    );
    assert_eq!(code, 0, "lints only: {stderr}");
    assert!(
        stderr.contains("FILE:5: warning: check \"self\": it asks the sidecar's own port 9775: it tests healthproxy, not the app"),
        "{stderr}"
    );
    assert!(
        stderr.contains("FILE: warning: drain.ports: holds 9775, the sidecar's own port"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "FILE:10: warning: check \"db\": the command \"sh\" was found on this machine's PATH ("
        ) && stderr.contains("the healthproxy image is FROM scratch"),
        "{stderr}"
    );
    // Named by its path (mounted there), or with its own PATH: no such lint.
    let (_, _, stderr) = check_config(
        r#"[[check]]
name = "db"
probes = ["readiness"]
exec = { command = ["/bin/sh", "-c", "true"] }
"#,
    );
    assert!(!stderr.contains("PATH"), "{stderr}");
}

/// Issue 27: the `key_file` lint advised `defaultMode 0400`, which with
/// deploy/'s `runAsUser: 65532` and no `fsGroup` leaves the key readable by
/// root only: "permission denied". Its advice, applied as the kubelet
/// applies a Secret volume's mode and `fsGroup`, must leave a key the
/// sidecar's user reads and the lint no longer flags. Needs root (chown,
/// and running as another user), as CI runs.
#[test]
fn the_key_file_lints_advice_gives_a_key_the_sidecars_user_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    // deploy/native/sidecar.yaml and deploy/classic/sidecar.yaml.
    const RUN_AS: u32 = 65532;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file, config) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("config.toml"),
    );
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"[[check]]
name = "web"
probes = ["readiness"]
http = {{ scheme = "https", port = 8443, cert_file = {:?}, key_file = {:?} }}
"#,
            cert_file.display().to_string(),
            key_file.display().to_string()
        ),
    )
    .unwrap();
    for file in [&cert_file, &config, &key_file] {
        // A Secret's or ConfigMap's files without defaultMode.
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let check_config = |as_user: bool| {
        let mut command = Command::new(binary());
        command.arg("check-config").arg(&config);
        if as_user {
            command.uid(RUN_AS).gid(RUN_AS);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (_, err) = check_config(false);
    let advice = err
        .lines()
        .find(|l| l.contains("key_file") && l.contains("is readable by every user"))
        .unwrap_or_else(|| panic!("the lint: {err}"));
    let after = |word: &str| -> Option<String> {
        let rest = &advice[advice.find(word)? + word.len()..];
        let digits: String = rest
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        Some(digits)
    };
    let mode = u32::from_str_radix(&after("defaultMode").expect("a defaultMode"), 8).unwrap();
    let fs_group: Option<u32> = after("fsGroup").map(|g| g.parse().unwrap());
    // The kubelet: the Secret's files are root's; with fsGroup they get
    // that group, and a read-only volume's files gain group read
    // (SetVolumeOwnership's 0440 mask).
    match fs_group {
        Some(group) => {
            std::os::unix::fs::chown(&key_file, Some(0), Some(group)).unwrap();
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode | 0o440)).unwrap();
        }
        None => {
            std::os::unix::fs::chown(&key_file, Some(0), Some(0)).unwrap();
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let (code, err) = check_config(true);
    assert_eq!(
        code,
        Some(0),
        "the advice as written ({advice}) must work for runAsUser {RUN_AS}: {err}"
    );
    assert!(!err.contains("permission denied"), "{err}");
    assert!(!err.contains("is readable by every user"), "{err}");
}

#[test]
fn bash_completes_subcommands_and_options_from_the_generated_script() {
    let out = Command::new(binary())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("healthproxy.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // What bash does on TAB: the completion function with the words typed.
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; _healthproxy healthproxy \"${{COMP_WORDS[-1]}}\" \
                 \"${{COMP_WORDS[-2]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = complete("healthproxy st");
    assert!(subcommands.lines().any(|l| l == "status"), "{subcommands}");
    let options = complete("healthproxy status --");
    for option in ["--json", "--output", "--address", "--token-file"] {
        assert!(options.lines().any(|l| l == option), "{option}: {options}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(binary())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn man_writes_a_page_for_healthproxy_and_each_subcommand() {
    let page = |args: &[&str]| {
        let out = Command::new(binary()).arg("man").args(args).output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, main) = page(&[]);
    assert_eq!(code, Some(0));
    assert!(main.contains(".TH healthproxy 1"), "{main}");
    for sub in ["check\\-config", "status", "probe", "wait", "inject"] {
        assert!(main.contains(sub), "{sub} listed: {main}");
    }
    let (code, status) = page(&["status"]);
    assert_eq!(code, Some(0));
    assert!(
        status.contains(".TH healthproxy\\-status 1") || status.contains(".TH healthproxy-status 1"),
        "{status}"
    );
    assert!(status.contains("\\-\\-json"), "{status}");
    let (code, _) = page(&["nosuch"]);
    assert_eq!(code, Some(2));
}
