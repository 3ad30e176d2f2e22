use lago::lago_env;

#[lago_env]
fn t() {}

fn main() {}
