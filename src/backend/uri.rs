//! What a libvirt URI says: `driver[+transport]://[user@][host][:port]/path[?k=v&…]`,
//! read as libvirt reads it, and whether it names another machine.

/// A libvirt URI lago cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("libvirt URI {uri:?}: {reason}")]
pub struct UriError {
    /// The URI as given.
    pub uri: String,
    /// What is wrong.
    pub reason: String,
}

/// The parts of a libvirt URI: `driver[+transport]://[user@][host][:port]/path[?k=v&…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtUri {
    /// The driver (`qemu`, `test`, …).
    pub driver: String,
    /// The transport (`ssh`, `libssh2`, `libssh`, `tcp`, `tls`, `unix`, `ext`), if named.
    pub transport: Option<String>,
    /// The user before `@`, `%`-decoded, if given.
    pub user: Option<String>,
    /// The host (empty: this machine).
    pub host: Option<String>,
    /// The port after the host, if given.
    pub port: Option<u16>,
    /// The path (`/system`, `/session`, `/default`).
    pub path: String,
    /// Query parameters, in order.
    pub params: Vec<(String, String)>,
}

/// `%XX` decoding of a URI component.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.contains('\0')).then_some(s)
}

impl LibvirtUri {
    /// Parses `uri`.
    pub fn parse(uri: &str) -> Result<LibvirtUri, UriError> {
        let bad = |reason: &str| UriError {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        if uri.len() > 4096 || uri.contains(|c: char| c.is_control()) {
            return Err(bad("expected at most 4096 printable characters"));
        }
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| bad("expected driver[+transport]://[user@][host][:port]/path"))?;
        let (driver, transport) = match scheme.split_once('+') {
            Some((d, t)) => (d, Some(t.to_owned())),
            None => (scheme, None),
        };
        if driver.is_empty() || !driver.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("expected a driver name such as `qemu` before `://`"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(unescape(u).ok_or_else(|| bad("the user is not valid"))?), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("expected `]` after an IPv6 host"))?;
            (h.to_owned(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad("expected a port number after `:`"))?),
            None => None,
        };
        let mut params = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = unescape(k).ok_or_else(|| bad("a query parameter is not valid"))?;
            let v = unescape(v).ok_or_else(|| bad("a query parameter is not valid"))?;
            params.push((k, v));
        }
        Ok(LibvirtUri {
            driver: driver.to_owned(),
            transport,
            user,
            host: (!host.is_empty()).then_some(host),
            port,
            path: path.to_owned(),
            params,
        })
    }

    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether the URI names another machine: a network transport or a
    /// host (the hypervisor then shares no files or networks with this one).
    pub fn is_remote(&self) -> bool {
        match self.transport.as_deref() {
            Some("unix") | None => self.host.is_some(),
            Some(_) => true,
        }
    }
}

/// Whether libvirt URI `uri` is a per-user daemon on this machine
/// (`qemu:///session`): session mode, no root.
pub fn is_session(uri: &str) -> bool {
    LibvirtUri::parse(uri).is_ok_and(|u| u.path == "/session" && !u.is_remote())
}

/// Whether libvirt URI `uri` names another machine (see
/// [`LibvirtUri::is_remote`]); a URI lago cannot read is not taken for remote.
pub fn is_remote(uri: &str) -> bool {
    LibvirtUri::parse(uri).is_ok_and(|u| u.is_remote())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_mode_is_a_local_session_uri() {
        assert!(is_session("qemu:///session"));
        assert!(!is_session("qemu:///system"));
        assert!(!is_session("qemu+ssh://host/session"));
        assert!(!is_session("not a uri"));
    }

    #[test]
    fn uris_are_read_like_libvirt_reads_them() {
        let u = LibvirtUri::parse("qemu+ssh://root@10.0.0.5:2222/system?keyfile=/k%20k&known_hosts=/kh").unwrap();
        assert_eq!(u.driver, "qemu");
        assert_eq!(u.transport.as_deref(), Some("ssh"));
        assert_eq!(u.user.as_deref(), Some("root"));
        assert_eq!(u.host.as_deref(), Some("10.0.0.5"));
        assert_eq!(u.port, Some(2222));
        assert_eq!(u.path, "/system");
        assert_eq!(u.param("keyfile"), Some("/k k"));
        assert!(u.is_remote());
        for local in [
            "qemu:///system",
            "qemu:///session",
            "test:///default",
            "qemu+unix:///system",
        ] {
            assert!(!LibvirtUri::parse(local).unwrap().is_remote(), "{local}");
        }
        assert!(LibvirtUri::parse("qemu://hv.example.org/system").unwrap().is_remote());
        let v6 = LibvirtUri::parse("qemu+libssh2://[fd00::1]:22/system").unwrap();
        assert_eq!(v6.host.as_deref(), Some("fd00::1"));
    }

    #[test]
    fn bad_uris_are_errors_not_panics() {
        for bad in [
            "qemu/system",
            "://x",
            "qemu+ssh://h:99999/system",
            "qemu+ssh://h:p/system",
            "qemu+ssh://[::1/system",
            "qemu+ssh://h/system?k=%zz",
            "qemu+ssh://h/system?k=%00",
            "qemu+ssh://h\n/system",
        ] {
            assert!(LibvirtUri::parse(bad).is_err(), "{bad:?}");
        }
        assert!(LibvirtUri::parse(&"q".repeat(5000)).is_err());
    }
}
