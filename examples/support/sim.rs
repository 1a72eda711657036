//! A simulated LLM and the faults that can be switched on in it while it runs.
//!
//! The examples use [`SimulatedLlm`] when no API key is configured, so they run
//! offline and give the same answers every time. Its failures come from a
//! [`Faults`] handle that a demo (or a test) changes at run time: a failure
//! rate, added latency, a rate limit, a hang, or low-quality answers.
//! [`FaultBoard`] holds one `Faults` per named service, so the agent's other
//! simulated dependencies (a quality checker, an external API) can fail
//! independently of the model through [`Faults::inject`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::llm::LlmError;

/// The agent's language model.
pub const LLM_SERVICE: &str = "llm";
/// The agent's answer-quality checker.
pub const QUALITY_SERVICE: &str = "quality";
/// The agent's external data source.
pub const EXTERNAL_API_SERVICE: &str = "external_api";

/// How long a hanging call sleeps: far beyond any sensible deadline.
pub const HANG_DURATION: Duration = Duration::from_secs(60 * 60);

/// The status code of an injected failure, as an overloaded service would send.
const INJECTED_FAILURE_STATUS: u16 = 503;

/// The faults that one service currently has, all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultSettings {
    /// The share of calls that fail with [`LlmError::Server`], 0.0 to 1.0.
    pub failure_rate: f64,
    /// Added to every call before it answers or fails.
    pub latency: Duration,
    /// Calls fail with [`LlmError::RateLimited`].
    pub rate_limited: bool,
    /// The `retry_after` that rate-limited calls carry.
    pub retry_after: Option<Duration>,
    /// Calls sleep for [`HANG_DURATION`] before going on.
    pub hang: bool,
    /// Answers become short, useless strings.
    pub low_quality: bool,
}

/// A shared, run-time switchable set of faults for one service.
///
/// Clones share the same settings, so a demo can keep one handle to flip faults
/// while the service holds another. Which calls a failure rate hits is decided
/// by a deterministic sequence (one step per call), so a run with the same
/// calls fails the same ones.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<FaultsInner>,
}

#[derive(Debug, Default)]
struct FaultsInner {
    settings: Mutex<FaultSettings>,
    /// The position in the pseudo-random sequence that failure rates draw from.
    draws: AtomicU64,
}

impl Faults {
    /// A handle with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current settings.
    pub fn settings(&self) -> FaultSettings {
        *self.inner.settings.lock()
    }

