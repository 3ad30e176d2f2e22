//! Compile-time behaviour of `#[lago_env]` (trybuild): the documented usage
//! compiles; a missing or invalid init file, an unknown VM, no arguments and
//! the wrong order with `#[rstest]` are compile errors.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
