//! Expansion of `#[lago_env]`: validate the init file at compile time,
//! take the `&Vm` / `&Env` parameters out of the signature, and run the body
//! inside the suite environment.

use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, Type};

use crate::args::{Args, Isolation};

/// A parameter taken out of the signature, with its type as the user wrote
/// it (so their `use lago::{Env, Vm}` stays used).
enum Binding {
    Env(syn::Ident, Type),
    Vm(syn::Ident, Type, String),
}

/// The last path segment of `&T` (`Vm` for `&Vm` or `&lago::Vm`).
fn ref_target(ty: &Type) -> Option<String> {
    let Type::Reference(r) = ty else { return None };
    let Type::Path(p) = r.elem.as_ref() else { return None };
    p.path.segments.last().map(|s| s.ident.to_string())
}

fn is_test_attr(attr: &syn::Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| matches!(s.ident.to_string().as_str(), "test" | "rstest"))
}

/// `a/b/../c` → `a/c`, without touching the file system (for messages and `include_str!`).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The original item with `error` prepended: IDEs keep seeing the function.
fn with_error(error: syn::Error, item: TokenStream) -> TokenStream {
    let e = error.to_compile_error();
    quote! { #e #item }
}

pub(crate) fn lago_env(args: TokenStream, item: TokenStream) -> TokenStream {
    let args: Args = match syn::parse2(args) {
        Ok(a) => a,
        Err(e) => return with_error(e, item),
    };
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => return with_error(e, item),
    };
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    match expand(&args, &mut func, Path::new(&manifest)) {
        Ok(tokens) => tokens,
        Err(e) => with_error(e, item),
    }
}

