//! Helpers shared by the tests that run the agent example or scrape its
//! dashboard. Each test binary uses only some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `<target>/<profile>` of the running test binary, which sits in
/// `<target>/<profile>/deps`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary sits in <target>/<profile>/deps")
        .to_path_buf()
}

/// Where the agent example is built in `profile_dir`.
pub fn agent_path(profile_dir: &Path) -> PathBuf {
    profile_dir
        .join("examples")
        .join(format!("agent{}", std::env::consts::EXE_SUFFIX))
}

/// Builds the agent example with `features`, by the cargo that runs this
/// test, into the same target directory and profile as `profile_dir`.
pub fn build_agent(profile_dir: &Path, features: &[&str]) {
    let target_dir = profile_dir.parent().expect("the profile dir has a parent");
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "--example", "agent"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir);
    if !features.is_empty() {
        build.arg("--features").arg(features.join(","));
    }
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building the agent example failed");
}

/// A GET over plain HTTP/1.1 to `addr` (a dashboard): the body of a 200.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the dashboard listens");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// `promtool check metrics` passes `exposition`; skipped outside CI when
/// promtool is missing.
pub fn promtool_accepts(exposition: &str) {
    use std::io::Write;
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the promtool check: .ci/run installs the prometheus package"
        );
        eprintln!("SKIPPED the promtool check: promtool is not installed");
        return;
    };
    promtool
        .stdin
        .take()
        .expect("piped")
        .write_all(exposition.as_bytes())
        .expect("promtool reads");
    let checked = promtool.wait_with_output().expect("promtool finishes");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
