use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn minimal_check_gets_kubelet_defaults() {
    let c = Config::from_toml_str(
        "[[check]]\nname = \"web\"\nprobes = [\"readiness\"]\ntcp = { port = 8080 }\n",
        "t.toml",
        &no_env,
    )
    .unwrap();
    assert_eq!(c.checks[0].timing, Timing::default());
}
