//! The agent's command language, shared by the interactive prompt, piped
//! input and the scripted demo: a plain line is a question, a line starting
//! with `/` is a command ([`Command`]). A [`Session`] runs one line at a time
//! and writes what it has to say into a `String`, so every mode prints the
//! same thing.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use breaker_runtime::{EventKind, Subscription, registry, subscribe};
use parking_lot::Mutex;

use crate::agent::{Agent, AgentResponse, BREAKERS, LLM_BREAKER, describe_reason, llm_breaker_of};

/// The help text of `/help`.
pub const HELP: &str = "\
Type a question, or a command:
  /status                       the breakers as a table
  /json                         the breakers' status as JSON
  /model [name]                 ask another model (each has its own llm[<model>] breaker)
  /fail <breaker> <rate>        make a share of calls fail (0.0 to 1.0)
  /slow <breaker> <seconds>     add latency to every call
  /rate-limit <breaker> [secs]  answer 429, with Retry-After when secs is given
  /hang <breaker>               hang every call, past the breaker's timeout
  /low-quality                  make the model's answers poor
  /heal [breaker]               clear injected faults (all, or one breaker's)
  /force-open <breaker>         force a circuit open until /reset
  /reset <breaker>              close a circuit and clear its counts
  /help                         this text
  /quit                         leave (so does end of input)
Breakers: external_api, llm, quality; llm[<model>] names one model's.";

/// One parsed input line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A question for the agent.
    Ask(String),
    /// A blank line.
    Nothing,
    /// `/status`.
    Status,
    /// `/json`.
    Json,
    /// `/model [name]`: switch models, or say which is asked.
    Model {
        /// The model to ask from now on; `None` to show the current one.
        model: Option<String>,
    },
    /// `/fail <breaker> <rate>`.
    Fail {
        /// The breaker (and service) to fail.
        breaker: String,
        /// The share of calls that fail, 0.0 to 1.0.
        rate: f64,
    },
    /// `/slow <breaker> <seconds>`.
    Slow {
        /// The breaker (and service) to slow down.
        breaker: String,
        /// Added to every call.
        latency: Duration,
    },
    /// `/rate-limit <breaker> [seconds]`.
    RateLimit {
        /// The breaker (and service) to rate limit.
        breaker: String,
        /// The `Retry-After` the service sends.
        retry_after: Option<Duration>,
    },
    /// `/hang <breaker>`.
    Hang {
        /// The breaker (and service) to hang.
        breaker: String,
    },
    /// `/low-quality`.
    LowQuality,
    /// `/heal [breaker]`.
    Heal {
        /// One breaker's service, or every service.
        breaker: Option<String>,
    },
    /// `/force-open <breaker>`.
    ForceOpen {
        /// The breaker.
        breaker: String,
    },
    /// `/reset <breaker>`.
    Reset {
        /// The breaker.
        breaker: String,
    },
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

impl Command {
    /// Parses one line.
    ///
    /// # Errors
    /// A message for the user: an unknown command, a missing or bad
    /// argument, or a breaker the agent does not have.
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim();
        let Some(command) = line.strip_prefix('/') else {
            return Ok(if line.is_empty() {
                Self::Nothing
            } else {
                Self::Ask(line.to_owned())
            });
        };
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let usage = |text: &str| Err(format!("usage: {text}"));
        let parsed = match (name, args.as_slice()) {
            ("status", []) => Self::Status,
            ("json", []) => Self::Json,
            ("help" | "?", []) => Self::Help,
            ("quit" | "exit" | "q", []) => Self::Quit,
            ("model", []) => Self::Model { model: None },
            ("model", [model]) => Self::Model {
                model: Some((*model).to_owned()),
            },
            ("model", _) => return usage("/model [name]"),
            ("fail", [breaker, rate]) => {
                let rate: f64 = rate
                    .parse()
                    .ok()
                    .filter(|rate| (0.0..=1.0).contains(rate))
                    .ok_or_else(|| format!("`{rate}` is not a failure rate between 0 and 1"))?;
                Self::Fail {
                    breaker: known(breaker)?,
                    rate,
                }
            }
            ("fail", _) => return usage("/fail <breaker> <rate 0..1>"),
            ("slow", [breaker, secs]) => Self::Slow {
                breaker: known(breaker)?,
                latency: seconds(secs)?,
            },
            ("slow", _) => return usage("/slow <breaker> <seconds>"),
            ("rate-limit", [breaker]) => Self::RateLimit {
                breaker: known(breaker)?,
                retry_after: None,
            },
            ("rate-limit", [breaker, secs]) => Self::RateLimit {
                breaker: known(breaker)?,
                retry_after: Some(seconds(secs)?),
            },
            ("rate-limit", _) => return usage("/rate-limit <breaker> [retry-after seconds]"),
            ("hang", [breaker]) => Self::Hang {
                breaker: known(breaker)?,
            },
            ("hang", _) => return usage("/hang <breaker>"),
            ("low-quality", []) => Self::LowQuality,
            ("low-quality", [breaker]) if *breaker == LLM_BREAKER => Self::LowQuality,
            ("low-quality", _) => return usage("/low-quality (it applies to the model)"),
            ("heal", []) => Self::Heal { breaker: None },
            ("heal", [breaker]) => Self::Heal {
                breaker: Some(known(breaker)?),
            },
            ("heal", _) => return usage("/heal [breaker]"),
            ("force-open", [breaker]) => Self::ForceOpen {
                breaker: (*breaker).to_owned(),
            },
            ("force-open", _) => return usage("/force-open <breaker>"),
            ("reset", [breaker]) => Self::Reset {
                breaker: (*breaker).to_owned(),
            },
            ("reset", _) => return usage("/reset <breaker>"),
            ("status" | "json" | "help" | "quit" | "exit" | "q", _) => {
                return Err(format!("`/{name}` takes no such arguments; see /help"));
            }
            _ => return Err(format!("unknown command `/{name}`; see /help")),
        };
        Ok(parsed)
    }
}

