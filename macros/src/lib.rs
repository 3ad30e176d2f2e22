//! The `#[lago_env("init.yaml")]` attribute. Use it through the `lago`
//! crate (`lago::lago_env`), where it is documented.

mod args;
mod expand;

use proc_macro::TokenStream;

/// See `lago::lago_env`.
#[proc_macro_attribute]
pub fn lago_env(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::lago_env(args.into(), item.into()).into()
}