    /// Makes `rate` (clamped to 0.0..=1.0; NaN counts as 0.0) of the calls fail
    /// with [`LlmError::Server`].
    pub fn set_failure_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.inner.settings.lock().failure_rate = rate;
    }

    /// Adds `latency` to every call.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.settings.lock().latency = latency;
    }

    /// Makes every call fail with [`LlmError::RateLimited`] carrying
    /// `retry_after`, until [`heal`](Self::heal).
    pub fn rate_limit(&self, retry_after: Option<Duration>) {
        let mut settings = self.inner.settings.lock();
        settings.rate_limited = true;
        settings.retry_after = retry_after;
    }

    /// Makes every call sleep for [`HANG_DURATION`], until
    /// [`heal`](Self::heal). Calls already hanging keep hanging.
    pub fn hang(&self) {
        self.inner.settings.lock().hang = true;
    }

    /// Makes answers short and useless, until [`heal`](Self::heal).
    pub fn low_quality(&self) {
        self.inner.settings.lock().low_quality = true;
    }

    /// Clears every fault.
    pub fn heal(&self) {
        *self.inner.settings.lock() = FaultSettings::default();
    }

    /// Applies the faults to one call: waits out the latency (and the hang),
    /// then fails if a rate limit is set or the failure rate hits this call.
    /// `Ok` means the call should go on to answer, in low quality if
    /// [`FaultSettings::low_quality`] is set.
    ///
    /// # Errors
    ///
    /// [`LlmError::RateLimited`] while rate limited, else
    /// [`LlmError::Server`] for calls the failure rate hits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only abandons the wait.
    pub async fn inject(&self) -> Result<FaultSettings, LlmError> {
        // Draw on every call, hit or not, so which calls fail depends only on
        // their order, not on when the rate was changed.
        let draw = self.next_draw();
        let settings = self.settings();
        if !settings.latency.is_zero() {
            tokio::time::sleep(settings.latency).await;
        }
        if settings.hang {
            tokio::time::sleep(HANG_DURATION).await;
        }
        if settings.rate_limited {
            return Err(LlmError::RateLimited {
                retry_after: settings.retry_after,
            });
        }
        if draw < settings.failure_rate {
            return Err(LlmError::Server {
                status: INJECTED_FAILURE_STATUS,
            });
        }
        Ok(settings)
    }

    /// The next number of the sequence, uniform in 0.0..1.0.
    fn next_draw(&self) -> f64 {
        // Relaxed: the counter only has to hand each call its own position.
        let position = self.inner.draws.fetch_add(1, Ordering::Relaxed);
        // The top 53 bits fill an f64 mantissa exactly.
        (splitmix64(position) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's output function: consecutive inputs give well-spread outputs.
fn splitmix64(position: u64) -> u64 {
    let mut z = position.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One [`Faults`] handle per named service, created on first use.
///
/// Cheap to clone; clones share the board.
#[derive(Debug, Clone, Default)]
pub struct FaultBoard {
    services: Arc<Mutex<HashMap<String, Faults>>>,
}

impl FaultBoard {
    /// A board with no faults anywhere.
    pub fn new() -> Self {
        Self::default()
    }

    /// The faults of `service`, shared with every other handle to them.
    pub fn faults(&self, service: &str) -> Faults {
        self.services
            .lock()
            .entry(service.to_owned())
            .or_default()
            .clone()
    }

    /// See [`Faults::set_failure_rate`].
    pub fn set_failure_rate(&self, service: &str, rate: f64) {
        self.faults(service).set_failure_rate(rate);
    }

    /// See [`Faults::set_latency`].
    pub fn set_latency(&self, service: &str, latency: Duration) {
        self.faults(service).set_latency(latency);
    }

    /// See [`Faults::rate_limit`].
    pub fn rate_limit(&self, service: &str, retry_after: Option<Duration>) {
        self.faults(service).rate_limit(retry_after);
    }

    /// See [`Faults::hang`].
    pub fn hang(&self, service: &str) {
        self.faults(service).hang();
    }

    /// See [`Faults::low_quality`].
    pub fn low_quality(&self, service: &str) {
        self.faults(service).low_quality();
    }

    /// Clears the faults of `service`.
    pub fn heal_service(&self, service: &str) {
        self.faults(service).heal();
    }

    /// Clears the faults of every service.
    pub fn heal(&self) {
        for faults in self.services.lock().values() {
            faults.heal();
        }
    }
}

/// An offline stand-in for a chat model: canned, deterministic answers, with
/// faults injected from a [`Faults`] handle.
///
/// Cheap to clone; clones share the faults.
#[derive(Debug, Clone, Default)]
pub struct SimulatedLlm {
    faults: Faults,
}

impl SimulatedLlm {
    /// A model with its own, initially empty, faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// A model whose faults are `faults`, e.g. `board.faults(LLM_SERVICE)`.
    pub fn with_faults(faults: Faults) -> Self {
        Self { faults }
    }

    /// The handle that controls this model's faults.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Answers `prompt` from a small knowledge base, or with a generic answer
    /// that repeats the question. The same prompt gets the same answer.
    ///
    /// # Errors
    ///
    /// Only injected faults: see [`Faults::inject`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn complete(&self, prompt: &str) -> Result<String, LlmError> {
        let settings = self.faults.inject().await?;
        if settings.low_quality {
            return Ok(low_quality_answer(prompt).to_owned());
        }
        Ok(answer(prompt))
    }
}

/// Topics the model knows, each with the phrases that ask about it. The first
/// topic with a phrase in the prompt (as whole, consecutive words) wins.
const KNOWLEDGE: &[(&[&str], &str)] = &[
    (
        &["circuit breaker", "circuit breakers"],
        "A circuit breaker stops calling a failing dependency for a while. It \
         counts failures while closed, opens when they cross a threshold so \
         callers fail fast, and after a cool-down lets a few trial calls through \
         (half-open) to decide whether to close again.",
    ),
    (
        &["machine learning"],
        "Machine learning is a branch of AI in which programs learn patterns from \
         data instead of following hand-written rules: a model is trained on \
         examples, then used to make predictions on new inputs.",
    ),
    (
        &["rate limit", "rate limits", "rate limiting"],
        "A rate limit caps how many requests a client may send in a time window. \
         A service that is over it answers HTTP 429, often with a Retry-After \
         header saying when to try again.",
    ),
    (
        &["ai", "artificial intelligence"],
        "Artificial intelligence (AI) is the field of building systems that \
         perform tasks that normally need human intelligence, such as \
         understanding language, recognising images and making decisions.",
    ),
];

fn answer(prompt: &str) -> String {
    let prompt_words = words(prompt);
    let asks_about = |phrase: &str| {
        let phrase = words(phrase);
        prompt_words
            .windows(phrase.len())
            .any(|window| window == phrase)
    };
    let known = KNOWLEDGE
        .iter()
        .find(|(phrases, _)| phrases.iter().any(|phrase| asks_about(phrase)));
    match known {
        Some((_, text)) => (*text).to_owned(),
        None => format!(
            "You asked: \"{}\". I have no specific knowledge about that, but a \
             good first step is to break the question into smaller parts and \
             check each against a reliable source.",
            prompt.trim()
        ),
    }
}

/// The lowercased words of `text`, split at anything not alphanumeric.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A short, useless answer, picked by the prompt so it is deterministic.
fn low_quality_answer(prompt: &str) -> &'static str {
    const ANSWERS: [&str; 3] = ["error", "I don't know.", "ERROR: ???"];
    ANSWERS[prompt.len() % ANSWERS.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_from_keywords_as_whole_words() {
        assert!(answer("What is a Circuit-Breaker?").starts_with("A circuit breaker"));
        assert!(answer("Explain machine learning").starts_with("Machine learning"));
        assert!(answer("what is AI?").starts_with("Artificial intelligence"));
        // "said" contains "ai" but is not the word.
        let generic = answer("  What she said  ");
        assert!(generic.contains("\"What she said\""), "{generic}");
        assert_eq!(answer("what is AI?"), answer("what is AI?"));
    }

    #[test]
    fn failure_rate_hits_about_its_share_of_calls() {
        let faults = Faults::new();
        let hits = (0..10_000).filter(|_| faults.next_draw() < 0.3).count();
        assert!((2_800..3_200).contains(&hits), "{hits} hits");
    }

    #[test]
    fn failure_rate_is_clamped() {
        let faults = Faults::new();
        faults.set_failure_rate(7.0);
        assert_eq!(faults.settings().failure_rate, 1.0);
        faults.set_failure_rate(f64::NAN);
        assert_eq!(faults.settings().failure_rate, 0.0);
    }
}
