//! Names and text: file and volume names made from names users give, error
//! chains, XML escaping.

/// A name for a file or volume lago makes from names it was given: letters,
/// digits and `-_.` kept, anything else `_`.
pub fn plain_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An error with all its causes, on one line (`a: b: c`), each cause said
/// once (a cause whose text its parent already holds is left out).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// `s` escaped for XML text and attribute values (either quote).
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escapes_and_chains() {
        assert_eq!(plain_name("a b/c:d-e_f.g"), "a_b_c_d-e_f.g");
        assert_eq!(
            xml_escape(r#"<a href='x' t="y">&"#),
            "&lt;a href=&apos;x&apos; t=&quot;y&quot;&gt;&amp;"
        );
        let inner = std::io::Error::other("disk full");
        let outer = std::io::Error::other(Wrapper(inner));
        assert_eq!(error_chain(&outer), "writing: disk full");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("writing")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
