//! Shared code of the workspace examples.
//!
//! - [`agent`]: the resilient agent, whose three dependencies are
//!   `#[circuit_breaker]` methods.
//! - [`repl`]: the agent's commands, shared by its interactive, piped and
//!   demo modes.
//! - [`llm`]: a client for OpenAI-compatible chat-completions APIs, with errors
//!   classified for a circuit breaker.
//! - [`sim`]: a simulated model, used when no API key is configured, and the
//!   faults that can be switched on in it at run time.
//! - [`fault_server`]: a local chat-completions server that fails on command,
//!   for tests and demos of the real client.

pub mod agent;
pub mod fault_server;
pub mod llm;
pub mod repl;
pub mod sim;
