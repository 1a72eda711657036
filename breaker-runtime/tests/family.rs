//! Keyed families: the bound, the eviction rule, the full-family
//! rejection, exact counts under concurrency, and the status grouping.
//! Idleness is driven by a `ManualClock`; nothing sleeps.

use std::time::Duration;

use breaker_runtime::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState, DetailedState, EventKind,
    Family, ManualClock, Registry, subscribe,
};

const IDLE: Duration = Duration::from_secs(10);

fn config(failure_threshold: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .failure_threshold(failure_threshold)
        .recovery_timeout(Duration::from_secs(24 * 3600))
        .build()
        .unwrap()
}

fn family(name: &str, max_keys: usize, clock: &ManualClock) -> Family {
    Family::builder(name)
        .config(config(1))
        .max_keys(max_keys)
        .idle_after(IDLE)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn succeed(family: &Family, key: &str) -> Result<(), BreakerError> {
    family.with(key, |b| b.call(|| Ok::<_, ()>(())).unwrap())
}

fn trip(family: &Family, key: &str) -> CircuitBreaker {
    let breaker = family.breaker(key).unwrap();
    let _ = breaker.call(|| Err::<(), _>("down"));
    assert_eq!(breaker.state(), CircuitState::Open);
    breaker
}

#[test]
fn a_flood_of_100_000_keys_stays_within_1_000_and_never_evicts_a_tripped_circuit() {
    let clock = ManualClock::new();
    let hosts = family("flood", 1_000, &clock);
    let tripped: Vec<CircuitBreaker> = (0..10)
        .map(|i| trip(&hosts, &format!("tripped-{i}")))
        .collect();
    let forced_open = hosts.breaker("forced-open").unwrap();
    forced_open.force_open();
    let forced_closed = hosts.breaker("forced-closed").unwrap();
    forced_closed.force_closed();

    let (mut admitted, mut refused) = (0_u64, 0_u64);
    for i in 0..100_000 {
        if i % 1_000 == 0 {
            // Time passes: the flood keys of the last round go idle.
            clock.advance(IDLE);
        }
        match succeed(&hosts, &format!("flood-{i}")) {
            Ok(()) => admitted += 1,
            Err(BreakerError::FamilyFull { family, limit }) => {
                assert_eq!((family.as_str(), limit), ("flood", 1_000));
                refused += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(
            hosts.len() <= 1_000,
            "{} members after key {i}",
            hosts.len()
        );
    }

    assert_eq!(admitted + refused, 100_000);
    assert_eq!(hosts.refused_keys(), refused);
    // A member is evicted once two sweeps `idle_after` apart saw the same
    // call count, so the flood fills the family every other round.
    assert!(
        admitted > 45_000,
        "idle keys make room: {admitted} admitted"
    );
    assert!(
        hosts.evicted_keys() > 40_000,
        "{} evicted",
        hosts.evicted_keys()
    );
    assert_eq!(hosts.evicted_keys() + hosts.len() as u64, admitted + 12);
    assert_eq!(hosts.len(), hosts.keys().len());
    // Members and the evicted breakers held for a while: at most twice
    // the bound in all.
    let reachable = (0..100_000)
        .filter(|i| hosts.get(&format!("flood-{i}")).is_some())
        .count();
    assert!(
        (1_001..=2_000).contains(&reachable),
        "{reachable} flood keys still have a breaker"
    );
    for (i, before) in tripped.iter().enumerate() {
        let now = hosts
            .get(&format!("tripped-{i}"))
            .expect("a tripped circuit stays");
        assert!(now.ptr_eq(before), "the same breaker, not a fresh one");
        assert_eq!(now.state(), CircuitState::Open);
        assert_eq!(now.get_metrics().failed_calls, 1);
    }
    assert_eq!(
        hosts.get("forced-open").unwrap().detailed_state(),
        DetailedState::ForcedOpen
    );
    assert_eq!(
        hosts.get("forced-closed").unwrap().detailed_state(),
        DetailedState::ForcedClosed
    );
}

#[test]
fn a_full_family_of_tripped_circuits_refuses_a_new_key_and_keeps_serving_its_own() {
    let clock = ManualClock::new();
    let hosts = family("full", 3, &clock);
    for key in ["a", "b", "c"] {
        trip(&hosts, key);
    }
    clock.advance(IDLE * 100);

    let refused = succeed(&hosts, "d").unwrap_err();
    assert_eq!(
        refused,
        BreakerError::FamilyFull {
            family: "full".into(),
            limit: 3
        }
    );
    assert_eq!(refused.breaker_name(), "full");
    assert!(refused.to_string().contains("all 3 keys"), "{refused}");
    assert_eq!(hosts.refused_keys(), 1);
    assert!(hosts.get("d").is_none());
    // A key with a member is not refused: its open circuit answers.
    let rejected = hosts.with("a", |b| b.call(|| Ok::<_, ()>(()))).unwrap();
    assert!(matches!(
        rejected.unwrap_err().breaker_error(),
        Some(BreakerError::Open { .. })
    ));

    // Once one is reset and stays idle past the last sweep, the new key
    // gets its slot.
    hosts.get("c").unwrap().reset();
    clock.advance(IDLE);
    succeed(&hosts, "d").unwrap();
    assert_eq!(hosts.evicted_keys(), 1);
    assert_eq!(hosts.keys(), ["a", "b", "d"]);
}

#[test]
fn only_a_member_with_no_call_and_no_failure_for_idle_after_is_evicted() {
    let clock = ManualClock::new();
    let hosts = Family::builder("idle")
        .config(config(3))
        .idle_after(IDLE)
        .clock(clock.clone())
        .build()
        .unwrap();
    succeed(&hosts, "quiet").unwrap();
    succeed(&hosts, "busy").unwrap();
    let failing = hosts.breaker("failing").unwrap();
    let _ = failing.call(|| Err::<(), _>("down"));
    assert_eq!(hosts.sweep(), 0, "every count just changed");

    clock.advance(IDLE - Duration::from_nanos(1));
    assert_eq!(hosts.sweep(), 0, "not idle long enough");
    clock.advance(Duration::from_nanos(1));
    succeed(&hosts, "busy").unwrap();
    assert_eq!(
        hosts.sweep(),
        1,
        "only `quiet` has had no call and no failure for 10 s"
    );
    assert_eq!(hosts.keys(), ["busy", "failing"]);

    clock.advance(IDLE * 3);
    assert_eq!(hosts.sweep(), 1, "`busy` is idle now");
    assert_eq!(
        hosts.keys(),
        ["failing"],
        "a consecutive failure keeps its member"
    );
    assert_eq!(hosts.evicted_keys(), 2);

    // An evicted key comes back as a fresh breaker once its old one has
    // been let go (held for `idle_after`, idle).
    succeed(&hosts, "quiet").unwrap();
    assert_eq!(hosts.get("quiet").unwrap().get_metrics().total_calls, 1);
}

#[test]
fn threads_sharing_keys_count_every_call_exactly_on_one_breaker_per_key() {
    const THREADS: usize = 4;
    const KEYS: usize = 8;
    const ROUNDS: usize = 5_000;
    let hosts = Family::new("concurrent", config(5)).unwrap();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let hosts = &hosts;
            scope.spawn(move || {
                for round in 0..ROUNDS {
                    let key = (round + t) % KEYS;
                    let fail = round % 7 == 0;
                    hosts
                        .with(&key, |b| {
                            let _ = b.call(|| if fail { Err(()) } else { Ok(()) });
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(hosts.len(), KEYS);
    let mut total = 0;
    for key in 0..KEYS {
        let m = hosts.get(&key).unwrap().get_metrics();
        assert_eq!(m.total_calls, (THREADS * ROUNDS / KEYS) as u64, "key {key}");
        assert_eq!(m.successful_calls + m.failed_calls, m.total_calls);
        total += m.total_calls;
    }
    assert_eq!(total, (THREADS * ROUNDS) as u64);
}

#[test]
fn threads_racing_on_a_new_key_get_one_breaker() {
    let hosts = Family::new("race", CircuitBreakerConfig::default()).unwrap();
    let barrier = std::sync::Barrier::new(4);
    let breakers: Vec<CircuitBreaker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    hosts.breaker("new").unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(breakers.iter().all(|b| b.ptr_eq(&breakers[0])));
    assert_eq!(hosts.len(), 1);
}

#[test]
fn status_groups_a_familys_members_under_its_name() {
    let registry = Registry::new();
    for name in ["alpha", "llm-other", "zeta"] {
        registry
            .get_or_register(name, CircuitBreakerConfig::default())
            .unwrap();
    }
    let llm = registry.family("llm", config(1)).unwrap();
    let _ = llm.with("sim-b", |b| b.call(|| Err::<(), _>("down")));
    llm.with("sim-a", |b| b.call(|| Ok::<_, ()>(())))
        .unwrap()
        .unwrap();
    assert!(
        registry
            .get("llm[sim-b]")
            .unwrap()
            .ptr_eq(&llm.get("sim-b").unwrap())
    );
    assert!(registry.get("llm[nope]").is_none());

    let status = registry.status();
    let names: Vec<&str> = status.breakers.iter().map(|b| &*b.name).collect();
    assert_eq!(
        names,
        ["alpha", "llm[sim-a]", "llm[sim-b]", "llm-other", "zeta"]
    );
    let member = &status.breakers[2];
    assert_eq!(
        (member.family.as_deref(), member.key.as_deref()),
        (Some("llm"), Some("sim-b"))
    );
    assert_eq!(member.state, DetailedState::Open);
    assert_eq!(status.families.len(), 1);
    assert_eq!(
        (status.families[0].keys, status.families[0].max_keys),
        (2, 1_000)
    );

    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["breakers"][2]["family"], "llm");
    assert_eq!(json["breakers"][2]["key"], "sim-b");
    assert!(
        json["breakers"][0].get("family").is_none(),
        "plain breakers have no family"
    );
    assert_eq!(json["families"][0]["name"], "llm");
    assert_eq!(json["families"][0]["keys"], 2);

    let table = status.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[2].starts_with("llm ") && lines[2].contains("family"),
        "{table}"
    );
    assert!(lines[2].contains("2 of 1000 keys"), "{table}");
    assert!(lines[3].starts_with("  llm[sim-a]"), "{table}");
    assert!(
        lines[4].starts_with("  llm[sim-b]") && lines[4].contains("open"),
        "{table}"
    );
    assert!(lines[5].starts_with("llm-other"), "{table}");
}

#[test]
fn a_family_refuses_a_zero_bound() {
    let error = Family::builder("zero").max_keys(0).build().unwrap_err();
    assert_eq!(
        error.to_string(),
        "`max_keys` is 0, but it must be at least 1"
    );
    let error = Family::builder("zero")
        .idle_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("idle_after"), "{error}");
}

#[test]
fn a_member_held_across_writes_and_nested_lookups_stays_valid() {
    // A held member pins the snapshot it came from; lookups made while it
    // lives see newer tables, and the old ones are freed after.
    let hosts = Family::new("held", CircuitBreakerConfig::default()).unwrap();
    hosts.breaker("a").unwrap();
    let outer = hosts.member("a").unwrap();
    let mut held = Vec::new();
    for i in 0..50 {
        hosts.breaker(&format!("k{i}")).unwrap();
        held.push(hosts.member("a").unwrap());
        held.push(hosts.member(&format!("k{i}")).unwrap());
    }
    assert_eq!(outer.name(), "held[a]");
    outer.call(|| Ok::<_, ()>(())).unwrap();
    for (i, member) in held.iter().enumerate() {
        let expected = if i % 2 == 0 {
            "held[a]".to_owned()
        } else {
            format!("held[k{}]", i / 2)
        };
        assert_eq!(member.name(), expected);
    }
    drop(held);
    drop(outer);
    assert_eq!(hosts.member("a").unwrap().get_metrics().total_calls, 1);
    assert_eq!(hosts.len(), 51);
}

#[test]
fn families_with_the_same_keys_never_lend_each_other_their_members() {
    // Two families changed the same number of times: a thread's cache must
    // still tell their snapshots apart.
    let a = Family::new("twin-a", CircuitBreakerConfig::default()).unwrap();
    let b = Family::new("twin-b", CircuitBreakerConfig::default()).unwrap();
    for key in ["x", "y"] {
        a.breaker(key).unwrap();
        b.breaker(key).unwrap();
    }
    for _ in 0..3 {
        for key in ["x", "y"] {
            assert_eq!(a.member(key).unwrap().name(), format!("twin-a[{key}]"));
            assert_eq!(b.member(key).unwrap().name(), format!("twin-b[{key}]"));
        }
    }
}

#[test]
fn keys_asked_for_in_turn_each_get_their_own_breaker() {
    // A thread remembers the key it asked for last; another key is looked
    // up, not served the remembered one. Keys of one length and of one
    // first and last byte, for the comparison's short cuts.
    let hosts = Family::new("in-turn", CircuitBreakerConfig::default()).unwrap();
    let keys = [
        "a",
        "b",
        "ab",
        "ba",
        "abcd",
        "abzd",
        "a-long-host-name",
        "a-lung-host-name",
    ];
    for key in keys {
        hosts.breaker(key).unwrap();
    }
    for _ in 0..2 {
        for key in keys {
            for _ in 0..2 {
                let member = hosts.member(key).unwrap();
                assert_eq!(member.name(), format!("in-turn[{key}]"));
                member.call(|| Ok::<_, ()>(())).unwrap();
            }
        }
    }
    for key in keys {
        assert_eq!(
            hosts.get(key).unwrap().get_metrics().total_calls,
            4,
            "{key}"
        );
    }
}

#[test]
fn a_family_asked_for_with_another_config_keeps_its_own_and_reports_the_conflict() {
    let registry = Registry::new();
    let first = registry.family("conflicted", config(1)).unwrap();
    let again = registry.family("conflicted", config(1)).unwrap();
    assert!(again.ptr_eq(&first));
    let other = registry.family("conflicted", config(7)).unwrap();
    assert!(other.ptr_eq(&first), "the family is kept, not merged");
    assert_eq!(other.config().failure_threshold, 1);
    first.breaker("a").unwrap();

    let status = registry.status();
    assert_eq!(status.families[0].config_conflicts, [config(7)]);
    assert_eq!(status.breakers[0].config_conflicts, [config(7)]);
    assert!(status.to_string().contains("CONFIG CONFLICT"), "{status}");
}

#[test]
fn calls_count_exactly_while_another_thread_adds_and_evicts_keys() {
    const READERS: usize = 3;
    const CALLS: usize = 20_000;
    const HOT: [&str; 4] = ["h0", "h1", "h2", "h3"];
    let clock = ManualClock::new();
    let hosts = family("churn", 64, &clock);
    for key in HOT {
        // Forced closed: counted like closed, and never evicted.
        hosts.breaker(key).unwrap().force_closed();
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut written = 0_u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // Every new key and every eviction publishes new tables, which
                // the readers' caches must pick up while members are in use.
                let _ = succeed(&hosts, &format!("w{written}"));
                written += 1;
                if written % 16 == 0 {
                    clock.advance(IDLE);
                    hosts.sweep();
                }
            }
            written
        });
        let readers: Vec<_> = (0..READERS)
            .map(|t| {
                let hosts = &hosts;
                scope.spawn(move || {
                    for i in 0..CALLS {
                        let key = HOT[(i + t) % HOT.len()];
                        let member = hosts.member(key).unwrap();
                        assert_eq!(member.name(), format!("churn[{key}]"));
                        member.call(|| Ok::<_, ()>(())).unwrap();
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap()
    });
    let total: u64 = HOT
        .iter()
        .map(|key| hosts.get(key).unwrap().get_metrics().total_calls)
        .sum();
    assert_eq!(total, (READERS * CALLS) as u64);
    assert!(
        written > 16,
        "the writer churned the tables {written} times"
    );
    assert!(hosts.len() <= 64);
}

/// Runs `f` on a thread and says whether it finished within 5 s (a
/// deadlock does not).
fn finishes(f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(5)).is_ok()
}

#[test]
fn an_event_listener_may_read_the_registry_while_a_family_is_made() {
    static REGISTRY: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::new);
    // An override out of range: the family is made with the attribute's
    // configuration, and the problem is emitted as an event.
    let _ = REGISTRY.load_config_toml(
        "listener.toml",
        "[listener-reads-registry]\nfailure_threshold = 0\n",
    );
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let seen_tx = std::sync::Mutex::new(seen_tx);
    let subscription = subscribe(move |event| {
        if event.breaker == "listener-reads-registry"
            && matches!(event.kind, EventKind::ConfigOverrideRejected { .. })
        {
            let found = REGISTRY.get_family("listener-reads-registry").is_some();
            let _ = seen_tx.lock().unwrap().send(found);
        }
    });
    let done = finishes(|| {
        REGISTRY
            .family("listener-reads-registry", CircuitBreakerConfig::default())
            .unwrap();
    });
    subscription.unsubscribe();
    assert!(
        done,
        "Registry::family deadlocked in its own event listener"
    );
    assert_eq!(seen_rx.try_recv(), Ok(true), "the listener saw the family");
}

#[test]
fn an_event_listener_may_ask_the_family_while_a_member_is_made() {
    static REGISTRY: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::new);
    let _ = REGISTRY.load_config_toml(
        "listener.toml",
        "[\"listener-asks-family[k]\"]\nfailure_threshold = 0\n",
    );
    let family = REGISTRY
        .family("listener-asks-family", CircuitBreakerConfig::default())
        .unwrap();
    let seen = family.clone();
    let (len_tx, len_rx) = std::sync::mpsc::channel();
    let len_tx = std::sync::Mutex::new(len_tx);
    let subscription = subscribe(move |event| {
        if event.breaker == "listener-asks-family[k]"
            && matches!(event.kind, EventKind::ConfigOverrideRejected { .. })
        {
            let other = seen.breaker("other").is_ok();
            let _ = len_tx.lock().unwrap().send((seen.len(), other));
        }
    });
    let done = finishes(move || {
        family.breaker("k").unwrap();
    });
    subscription.unsubscribe();
    assert!(done, "Family::insert deadlocked in its own event listener");
    assert_eq!(
        len_rx.try_recv(),
        Ok((2, true)),
        "the listener ran after `k` was added, and could add `other`"
    );
}

#[test]
fn a_circuit_tripped_by_a_call_in_flight_while_its_member_is_evicted_stays_the_keys() {
    let clock = ManualClock::new();
    let hosts = family("in-flight", 1, &clock);
    succeed(&hosts, "a").unwrap();
    hosts.sweep(); // records a's call count
    clock.advance(IDLE);

    let result = hosts
        .with("a", |b| {
            b.call(|| {
                // While this call on `a` runs, a new key finds the family
                // full and sweeps: `a` has seen no call finish for
                // `idle_after`.
                hosts.breaker("b").unwrap();
                Err::<(), _>("503")
            })
        })
        .unwrap();
    assert!(result.is_err());
    assert_eq!(hosts.evicted_keys(), 1, "`a` made room for `b`");
    assert_eq!(hosts.keys(), ["b"]);

    let tripped = hosts.get("a").expect("the evicted breaker is held");
    assert_eq!(tripped.state(), CircuitState::Open);
    // Once `b` goes idle, `a`'s next call gets its tripped breaker back,
    // not a fresh closed one, and is rejected.
    clock.advance(IDLE);
    let rejected = hosts.with("a", |b| b.call(|| Ok::<_, ()>(()))).unwrap();
    assert!(matches!(
        rejected.unwrap_err().breaker_error(),
        Some(BreakerError::Open { .. })
    ));
    assert!(hosts.get("a").unwrap().ptr_eq(&tripped));
    assert_eq!(hosts.keys(), ["a"]);
}

#[test]
fn an_evicted_breaker_is_held_for_idle_after_then_let_go() {
    let clock = ManualClock::new();
    let hosts = family("held", 2, &clock);
    let a = hosts.breaker("a").unwrap();
    clock.advance(IDLE);
    assert_eq!(hosts.sweep(), 1);
    assert!(hosts.get("a").unwrap().ptr_eq(&a), "held");

    clock.advance(IDLE - Duration::from_nanos(1));
    hosts.sweep();
    assert!(hosts.get("a").unwrap().ptr_eq(&a), "held for `idle_after`");
    clock.advance(Duration::from_nanos(1));
    hosts.sweep();
    assert!(hosts.get("a").is_none(), "then let go");
    assert!(!hosts.breaker("a").unwrap().ptr_eq(&a), "a fresh one");
}

#[test]
fn a_held_breaker_that_tripped_is_kept_past_idle_after_until_its_room_is_needed() {
    let clock = ManualClock::new();
    let hosts = family("held-tripped", 1, &clock);
    let a = hosts.breaker("a").unwrap();
    clock.advance(IDLE);
    assert_eq!(hosts.sweep(), 1);
    // A call that was running when `a` was evicted fails after.
    let _ = a.call(|| Err::<(), _>("503"));

    clock.advance(IDLE * 5);
    hosts.sweep();
    assert!(hosts.get("a").unwrap().ptr_eq(&a), "tripped: still held");

    // The holding area has room for one (the bound): evicting `b` needs it.
    hosts.breaker("b").unwrap();
    clock.advance(IDLE);
    hosts.breaker("c").unwrap();
    assert_eq!(hosts.keys(), ["c"]);
    assert!(hosts.get("a").is_none(), "let go for `b`");
    assert!(hosts.get("b").is_some(), "held");
}

#[test]
fn a_key_longer_than_256_bytes_is_refused_and_gets_no_breaker() {
    let clock = ManualClock::new();
    let hosts = family("long-keys", 10, &clock);
    let longest = "k".repeat(Family::MAX_KEY_BYTES);
    hosts.breaker(&longest).unwrap();

    let megabyte = "k".repeat(1 << 20);
    let refused = hosts
        .with(&megabyte, |_| unreachable!("not run"))
        .unwrap_err();
    assert_eq!(
        refused,
        BreakerError::KeyTooLong {
            family: "long-keys".into(),
            len: 1 << 20,
            max: 256
        }
    );
    assert_eq!(refused.breaker_name(), "long-keys");
    let message = refused.to_string();
    assert!(message.contains("at most 256 bytes"), "{message}");
    assert!(message.len() < 200, "the key is not in the message");
    // Through `Display` too, one byte over.
    let refused = hosts.breaker(&format_args!("{longest}!")).unwrap_err();
    assert!(matches!(refused, BreakerError::KeyTooLong { len: 257, .. }));

    assert_eq!(hosts.keys(), [longest]);
    assert!(hosts.get(&megabyte).is_none());
    assert_eq!(hosts.refused_keys(), 0, "not a full family");
}
