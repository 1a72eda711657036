//! Run-time overrides of a breaker's configuration: environment variables
//! and a TOML file, applied over the attribute's (or the code's) values
//! when a breaker is registered by name.
//!
//! Implementation notes:
//!
//! * Every source is parsed once, into a [`ConfigOverrides`]: one table of
//!   settings per breaker name and per source, and the problems found, each
//!   with the breakers it concerns (its [`Scope`]). Values are checked
//!   field by field while parsing, with [`CircuitBreakerConfig::validate`]'s
//!   own ranges; checks between fields (`minimum_calls` against
//!   `sliding_window_size`, the backoff cap against `recovery_timeout`) need
//!   the breaker's base configuration and run in [`ConfigOverrides::effective`].
//! * Precedence is by source first, then by name: the environment beats the
//!   file, the file beats the code, and within one source a breaker's own
//!   setting beats the `default` one. So `BREAKER_DEFAULT__TIMEOUT_DURATION`
//!   beats `timeout_duration` in the file's `[llm]` table: an operator's
//!   variable always wins over a file.
//! * A breaker whose overrides have any problem gets none of them: its
//!   attribute's values, validated at compile time, stay in force, and the
//!   registry reports the problems (event and status). Applying the good
//!   half of a broken override set could produce a combination nobody
//!   wrote.
//! * Nothing here reads the process's environment except
//!   [`ConfigOverrides::from_process`]; everything else takes a snapshot,
//!   so tests never touch the process-global environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::config::{Backoff, CircuitBreakerConfig, ConfigError};

use breaker_grammar as grammar;

/// The variable that names the TOML file.
pub const CONFIG_VAR: &str = "BREAKER_CONFIG";

/// Variables starting with `BREAKER_` that are not breaker settings and are
/// never reported as unknown: the file's name, and the Redis URL a
/// distributed store will read.
pub const RESERVED_VARS: &[&str] = &[CONFIG_VAR, "BREAKER_REDIS_URL"];

/// The prefix of every variable.
const PREFIX: &str = "BREAKER_";

/// The name of the table (and the variables' `<NAME>`) that applies to every
/// breaker.
const DEFAULT_TABLE: &str = "default";

/// Every key an override may set: [`CircuitBreakerConfig`]'s fields, with
/// [`Backoff`] written flat as in the attribute.
pub const KEYS: &[&str] = &[
    "failure_threshold",
    "recovery_timeout",
    "success_threshold",
    "timeout_duration",
    "max_deadline_workers",
    "quality_threshold",
    "rate_limit_per_minute",
    "rate_limit_burst",
    "sliding_window_size",
    "half_open_max_calls",
    "failure_rate_threshold",
    "minimum_calls",
    "backoff_multiplier",
    "max_open_duration",
    "max_retry_after",
];

/// What a key holds, which decides how its text is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Count,
    OptionalCount,
    Duration,
    Fraction,
    OptionalFraction,
    Multiplier,
}

impl Kind {
    fn of(key: &str) -> Self {
        match key {
            "recovery_timeout" | "timeout_duration" | "max_open_duration" | "max_retry_after" => {
                Self::Duration
            }
            "quality_threshold" => Self::Fraction,
            "failure_rate_threshold" => Self::OptionalFraction,
            "backoff_multiplier" => Self::Multiplier,
            "rate_limit_per_minute" | "rate_limit_burst" => Self::OptionalCount,
            _ => Self::Count,
        }
    }

    /// What a value of this kind must look like, for messages.
    fn expected(self) -> &'static str {
        match self {
            Self::Count => "a whole number of at least 1",
            Self::OptionalCount => "a whole number of at least 1, or \"none\"",
            Self::Duration => {
                "a duration with a unit (`ns`, `us`, `ms`, `s`, `m` or `h`), like \"500ms\" or \"2m\", or a number of seconds"
            }
            Self::Fraction => "a number between 0 and 1",
            Self::OptionalFraction => "a number greater than 0 and at most 1, or \"none\"",
            Self::Multiplier => "a finite number of at least 1, or \"none\"",
        }
    }
}

/// A setting's value, read but not yet applied.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Count(u32),
    Duration(Duration),
    Number(f64),
    /// `"none"`: clears an optional setting.
    Unset,
}

/// A value as written: a TOML number, or text (every variable, and TOML
/// strings).
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Integer(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(n) => write!(f, "{n}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Text(text) => write!(f, "{text:?}"),
        }
    }
}

impl Raw {
    /// Text as a variable holds it: a number if it reads as one.
    fn from_text(text: &str) -> Self {
        let trimmed = text.trim();
        if let Ok(n) = trimmed.replace('_', "").parse::<i64>() {
            Self::Integer(n)
        } else if let Ok(x) = trimmed.parse::<f64>() {
            Self::Float(x)
        } else {
            Self::Text(trimmed.to_owned())
        }
    }

    /// This value as `kind`, or `None` if it is not one.
    fn read(&self, kind: Kind) -> Option<Value> {
        if let Self::Text(text) = self {
            if text.eq_ignore_ascii_case("none")
                && matches!(
                    kind,
                    Kind::OptionalCount | Kind::OptionalFraction | Kind::Multiplier
                )
            {
                return Some(Value::Unset);
            }
        }
        match (kind, self) {
            (Kind::Count | Kind::OptionalCount, Self::Integer(n)) => {
                u32::try_from(*n).ok().map(Value::Count)
            }
            (Kind::Count | Kind::OptionalCount, Self::Text(text)) => match Self::from_text(text) {
                Self::Integer(n) => u32::try_from(n).ok().map(Value::Count),
                _ => None,
            },
            (Kind::Count | Kind::OptionalCount, Self::Float(_)) => None,
            (Kind::Duration, _) => {
                let secs = match self {
                    Self::Integer(n) => *n as f64,
                    Self::Float(x) => *x,
                    Self::Text(text) => grammar::parse_duration(text)?,
                };
                if secs < 0.0 {
                    return None;
                }
                Duration::try_from_secs_f64(secs).ok().map(Value::Duration)
            }
            (_, Self::Integer(n)) => Some(Value::Number(*n as f64)),
            (_, Self::Float(x)) => Some(Value::Number(*x)),
            (_, Self::Text(text)) => match Self::from_text(text) {
                Self::Text(_) => None,
                number => number.read(kind),
            },
        }
    }
}

