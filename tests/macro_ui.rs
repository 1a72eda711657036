//! Compile-time behaviour of `#[circuit_breaker]`: every supported shape
//! compiles (`tests/ui/pass`), and every mistake is an error that points at
//! the user's token and says what to do (`tests/ui/fail`). Regenerate the
//! `.stderr` files with `TRYBUILD=overwrite`, then read each one.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
