//! Helpers shared by the tests that scrape the agent's dashboard.

use std::process::{Command, Stdio};

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
