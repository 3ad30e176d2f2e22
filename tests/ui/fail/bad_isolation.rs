use lago::lago_env;

#[lago_env("../../../../tests/envs/pair.yaml", isolation = "solo")]
fn t() {}

fn main() {}
