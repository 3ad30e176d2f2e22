use lago::lago_env;

#[lago_env("../../../../tests/data/invalid/syntax_error.yaml")]
fn t() {}

fn main() {}
