use lago::{lago_env, Vm};

#[lago_env("../../../../tests/envs/no-such-file.yaml")]
fn t(vm01: &Vm) {
    let _ = vm01;
}

fn main() {}
