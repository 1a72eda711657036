//! An external HTTP API behind a circuit breaker with a cached fallback: the
//! seed's "API gateway protection" case.
//!
//! The example starts its own exchange-rate service on 127.0.0.1, makes it
//! fail, and shows the last good rates being served while the circuit is
//! open, then the recovery.
//!
//! ```text
//! cargo run --example external_api
//! ```

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use breaker_runtime::{BreakerError, FailureType, Outcome, circuit_breaker, registry};
use serde::Deserialize;

/// One exchange rate, as the service sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Rate {
    currency: String,
    per_usd: f64,
}

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("the service answered HTTP {0}")]
    Status(u16),
    #[error("could not reach the service: {0}")]
    Transport(#[from] reqwest::Error),
    #[error(transparent)]
    Breaker(#[from] BreakerError),
}

/// A 404 (an unknown currency) is our question's fault, not the service's.
fn classify(result: &Result<Rate, ApiError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(ApiError::Status(status)) if (400..500).contains(status) && *status != 429 => {
            Outcome::Ignored
        }
        Err(_) => Outcome::Failure(FailureType::Error),
    }
}

struct RatesApi {
    http: reqwest::Client,
    base_url: String,
}

impl RatesApi {
    /// The current rate of `currency`; while the service is failing, the
    /// last rate this service gave for `currency` (`fallback = cached`,
    /// keyed by the service's address and the currency).
    #[circuit_breaker(
        name = "exchange_rates",
        failure_threshold = 2,
        recovery_timeout = "1s",
        success_threshold = 1,
        timeout_duration = 2.0,
        fallback = cached,
        cache_key = (self.base_url.clone(), currency.to_owned()),
        classify = classify,
    )]
    async fn rate(&self, currency: &str) -> Result<Rate, ApiError> {
        let response = self
            .http
            .get(format!("{}/rates/{currency}", self.base_url))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(ApiError::Status(response.status().as_u16()));
        }
        Ok(response.json().await?)
    }
}

/// The exchange-rate service: a few fixed rates, and a switch that makes it
/// answer 503.
async fn start_service(failing: Arc<AtomicBool>) -> String {
    async fn rate(
        State(failing): State<Arc<AtomicBool>>,
        Path(currency): Path<String>,
    ) -> Result<axum::Json<serde_json::Value>, StatusCode> {
        // Relaxed: a flag read per request; no other data hangs on it.
        if failing.load(Ordering::Relaxed) {
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        let per_usd = match currency.as_str() {
            "EUR" => 0.92,
            "GBP" => 0.79,
            "JPY" => 151.3,
            _ => return Err(StatusCode::NOT_FOUND),
        };
        Ok(axum::Json(
            serde_json::json!({ "currency": currency, "per_usd": per_usd }),
        ))
    }
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("a free port on 127.0.0.1");
    let address = listener.local_addr().expect("a bound address");
    let app = Router::new()
        .route("/rates/{currency}", get(rate))
        .with_state(failing);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::main]
async fn main() {
    let failing = Arc::new(AtomicBool::new(false));
    let api = RatesApi {
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client"),
        base_url: start_service(Arc::clone(&failing)).await,
    };
    let show = |currency: &str, result: &Result<Rate, ApiError>| {
        let breaker = registry()
            .get("exchange_rates")
            .expect("registered on first call");
        let metrics = breaker.get_metrics();
        let answer = match result {
            Ok(rate) => format!("1 USD = {} {}", rate.per_usd, rate.currency),
            Err(error) => format!("error: {error}"),
        };
        println!(
            "  {currency}: {answer:<42} state={:<9} fallbacks={}",
            metrics.current_state.to_string(),
            metrics.fallback_calls
        );
    };

    println!("1. The service is healthy; every good answer is remembered.");
    for currency in ["EUR", "GBP"] {
        show(currency, &api.rate(currency).await);
    }

    println!("2. The service fails (503): remembered rates are served, the circuit opens.");
    failing.store(true, Ordering::Relaxed);
    for currency in ["EUR", "GBP"] {
        show(currency, &api.rate(currency).await);
    }

    println!("3. Open: remembered rates at once; nothing to remember for JPY.");
    for currency in ["EUR", "JPY"] {
        show(currency, &api.rate(currency).await);
    }

    println!("4. The service recovers; after the 1 s recovery timeout a probe closes the circuit.");
    failing.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for currency in ["JPY", "EUR"] {
        show(currency, &api.rate(currency).await);
    }

    println!("5. An unknown currency (404) is our mistake: it is not counted against the service.");
    show("XYZ", &api.rate("XYZ").await);

    println!("\n{}", registry().status());
}
