use lago::lago_env;

#[lago_env("../../../../tests/data/invalid/billion_laughs.yaml")]
fn t() {}

fn main() {}
