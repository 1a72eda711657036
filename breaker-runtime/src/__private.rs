//! Support for the code `#[circuit_breaker]` generates. Not a public API:
//! nothing here is covered by semver.
pub use ::core;
pub use ::std;
