//! The resilient agent of the seed design, in Rust: it answers questions
//! through three dependencies, each behind a `#[circuit_breaker]` method.
//!
//! | breaker          | what it protects                                | its fallback                                   |
//! |------------------|-------------------------------------------------|------------------------------------------------|
//! | `"llm"`          | the language model (real or simulated)          | the last good answer to the same question, else a degraded answer |
//! | `"quality"`      | the quality assessment of the model's answer    | a cheaper local heuristic                      |
//! | `"external_api"` | a third-party lookup of related reading         | no related reading                             |
//!
//! The quality score decides whether the model's answer is good enough: the
//! `"llm"` breaker judges its result with `quality = ...`, so a poor answer
//! counts as a failure of the model and the fallback answers instead.
//!
//! The model is chosen at construction ([`Backend`]): an OpenAI-compatible
//! endpoint when `OPENAI_API_KEY` is configured, else the simulated model.
//! The quality service and the external API are simulated in both cases.
//! Faults can be injected into all three at run time through
//! [`Agent::faults`]; with a real endpoint, the model's faults are applied
//! before each request goes out.
//!
//! Each breaker's configuration is written once, as its attribute's
//! literals; the deployment may override it at run time
//! (`BREAKER_LLM__FAILURE_THRESHOLD=5`, or a `BREAKER_CONFIG` file). A
//! breaker is registered on its first call, and tests read its effective
//! configuration from the registry (`registry().get("llm")`).

use std::fmt;
use std::time::{Duration, Instant};

use breaker_runtime::{
    BreakerError, CachedFallback, CircuitState, FailureType, FallbackReason, Outcome,
    circuit_breaker, fallback_reason, registry,
};
use parking_lot::RwLock;
use serde::Serialize;

use crate::llm::{LlmClient, LlmConfig, LlmError, LlmErrorKind};
use crate::sim::{EXTERNAL_API_SERVICE, FaultBoard, LLM_SERVICE, QUALITY_SERVICE, SimulatedLlm};

/// The breaker that protects the language model.
pub const LLM_BREAKER: &str = LLM_SERVICE;
/// The breaker that protects the quality assessment.
pub const QUALITY_BREAKER: &str = QUALITY_SERVICE;
/// The breaker that protects the external lookup.
pub const EXTERNAL_API_BREAKER: &str = EXTERNAL_API_SERVICE;

/// The agent's breakers, in the order the status shows them. `llm` is a
/// keyed family: one breaker per model, named `llm[<model>]`.
pub const BREAKERS: [&str; 3] = [EXTERNAL_API_BREAKER, LLM_BREAKER, QUALITY_BREAKER];

/// The models the simulated backend answers as; the first is the default.
pub const SIMULATED_MODELS: [&str; 2] = ["sim-a", "sim-b"];

/// The name of the `llm` breaker of `model`, and of its faults.
pub fn llm_breaker_of(model: &str) -> String {
    format!("{LLM_BREAKER}[{model}]")
}

/// Why the agent could not answer at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    /// The model's service failed, or refused our request.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A breaker refused the call and no fallback answered.
    #[error(transparent)]
    Breaker(#[from] BreakerError),
}

/// Where the language model lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The offline, deterministic [`SimulatedLlm`].
    Simulated,
    /// An OpenAI-compatible chat-completions endpoint.
    Http(LlmClient),
}

impl Backend {
    /// The real client when `OPENAI_API_KEY` is set (in the environment or a
    /// `.env` file), else the simulated model.
    pub fn from_env() -> Self {
        match LlmConfig::from_env() {
            Some(config) => Self::Http(LlmClient::new(config)),
            None => Self::Simulated,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Simulated => {
                f.write_str("the simulated model (set OPENAI_API_KEY for a real one)")
            }
            Self::Http(client) => write!(
                f,
                "model `{}` at {}",
                client.config().model,
                client.config().base_url
            ),
        }
    }
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// The protected service answered.
    Live,
    /// The breaker's fallback answered, for this reason.
    Fallback {
        /// Why the fallback ran.
        reason: FallbackReason,
    },
}

