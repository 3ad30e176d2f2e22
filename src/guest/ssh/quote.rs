//! POSIX shell quoting, so `vm.ssh(["echo", "a b"])` runs what it says
//! (Lago joined arguments with spaces, unquoted).

/// Quotes one word for a POSIX shell (unchanged when it needs no quoting).
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Joins words into one shell command line, each quoted as needed.
pub fn quote_command<I, S>(words: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    words
        .into_iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quote_command(["hostname", "-f"]), "hostname -f");
        assert_eq!(quote_command(["echo", "a b", "it's", ""]), r"echo 'a b' 'it'\''s' ''");
        assert_eq!(quote_command(["sh", "-c", "exit 3"]), "sh -c 'exit 3'");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }
}