/// Where an effective configuration value came from.
///
/// ```
/// use breaker_runtime::ValueSource;
///
/// let file = ValueSource::File { path: "breaker.toml".into(), line: 3 };
/// assert_eq!(file.to_string(), "breaker.toml:3");
/// let env = ValueSource::Env { var: "BREAKER_LLM__FAILURE_THRESHOLD".into() };
/// assert_eq!(env.to_string(), "BREAKER_LLM__FAILURE_THRESHOLD");
/// assert_eq!(ValueSource::Code.to_string(), "code");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ValueSource {
    /// The attribute's literals, or the configuration passed in code.
    Code,
    /// A line of the TOML file.
    File {
        /// The file, as named (by `BREAKER_CONFIG` or the caller).
        path: String,
        /// Its line, from 1.
        line: usize,
    },
    /// An environment variable.
    Env {
        /// The variable's name.
        var: String,
    },
}

impl fmt::Display for ValueSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code => f.write_str("code"),
            Self::File { path, line } => write!(f, "{path}:{line}"),
            Self::Env { var } => f.write_str(var),
        }
    }
}

/// Where each value of a breaker's configuration came from: [`ValueSource::Code`]
/// unless a run-time source overrode it. Serialises as a map from every key
/// in [`KEYS`] to its source.
///
/// ```
/// use breaker_runtime::{ConfigSources, ValueSource};
///
/// let sources = ConfigSources::default();
/// assert_eq!(sources.get("failure_threshold"), &ValueSource::Code);
/// assert!(sources.is_empty(), "nothing overridden");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSources {
    overridden: BTreeMap<&'static str, ValueSource>,
}

impl ConfigSources {
    /// Where `key`'s value came from (a key that is not in [`KEYS`] is
    /// [`ValueSource::Code`] too).
    pub fn get(&self, key: &str) -> &ValueSource {
        self.overridden.get(key).unwrap_or(&ValueSource::Code)
    }

    /// The overridden keys and their sources, in key order.
    pub fn overridden(&self) -> impl Iterator<Item = (&'static str, &ValueSource)> {
        self.overridden.iter().map(|(key, source)| (*key, source))
    }

    /// Whether no value was overridden.
    pub fn is_empty(&self) -> bool {
        self.overridden.is_empty()
    }
}

impl Serialize for ConfigSources {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(KEYS.len()))?;
        for key in KEYS {
            map.serialize_entry(key, self.get(key))?;
        }
        map.end()
    }
}

/// One problem in the run-time configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// The file named by `BREAKER_CONFIG` (or given to
    /// [`Registry::load_config_file`](crate::Registry::load_config_file))
    /// could not be read.
    #[error("cannot read the breaker configuration file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML.
    #[error("{path}:{line}: not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The line of the mistake, from 1.
        line: usize,
        /// The parser's message.
        reason: String,
    },
    /// A top-level key of the file holds a value, not a table.
    #[error(
        "`{name}` at {at} is not a table: put each breaker's settings under a `[{name}]` header"
    )]
    NotATable {
        /// The key.
        name: String,
        /// Where.
        at: ValueSource,
    },
    /// A key that no breaker has.
    #[error("unknown key `{key}` in {}{}", place(.table, .at), suggest(.suggestion))]
    UnknownKey {
        /// The key, as written.
        key: String,
        /// The table (`[llm]`) or the variable it was found in.
        table: String,
        /// Where.
        at: ValueSource,
        /// The key most likely meant, written as it would be in this source.
        suggestion: Option<String>,
    },
    /// A variable starting with `BREAKER_` that is neither a setting
    /// (`BREAKER_<NAME>__<FIELD>`) nor reserved ([`RESERVED_VARS`]).
    #[error(
        "unknown variable {var}: a breaker setting is written BREAKER_<NAME>__<FIELD>{}",
        suggest(.suggestion)
    )]
    UnknownVariable {
        /// The variable.
        var: String,
        /// The variable most likely meant.
        suggestion: Option<String>,
    },
    /// A variable whose value is not Unicode.
    #[error("{var} is not valid Unicode")]
    NotUnicode {
        /// The variable.
        var: String,
    },
    /// A value that cannot be read as its key's kind.
    #[error("{at}: `{key}` is {value}, but it must be {expected}")]
    Malformed {
        /// The key.
        key: &'static str,
        /// The value, as written.
        value: String,
        /// What it must look like.
        expected: &'static str,
        /// Where.
        at: ValueSource,
    },
    /// A value outside its allowed range, alone or with the breaker's other
    /// values; the range is [`ConfigError`]'s.
    #[error("{}: {error}", join(.sources))]
    OutOfRange {
        /// The refusal, naming the field and its range.
        error: ConfigError,
        /// Where the values involved were set (the overridden ones).
        sources: Vec<ValueSource>,
    },
    /// Half of a backoff: `backoff_multiplier` without `max_open_duration`
    /// or the other way round, on a breaker with no backoff to complete it.
    #[error("{at}: `{key}` needs `{missing}` too (this breaker has no backoff to take it from)")]
    HalfABackoff {
        /// The key given.
        key: &'static str,
        /// The key missing.
        missing: &'static str,
        /// Where the given key was set.
        at: ValueSource,
    },
}