impl Source {
    /// The fallback's reason, if the fallback answered. Read inside a
    /// fallback function, where [`fallback_reason`] is set.
    fn from_fallback() -> Self {
        match fallback_reason() {
            Some(reason) => Self::Fallback { reason },
            // Only reachable if a fallback were called outside its breaker;
            // a fallback is still a fallback, so say "failure" rather than lie.
            None => Self::Fallback {
                reason: FallbackReason::Failure {
                    failure_type: FailureType::Custom,
                },
            },
        }
    }

    /// The reason, when this is a fallback.
    pub fn fallback_reason(&self) -> Option<FallbackReason> {
        match self {
            Self::Live => None,
            Self::Fallback { reason } => Some(*reason),
        }
    }
}

/// The model's answer, as the `"llm"` breaker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The answer's text.
    pub text: String,
    /// The score the `"quality"` service (or its fallback) gave it; `None`
    /// for a fallback answer, which is not judged.
    pub assessment: Option<Assessment>,
    /// Who produced it.
    pub source: Source,
}

/// A quality score, and who produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// In `[0, 1]`.
    pub score: f64,
    /// The quality service, or the local heuristic standing in for it.
    pub source: Source,
}

/// The external lookup's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// Related reading, if the service knows the topic.
    pub related: Option<String>,
    /// Who produced it.
    pub source: Source,
}

/// A service that answered through its fallback during one query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Degradation {
    /// The breaker whose fallback answered.
    pub breaker: &'static str,
    /// Why.
    pub reason: FallbackReason,
}

/// The agent's answer to one query, as in the seed's `AgentResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentResponse {
    /// The text to show the user.
    pub content: String,
    /// Whether the answer came from a fallback instead of the model.
    pub used_fallback: bool,
    /// The state of [`breaker`](Self::breaker) right after the query.
    pub circuit_state: CircuitState,
    /// The breaker that served the answer: the model's, `llm[<model>]`.
    pub breaker: String,
    /// Why the fallback answered, when it did.
    pub fallback_reason: Option<FallbackReason>,
    /// The answer's quality score, when the model answered.
    pub quality: Option<f64>,
    /// Every service that answered through its fallback, the model included.
    pub degraded: Vec<Degradation>,
    /// How long the query took.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// The resilient agent. Cheap to share by reference; every method takes
/// `&self`.
#[derive(Debug)]
pub struct Agent {
    backend: Backend,
    simulated: SimulatedLlm,
    faults: FaultBoard,
    /// Good answers by normalised question, for the model's fallback.
    answers: CachedFallback<String, String>,
    /// The model asked now; its breaker is `llm[<model>]`.
    model: RwLock<String>,
}

impl Agent {
    /// An agent on the model [`Backend::from_env`] picks.
    pub fn from_env() -> Self {
        Self::with_backend(Backend::from_env())
    }

    /// An agent on `backend`, with no faults injected.
    ///
    /// Its three breakers are registered by their first call, with their
    /// attribute's configuration and the run-time overrides; a test that
    /// wants one on a manual clock says so first
    /// ([`Registry::use_clock`](breaker_runtime::Registry::use_clock)).
    pub fn with_backend(backend: Backend) -> Self {
        let faults = FaultBoard::new();
        let model = match &backend {
            Backend::Simulated => SIMULATED_MODELS[0].to_owned(),
            Backend::Http(client) => client.config().model.clone(),
        };
        let answers = CachedFallback::new();
        answers.add_to_cache(
            normalise("hello"),
            "Hello! I'm having trouble reaching my language model right now, but I'm still here."
                .to_owned(),
        );
        Self {
            backend,
            simulated: SimulatedLlm::with_faults(faults.faults(LLM_SERVICE)),
            faults,
            answers,
            model: RwLock::new(model),
        }
    }

    /// The model asked now.
    pub fn model(&self) -> String {
        self.model.read().clone()
    }

