//! The states a circuit can be in.

use std::fmt;

use serde::Serialize;

/// The three states of the classic circuit breaker.
///
/// Manual states fold into these: forced open reads as `Open`, forced
/// closed as `Closed`. [`DetailedState`] tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow; failures are counted.
    Closed,
    /// Calls are rejected until the recovery timeout passes.
    Open,
    /// A few probe calls test whether the dependency has recovered.
    HalfOpen,
}

impl CircuitState {
    /// The snake-case name, as in the seed design (`"half_open"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The state including the manual ones an operator can force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetailedState {
    /// Closed, moving automatically.
    Closed,
    /// Open, moving automatically to half-open after the recovery timeout.
    Open,
    /// Half-open, admitting probes.
    HalfOpen,
    /// Forced open by [`force_open`](crate::CircuitBreaker::force_open):
    /// every call is rejected until [`reset`](crate::CircuitBreaker::reset).
    ForcedOpen,
    /// Disabled by [`force_closed`](crate::CircuitBreaker::force_closed):
    /// every call passes and is counted, but nothing moves the state.
    ForcedClosed,
}

impl DetailedState {
    /// Every state, in declaration order.
    ///
    /// ```
    /// use breaker_runtime::DetailedState;
    ///
    /// let names: Vec<&str> = DetailedState::ALL.iter().map(|s| s.as_str()).collect();
    /// assert_eq!(names, ["closed", "open", "half_open", "forced_open", "forced_closed"]);
    /// ```
    pub const ALL: [DetailedState; 5] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::ForcedOpen,
        Self::ForcedClosed,
    ];

    /// The position of this state in [`ALL`](Self::ALL).
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The classic state this one reads as.
    pub const fn simple(self) -> CircuitState {
        match self {
            Self::Closed | Self::ForcedClosed => CircuitState::Closed,
            Self::Open | Self::ForcedOpen => CircuitState::Open,
            Self::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// Whether an operator forced this state.
    pub const fn is_forced(self) -> bool {
        matches!(self, Self::ForcedOpen | Self::ForcedClosed)
    }

    /// The snake-case name (`"forced_open"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::ForcedClosed => "forced_closed",
        }
    }
}

impl fmt::Display for DetailedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
