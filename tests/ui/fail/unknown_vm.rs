use lago::{lago_env, Vm};

#[lago_env("../../../../tests/envs/pair.yaml")]
fn t(vm01: &Vm, vm09: &Vm) {
    let _ = (vm01, vm09);
}

fn main() {}