fn known(breaker: &str) -> Result<String, String> {
    let one_model = breaker
        .strip_prefix(LLM_BREAKER)
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|model| !model.is_empty());
    if BREAKERS.contains(&breaker) || one_model {
        Ok(breaker.to_owned())
    } else {
        Err(format!(
            "no service behind a breaker named `{breaker}`; the agent's are {}, and llm[<model>] for one model",
            BREAKERS.join(", ")
        ))
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds"))
}

/// Whether to paint states in colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

impl Style {
    /// No colour.
    pub const PLAIN: Self = Self { color: false };

    /// Colour only on a terminal, and not when `NO_COLOR` is set to anything
    /// non-empty (<https://no-color.org>) or `TERM` is `dumb`.
    pub fn detect(is_terminal: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|term| term == "dumb");
        Self {
            color: is_terminal && !no_color && !dumb,
        }
    }

    /// Whether this style paints.
    pub fn is_color(self) -> bool {
        self.color
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// `state` in its colour: green closed, yellow half-open, red open.
    pub fn state(self, state: impl std::fmt::Display) -> String {
        let text = state.to_string();
        let code = match text.as_str() {
            "closed" => "32",
            "half_open" => "33",
            "open" | "forced_open" => "31",
            _ => "36",
        };
        self.paint(code, &text)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }

    fn warn(self, text: &str) -> String {
        self.paint("33", text)
    }
}

/// What to do after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// Stop.
    Quit,
}

/// Runs lines against one agent and reports the circuits' transitions that
/// each line caused.
#[derive(Debug)]
pub struct Session<'a> {
    agent: &'a Agent,
    style: Style,
    transitions: Arc<Mutex<Vec<String>>>,
    subscription: Option<Subscription>,
}

