//! Parsing `#[lago_env("path/to/init.yaml", isolation = "reset", timeout = "120s")]`.

use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitStr, Token};

/// How a test shares its environment (`isolation = "…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Isolation {
    #[default]
    Shared,
    Reset,
    Fresh,
}

/// The attribute's arguments: the init file, relative to the crate, and options.
pub(crate) struct Args {
    pub init_file: LitStr,
    pub isolation: Isolation,
    /// The timeout in milliseconds, and the literal (for errors).
    pub timeout: Option<(u64, LitStr)>,
    /// Lago keys lago does not act on are compile errors, not warnings.
    pub strict: bool,
    /// A console pattern that fails the test (checked as a regex here).
    pub fail_on_console: Option<LitStr>,
    /// `warm = false`: the environment boots instead of being restored.
    pub warm: Option<bool>,
    /// `bundle = "on-failure"` or `"never"`: a failure bundle when the test fails, or none.
    pub bundle: Option<bool>,
}

const USAGE: &str = "expected #[lago_env(\"tests/envs/env.yaml\")], optionally with isolation = \"shared\" | \"reset\" | \"fresh\", timeout = \"120s\", fail_on_console = \"regex\", warm = false, bundle = \"on-failure\" | \"never\" and strict";

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(input.error("expected the init file: #[lago_env(\"tests/envs/env.yaml\")]"));
        }
        let init_file: LitStr = input.parse()?;
        let mut args = Args {
            init_file,
            isolation: Isolation::Shared,
            timeout: None,
            strict: false,
            fail_on_console: None,
            warm: None,
            bundle: None,
        };
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            let _: Token![,] = input.parse()?;
            if input.is_empty() {
                break;
            }
            let key: Ident = input.parse().map_err(|e| syn::Error::new(e.span(), USAGE))?;
            if key == "strict" && !input.peek(Token![=]) {
                if args.strict {
                    return Err(syn::Error::new(key.span(), "`strict` is given twice"));
                }
                args.strict = true;
                continue;
            }
            let _: Token![=] = input.parse()?;
            let k = key.to_string();
            if seen.contains(&k) {
                return Err(syn::Error::new(key.span(), format!("`{k}` is given twice")));
            }
            seen.push(k.clone());
            if k == "warm" {
                let value: syn::LitBool = input
                    .parse()
                    .map_err(|e| syn::Error::new(e.span(), "warm: expected `true` or `false`"))?;
                args.warm = Some(value.value);
                continue;
            }
            let value: LitStr = input.parse()?;
            string_option(&mut args, &key, &k, value)?;
        }
        Ok(args)
    }
}

/// Option `k` (`key`), whose value is a string, into `args`.
fn string_option(args: &mut Args, key: &Ident, k: &str, value: LitStr) -> syn::Result<()> {
    match k {
        "isolation" => {
            args.isolation = match value.value().as_str() {
                "shared" => Isolation::Shared,
                "reset" => Isolation::Reset,
                "fresh" => Isolation::Fresh,
                other => {
                    return Err(syn::Error::new(
                        value.span(),
                        format!("expected isolation \"shared\", \"reset\" or \"fresh\", found {other:?}"),
                    ));
                }
            }
        }
        "timeout" => {
            let d = lago_config::parse_duration(&value.value()).ok_or_else(|| {
                syn::Error::new(
                    value.span(),
                    format!(
                        "expected a timeout like \"120s\", \"2m\" or \"500ms\", found {:?}",
                        value.value()
                    ),
                )
            })?;
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            args.timeout = Some((ms, value));
        }
        "fail_on_console" => {
            if value.value().is_empty() {
                return Err(syn::Error::new(
                    value.span(),
                    "fail_on_console: expected a regular expression, found an empty string",
                ));
            }
            if let Err(e) = regex::Regex::new(&value.value()) {
                return Err(syn::Error::new(
                    value.span(),
                    format!("fail_on_console: not a valid regular expression: {e}"),
                ));
            }
            args.fail_on_console = Some(value);
        }
        "bundle" => {
            args.bundle = Some(match value.value().as_str() {
                "on-failure" => true,
                "never" => false,
                other => {
                    return Err(syn::Error::new(
                        value.span(),
                        format!("bundle: expected \"on-failure\" or \"never\", found {other:?}"),
                    ));
                }
            });
        }
        other => {
            return Err(syn::Error::new(
                key.span(),
                format!("unknown option `{other}`; {USAGE}"),
            ));
        }
    }
    Ok(())
}