fn expand(args: &Args, func: &mut ItemFn, manifest_dir: &Path) -> syn::Result<TokenStream> {
    let (path, spec) = load_spec(args, manifest_dir)?;
    let vm_names: Vec<&str> = spec.vms.iter().map(|v| v.name.as_str()).collect();
    let (bindings, kept) = take_bindings(func, &vm_names, &args.init_file.value())?;
    // Parameters left for rstest (cases, values, fixtures): the body needs them.
    let plain = kept.is_empty();
    if let (Some((_, lit)), false) = (&args.timeout, plain) {
        return Err(syn::Error::new(
            lit.span(),
            "a timeout needs a test whose parameters are all VMs or the env (the body runs on a thread of its own); drop the rstest parameters or the timeout",
        ));
    }
    func.sig.inputs = kept;
    let fn_name = func.sig.ident.to_string();
    // A relative path is resolved when the test runs: against the crate's
    // folder as cargo and nextest give it then (`CARGO_MANIFEST_DIR`), so a
    // test binary moved elsewhere (a nextest archive, another user's copy)
    // finds its init file, else against the folder it compiled in.
    let written = args.init_file.value();
    let manifest = manifest_dir.display().to_string();
    let test = Expansion {
        file: match Path::new(&written).is_absolute() {
            true => {
                let abs = path.display().to_string();
                quote! { #abs }
            }
            false => quote! { ::lago::__private::init_file(#written, #manifest) },
        },
        name: quote! { ::core::concat!(::core::module_path!(), "::", #fn_name) },
        env: syn::Ident::new("__lago_env", Span::mixed_site()),
        options: options(args),
        ret: match &func.sig.output {
            syn::ReturnType::Default => quote! { () },
            syn::ReturnType::Type(_, ty) => quote! { #ty },
        },
    };
    let lets = test.lets(&bindings);
    let body = func.block.clone();
    let call = test.call(args, &lets, &body);
    let abs = path.display().to_string();
    *func.block = syn::parse_quote! {{
        // Rebuild when the init file changes.
        const _: &str = ::core::include_str!(#abs);
        #call
    }};
    let ignored = func.attrs.iter().any(|a| a.path().is_ident("ignore"));
    let registration = test.registration(plain.then_some((&lets[..], &body)), ignored);
    let add_test = !func.attrs.iter().any(is_test_attr);
    let test_attr = add_test.then(|| quote! { #[::core::prelude::v1::test] });
    Ok(quote! { #test_attr #func #registration })
}

/// The init file the attribute names (relative to the crate), loaded and
/// checked now: a bad file is a compile error on the attribute.
fn load_spec(args: &Args, manifest_dir: &Path) -> syn::Result<(PathBuf, lago_config::EnvSpec)> {
    let lit = &args.init_file;
    let rel = lit.value();
    let path = normalize(&if Path::new(&rel).is_absolute() {
        PathBuf::from(&rel)
    } else {
        manifest_dir.join(&rel)
    });
    match lago_config::load_with(&path, lago_config::LoadOptions { strict: args.strict }) {
        Ok(spec) => Ok((path, spec)),
        Err(lago_config::ConfigError::NotFound { path }) => Err(syn::Error::new(
            lit.span(),
            format!(
                "init file {} not found (paths are relative to the crate, {})",
                path.display(),
                manifest_dir.display()
            ),
        )),
        Err(e) => Err(syn::Error::new(lit.span(), format!("invalid init file: {e}"))),
    }
}

type Params = syn::punctuated::Punctuated<FnArg, syn::Token![,]>;

/// Takes the `&Env` and `&Vm` parameters out of the signature (a `&Vm` must
/// be named after a VM of the init file `rel`); the others are kept. Every
/// misnamed parameter is reported, not only the first.
fn take_bindings(func: &mut ItemFn, vm_names: &[&str], rel: &str) -> syn::Result<(Vec<Binding>, Params)> {
    let mut bindings = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let mut push_err = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let mut kept = Params::new();
    for arg in std::mem::take(&mut func.sig.inputs) {
        let FnArg::Typed(pt) = &arg else {
            kept.push(arg);
            continue;
        };
        let ident = match pt.pat.as_ref() {
            Pat::Ident(i) => Some(i.ident.clone()),
            _ => None,
        };
        match (ref_target(&pt.ty).as_deref(), ident) {
            (Some("Env"), Some(id)) => bindings.push(Binding::Env(id, (*pt.ty).clone())),
            (Some("Vm"), Some(id)) => {
                let name = id.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
                if vm_names.contains(&name.as_str()) {
                    bindings.push(Binding::Vm(id, (*pt.ty).clone(), name));
                } else {
                    push_err(syn::Error::new(
                        id.span(),
                        format!(
                            "no VM named `{name}` in {rel}; a `&Vm` parameter must be named after one of its VMs: {}",
                            vm_names.join(", ")
                        ),
                    ));
                }
            }
            (Some("Env") | Some("Vm"), None) => push_err(syn::Error::new(
                pt.pat.span(),
                "expected a plain parameter name (a `&Vm` parameter is named after its VM)",
            )),
            _ => kept.push(arg),
        }
    }
    match errors {
        Some(e) => Err(e),
        None => Ok((bindings, kept)),
    }
}

/// The attribute's options as a `lago::harness::TestOptions` expression.
fn options(args: &Args) -> TokenStream {
    let isolation = match args.isolation {
        Isolation::Shared => quote! { Shared },
        Isolation::Reset => quote! { Reset },
        Isolation::Fresh => quote! { Fresh },
    };
    let timeout = match &args.timeout {
        Some((ms, _)) => quote! { ::core::option::Option::Some(::core::time::Duration::from_millis(#ms)) },
        None => quote! { ::core::option::Option::None },
    };
    let fail_on_console = match &args.fail_on_console {
        Some(p) => quote! { ::core::option::Option::Some(#p) },
        None => quote! { ::core::option::Option::None },
    };
    let warm = match args.warm {
        Some(w) => quote! { ::core::option::Option::Some(#w) },
        None => quote! { ::core::option::Option::None },
    };
    let bundle = match args.bundle {
        Some(b) => quote! { ::core::option::Option::Some(#b) },
        None => quote! { ::core::option::Option::None },
    };
    quote! {
        ::lago::harness::TestOptions {
            isolation: ::lago::harness::Isolation::#isolation,
            timeout: #timeout,
            fail_on_console: #fail_on_console,
            warm: #warm,
            bundle: #bundle,
        }
    }
}

/// What the generated code of one test shares: the init file as the
/// attribute names it, the test's full name, the env variable, its options and the body's
/// return type.
struct Expansion {
    file: TokenStream,
    name: TokenStream,
    env: syn::Ident,
    options: TokenStream,
    ret: TokenStream,
}

impl Expansion {
    /// `let vm01: &Vm = …;` for each binding.
    fn lets(&self, bindings: &[Binding]) -> Vec<TokenStream> {
        let env = &self.env;
        bindings
            .iter()
            .map(|b| match b {
                Binding::Env(id, ty) => quote_spanned! {id.span()=> let #id: #ty = #env; },
                Binding::Vm(id, ty, name) => {
                    quote_spanned! {id.span()=> let #id: #ty = ::lago::__private::vm(#env, #name); }
                }
            })
            .collect()
    }

    /// The test's new body: the runtime call that boots (or joins) the
    /// environment and runs the old body in it.
    fn call(&self, args: &Args, lets: &[TokenStream], body: &syn::Block) -> TokenStream {
        let Expansion {
            file,
            name,
            env,
            options,
            ret,
        } = self;
        if args.timeout.is_some() {
            // A plain fn: the body may run on a thread of its own.
            quote! {
                fn __lago_body(#env: &::lago::Env) -> #ret { #(#lets)* #body }
                ::lago::__private::run_env_test_timeout(#file, #name, #options, __lago_body)
            }
        } else if args.isolation == Isolation::Shared && args.fail_on_console.is_none() {
            quote! {
                ::lago::__private::run_env_test(#file, #name, |#env: &::lago::Env| -> #ret { #(#lets)* #body })
            }
        } else {
            quote! {
                ::lago::__private::run_env_test_with(#file, #name, #options, |#env: &::lago::Env| -> #ret { #(#lets)* #body })
            }
        }
    }

    /// Registered before main: for `lago::harness::main!()` (nightly suites
    /// in `harness = false` targets) and so that the suite knows, as it
    /// boots, that a test will reset it. A test with parameters left for
    /// rstest registers without a body (`plain` is `None`).
    fn registration(&self, plain: Option<(&[TokenStream], &syn::Block)>, ignored: bool) -> TokenStream {
        let Expansion {
            file,
            name,
            env,
            options,
            ret,
        } = self;
        let (trial, body_fn) = match plain {
            Some((lets, body)) => (
                quote! {
                    fn __lago_trial(#env: &::lago::Env) -> ::lago::harness::runner::TrialResult {
                        let __lago_outcome = (|| -> #ret { #(#lets)* #body })();
                        ::lago::__private::trial_result(__lago_outcome)
                    }
                },
                quote! { ::core::option::Option::Some(__lago_trial) },
            ),
            None => (quote! {}, quote! { ::core::option::Option::None }),
        };
        quote! {
            ::lago::__private::ctor::declarative::ctor! {
                #[ctor(unsafe, anonymous)]
                fn __lago_register() {
                    #trial
                    ::lago::__private::register(::lago::harness::registry::Registration {
                        init_file: #file,
                        name: #name,
                        options: #options,
                        ignored: #ignored,
                        body: #body_fn,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn run(args: TokenStream, item: TokenStream) -> syn::Result<String> {
        let args: Args = syn::parse2(args)?;
        let mut f: ItemFn = syn::parse2(item)?;
        expand(&args, &mut f, &manifest()).map(|t| t.to_string())
    }

    #[test]
    fn vm_and_env_parameters_become_bindings_and_test_is_added() {
        let out = run(
            quote!("tests/envs/pair.yaml"),
            quote!(
                fn t(e: &Env, vm01: &lago::Vm) {
                    body();
                }
            ),
        )
        .unwrap();
        assert!(out.contains("# [:: core :: prelude :: v1 :: test]"), "{out}");
        assert!(out.contains("fn t ()"), "{out}");
        assert!(out.contains("let e : & Env = __lago_env"), "{out}");
        assert!(
            out.contains(":: lago :: __private :: vm (__lago_env , \"vm01\")"),
            "{out}"
        );
        assert!(out.contains("include_str !"), "{out}");
        assert!(out.contains("tests/envs/pair.yaml"), "{out}");
    }

    #[test]
    fn existing_test_attributes_are_kept_and_other_parameters_stay() {
        let out = run(
            quote!("tests/envs/pair.yaml"),
            quote!(
                #[rstest]
                #[case(1)]
                fn t(#[case] n: u32, vm02: &Vm) {}
            ),
        )
        .unwrap();
        assert!(!out.contains("prelude :: v1 :: test"), "{out}");
        assert!(out.contains("# [rstest]"), "{out}");
        assert!(out.contains("fn t (# [case] n : u32)"), "{out}");
    }

    #[test]
    fn options_choose_the_runtime_and_every_test_is_registered() {
        let out = run(
            quote!("tests/envs/pair.yaml"),
            quote!(
                fn t(vm01: &Vm) {}
            ),
        )
        .unwrap();
        assert!(out.contains(":: lago :: __private :: run_env_test ("), "{out}");
        assert!(out.contains("ctor :: declarative :: ctor !"), "{out}");
        assert!(out.contains("Isolation :: Shared"), "{out}");
        assert!(
            out.contains("body : :: core :: option :: Option :: Some (__lago_trial)"),
            "{out}"
        );
        assert!(out.contains("ignored : false"), "{out}");

        let out = run(
            quote!("tests/envs/pair.yaml", isolation = "reset"),
            quote!(
                #[ignore]
                fn t(vm01: &Vm) {}
            ),
        )
        .unwrap();
        assert!(out.contains("run_env_test_with ("), "{out}");
        assert!(out.contains("Isolation :: Reset"), "{out}");
        assert!(out.contains("ignored : true"), "{out}");

        let out = run(
            quote!("tests/envs/pair.yaml", isolation = "fresh", timeout = "2m"),
            quote!(
                fn t(env: &Env) {}
            ),
        )
        .unwrap();
        assert!(out.contains("run_env_test_timeout ("), "{out}");
        assert!(out.contains("fn __lago_body"), "{out}");
        assert!(out.contains("from_millis (120000u64)"), "{out}");

        // A console pattern goes into the options (and needs the runtime that takes them).
        let out = run(
            quote!("tests/envs/pair.yaml", fail_on_console = "segfault|OOM"),
            quote!(
                fn t(vm01: &Vm) {}
            ),
        )
        .unwrap();
        assert!(out.contains("run_env_test_with ("), "{out}");
        assert!(
            out.contains("fail_on_console : :: core :: option :: Option :: Some (\"segfault|OOM\")"),
            "{out}"
        );

        // bundle = "on-failure" goes into the options; another word is refused.
        let out = run(
            quote!("tests/envs/pair.yaml", bundle = "on-failure"),
            quote!(
                fn t(vm01: &Vm) {}
            ),
        )
        .unwrap();
        assert!(
            out.contains("bundle : :: core :: option :: Option :: Some (true)"),
            "{out}"
        );
        let e = match syn::parse2::<crate::args::Args>(quote!("tests/envs/pair.yaml", bundle = "always")) {
            Ok(_) => panic!("bundle = \"always\" parsed"),
            Err(e) => e,
        };
        assert!(
            e.to_string().contains("bundle: expected \"on-failure\" or \"never\""),
            "{e}"
        );
        // warm = false goes into the registered options; a string is refused.
        let out = run(
            quote!("tests/envs/pair.yaml", warm = false),
            quote!(
                fn t(vm01: &Vm) {}
            ),
        )
        .unwrap();
        assert!(
            out.contains("warm : :: core :: option :: Option :: Some (false)"),
            "{out}"
        );
        let e = run(
            quote!("tests/envs/pair.yaml", warm = "no"),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("warm: expected `true` or `false`"), "{e}");

        // rstest parameters: registered without a body (it needs the cases).
        let out = run(
            quote!("tests/envs/pair.yaml"),
            quote!(
                #[rstest]
                #[case(1)]
                fn t(#[case] n: u32, vm02: &Vm) {}
            ),
        )
        .unwrap();
        assert!(out.contains("body : :: core :: option :: Option :: None"), "{out}");
    }

    #[test]
    fn strict_makes_lago_keys_lago_ignores_compile_errors() {
        let dir = tempfile_dir();
        let f = dir.join("warned.yaml");
        std::fs::write(
            &f,
            "domains:\n  vm01:\n    cpu: 2\n    nics: [{net: l}]\n    disks: [{type: empty, name: r, dev: vda, size: 1G}]\nnets:\n  l: {}\n",
        )
        .unwrap();
        let file = f.display().to_string();
        assert!(
            run(
                quote!(#file),
                quote!(
                    fn t() {}
                )
            )
            .is_ok(),
            "a warning alone compiles"
        );
        let e = run(
            quote!(#file, strict),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("domains.vm01.cpu") && e.to_string().contains("strict mode"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("lago-macros-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn bad_options_are_errors_on_their_token() {
        let e = run(
            quote!("tests/envs/pair.yaml", isolation = "solo"),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("expected isolation \"shared\", \"reset\" or \"fresh\", found \"solo\""),
            "{e}"
        );
        let e = run(
            quote!("tests/envs/pair.yaml", timeout = "soon"),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected a timeout like \"120s\""), "{e}");
        let e = run(
            quote!("tests/envs/pair.yaml", fail_on_console = "seg(fault"),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("fail_on_console: not a valid regular expression"),
            "{e}"
        );
        let e = run(
            quote!("tests/envs/pair.yaml", retries = "3"),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown option `retries`"), "{e}");
        let e = run(
            quote!("tests/envs/pair.yaml", timeout = "1s", timeout = "2s"),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let e = run(
            quote!("tests/envs/pair.yaml", timeout = "10s"),
            quote!(
                #[rstest]
                fn t(#[values(1, 2)] n: u32, vm01: &Vm) {}
            ),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("a timeout needs a test whose parameters are all VMs"),
            "{e}"
        );
    }

    #[test]
    fn paths_are_normalized_lexically() {
        assert_eq!(normalize(Path::new("/a/b/../../c/./d")), PathBuf::from("/c/d"));
        assert_eq!(normalize(Path::new("x/../../y")), PathBuf::from("../y"));
    }

    #[test]
    fn unknown_vm_and_missing_file_are_errors() {
        let e = run(
            quote!("tests/envs/pair.yaml"),
            quote!(
                fn t(vm09: &Vm) {}
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no VM named `vm09`"), "{e}");
        assert!(e.to_string().contains("vm01, vm02"), "{e}");
        let e = run(
            quote!("tests/envs/nope.yaml"),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        let e = run(
            quote!("tests/data/invalid/memory_zero.yaml"),
            quote!(
                fn t() {}
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("domains.vm01.memory"), "{e}");
    }
}
