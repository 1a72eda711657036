//! The resilient agent: a question-answering agent whose language model,
//! quality assessment and external lookup each sit behind a
//! `#[circuit_breaker]` method (see `examples/support/agent.rs`).
//!
//! ```text
//! cargo run --example agent                 # interactive on a terminal
//! printf 'What is AI?\n/status\n' | cargo run --example agent
//! cargo run --example agent -- --demo       # a scripted failure and recovery
//! cargo run --example agent -- --dashboard 127.0.0.1:8080   # and a live page
//! ```
//!
//! With `OPENAI_API_KEY` set (in the environment or `.env`), questions go to
//! the real endpoint (`OPENAI_BASE_URL`, `OPENAI_MODEL`); without it, to the
//! simulated model. The demo always uses the simulated model.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use breaker_examples::agent::{Agent, Backend, LLM_BREAKER};
use breaker_examples::repl::{Flow, HELP, Session, Style};
use breaker_runtime::dashboard::Dashboard;
use rustyline::error::ReadlineError;

const USAGE: &str = "\
usage: agent [--demo] [--dashboard ADDR]

  (no arguments)  read questions and commands from the terminal, or from
                  standard input when it is not a terminal, until the end
  --demo          run a scripted scenario: healthy, failing, open,
                  recovering through half-open, closed (about 7 s)
  --dashboard ADDR  serve a live page of the breakers, with /metrics,
                  /status.json and /events, on ADDR (127.0.0.1:8080; a
                  loopback address, port 0 for any free port) while the
                  agent runs

environment: OPENAI_API_KEY (also read from .env), OPENAI_BASE_URL,
             OPENAI_MODEL, NO_COLOR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut demo = false;
    let mut dashboard: Option<SocketAddr> = None;
    let mut args = args.iter().map(String::as_str);
    while let Some(arg) = args.next() {
        match arg {
            "--demo" if !demo => demo = true,
            "--dashboard" if dashboard.is_none() => match args.next().map(str::parse) {
                Some(Ok(addr)) => dashboard = Some(addr),
                _ => {
                    eprintln!("agent: --dashboard needs an address such as 127.0.0.1:8080");
                    return ExitCode::from(2);
                }
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    // Served on the runtime's workers until `main` returns: in piped mode,
    // until the end of input.
    let _dashboard = match dashboard.map(|addr| runtime.block_on(Dashboard::new().serve(addr))) {
        None => None,
        Some(Ok(running)) => {
            eprintln!("dashboard: http://{}/", running.local_addr());
            Some(running)
        }
        Some(Err(error)) => {
            eprintln!("agent: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = if demo {
        run_demo(&runtime)
    } else if std::io::stdin().is_terminal() {
        run_interactive(&runtime)
    } else {
        run_piped(&runtime)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agent: {error}");
            ExitCode::FAILURE
        }
    }
}

fn stdout_style() -> Style {
    Style::detect(std::io::stdout().is_terminal())
}

/// A terminal: a line editor with history.
fn run_interactive(runtime: &tokio::runtime::Runtime) -> Result<(), Box<dyn std::error::Error>> {
    let agent = Agent::from_env();
    let session = Session::new(&agent, stdout_style());
    println!("Resilient agent, answering with {}.", agent.backend());
    println!("Ask a question, or type /help. Ctrl-D leaves.");
    let mut editor = rustyline::DefaultEditor::new()?;
    loop {
        let line = match editor.readline("you> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                println!("(type /quit or press Ctrl-D to leave)");
                continue;
            }
            Err(ReadlineError::Eof) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if !line.trim().is_empty() {
            // A history that refuses an entry is no reason to stop.
            let _ = editor.add_history_entry(line.as_str());
        }
        let mut out = String::new();
        let flow = runtime.block_on(session.run_line(&line, &mut out));
        print!("{out}");
        if flow == Flow::Quit {
            return Ok(());
        }
    }
}

/// Not a terminal: every line as if typed, echoed, until the end of input.
fn run_piped(runtime: &tokio::runtime::Runtime) -> Result<(), Box<dyn std::error::Error>> {
    let agent = Agent::from_env();
    let session = Session::new(&agent, stdout_style());
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "Resilient agent, answering with {}.",
        agent.backend()
    )?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut out = String::new();
        let flow = runtime.block_on(session.run_line(&line, &mut out));
        writeln!(stdout, "> {line}")?;
        write!(stdout, "{out}")?;
        stdout.flush()?;
        if flow == Flow::Quit {
            break;
        }
    }
    Ok(())
}

/// The scripted scenario, on the simulated model.
fn run_demo(runtime: &tokio::runtime::Runtime) -> Result<(), Box<dyn std::error::Error>> {
    let agent = Agent::with_backend(Backend::Simulated);
    let session = Session::new(&agent, stdout_style());
    let run = |lines: &[&str]| -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            let mut out = String::new();
            runtime.block_on(session.run_line(line, &mut out));
            writeln!(stdout, "> {line}")?;
            write!(stdout, "{out}")?;
            stdout.flush()?;
        }
        Ok(())
    };
    let step = |title: &str| println!("\n=== {title} ===");
    let wait = |why: &str, how_long: Duration| {
        println!("(waiting {how_long:?}: {why})");
        std::thread::sleep(how_long);
    };

    println!("Resilient agent demo, on the simulated model.");
    step("1. Healthy: the model answers");
    run(&["What is a circuit breaker?", "What is machine learning?"])?;
    // Registered by the first question, with any run-time overrides.
    let config = breaker_runtime::registry()
        .get_family(LLM_BREAKER)
        .map(|llm| llm.config().clone())
        .ok_or("the llm breaker is registered by the first question")?;
    let recovery = config.recovery_timeout;
    println!(
        "(The llm breaker opens after {} failures and probes again after {recovery:?}.)",
        config.failure_threshold
    );

    step("2. The model fails: every call errors, fallbacks answer, the circuit opens");
    run(&[
        "/fail llm 1.0",
        "What is a circuit breaker?",
        "What is AI?",
        "Explain rate limiting",
    ])?;

    step("3. Circuit open: fallbacks are served at once, the model is not called");
    run(&[
        "What is machine learning?",
        "How tall is Mont Blanc?",
        "/status",
    ])?;

    step("4. The model recovers: half-open probes, then closed");
    run(&["/heal"])?;
    wait(
        "the recovery timeout",
        recovery + Duration::from_millis(100),
    );
    run(&["What is AI?", "What is AI?"])?;

    step("5. Rate limited: a 429 with Retry-After: 3 opens the circuit for 3 s");
    run(&["/rate-limit llm 3", "What is AI?", "/heal", "What is AI?"])?;
    wait("the Retry-After", Duration::from_millis(3100));
    run(&["What is AI?", "What is AI?"])?;

    step("6. A hanging service: the caller is released at its 1 s deadline");
    run(&["/hang external_api", "What is a circuit breaker?", "/heal"])?;

    step("7. Poor answers count as failures of the model");
    run(&["/low-quality", "Tell me about circuit breakers", "/heal"])?;

    step("8. A breaker per model: an outage of sim-a leaves sim-b's circuit closed");
    run(&[
        "/fail llm[sim-a] 1.0",
        "What is AI?",
        "Explain rate limiting",
        "What is machine learning?",
        "/model sim-b",
        "What is AI?",
        "/status",
        "/heal",
        "/model sim-a",
    ])?;

    step("9. Final status");
    run(&["/status"])?;
    println!("\nTry it yourself: cargo run --example agent\n{HELP}");
    Ok(())
}
