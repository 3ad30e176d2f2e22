//! Parsing `#[lago_env("path/to/init.yaml")]`.

use syn::LitStr;
use syn::parse::{Parse, ParseStream};

/// The attribute's arguments: the init file, relative to the crate.
pub(crate) struct Args {
    pub init_file: LitStr,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(input.error("expected the init file: #[lago_env(\"tests/envs/env.yaml\")]"));
        }
        let init_file: LitStr = input.parse()?;
        if input.peek(syn::Token![,]) {
            let _: syn::Token![,] = input.parse()?;
        }
        if !input.is_empty() {
            return Err(input.error("expected only the init file: #[lago_env(\"tests/envs/env.yaml\")]"));
        }
        Ok(Args { init_file })
    }
}
