//! A database query behind a circuit breaker: the seed's "database
//! connection management" case, on an embedded SQLite file.
//!
//! The fault is a real one: a second connection takes an exclusive lock, so
//! the store's queries fail with "database is locked". While the circuit is
//! open, users looked up before are served from the cache and the database
//! is left alone.
//!
//! ```text
//! cargo run --example database
//! ```

use std::path::PathBuf;
use std::time::Duration;

use breaker_runtime::{BreakerError, FailureType, Outcome, circuit_breaker, registry};
use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OptionalExtension};

#[derive(Debug, Clone, PartialEq)]
struct User {
    id: i64,
    name: String,
}

#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Breaker(#[from] BreakerError),
}

/// A malformed query or a violated constraint is the caller's bug and says
/// nothing about the database's health; anything else counts against it.
fn classify(result: &Result<Option<User>, DbError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(DbError::Sqlite(rusqlite::Error::SqlInputError { .. })) => Outcome::Ignored,
        Err(DbError::Sqlite(error))
            if error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) =>
        {
            Outcome::Ignored
        }
        Err(_) => Outcome::Failure(FailureType::Error),
    }
}

struct UserStore {
    /// The database file: what tells two stores' cached users apart.
    path: PathBuf,
    // A `Connection` may move between threads but not be shared by them.
    connection: Mutex<Connection>,
}

impl UserStore {
    fn open(path: &PathBuf) -> rusqlite::Result<Self> {
        let connection = Connection::open(path)?;
        // Fail fast on a lock rather than wait rusqlite's default 5 s: the
        // breaker, not the driver, decides what a slow database means.
        connection.busy_timeout(Duration::from_millis(50))?;
        Ok(Self {
            path: path.clone(),
            connection: Mutex::new(connection),
        })
    }

    /// The user with `id`; while the database is failing, the user as last
    /// read from this store's file (`fallback = cached`, keyed by the file
    /// and the id, so two stores never serve each other's users).
    #[circuit_breaker(
        name = "database",
        failure_threshold = 2,
        recovery_timeout = "1s",
        success_threshold = 1,
        fallback = cached,
        cache_key = (self.path.clone(), id),
        classify = classify,
    )]
    fn find_user(&self, id: i64) -> Result<Option<User>, DbError> {
        let user = self
            .connection
            .lock()
            .query_row("SELECT id, name FROM users WHERE id = ?1", [id], |row| {
                Ok(User {
                    id: row.get(0)?,
                    name: row.get(1)?,
                })
            })
            .optional()?;
        Ok(user)
    }
}

fn show(id: i64, result: &Result<Option<User>, DbError>) {
    let breaker = registry()
        .get("database")
        .expect("registered on first call");
    let metrics = breaker.get_metrics();
    let answer = match result {
        Ok(Some(user)) => format!("user {} is {}", user.id, user.name),
        Ok(None) => format!("no user {id}"),
        Err(error) => format!("error: {error}"),
    };
    println!(
        "  {answer:<60} state={:<7} fallbacks={}",
        metrics.current_state.to_string(),
        metrics.fallback_calls
    );
}

fn main() -> rusqlite::Result<()> {
    let path = std::env::temp_dir().join(format!("breaker-database-{}.sqlite", std::process::id()));
    let admin = Connection::open(&path)?;
    admin.execute_batch(
        "DROP TABLE IF EXISTS users;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO users (id, name) VALUES (1, 'Ada'), (2, 'Grace'), (3, 'Edsger');",
    )?;
    let store = UserStore::open(&path)?;

    println!("1. The database is healthy; every user read is remembered.");
    for id in [1, 2] {
        show(id, &store.find_user(id));
    }

    println!("2. Another connection locks the database: remembered users are served.");
    admin.execute_batch("BEGIN EXCLUSIVE")?;
    for id in [1, 3] {
        show(id, &store.find_user(id));
    }

    println!("3. Two failures opened the circuit: the database is not touched.");
    for id in [2, 3] {
        show(id, &store.find_user(id));
    }

    println!("4. The lock is released; after the 1 s recovery timeout a probe closes the circuit.");
    admin.execute_batch("ROLLBACK")?;
    std::thread::sleep(Duration::from_millis(1100));
    for id in [3, 4] {
        show(id, &store.find_user(id));
    }

    println!("\n{}", registry().status());
    drop(store);
    drop(admin);
    // Best effort: the file is in the temporary directory anyway.
    let _ = std::fs::remove_file(&path);
    Ok(())
}
