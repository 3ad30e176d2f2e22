use lago::lago_env;

#[lago_env("../../../../tests/data/invalid/unknown_net.yaml")]
fn t() {}

fn main() {}