    /// Asks `model` from now on. The simulated backend knows
    /// [`SIMULATED_MODELS`]; a real endpoint is sent any name.
    ///
    /// # Errors
    /// A model the simulated backend does not know, in words.
    pub fn set_model(&self, model: &str) -> Result<(), String> {
        if matches!(self.backend, Backend::Simulated) && !SIMULATED_MODELS.contains(&model) {
            return Err(format!(
                "the simulated backend has no model `{model}`; it has {}",
                SIMULATED_MODELS.join(", ")
            ));
        }
        *self.model.write() = model.to_owned();
        Ok(())
    }

    /// The model backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The run-time faults of the three services, by breaker name.
    pub fn faults(&self) -> &FaultBoard {
        &self.faults
    }

    /// Answers `question`: looks up related reading, asks the model (whose
    /// answer the quality service scores), and falls back wherever a
    /// service is open, failing, slow or poor.
    ///
    /// # Errors
    /// Only what no fallback covers: the model's service refusing our own
    /// request (a 4xx other than 429, such as a bad API key), which is not
    /// held against the service.
    pub async fn query(&self, question: &str) -> Result<AgentResponse, AgentError> {
        let started = Instant::now();
        let model = self.model();
        let lookup = self.lookup(question).await?;
        let reply = self.complete(question).await?;
        let sources = [
            (EXTERNAL_API_BREAKER, Some(lookup.source)),
            (LLM_BREAKER, Some(reply.source)),
            (QUALITY_BREAKER, reply.assessment.map(|a| a.source)),
        ];
        let degraded = sources
            .into_iter()
            .filter_map(|(breaker, source)| {
                let reason = source?.fallback_reason()?;
                Some(Degradation { breaker, reason })
            })
            .collect();
        if reply.source == Source::Live {
            // The breaker judged it good (a poor one would have been
            // replaced), so it is worth serving again when the model is down.
            self.answers
                .add_to_cache(normalise(question), reply.text.clone());
        }
        let mut content = reply.text;
        if let Some(related) = lookup.related {
            content.push_str("\nRelated reading: ");
            content.push_str(&related);
        }
        Ok(AgentResponse {
            content,
            used_fallback: reply.source != Source::Live,
            // `complete` has registered it.
            circuit_state: registry()
                .get(&llm_breaker_of(&model))
                .map_or(CircuitState::Closed, |breaker| breaker.state()),
            breaker: llm_breaker_of(&model),
            fallback_reason: reply.source.fallback_reason(),
            quality: reply.assessment.map(|a| a.score),
            degraded,
            elapsed: started.elapsed(),
        })
    }

