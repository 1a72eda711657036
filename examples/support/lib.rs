//! Shared code of the workspace examples.
//!
//! - [`llm`]: a client for OpenAI-compatible chat-completions APIs, with errors
//!   classified for a circuit breaker.
//! - [`sim`]: a simulated model, used when no API key is configured, and the
//!   faults that can be switched on in it at run time.
//! - [`fault_server`]: a local chat-completions server that fails on command,
//!   for tests and demos of the real client.

pub mod fault_server;
pub mod llm;
pub mod sim;
