//! Suite environments as rstest fixtures.
//!
//! The tests below are the example: run them inside the test namespace with
//!
//! ```sh
//! scripts/netns-run cargo test --example rstest_fixtures
//! ```
//!
//! Wrap `lago::fixtures::env` / `lago::fixtures::vm` in your own
//! `#[fixture]`s. Every test of the binary that uses the same init file
//! shares one environment (booted once); a failing test gets failure
//! artifacts under `target/lago-artifacts/<test>/`.

fn main() {
    eprintln!("this example is a set of tests: scripts/netns-run cargo test --example rstest_fixtures");
}

#[cfg(test)]
mod tests {
    use lago::fixtures::{SuiteEnv, SuiteVm};
    use rstest::{fixture, rstest};

    const ENV: &str = "tests/envs/pair.yaml";

    #[fixture]
    fn pair() -> SuiteEnv {
        lago::fixtures::env(ENV)
    }

    #[fixture]
    fn vm01() -> SuiteVm {
        lago::fixtures::vm(ENV, "vm01")
    }

    #[rstest]
    #[case("vm01")]
    #[case("vm02")]
    fn every_vm_knows_its_fqdn(pair: SuiteEnv, #[case] name: &str) {
        let st = pair.vm(name).ssh(["hostname", "-f"]).unwrap();
        assert_eq!(st.out.trim(), format!("{name}.lago.local"));
    }

    #[rstest]
    fn copies_round_trip(vm01: SuiteVm) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.txt"), "hello").unwrap();
        vm01.copy_to(dir.path().join("in.txt"), "/tmp/in.txt").unwrap();
        vm01.copy_from("/tmp/in.txt", dir.path().join("out.txt")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("out.txt")).unwrap(), "hello");
    }
}