    /// Asks the model, and has the quality service score the answer.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    #[circuit_breaker(
        name = "llm",
        failure_threshold = 3,
        recovery_timeout = 2.0,
        success_threshold = 2,
        timeout_duration = 10.0,
        quality_threshold = 0.5,
        rate_limit_per_minute = 120,
        half_open_max_calls = 1,
        quality = reply_quality,
        classify = classify_llm,
        fallback = Self::answer_offline,
        key = self.model(),
    )]
    pub async fn complete(&self, question: &str) -> Result<Reply, AgentError> {
        // The faults of this model (`/fail llm[sim-a] 1.0`), then those of
        // every model (`/fail llm 1.0`).
        let model = self.model();
        self.faults.faults(&llm_breaker_of(&model)).inject().await?;
        let text = match &self.backend {
            Backend::Simulated => self.simulated.complete(question).await?,
            Backend::Http(client) => {
                let injected = self.faults.faults(LLM_SERVICE).inject().await?;
                let text = client.complete_as(&model, question).await?;
                if injected.low_quality {
                    POOR_ANSWER.to_owned()
                } else {
                    text
                }
            }
        };
        let assessment = self.assess_quality(question, &text).await?;
        Ok(Reply {
            text,
            assessment: Some(assessment),
            source: Source::Live,
        })
    }

    /// The model's fallback: the last good answer to the same question, or
    /// an apology that says why.
    //
    // `async` although it never awaits: the attribute calls a sync fallback
    // of an async function outside the scope where `fallback_reason()` is
    // set, so it would read `None` (a macro bug, reported).
    async fn answer_offline(&self, question: &str) -> Result<Reply, AgentError> {
        let source = Source::from_fallback();
        let text = match self.answers.get(&normalise(question)) {
            Some(text) => text,
            None => format!(
                "I can't reach my language model right now ({}), so I can't answer \"{}\" yet. \
                 Please try again in a moment.",
                source
                    .fallback_reason()
                    .map_or_else(|| "unavailable".to_owned(), describe_reason),
                question.trim()
            ),
        };
        Ok(Reply {
            text,
            assessment: None,
            source,
        })
    }

    /// Scores `answer` to `question` in `[0, 1]` with the (simulated)
    /// quality service: the local heuristic, less 0.2 for an answer that
    /// shares no word with the question.
    ///
    /// # Errors
    /// None in practice: the fallback always answers.
    #[circuit_breaker(
        name = "quality",
        failure_threshold = 3,
        recovery_timeout = 2.0,
        success_threshold = 1,
        timeout_duration = 1.0,
        fallback = Self::assess_locally,
    )]
    pub async fn assess_quality(
        &self,
        question: &str,
        answer: &str,
    ) -> Result<Assessment, AgentError> {
        self.faults.faults(QUALITY_SERVICE).inject().await?;
        let mut score = heuristic_quality(answer);
        if !shares_a_word(question, answer) {
            score = (score - 0.2).max(0.0);
        }
        Ok(Assessment {
            score,
            source: Source::Live,
        })
    }

    async fn assess_locally(
        &self,
        _question: &str,
        answer: &str,
    ) -> Result<Assessment, AgentError> {
        Ok(Assessment {
            score: heuristic_quality(answer),
            source: Source::from_fallback(),
        })
    }

    /// Looks up related reading for `question` in the (simulated) external
    /// API.
    ///
    /// # Errors
    /// None in practice: the fallback always answers.
    #[circuit_breaker(
        name = "external_api",
        failure_threshold = 3,
        recovery_timeout = 2.0,
        success_threshold = 1,
        timeout_duration = 1.0,
        fallback = Self::no_related_reading,
    )]
    pub async fn lookup(&self, question: &str) -> Result<Lookup, AgentError> {
        self.faults.faults(EXTERNAL_API_SERVICE).inject().await?;
        Ok(Lookup {
            related: related_reading(question),
            source: Source::Live,
        })
    }

    async fn no_related_reading(&self, _question: &str) -> Result<Lookup, AgentError> {
        Ok(Lookup {
            related: None,
            source: Source::from_fallback(),
        })
    }
}

/// `reason` for people: as its `Display`, with durations rounded to a
/// tenth of a second.
pub fn describe_reason(reason: FallbackReason) -> String {
    let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
    match reason {
        FallbackReason::Open { retry_after } => {
            format!("circuit open, retry in {}", secs(retry_after))
        }
        FallbackReason::LocalRateLimit { retry_after } => {
            format!(
                "rate limited by the local limiter, next permit in {}",
                secs(retry_after)
            )
        }
        FallbackReason::Timeout { after } => format!("timed out after {}", secs(after)),
        FallbackReason::LowQuality { score, threshold } => {
            format!("quality score {score:.2} below threshold {threshold}")
        }
        other => other.to_string(),
    }
}

/// How the `"llm"` breaker counts a finished call: a 429 is a rate limit
/// (with its `Retry-After`), 5xx, connection errors and unusable responses
/// are failures, a client-side timeout is a timeout, and a 4xx caused by our
/// own request is ignored: it says nothing about the service's health.
pub fn classify_llm(result: &Result<Reply, AgentError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(AgentError::Llm(error)) => match error.kind() {
            LlmErrorKind::RateLimit(retry_after) => Outcome::DependencyRateLimited { retry_after },
            LlmErrorKind::Failure => Outcome::Failure(FailureType::Error),
            LlmErrorKind::Timeout => Outcome::Failure(FailureType::Timeout),
            LlmErrorKind::NotHeldAgainstService => Outcome::Ignored,
        },
        Err(AgentError::Breaker(_)) => Outcome::Failure(FailureType::Error),
    }
}

