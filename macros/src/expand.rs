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
    let lit = &args.init_file;
    let rel = lit.value();
    let path = normalize(&if Path::new(&rel).is_absolute() {
        PathBuf::from(&rel)
    } else {
        manifest_dir.join(&rel)
    });
    let spec = match lago_config::load_with(&path, lago_config::LoadOptions { strict: args.strict }) {
        Ok(spec) => spec,
        Err(lago_config::ConfigError::NotFound { path }) => {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "init file {} not found (paths are relative to the crate, {})",
                    path.display(),
                    manifest_dir.display()
                ),
            ));
        }
        Err(e) => return Err(syn::Error::new(lit.span(), format!("invalid init file: {e}"))),
    };
    let vm_names: Vec<&str> = spec.vms.iter().map(|v| v.name.as_str()).collect();

    let mut bindings = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let mut push_err = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let mut kept = syn::punctuated::Punctuated::<FnArg, syn::Token![,]>::new();
    for arg in std::mem::take(&mut func.sig.inputs) {
        let FnArg::Typed(pt) = &arg else {
            kept.push(arg);
            continue;
        };
        let target = ref_target(&pt.ty);
        let ident = match pt.pat.as_ref() {
            Pat::Ident(i) => Some(i.ident.clone()),
            _ => None,
        };
        match (target.as_deref(), ident) {
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
    if let Some(e) = errors {
        return Err(e);
    }
    // Parameters left for rstest (cases, values, fixtures): the body needs them.
    let plain = kept.is_empty();
    if let (Some((_, lit)), false) = (&args.timeout, plain) {
        return Err(syn::Error::new(
            lit.span(),
            "a timeout needs a test whose parameters are all VMs or the env (the body runs on a thread of its own); drop the rstest parameters or the timeout",
        ));
    }
    func.sig.inputs = kept;

    let abs = path.display().to_string();
    let fn_name = func.sig.ident.to_string();
    let env_var = syn::Ident::new("__lago_env", Span::mixed_site());
    let lets: Vec<TokenStream> = bindings
        .iter()
        .map(|b| match b {
            Binding::Env(id, ty) => quote_spanned! {id.span()=> let #id: #ty = #env_var; },
            Binding::Vm(id, ty, name) => {
                quote_spanned! {id.span()=> let #id: #ty = ::lago::__private::vm(#env_var, #name); }
            }
        })
        .collect();
    let body = func.block.clone();
    let ret = match &func.sig.output {
        syn::ReturnType::Default => quote! { () },
        syn::ReturnType::Type(_, ty) => quote! { #ty },
    };
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
    let options = quote! {
        ::lago::harness::TestOptions {
            isolation: ::lago::harness::Isolation::#isolation,
            timeout: #timeout,
            fail_on_console: #fail_on_console,
        }
    };
    let name_expr = quote! { ::core::concat!(::core::module_path!(), "::", #fn_name) };
    let call = if args.timeout.is_some() {
        // A plain fn: the body may run on a thread of its own.
        quote! {
            fn __lago_body(#env_var: &::lago::Env) -> #ret { #(#lets)* #body }
            ::lago::__private::run_env_test_timeout(#abs, #name_expr, #options, __lago_body)
        }
    } else if args.isolation == Isolation::Shared && args.fail_on_console.is_none() {
        quote! {
            ::lago::__private::run_env_test(#abs, #name_expr, |#env_var: &::lago::Env| -> #ret { #(#lets)* #body })
        }
    } else {
        quote! {
            ::lago::__private::run_env_test_with(#abs, #name_expr, #options, |#env_var: &::lago::Env| -> #ret { #(#lets)* #body })
        }
    };
    let new_body: syn::Block = syn::parse_quote! {{
        // Rebuild when the init file changes.
        const _: &str = ::core::include_str!(#abs);
        #call
    }};
    *func.block = new_body;
    let ignored = func.attrs.iter().any(|a| a.path().is_ident("ignore"));
    // Registered before main: for `lago::harness::main!()` (nightly suites
    // in `harness = false` targets) and so that the suite knows, as it
    // boots, that a test will reset it.
    let trial = if plain {
        quote! {
            fn __lago_trial(#env_var: &::lago::Env) -> ::lago::harness::runner::TrialResult {
                let __lago_outcome = (|| -> #ret { #(#lets)* #body })();
                ::lago::__private::trial_result(__lago_outcome)
            }
        }
    } else {
        quote! {}
    };
    let body_fn = if plain {
        quote! { ::core::option::Option::Some(__lago_trial) }
    } else {
        quote! { ::core::option::Option::None }
    };
    let registration = quote! {
        ::lago::__private::ctor::declarative::ctor! {
            #[ctor(unsafe, anonymous)]
            fn __lago_register() {
                #trial
                ::lago::__private::register(::lago::harness::registry::Registration {
                    init_file: #abs,
                    name: #name_expr,
                    options: #options,
                    ignored: #ignored,
                    body: #body_fn,
                });
            }
        }
    };
    let add_test = !func.attrs.iter().any(is_test_attr);
    let test_attr = add_test.then(|| quote! { #[::core::prelude::v1::test] });
    Ok(quote! { #test_attr #func #registration })
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