fn suggest(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// `[llm] at breaker.toml:3`, or just the variable.
fn place(table: &str, at: &ValueSource) -> String {
    match at {
        ValueSource::Env { .. } => at.to_string(),
        _ => format!("{table} at {at}"),
    }
}

fn join(sources: &[ValueSource]) -> String {
    sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every problem the run-time configuration has, for one breaker (listed in
/// its [`BreakerStatus`](crate::BreakerStatus)) or for all of them (from
/// [`Registry::load_config`](crate::Registry::load_config)). Displays one
/// problem per line.
///
/// ```
/// use breaker_runtime::{OverrideError, Registry};
///
/// let registry = Registry::new();
/// let toml = "[llm]\nfailure_threshold = 0\nrecovery_timout = \"2m\"\n";
/// # if std::env::vars().all(|(k, _)| !k.starts_with("BREAKER_")) {
/// let errors = registry.load_config_toml("breaker.toml", toml).unwrap_err();
/// assert!(matches!(
///     errors.errors(),
///     [OverrideError::OutOfRange { .. }, OverrideError::UnknownKey { .. }]
/// ));
/// assert_eq!(
///     errors.to_string(),
///     "breaker.toml:2: `failure_threshold` is 0, but it must be at least 1\n\
///      unknown key `recovery_timout` in [llm] at breaker.toml:3; did you mean `recovery_timeout`?"
/// );
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct OverrideErrors(pub Vec<OverrideError>);

impl OverrideErrors {
    /// The problems, in the order found.
    pub fn errors(&self) -> &[OverrideError] {
        &self.0
    }
}

/// Which breakers a problem concerns.
#[derive(Debug, Clone, PartialEq)]
enum Scope {
    All,
    /// A variable that names no breaker and no field (`BREAKER_MODE`, a
    /// value that is not Unicode): reported, but no breaker's settings are
    /// held back for it, so one stray variable of the application's cannot
    /// undo every breaker's configuration.
    Stray,
    /// The file's table of this exact name.
    Table(String),
    /// Names whose variable form ([`env_name`]) is this.
    EnvName(String),
}

/// One setting and where it was written.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    value: Value,
    source: ValueSource,
}

type Settings = BTreeMap<&'static str, Setting>;

/// The parsed run-time configuration: the variables' and the file's
/// settings by breaker name, and every problem found.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ConfigOverrides {
    /// By exact name, `default` included.
    file: BTreeMap<String, Settings>,
    /// By [`env_name`], `DEFAULT` included.
    env: BTreeMap<String, Settings>,
    /// Every breaker name the file's tables or the variables name (not
    /// `default`), with where it was first written: by exact name for the
    /// file, by [`env_name`] for the variables.
    named: Vec<(Named, ValueSource)>,
    problems: Vec<(Scope, OverrideError)>,
}

/// A breaker name as an override source writes it.
#[derive(Debug, Clone, PartialEq)]
enum Named {
    Table(String),
    EnvName(String),
}

/// A breaker's name as its variables spell it: upper-cased, every character
/// other than an ASCII letter or digit turned into `_` (`llm[gpt-4o]` is
/// `LLM_GPT_4O_`).
pub(crate) fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl ConfigOverrides {
    /// The process's variables, and the file `BREAKER_CONFIG` names.
    pub(crate) fn from_process() -> Self {
        Self::from_env(std::env::vars_os(), |path| std::fs::read_to_string(path))
    }

    /// The variables of `vars` (a snapshot of an environment), and the
    /// file their `BREAKER_CONFIG` names, read with `read`.
    pub(crate) fn from_env(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        read: impl FnOnce(&Path) -> std::io::Result<String>,
    ) -> Self {
        let mut overrides = Self::default();
        let file = overrides.add_env(vars);
        if let Some(path) = file {
            match read(Path::new(&path)) {
                Ok(text) => overrides.add_file(&path, &text),
                Err(error) => overrides.push_unreadable(path, &error),
            }
        }
        overrides
    }

    /// The variables of `vars` and the TOML `text`, labelled `path` in
    /// messages; `BREAKER_CONFIG` is not read.
    pub(crate) fn from_env_and_toml(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        path: &str,
        text: &str,
    ) -> Self {
        let mut overrides = Self::default();
        overrides.add_env(vars);
        overrides.add_file(path, text);
        overrides
    }

    /// Records that the file at `path` could not be read.
    pub(crate) fn push_unreadable(&mut self, path: String, error: &std::io::Error) {
        self.problems.push((
            Scope::All,
            OverrideError::Unreadable {
                path,
                reason: error.to_string(),
            },
        ));
    }

    /// Every problem, whichever breakers it concerns.
    pub(crate) fn problems(&self) -> Vec<OverrideError> {
        self.problems.iter().map(|(_, e)| e.clone()).collect()
    }

    /// Reads the `BREAKER_` variables; returns `BREAKER_CONFIG`'s value.
    fn add_env(&mut self, vars: impl IntoIterator<Item = (OsString, OsString)>) -> Option<String> {
        let mut file = None;
        for (var, value) in vars {
            let Some(var) = var.to_str() else { continue };
            if !var.starts_with(PREFIX) {
                continue;
            }
            let Some(value) = value.to_str() else {
                self.problems.push((
                    Scope::Stray,
                    OverrideError::NotUnicode {
                        var: var.to_owned(),
                    },
                ));
                continue;
            };
            if var == CONFIG_VAR {
                file = Some(value.to_owned());
                continue;
            }
            if RESERVED_VARS.contains(&var) {
                continue;
            }
            self.add_var(var, value);
        }
        file
    }

    fn add_var(&mut self, var: &str, value: &str) {
        let rest = &var[PREFIX.len()..];
        let source = ValueSource::Env {
            var: var.to_owned(),
        };
        let Some((name, field)) = rest
            .rsplit_once("__")
            .filter(|(name, field)| !name.is_empty() && !field.is_empty())
        else {
            // `BREAKER_LLM_FAILURE_THRESHOLD`: the name and field run
            // together; suggest the double underscore.
            let lower = rest.to_ascii_lowercase();
            let suggestion = KEYS
                .iter()
                .filter(|key| lower.len() > key.len() + 1 && lower.ends_with(*key))
                .max_by_key(|key| key.len())
                .map(|key| {
                    let name = rest[..rest.len() - key.len()].trim_end_matches('_');
                    format!("{PREFIX}{name}__{}", key.to_ascii_uppercase())
                });
            self.problems.push((
                Scope::Stray,
                OverrideError::UnknownVariable {
                    var: var.to_owned(),
                    suggestion,
                },
            ));
            return;
        };
        let name = name.to_ascii_uppercase();
        let scope = if name == env_name(DEFAULT_TABLE) {
            Scope::All
        } else {
            let named = Named::EnvName(name.clone());
            if !self.named.iter().any(|(n, _)| *n == named) {
                self.named.push((named, source.clone()));
            }
            Scope::EnvName(name.clone())
        };
        let Some(key) = KEYS
            .iter()
            .find(|key| key.eq_ignore_ascii_case(field))
            .copied()
        else {
            let suggestion = grammar::nearest(field, KEYS)
                .map(|key| format!("{PREFIX}{name}__{}", key.to_ascii_uppercase()));
            self.problems.push((
                scope,
                OverrideError::UnknownKey {
                    key: field.to_owned(),
                    table: var.to_owned(),
                    at: source,
                    suggestion,
                },
            ));
            return;
        };
        match read_setting(key, &Raw::from_text(value), source) {
            Ok(setting) => {
                self.env.entry(name).or_default().insert(key, setting);
            }
            Err(error) => self.problems.push((scope, error)),
        }
    }

    /// Reads a TOML document labelled `path`.
    fn add_file(&mut self, path: &str, text: &str) {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let source_at = |offset: usize| ValueSource::File {
            path: path.to_owned(),
            line: line_of(offset),
        };
        let document = match toml::de::DeTable::parse(text) {
            Ok(document) => document.into_inner(),
            Err(error) => {
                self.problems.push((
                    Scope::All,
                    OverrideError::Syntax {
                        path: path.to_owned(),
                        line: error.span().map_or(1, |span| line_of(span.start)),
                        reason: error.message().trim().to_owned(),
                    },
                ));
                return;
            }
        };
        for (name, table) in document {
            let source = source_at(name.span().start);
            let name = name.into_inner().into_owned();
            let toml::de::DeValue::Table(table) = table.into_inner() else {
                self.problems
                    .push((Scope::All, OverrideError::NotATable { name, at: source }));
                continue;
            };
            let scope = if name == DEFAULT_TABLE {
                Scope::All
            } else {
                self.named
                    .push((Named::Table(name.clone()), source.clone()));
                Scope::Table(name.clone())
            };
            let header = format!("[{}]", toml_key(&name));
            for (key, value) in table {
                let source = source_at(key.span().start);
                let written = key.into_inner();
                let Some(key) = KEYS.iter().find(|k| **k == written).copied() else {
                    self.problems.push((
                        scope.clone(),
                        OverrideError::UnknownKey {
                            suggestion: grammar::nearest(&written, KEYS).map(str::to_owned),
                            key: written.into_owned(),
                            table: header.clone(),
                            at: source,
                        },
                    ));
                    continue;
                };
                let raw = match value.into_inner() {
                    toml::de::DeValue::Integer(n) => {
                        match i64::from_str_radix(n.as_str(), n.radix()) {
                            Ok(n) => Raw::Integer(n),
                            Err(_) => Raw::Text(n.to_string()),
                        }
                    }
                    toml::de::DeValue::Float(x) => match x.as_str().parse() {
                        Ok(x) => Raw::Float(x),
                        Err(_) => Raw::Text(x.to_string()),
                    },
                    toml::de::DeValue::String(text) => Raw::Text(text.into_owned()),
                    toml::de::DeValue::Boolean(b) => Raw::Text(b.to_string()),
                    _ => Raw::Text("a table, an array or a date".to_owned()),
                };
                match read_setting(key, &raw, source) {
                    Ok(setting) => {
                        self.file
                            .entry(name.clone())
                            .or_default()
                            .insert(key, setting);
                    }
                    Err(error) => self.problems.push((scope.clone(), error)),
                }
            }
        }
    }

    /// The breaker names the overrides write that match none of `names`,
    /// as messages (a likely typo in a name, or a breaker not used yet).
    pub(crate) fn unmatched(&self, names: &[&str]) -> Vec<String> {
        let spelled: Vec<String> = names.iter().map(|name| env_name(name)).collect();
        let stray = self
            .problems
            .iter()
            .filter(|(scope, _)| matches!(scope, Scope::Stray))
            .map(|(_, error)| error.to_string());
        stray
            .chain(self.named.iter().filter_map(|(named, source)| {
                let (written, matched, near) = match named {
                    Named::Table(table) => (
                        format!("[{}] at {source}", toml_key(table)),
                        names.contains(&table.as_str()),
                        grammar::nearest(table, names).map(str::to_owned),
                    ),
                    Named::EnvName(spelling) => {
                        // `nearest` compares in lower case.
                        let lower: Vec<String> =
                            spelled.iter().map(|s| s.to_ascii_lowercase()).collect();
                        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
                        (
                            source.to_string(),
                            spelled.contains(spelling),
                            grammar::nearest(spelling, &lower).and_then(|near| {
                                let i = lower.iter().position(|s| *s == near)?;
                                Some(names[i].to_owned())
                            }),
                        )
                    }
                };
                (!matched)
                    .then(|| format!("{written} names no registered breaker{}", suggest(&near)))
            }))
            .collect()
    }

    /// `base` with the overrides for `name` applied, and where each value
    /// came from.
    ///
    /// # Errors
    /// Every problem concerning `name`: a problem of any source that
    /// applies to every breaker, one in `name`'s own table or variables,
    /// or a combination the effective configuration refuses. A breaker with
    /// problems gets none of its overrides.
    pub(crate) fn effective(
        &self,
        name: &str,
        base: &CircuitBreakerConfig,
    ) -> Result<(CircuitBreakerConfig, ConfigSources), OverrideErrors> {
        self.effective_for(&[name], base)
    }

    /// [`effective`](Self::effective) for a breaker known by several names,
    /// the most general first: a keyed family's member is `["llm",
    /// "llm[gpt-4o]"]`, so `[llm]` applies to every member and
    /// `["llm[gpt-4o]"]` to one. Within each source (the file, then the
    /// variables, which win) `default` comes first, then each name in turn.
    pub(crate) fn effective_for(
        &self,
        names: &[&str],
        base: &CircuitBreakerConfig,
    ) -> Result<(CircuitBreakerConfig, ConfigSources), OverrideErrors> {
        let env_names: Vec<String> = names.iter().map(|name| env_name(name)).collect();
        let mut errors: Vec<OverrideError> = self
            .problems
            .iter()
            .filter(|(scope, _)| match scope {
                Scope::All => true,
                Scope::Stray => false,
                Scope::Table(table) => names.contains(&table.as_str()),
                Scope::EnvName(var_name) => env_names.contains(var_name),
            })
            .map(|(_, error)| error.clone())
            .collect();
        // Lowest precedence first; each layer overwrites the one before.
        let default_env = env_name(DEFAULT_TABLE);
        let layers = std::iter::once(self.file.get(DEFAULT_TABLE))
            .chain(names.iter().map(|name| self.file.get(*name)))
            .chain(std::iter::once(self.env.get(&default_env)))
            .chain(env_names.iter().map(|name| self.env.get(name)));
        let mut config = base.clone();
        let mut sources = ConfigSources::default();
        let mut multiplier: Option<Option<f64>> = None;
        let mut cap: Option<Duration> = None;
        for settings in layers.flatten() {
            for (key, setting) in settings {
                sources.overridden.insert(key, setting.source.clone());
                match (*key, setting.value) {
                    ("backoff_multiplier", Value::Number(m)) => multiplier = Some(Some(m)),
                    ("backoff_multiplier", _) => multiplier = Some(None),
                    ("max_open_duration", Value::Duration(d)) => cap = Some(d),
                    (key, value) => apply(&mut config, key, value),
                }
            }
        }
        if let Err(error) = resolve_backoff(&mut config, multiplier, cap, &sources) {
            errors.push(error);
        }
        if errors.is_empty() {
            if let Err(error) = config.validate() {
                let fields: &[&str] = match &error {
                    ConfigError::OutOfRange { field, .. } => &[field_key(field)],
                    ConfigError::MinimumCallsExceedWindow { .. } => {
                        &["minimum_calls", "sliding_window_size"]
                    }
                    ConfigError::BackoffCapBelowRecovery { .. } => {
                        &["max_open_duration", "recovery_timeout"]
                    }
                };
                let sources = fields
                    .iter()
                    .map(|key| sources.get(key))
                    .filter(|source| **source != ValueSource::Code)
                    .cloned()
                    .collect();
                errors.push(OverrideError::OutOfRange { error, sources });
            }
        }
        if errors.is_empty() {
            Ok((config, sources))
        } else {
            Err(OverrideErrors(errors))
        }
    }
}

/// `name` as a TOML key: bare if it can be, else quoted.
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// The key a [`ConfigError`] field name is written as here.
fn field_key(field: &'static str) -> &'static str {
    if field == "backoff.multiplier" {
        "backoff_multiplier"
    } else {
        field
    }
}

/// Reads `raw` as `key`'s value, and checks the range of that field alone
/// with [`CircuitBreakerConfig::validate`] (ranges between fields wait for
/// the breaker's own configuration).
fn read_setting(
    key: &'static str,
    raw: &Raw,
    source: ValueSource,
) -> Result<Setting, OverrideError> {
    let kind = Kind::of(key);
    let malformed = || OverrideError::Malformed {
        key,
        value: raw.to_string(),
        expected: kind.expected(),
        at: source.clone(),
    };
    let value = raw.read(kind).ok_or_else(malformed)?;
    let mut alone = CircuitBreakerConfig::default();
    match (key, value) {
        ("backoff_multiplier", Value::Number(multiplier)) => {
            alone.backoff = Some(Backoff {
                multiplier,
                max_open_duration: Duration::MAX,
            });
        }
        ("backoff_multiplier" | "max_open_duration", _) => {}
        (key, value) => apply(&mut alone, key, value),
    }
    match alone.validate() {
        Err(error @ ConfigError::OutOfRange { field, .. }) if field_key(field) == key => {
            Err(OverrideError::OutOfRange {
                error,
                sources: vec![source],
            })
        }
        _ => Ok(Setting { value, source }),
    }
}

/// Sets `key` (not one of the backoff's two) to `value`, which
/// [`read_setting`] has checked is of `key`'s kind.
fn apply(config: &mut CircuitBreakerConfig, key: &str, value: Value) {
    let count = |value| match value {
        Value::Count(n) => Some(n),
        _ => None,
    };
    let number = |value| match value {
        Value::Number(x) => Some(x),
        _ => None,
    };
    let duration = |value: Value, current: Duration| match value {
        Value::Duration(d) => d,
        _ => current,
    };
    match key {
        "failure_threshold" => config.failure_threshold = count(value).unwrap_or(0),
        "success_threshold" => config.success_threshold = count(value).unwrap_or(0),
        "sliding_window_size" => config.sliding_window_size = count(value).unwrap_or(0),
        "half_open_max_calls" => config.half_open_max_calls = count(value).unwrap_or(0),
        "minimum_calls" => config.minimum_calls = count(value).unwrap_or(0),
        "max_deadline_workers" => config.max_deadline_workers = count(value).unwrap_or(0),
        "rate_limit_per_minute" => config.rate_limit_per_minute = count(value),
        "rate_limit_burst" => config.rate_limit_burst = count(value),
        "recovery_timeout" => config.recovery_timeout = duration(value, config.recovery_timeout),
        "timeout_duration" => config.timeout_duration = duration(value, config.timeout_duration),
        "max_retry_after" => config.max_retry_after = duration(value, config.max_retry_after),
        "quality_threshold" => {
            config.quality_threshold = number(value).unwrap_or(config.quality_threshold)
        }
        "failure_rate_threshold" => config.failure_rate_threshold = number(value),
        _ => {}
    }
}

/// Completes the backoff from its overridden halves and the base's.
fn resolve_backoff(
    config: &mut CircuitBreakerConfig,
    multiplier: Option<Option<f64>>,
    cap: Option<Duration>,
    sources: &ConfigSources,
) -> Result<(), OverrideError> {
    let half = |key, missing| OverrideError::HalfABackoff {
        key,
        missing,
        at: sources.get(key).clone(),
    };
    let base = config.backoff;
    let multiplier = match multiplier {
        Some(multiplier) => multiplier,
        None => base.map(|b| b.multiplier),
    };
    config.backoff = match (multiplier, cap.or(base.map(|b| b.max_open_duration))) {
        (Some(multiplier), Some(max_open_duration)) => Some(Backoff {
            multiplier,
            max_open_duration,
        }),
        (None, None) => None,
        (None, Some(_)) if cap.is_none() => None,
        (None, Some(_)) => return Err(half("max_open_duration", "backoff_multiplier")),
        (Some(_), None) => return Err(half("backoff_multiplier", "max_open_duration")),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn env(pairs: &[(&str, &str)]) -> ConfigOverrides {
        ConfigOverrides::from_env(vars(pairs), |_| unreachable!("no BREAKER_CONFIG"))
    }

    fn toml(text: &str) -> ConfigOverrides {
        ConfigOverrides::from_env_and_toml(vars(&[]), "breaker.toml", text)
    }

    fn messages(
        result: Result<(CircuitBreakerConfig, ConfigSources), OverrideErrors>,
    ) -> Vec<String> {
        result
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn base() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_threshold: 3,
            ..CircuitBreakerConfig::default()
        }
    }

    #[test]
    fn names_become_variable_names() {
        assert_eq!(env_name("llm"), "LLM");
        assert_eq!(env_name("external_api"), "EXTERNAL_API");
        assert_eq!(env_name("llm[gpt-4o]"), "LLM_GPT_4O_");
        assert_eq!(env_name("db.primary"), "DB_PRIMARY");
    }

    #[test]
    fn a_variable_overrides_its_breakers_field_only() {
        let overrides = env(&[
            ("BREAKER_LLM__FAILURE_THRESHOLD", "10"),
            ("BREAKER_LLM__TIMEOUT_DURATION", "500ms"),
            ("BREAKER_LLM__RECOVERY_TIMEOUT", "2.5"),
            ("PATH", "/usr/bin"),
        ]);
        let (config, sources) = overrides.effective("llm", &base()).unwrap();
        assert_eq!(config.failure_threshold, 10);
        assert_eq!(config.timeout_duration, Duration::from_millis(500));
        assert_eq!(config.recovery_timeout, Duration::from_millis(2500));
        assert_eq!(config.success_threshold, base().success_threshold);
        assert_eq!(
            sources.get("failure_threshold"),
            &ValueSource::Env {
                var: "BREAKER_LLM__FAILURE_THRESHOLD".into()
            }
        );
        assert_eq!(sources.get("success_threshold"), &ValueSource::Code);
        let (other, sources) = overrides.effective("quality", &base()).unwrap();
        assert_eq!(other, base());
        assert!(sources.is_empty());
    }

    #[test]
    fn a_keyed_name_is_matched_through_its_variable_form() {
        let overrides = env(&[("BREAKER_LLM_GPT_4O___FAILURE_THRESHOLD", "7")]);
        let (config, _) = overrides.effective("llm[gpt-4o]", &base()).unwrap();
        assert_eq!(config.failure_threshold, 7);
        assert_eq!(overrides.effective("llm", &base()).unwrap().0, base());
    }

    #[test]
    fn a_toml_table_overrides_with_its_line() {
        let overrides = toml(
            "# production\n[llm]\nfailure_threshold = 10\nrecovery_timeout = \"2m\"\nrate_limit_per_minute = \"none\"\n\n[\"llm[gpt-4o]\"]\ntimeout_duration = 1.5\n",
        );
        let base = CircuitBreakerConfig {
            rate_limit_per_minute: Some(120),
            ..base()
        };
        let (config, sources) = overrides.effective("llm", &base).unwrap();
        assert_eq!(config.failure_threshold, 10);
        assert_eq!(config.recovery_timeout, Duration::from_secs(120));
        assert_eq!(config.rate_limit_per_minute, None);
        assert_eq!(
            sources.get("recovery_timeout"),
            &ValueSource::File {
                path: "breaker.toml".into(),
                line: 4
            }
        );
        let (keyed, _) = overrides.effective("llm[gpt-4o]", &base).unwrap();
        assert_eq!(keyed.timeout_duration, Duration::from_millis(1500));
        assert_eq!(keyed.failure_threshold, 3);
    }

    /// Source first, then name: env (own, then default) > file (own, then
    /// default) > code.
    #[test]
    fn precedence_is_by_source_then_by_name() {
        let text = "[default]\nfailure_threshold = 4\nsuccess_threshold = 4\nhalf_open_max_calls = 4\n[llm]\nfailure_threshold = 6\nsuccess_threshold = 6\n";
        let overrides = ConfigOverrides::from_env_and_toml(
            vars(&[
                ("BREAKER_DEFAULT__SUCCESS_THRESHOLD", "8"),
                ("BREAKER_DEFAULT__MINIMUM_CALLS", "8"),
                ("BREAKER_LLM__MINIMUM_CALLS", "9"),
            ]),
            "breaker.toml",
            text,
        );
        let (config, sources) = overrides.effective("llm", &base()).unwrap();
        assert_eq!(
            config.failure_threshold, 6,
            "file [llm] beats file [default]"
        );
        assert_eq!(config.half_open_max_calls, 4, "file [default] beats code");
        assert_eq!(
            config.success_threshold, 8,
            "env default beats the file's own table"
        );
        assert_eq!(config.minimum_calls, 9, "env own beats env default");
        assert_eq!(
            sources.get("success_threshold").to_string(),
            "BREAKER_DEFAULT__SUCCESS_THRESHOLD"
        );
        assert_eq!(
            sources.get("failure_threshold").to_string(),
            "breaker.toml:6"
        );
        let (other, _) = overrides.effective("db", &base()).unwrap();
        assert_eq!(
            (
                other.failure_threshold,
                other.success_threshold,
                other.minimum_calls
            ),
            (4, 8, 8)
        );
    }

    #[test]
    fn a_typo_in_a_key_suggests_the_nearest() {
        let overrides = toml("[llm]\nfailure_threshold = 4\nfailur_threshold = 10\n");
        assert_eq!(
            messages(overrides.effective("llm", &base())),
            [
                "unknown key `failur_threshold` in [llm] at breaker.toml:3; did you mean `failure_threshold`?"
            ]
        );
        // Another breaker is not concerned by [llm]'s typo, but all are by
        // [default]'s.
        assert!(overrides.effective("db", &base()).is_ok());
        let overrides = toml("[default]\ntimeout = \"1s\"\n");
        assert_eq!(
            messages(overrides.effective("db", &base())),
            [
                "unknown key `timeout` in [default] at breaker.toml:2; did you mean `timeout_duration`?"
            ]
        );
        let overrides = env(&[("BREAKER_LLM__FAILUR_THRESHOLD", "10")]);
        assert_eq!(
            messages(overrides.effective("llm", &base())),
            [
                "unknown key `FAILUR_THRESHOLD` in BREAKER_LLM__FAILUR_THRESHOLD; did you mean `BREAKER_LLM__FAILURE_THRESHOLD`?"
            ]
        );
    }

    #[test]
    fn a_bad_value_names_its_source_key_and_range() {
        let overrides = env(&[("BREAKER_LLM__FAILURE_THRESHOLD", "0")]);
        assert_eq!(
            messages(overrides.effective("llm", &base())),
            ["BREAKER_LLM__FAILURE_THRESHOLD: `failure_threshold` is 0, but it must be at least 1"]
        );
        let overrides = toml("[llm]\n\nquality_threshold = 1.5\ntimeout_duration = \"soon\"\n");
        assert_eq!(
            messages(overrides.effective("llm", &base())),
            [
                "breaker.toml:3: `quality_threshold` is 1.5, but it must be between 0 and 1",
                "breaker.toml:4: `timeout_duration` is \"soon\", but it must be a duration with a unit (`ns`, `us`, `ms`, `s`, `m` or `h`), like \"500ms\" or \"2m\", or a number of seconds",
            ]
        );
        let overrides = env(&[("BREAKER_LLM__FAILURE_THRESHOLD", "-2")]);
        assert_eq!(
            messages(overrides.effective("llm", &base())),
            [
                "BREAKER_LLM__FAILURE_THRESHOLD: `failure_threshold` is -2, but it must be a whole number of at least 1"
            ]
        );
        let overrides = toml("[llm]\nfailure_threshold = 2.5\n");
        assert_eq!(
            messages(overrides.effective("llm", &base())),
            [
                "breaker.toml:2: `failure_threshold` is 2.5, but it must be a whole number of at least 1"
            ]
        );
    }

    #[test]
    fn values_that_clash_with_the_base_are_refused_with_their_sources() {
        let overrides = env(&[("BREAKER_LLM__MINIMUM_CALLS", "150")]);
        assert_eq!(
            messages(overrides.effective("llm", &base())),
            [
                "BREAKER_LLM__MINIMUM_CALLS: `minimum_calls` is 150, but it must be at most `sliding_window_size` (100)"
            ]
        );
        let bigger = CircuitBreakerConfig {
            sliding_window_size: 200,
            ..base()
        };
        assert_eq!(
            overrides.effective("llm", &bigger).unwrap().0.minimum_calls,
            150
        );
    }

    #[test]
    fn a_backoff_needs_both_halves_unless_the_base_has_one() {
        let overrides = env(&[("BREAKER_LLM__BACKOFF_MULTIPLIER", "2")]);
        assert_eq!(
            messages(overrides.effective("llm", &base())),
            [
                "BREAKER_LLM__BACKOFF_MULTIPLIER: `backoff_multiplier` needs `max_open_duration` too (this breaker has no backoff to take it from)"
            ]
        );
        let with_backoff = CircuitBreakerConfig {
            backoff: Some(Backoff {
                multiplier: 1.5,
                max_open_duration: Duration::from_secs(600),
            }),
            ..base()
        };
        let (config, _) = overrides.effective("llm", &with_backoff).unwrap();
        assert_eq!(
            config.backoff,
            Some(Backoff {
                multiplier: 2.0,
                max_open_duration: Duration::from_secs(600)
            })
        );
        let off = env(&[("BREAKER_LLM__BACKOFF_MULTIPLIER", "none")]);
        assert_eq!(off.effective("llm", &with_backoff).unwrap().0.backoff, None);
        let both = env(&[
            ("BREAKER_LLM__BACKOFF_MULTIPLIER", "2"),
            ("BREAKER_LLM__MAX_OPEN_DURATION", "10m"),
        ]);
        assert_eq!(
            both.effective("llm", &base()).unwrap().0.backoff,
            Some(Backoff {
                multiplier: 2.0,
                max_open_duration: Duration::from_secs(600)
            })
        );
    }

    #[test]
    fn unknown_variables_are_reported_but_hold_back_no_breakers_settings() {
        let overrides = env(&[
            ("BREAKER_REDIS_URL", "redis://localhost"),
            ("BREAKER_LLM_FAILURE_THRESHOLD", "10"),
            ("BREAKER_VERBOSE", "1"),
            ("BREAKERS", "ignored: not our prefix"),
            ("BREAKER_LLM__SUCCESS_THRESHOLD", "2"),
        ]);
        let (config, _) = overrides
            .effective("llm", &base())
            .expect("a stray variable is not the breaker's problem");
        assert_eq!(config.success_threshold, 2, "its own settings apply");
        let stray = [
            "unknown variable BREAKER_LLM_FAILURE_THRESHOLD: a breaker setting is written BREAKER_<NAME>__<FIELD>; did you mean `BREAKER_LLM__FAILURE_THRESHOLD`?",
            "unknown variable BREAKER_VERBOSE: a breaker setting is written BREAKER_<NAME>__<FIELD>",
        ];
        assert_eq!(
            overrides
                .problems()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            stray,
            "load_config reports them"
        );
        assert_eq!(
            overrides.unmatched(&["llm"]),
            stray,
            "and the status lists them"
        );
    }

    #[test]
    fn the_file_named_by_breaker_config_is_read_and_its_problems_are_everyones() {
        let overrides =
            ConfigOverrides::from_env(vars(&[("BREAKER_CONFIG", "/etc/breaker.toml")]), |path| {
                assert_eq!(path, Path::new("/etc/breaker.toml"));
                Ok("[llm]\nfailure_threshold = 9\n".to_owned())
            });
        assert_eq!(
            overrides
                .effective("llm", &base())
                .unwrap()
                .0
                .failure_threshold,
            9
        );

        let missing = ConfigOverrides::from_env(vars(&[("BREAKER_CONFIG", "/nope.toml")]), |_| {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        });
        assert!(
            messages(missing.effective("db", &base()))[0]
                .starts_with("cannot read the breaker configuration file /nope.toml: "),
        );
        let broken = toml("[llm]\nfailure_threshold = = 3\n");
        let message = &messages(broken.effective("db", &base()))[0];
        assert!(
            message.starts_with("breaker.toml:2: not valid TOML: "),
            "{message}"
        );
        let flat = toml("failure_threshold = 3\n");
        assert_eq!(
            messages(flat.effective("db", &base())),
            [
                "`failure_threshold` at breaker.toml:1 is not a table: put each breaker's settings under a `[failure_threshold]` header"
            ]
        );
    }

    #[test]
    fn names_no_breaker_has_are_listed_with_the_nearest() {
        let overrides = ConfigOverrides::from_env_and_toml(
            vars(&[
                ("BREAKER_LMM__FAILURE_THRESHOLD", "2"),
                ("BREAKER_DEFAULT__FAILURE_THRESHOLD", "2"),
                ("BREAKER_DB__FAILURE_THRESHOLD", "2"),
            ]),
            "breaker.toml",
            "[default]\nfailure_threshold = 2\n[lmm]\nfailure_threshold = 2\n[\"llm[gpt-4o]\"]\nfailure_threshold = 2\n",
        );
        assert_eq!(
            overrides.unmatched(&["llm", "db", "llm[gpt-4o]"]),
            [
                "BREAKER_LMM__FAILURE_THRESHOLD names no registered breaker; did you mean `llm`?",
                "[lmm] at breaker.toml:3 names no registered breaker; did you mean `llm`?",
            ]
        );
        assert_eq!(
            overrides.unmatched(&["llm", "db", "lmm", "llm[gpt-4o]"]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn sources_serialise_every_key() {
        let overrides = env(&[("BREAKER_LLM__FAILURE_THRESHOLD", "10")]);
        let (_, sources) = overrides.effective("llm", &base()).unwrap();
        let json = serde_json::to_value(&sources).unwrap();
        assert_eq!(json.as_object().unwrap().len(), KEYS.len());
        assert_eq!(
            json["failure_threshold"],
            serde_json::json!({"from": "env", "var": "BREAKER_LLM__FAILURE_THRESHOLD"})
        );
        assert_eq!(
            json["timeout_duration"],
            serde_json::json!({"from": "code"})
        );
    }
}