impl<'a> Session<'a> {
    /// A session on `agent`, printing in `style`.
    pub fn new(agent: &'a Agent, style: Style) -> Self {
        let transitions = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&transitions);
        let subscription = subscribe(move |event| {
            let EventKind::Transition { from, to, cause } = &event.kind else {
                return;
            };
            if !BREAKERS.contains(&event.breaker) && !event.breaker.starts_with("llm[") {
                return;
            }
            // The cause's serialised name is its snake-case variant.
            let cause = serde_json::to_value(cause)
                .ok()
                .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                .unwrap_or_default();
            sink.lock().push(format!(
                "{}: {} -> {} ({cause})",
                event.breaker,
                from.as_str(),
                to.as_str()
            ));
        });
        Self {
            agent,
            style,
            transitions,
            subscription: Some(subscription),
        }
    }

    /// The agent.
    pub fn agent(&self) -> &Agent {
        self.agent
    }

    /// Runs one line, appending its output (ending in a newline) to `out`.
    pub async fn run_line(&self, line: &str, out: &mut String) -> Flow {
        let flow = match Command::parse(line) {
            Ok(command) => self.run(command, out).await,
            Err(message) => {
                let _ = writeln!(out, "{}", self.style.warn(&format!("error: {message}")));
                Flow::Continue
            }
        };
        self.drain_transitions(out);
        flow
    }

    /// Runs one command, appending its output to `out`.
    pub async fn run(&self, command: Command, out: &mut String) -> Flow {
        let faults = self.agent.faults();
        let note = |out: &mut String, text: String| {
            let _ = writeln!(out, "{}", self.style.dim(&text));
        };
        match command {
            Command::Nothing => {}
            Command::Ask(question) => self.ask(&question, out).await,
            Command::Status => out.push_str(&self.status_table()),
            Command::Json => {
                let json = serde_json::to_string_pretty(&registry().status())
                    .expect("the status serialises");
                let _ = writeln!(out, "{json}");
            }
            Command::Model { model: None } => {
                let model = self.agent.model();
                note(
                    out,
                    format!("model: {model} (breaker {})", llm_breaker_of(&model)),
                );
            }
            Command::Model { model: Some(model) } => match self.agent.set_model(&model) {
                Ok(()) => note(
                    out,
                    format!("model: {model} (breaker {})", llm_breaker_of(&model)),
                ),
                Err(message) => {
                    let _ = writeln!(out, "{}", self.style.warn(&format!("error: {message}")));
                }
            },
            Command::Fail { breaker, rate } => {
                faults.set_failure_rate(&breaker, rate);
                note(
                    out,
                    format!("{breaker}: {:.0}% of calls now fail", rate * 100.0),
                );
            }
            Command::Slow { breaker, latency } => {
                faults.set_latency(&breaker, latency);
                note(
                    out,
                    format!("{breaker}: every call now takes {latency:?} more"),
                );
            }
            Command::RateLimit {
                breaker,
                retry_after,
            } => {
                faults.rate_limit(&breaker, retry_after);
                let after = retry_after.map_or(String::new(), |d| {
                    format!(" with Retry-After: {}", d.as_secs_f64())
                });
                note(
                    out,
                    format!("{breaker}: every call is now answered 429{after}"),
                );
            }
            Command::Hang { breaker } => {
                faults.hang(&breaker);
                note(out, format!("{breaker}: every call now hangs"));
            }
            Command::LowQuality => {
                faults.low_quality(LLM_BREAKER);
                note(out, "llm: answers are now poor".to_owned());
            }
            Command::Heal {
                breaker: Some(breaker),
            } => {
                faults.heal_service(&breaker);
                note(out, format!("{breaker}: faults cleared"));
            }
            Command::Heal { breaker: None } => {
                faults.heal();
                note(out, "all faults cleared".to_owned());
            }
            Command::ForceOpen { breaker } => match registry().get(&breaker) {
                Some(b) => {
                    b.force_open();
                    note(out, format!("{breaker}: forced open until /reset"));
                }
                None => unknown_breaker(out, &breaker, self.style),
            },
            Command::Reset { breaker } => match registry().get(&breaker) {
                Some(b) => {
                    b.reset();
                    note(out, format!("{breaker}: reset to closed"));
                }
                None => unknown_breaker(out, &breaker, self.style),
            },
            Command::Help => {
                let _ = writeln!(out, "{HELP}");
            }
            Command::Quit => return Flow::Quit,
        }
        Flow::Continue
    }

    /// Asks the agent `question` and describes the response.
    pub async fn ask(&self, question: &str, out: &mut String) {
        match self.agent.query(question).await {
            Ok(response) => out.push_str(&self.describe(&response)),
            Err(error) => {
                let _ = writeln!(out, "{}", self.style.warn(&format!("error: {error}")));
            }
        }
    }

    /// The answer, then one line with `used_fallback`, the breaker and its
    /// state, then any degraded services.
    pub fn describe(&self, response: &AgentResponse) -> String {
        let style = self.style;
        let mut text = format!("{}\n", response.content);
        let used_fallback = format!("used_fallback={}", response.used_fallback);
        let used_fallback = if response.used_fallback {
            style.warn(&used_fallback)
        } else {
            used_fallback
        };
        let _ = write!(
            text,
            "  {used_fallback}  breaker={}  state={}",
            response.breaker,
            style.state(response.circuit_state)
        );
        if let Some(quality) = response.quality {
            let _ = write!(text, "  quality={quality:.2}");
        }
        let _ = writeln!(text, "  took={}", format_elapsed(response.elapsed));
        for degraded in &response.degraded {
            let _ = writeln!(
                text,
                "  {}",
                style.warn(&format!(
                    "fallback of {}: {}",
                    degraded.breaker,
                    describe_reason(degraded.reason)
                ))
            );
        }
        text
    }

    /// `registry().status()` as a table, states in colour.
    pub fn status_table(&self) -> String {
        let table = registry().status().to_string();
        if !self.style.is_color() {
            return table;
        }
        let mut lines = table.lines();
        let Some(header) = lines.next() else {
            return table;
        };
        let column = header.find("STATE");
        let mut painted = format!("{header}\n");
        for line in lines {
            let cell = column.and_then(|start| {
                let rest = line.get(start..)?;
                let end = rest.find(' ').unwrap_or(rest.len());
                Some((start, &rest[..end]))
            });
            match cell {
                Some((start, state)) if !state.is_empty() => {
                    let _ = writeln!(
                        painted,
                        "{}{}{}",
                        &line[..start],
                        self.style.state(state),
                        &line[start + state.len()..]
                    );
                }
                _ => {
                    let _ = writeln!(painted, "{line}");
                }
            }
        }
        painted
    }

    fn drain_transitions(&self, out: &mut String) {
        for transition in self.transitions.lock().drain(..) {
            let _ = writeln!(out, "  * {}", self.style.warn(&transition));
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            subscription.unsubscribe();
        }
    }
}

fn unknown_breaker(out: &mut String, breaker: &str, style: Style) {
    let names = registry().names().join(", ");
    let _ = writeln!(
        out,
        "{}",
        style.warn(&format!(
            "error: no breaker named `{breaker}`; registered: {names}"
        ))
    );
}

fn format_elapsed(elapsed: Duration) -> String {
    if elapsed < Duration::from_millis(10) {
        format!("{:.2}ms", elapsed.as_secs_f64() * 1e3)
    } else {
        format!("{:.0}ms", elapsed.as_secs_f64() * 1e3)
    }
}