/// The quality score the `"llm"` breaker judges a reply by.
fn reply_quality(reply: &Reply) -> f64 {
    reply.assessment.map_or(1.0, |assessment| assessment.score)
}

/// What a real model's answer becomes under an injected low-quality fault.
const POOR_ANSWER: &str = "I don't know.";

/// Phrases of an answer that did not answer.
const NON_ANSWERS: [&str; 6] = [
    "error",
    "i don't know",
    "i do not know",
    "unknown",
    "failed",
    "???",
];

/// A cheap quality score in `[0, 1]`, after the seed's evaluator: empty
/// answers score 0, answers of one or two words 0.3, longer ones 0.6 to 0.9
/// by length, and anything that reads as an error or a non-answer loses 0.4.
pub fn heuristic_quality(answer: &str) -> f64 {
    let text = answer.trim();
    if text.is_empty() {
        return 0.0;
    }
    let mut score = if text.split_whitespace().count() < 3 {
        0.3
    } else {
        0.6 + 0.3 * (text.len().min(300) as f64 / 300.0)
    };
    let lower = text.to_lowercase();
    if NON_ANSWERS.iter().any(|phrase| lower.contains(phrase)) {
        score -= 0.4;
    }
    score.clamp(0.0, 1.0)
}

/// Words that say nothing about a question's topic.
const STOP_WORDS: [&str; 20] = [
    "a", "about", "an", "and", "are", "does", "explain", "for", "how", "in", "is", "me", "of",
    "on", "tell", "the", "to", "what", "who", "why",
];

/// Whether `answer` repeats a topic word of `question`.
fn shares_a_word(question: &str, answer: &str) -> bool {
    let answer = normalise(answer);
    let answer_words: Vec<&str> = answer.split(' ').collect();
    normalise(question)
        .split(' ')
        .filter(|word| !STOP_WORDS.contains(word))
        .any(|word| answer_words.contains(&word))
}

/// Lowercase words joined by single spaces: "What is AI?" and "what is ai"
/// are the same question.
fn normalise(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The simulated external API's catalogue: topic words and a reference.
const READING: &[(&str, &str)] = &[
    (
        "circuit",
        "Michael Nygard, \"Release It!\", chapter 5: Stability Patterns",
    ),
    (
        "breaker",
        "Michael Nygard, \"Release It!\", chapter 5: Stability Patterns",
    ),
    (
        "learning",
        "Mitchell, \"Machine Learning\" (1997), chapter 1",
    ),
    (
        "ai",
        "Russell & Norvig, \"Artificial Intelligence: A Modern Approach\"",
    ),
    (
        "intelligence",
        "Russell & Norvig, \"Artificial Intelligence: A Modern Approach\"",
    ),
    ("rate", "RFC 6585, section 4: 429 Too Many Requests"),
];

fn related_reading(question: &str) -> Option<String> {
    let question = normalise(question);
    let words: Vec<&str> = question.split(' ').collect();
    READING
        .iter()
        .find(|(topic, _)| words.contains(topic))
        .map(|(_, reference)| (*reference).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_rejects_non_answers() {
        for poor in ["error", "I don't know.", "ERROR: ???", ""] {
            assert!(heuristic_quality(poor) < 0.5, "{poor:?}");
        }
        let good = "Artificial intelligence (AI) is the field of building systems.";
        assert!(heuristic_quality(good) >= 0.6);
    }

    #[test]
    fn questions_are_normalised() {
        assert_eq!(normalise("  What is AI? "), "what is ai");
        assert!(shares_a_word(
            "What is a circuit breaker?",
            "A circuit breaker stops ..."
        ));
        assert!(!shares_a_word(
            "What is a circuit breaker?",
            "I don't know."
        ));
        assert!(related_reading("What is AI?").unwrap().contains("Norvig"));
        assert_eq!(related_reading("How tall is Mont Blanc?"), None);
    }
}
